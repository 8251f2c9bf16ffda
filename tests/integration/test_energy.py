"""Energy attribution end to end, with a stand-in for NVML.

CI machines have no NVML (and the in-memory GPU has no power draw): there the daemon says
energy is unavailable (tests/integration/test_service.py checks that). Here a fake ``pynvml``
module on the daemon's PYTHONPATH plays a GPU drawing a constant 100 W, with a total-energy
counter, so the whole path runs: the front samples it, reads the sessions' busy clocks,
attributes, pushes the figures to the workers; `farcuda status` shows them per tenant, and
FARCUDA_REPORT's line gives the client's share.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest
from farcuda.interposer.cli import query_status

_spec = importlib.util.spec_from_file_location(
    "farcuda_test_service_helpers", Path(__file__).with_name("service_helpers.py"))
helpers = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = helpers
_spec.loader.exec_module(helpers)
TenantClient = helpers.TenantClient

WATTS = 100.0

FAKE_PYNVML = f'''
"""A fake NVML: one GPU, the in-memory backend's GPU 0 (UUID of zeros), drawing {WATTS} W."""
import time, types
_T0 = time.monotonic()
def nvmlInit(): pass
def nvmlShutdown(): pass
def nvmlDeviceGetCount(): return 1
def nvmlDeviceGetHandleByIndex(i): return i
def nvmlDeviceGetUUID(h): return b"GPU-00000000-0000-0000-0000-000000000000"
def nvmlDeviceGetMemoryInfo(h): return types.SimpleNamespace(used=3 << 30, total=80 << 30)
def nvmlDeviceGetUtilizationRates(h): return types.SimpleNamespace(gpu=42, memory=7)
def nvmlDeviceGetPowerUsage(h): return int({WATTS} * 1000)
def nvmlDeviceGetTotalEnergyConsumption(h):
    return int((time.monotonic() - _T0) * {WATTS} * 1000)  # mJ
'''


@pytest.fixture
def nvml_daemon(tmp_path, fc, monkeypatch):
    fake = tmp_path / "fakenvml"
    fake.mkdir()
    (fake / "pynvml.py").write_text(FAKE_PYNVML)
    monkeypatch.setenv("PYTHONPATH", str(fake))  # the daemon started below inherits it
    d = fc.start_daemon(tmp_path, "memory", config={"log_level": "info"})
    monkeypatch.delenv("PYTHONPATH")
    yield d
    d.stop()


def test_energy_is_attributed_by_busy_time(nvml_daemon, program, shim):
    exe = program("ci_tenant")
    busy = TenantClient(exe, shim, nvml_daemon.address, {"FARCUDA_REPORT": "1"})
    idle = TenantClient(exe, shim, nvml_daemon.address)
    try:
        busy.ok("malloc 4096")
        idle.ok("malloc 4096")
        # 1.5 s in which the busy client's work occupies the GPU (a synchronization waiting)
        busy.ok("hold 1500")
        st = query_status(nvml_daemon.address, None)
        assert st["energy"]["available"] is True and st["energy"]["source"] == "nvml"
        (gpu,) = st["gpus"]
        assert gpu["power_w"] == WATTS and gpu["utilization"] == 42
        assert gpu["memory_used"] == 3 << 30 and gpu["memory_source"] == "nvml"
        assert gpu["energy_j"] > 0
        by_pid = {t["identity"]["pid"]: t for t in st["tenants"]}
        e_busy, e_idle = by_pid[busy.pid]["energy_j"], by_pid[idle.pid]["energy_j"]
        assert e_idle is not None and e_idle < 5  # (its few calls, nothing more)
        # about 1.5 s x 100 W, up to the intervals' edges
        assert 100 < e_busy < 200, (e_busy, json.dumps(st["tenants"], indent=1))
        # what nobody kept busy is nobody's
        assert st["energy"]["unattributed_j"] > 0
        total = gpu["energy_j"]
        assert e_busy + e_idle <= total + 1e-6
        time.sleep(0.3)
        rc, err = busy.close()
        assert rc == 0
        (line,) = [ln for ln in err.splitlines() if "report:" in ln]
        reported = float(line.rsplit("gpu_energy_j=", 1)[1])
        assert e_busy <= reported < e_busy + 30, (reported, e_busy)  # fresh at exit
    finally:
        busy.kill()
        idle.kill()
