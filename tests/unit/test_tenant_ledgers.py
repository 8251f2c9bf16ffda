"""The front's books: tenant limits (daemon/tenants.py), energy attribution
(daemon/energy.py) and a session's busy clock (daemon/session/busy.py), without a daemon."""

from __future__ import annotations

import sys
import time
import types

import pytest
from farcuda.daemon.energy import EnergyLedger, GpuMeter, nvml_uuid
from farcuda.daemon.session import BusyClock
from farcuda.daemon.tenants import TenantLedger

MiB = 1 << 20


def test_quota_counts_all_sessions_of_a_tenant():
    led = TenantLedger(memory_per_tenant=100 * MiB)
    for s, t in ((1, "alice"), (2, "alice"), (3, "bob")):
        led.join(s, t)
    assert led.reserve(1, 60 * MiB) is None
    why = led.reserve(2, 50 * MiB)
    assert why and "alice" in why and "limits.memory_per_tenant" in why
    assert led.reserve(3, 100 * MiB) is None  # bob: unaffected
    assert led.reserve(2, 40 * MiB) is None  # exactly the quota
    assert led.used == {"alice": 100 * MiB, "bob": 100 * MiB}
    assert led.reserve(2, 1) is not None
    led.release(1, 10 * MiB)
    assert led.tenant_used(2) == 90 * MiB and led.held(1) == 50 * MiB
    led.release(2, 10 ** 12)  # never more than it was granted
    assert led.held(2) == 0 and led.tenant_used(1) == 50 * MiB
    led.forget(1)  # the worker died: everything it held goes back
    assert "alice" not in led.used
    led.forget(1)  # twice is harmless
    assert led.reserve(99, 1) == "unknown session"
    led.release(99, 1)


def test_no_quota_means_no_limit():
    led = TenantLedger()
    led.join(1, "t")
    assert led.reserve(1, 1 << 50) is None


def test_tenants_per_gpu():
    led = TenantLedger(tenants_per_gpu=2)
    for s, t in ((1, "a"), (2, "b"), (3, "c"), (4, "a")):
        led.join(s, t)
    assert led.open_gpu(1, 0) is None
    assert led.open_gpu(2, 0) is None
    why = led.open_gpu(3, 0)
    assert why and "limits.tenants_per_gpu" in why and "GPU 0" in why
    assert led.open_gpu(4, 0) is None  # tenant a is there already
    assert led.open_gpu(3, 1) is None  # another GPU has room
    led.close_gpu(2, 0)
    assert led.open_gpu(3, 0) is None
    led.forget(1)
    assert led.tenants_on(0) == {"a", "c"}  # session 4 still holds a's place
    led.forget(4)
    assert led.tenants_on(0) == {"c"}


def _sample(energy_j=None, power_w=None):
    return {"energy_j": energy_j, "power_w": power_w}


def test_energy_attribution_by_busy_share():
    led = EnergyLedger(1)
    led.update([_sample(1000.0)], {}, now=0.0)
    # 10 s at 1000 J: session 1 busy 10 s, session 2 busy 5 s (overlapping: 15 > 10)
    led.update([_sample(2000.0)], {1: {0: 10.0}, 2: {0: 5.0}}, now=10.0)
    assert led.of(1) == pytest.approx(1000 * 10 / 15)
    assert led.of(2) == pytest.approx(1000 * 5 / 15)
    assert led.unattributed_j == pytest.approx(0)
    # next 10 s, 500 J: only session 2, busy 2 s of the 10: it gets 1/5, the rest is idle
    led.update([_sample(2500.0)], {1: {0: 10.0}, 2: {0: 7.0}}, now=20.0)
    assert led.of(2) == pytest.approx(1000 * 5 / 15 + 100)
    assert led.unattributed_j == pytest.approx(400)
    assert led.gpu_j == [pytest.approx(1500)]
    assert sum(led.session_j.values()) + led.unattributed_j == pytest.approx(1500)
    led.forget(1)
    assert led.of(1) == 0.0 and 1 not in led.session_j


def test_energy_from_power_when_no_counter():
    led = EnergyLedger(2)
    led.update([_sample(power_w=100.0), _sample()], {}, now=0.0)
    led.update([_sample(power_w=300.0), _sample()], {7: {0: 4.0, 1: 4.0}}, now=4.0)
    assert led.gpu_j[0] == pytest.approx(800)  # trapezoid: (100 + 300) / 2 * 4
    assert led.gpu_j[1] is None  # nothing to read there: unavailable, not zero
    assert led.of(7) == pytest.approx(800)


def test_energy_unavailable_is_none():
    led = EnergyLedger(1)
    assert led.of(1) is None
    led.update([_sample()], {1: {0: 1.0}}, now=0.0)
    led.update([_sample()], {1: {0: 2.0}}, now=1.0)
    assert led.of(1) is None and led.gpu_j == [None] and not led.available


def test_counter_going_backwards_is_not_negative_energy():
    led = EnergyLedger(1)
    led.update([_sample(500.0)], {}, now=0.0)
    led.update([_sample(100.0)], {1: {0: 1.0}}, now=1.0)  # e.g. the driver was reloaded
    assert led.of(1) == 0.0


def test_nvml_uuid():
    raw = bytes(range(16)).hex()
    assert nvml_uuid(raw) == "GPU-00010203-0405-0607-0809-0a0b0c0d0e0f"


def test_meter_without_pynvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # as if not installed
    assert GpuMeter.open(["00" * 16]) is None


def _fake_nvml(uuids: list[str], fail_energy: bool = False):
    m = types.ModuleType("pynvml")
    m.nvmlInit = lambda: None
    m.nvmlShutdown = lambda: None
    m.nvmlDeviceGetCount = lambda: len(uuids)
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetUUID = lambda h: uuids[h].encode()
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=(h + 1) * MiB,
                                                                total=80 << 30)
    m.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=10 * h, memory=0)
    m.nvmlDeviceGetPowerUsage = lambda h: 70000 + h

    def energy(h):
        if fail_energy:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return 123456
    m.nvmlDeviceGetTotalEnergyConsumption = energy
    return m


def test_meter_maps_gpus_by_uuid(monkeypatch):
    a, b = "11" * 16, "22" * 16
    # NVML enumerates in another order than CUDA
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml([nvml_uuid(b), nvml_uuid(a)]))
    meter = GpuMeter.open([a, b, "33" * 16])
    s = meter.sample()
    assert s[0]["memory_used"] == 2 * MiB and s[1]["memory_used"] == MiB  # by UUID
    assert s[0]["power_w"] == pytest.approx(70.001) and s[0]["energy_j"] == pytest.approx(123.456)
    assert s[0]["utilization"] == 10 and s[1]["utilization"] == 0
    assert s[2] == {"memory_used": None, "memory_total": None, "utilization": None,
                    "power_w": None, "energy_j": None}  # NVML does not know it
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml([nvml_uuid(a)], fail_energy=True))
    s = GpuMeter.open([a]).sample()
    assert s[0]["energy_j"] is None and s[0]["power_w"] is not None  # then: power integrated


def test_busy_clock_counts_overlapping_waits_once():
    c = BusyClock()
    c.add(1_000_000)
    c.begin()
    c.begin()  # a second wait overlapping the first
    time.sleep(0.05)
    c.add(10 ** 9)  # a call executing inside a pending wait is not counted twice
    c.end()
    time.sleep(0.05)
    c.end()
    t = c.seconds()
    assert 0.1 <= t < 0.6  # (generous: sleeps overshoot on a loaded machine)
    c.add(1_000_000)
    assert c.seconds() == pytest.approx(t + 0.001)
