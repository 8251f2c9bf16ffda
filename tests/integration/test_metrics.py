"""Prometheus metrics ([metrics] listen): a real daemon (memory backend, a stand-in NVML so
that energy is attributed), real clients of two tenants, and scrapes read with
prometheus_client's own parser: sessions, calls and bytes by tenant and kind, errors, memory
held, energy, queue depth, refusals; counters that keep what ended sessions counted."""

from __future__ import annotations

import importlib.util
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from farcuda.interposer.cli import query_status

# (packages of the test extra are not on the offline GPU machine: skipped there)
text_string_to_metric_families = pytest.importorskip(
    "prometheus_client.parser").text_string_to_metric_families

_spec = importlib.util.spec_from_file_location(
    "farcuda_test_service_helpers", Path(__file__).with_name("service_helpers.py"))
helpers = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = helpers
_spec.loader.exec_module(helpers)
TenantClient = helpers.TenantClient

TOKENS = {"alice": "alice-secret", "bob": "bob-secret"}
MiB = 1 << 20

FAKE_PYNVML = '''
"""One GPU (the memory backend's: a UUID of zeros) drawing 100 W."""
import time, types

_T0 = time.monotonic()
def nvmlInit(): pass
def nvmlShutdown(): pass
def nvmlDeviceGetCount(): return 1
def nvmlDeviceGetHandleByIndex(i): return i
def nvmlDeviceGetUUID(h): return b"GPU-00000000-0000-0000-0000-000000000000"
def nvmlDeviceGetMemoryInfo(h): return types.SimpleNamespace(used=3 << 30, total=80 << 30)
def nvmlDeviceGetUtilizationRates(h): return types.SimpleNamespace(gpu=42, memory=7)
def nvmlDeviceGetPowerUsage(h): return 100000
def nvmlDeviceGetTotalEnergyConsumption(h): return int((time.monotonic() - _T0) * 100000)
'''


@pytest.fixture
def daemon(tmp_path, fc, monkeypatch):
    fake = tmp_path / "fakenvml"
    fake.mkdir()
    (fake / "pynvml.py").write_text(FAKE_PYNVML)
    monkeypatch.setenv("PYTHONPATH", str(fake))  # the daemon started below inherits it
    d = fc.start_daemon(tmp_path, "memory", config={
        "log_level": "info", "prestart": 1, "auth": {"tokens": TOKENS},
        "metrics": {"listen": "127.0.0.1:0"}})
    monkeypatch.delenv("PYTHONPATH")
    m = re.search(r"metrics at (http://127\.0\.0\.1:\d+/metrics)", d.log())
    assert m, d.log()[-2000:]
    d.metrics_url = m.group(1)
    yield d
    d.stop()


@pytest.fixture
def clients():
    made: list[TenantClient] = []
    yield made
    for c in made:
        c.kill()


def scrape(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        out.setdefault("_types", {})[fam.name] = fam.type
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: dict, name: str, **labels) -> float | None:
    return m.get((name, tuple(sorted(labels.items()))))


def test_metrics_scrape(daemon, program, shim, fc, clients):
    exe = program("ci_tenant")
    alice = TenantClient(exe, shim, daemon.address, {"FARCUDA_TOKEN": TOKENS["alice"]})
    bob = TenantClient(exe, shim, daemon.address, {"FARCUDA_TOKEN": TOKENS["bob"]})
    clients += [alice, bob]
    pa = alice.ok(f"malloc {4 * MiB}")[0]
    alice.ok(f"fill {pa} {4 * MiB} 7")
    assert alice.ok(f"read {pa} 16") == ["7", str(7 * 16)]
    bob.ok(f"malloc {MiB}")
    assert bob.do(f"malloc {1 << 50}") == "err cudaErrorMemoryAllocation"  # the GPU says no
    r = fc.run_remote(program("ci_memory"), shim, daemon.address,
                      env={"FARCUDA_TOKEN": "wrong"})
    assert r.returncode != 0
    time.sleep(1.5)  # an energy sample or so

    m = scrape(daemon.metrics_url)
    st = query_status(daemon.address, TOKENS["alice"])
    held = {t["tenant"]: t["memory_held"] for t in st["tenants"]}
    types = m["_types"]
    assert types["farcudad_sessions"] == "gauge" and types["farcudad_calls"] == "counter"
    assert value(m, "farcudad_sessions", tenant="alice") == 1
    assert value(m, "farcudad_sessions", tenant="bob") == 1
    assert value(m, "farcudad_calls_total", tenant="alice", kind="MALLOC") == 1
    assert value(m, "farcudad_calls_total", tenant="alice", kind="MEMCPY_HTOD") >= 1
    assert value(m, "farcudad_calls_total", tenant="bob", kind="MALLOC") == 2
    assert value(m, "farcudad_bytes_total", tenant="alice", direction="in") > 4 * MiB
    assert value(m, "farcudad_bytes_total", tenant="alice", direction="out") > 0
    assert value(m, "farcudad_call_errors_total", tenant="bob",
                 error="cudaErrorMemoryAllocation") == 1
    assert value(m, "farcudad_call_errors_total", tenant="alice",
                 error="cudaErrorMemoryAllocation") is None
    assert value(m, "farcudad_memory_held_bytes", tenant="alice") == held["alice"] >= 4 * MiB
    assert value(m, "farcudad_memory_held_bytes", tenant="bob") == held["bob"] >= MiB
    assert value(m, "farcudad_refused_total", reason="auth") == 1
    assert value(m, "farcudad_requests_in_flight", tenant="alice") == 0
    assert value(m, "farcudad_handshakes_in_progress") == 0
    assert value(m, "farcudad_workers_idle") in (0, 1)  # (0 while the next one starts)
    assert value(m, "farcudad_sessions_started_total") == 2
    assert value(m, "farcudad_limit", limit="sessions_total") == 64
    assert value(m, "farcudad_gpu_memory_used_bytes", gpu="0") == 3 << 30
    # energy: attributed by busy time, so each tenant has some and no more than the GPU's
    gpu_j = value(m, "farcudad_gpu_energy_joules_total", gpu="0")
    assert gpu_j > 0
    shares = [value(m, "farcudad_energy_joules_total", tenant=t) for t in ("alice", "bob")]
    assert all(s is not None and s >= 0 for s in shares), shares
    assert sum(shares) + value(m, "farcudad_energy_unattributed_joules_total") \
        <= gpu_j * 1.01 + 1

    # a call in flight is the queue's depth: alice waits on a host function of 1.5 s
    alice.proc.stdin.write("hold 1500\n")
    alice.proc.stdin.flush()
    time.sleep(0.5)
    m2 = scrape(daemon.metrics_url)
    assert value(m2, "farcudad_requests_in_flight", tenant="alice") >= 1
    assert alice.lines.get(timeout=10) == "ok"

    # alice ends: her session goes, what she counted stays
    calls = value(scrape(daemon.metrics_url), "farcudad_calls_total", tenant="alice",
                  kind="MEMCPY_DTOH")
    alice.close()
    deadline = time.monotonic() + 10
    while True:
        m3 = scrape(daemon.metrics_url)
        if value(m3, "farcudad_sessions", tenant="alice") is None or \
                time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert value(m3, "farcudad_sessions", tenant="alice") is None
    assert value(m3, "farcudad_memory_held_bytes", tenant="alice") is None
    assert value(m3, "farcudad_calls_total", tenant="alice", kind="MEMCPY_DTOH") >= calls
    assert value(m3, "farcudad_calls_total", tenant="alice", kind="MALLOC") == 1
    assert value(m3, "farcudad_bytes_total", tenant="alice", direction="in") > 4 * MiB
    assert value(m3, "farcudad_energy_joules_total", tenant="alice") >= shares[0]
    assert value(m3, "farcudad_sessions", tenant="bob") == 1


def test_metrics_endpoint_answers_only_metrics(daemon):
    base = daemon.metrics_url.rsplit("/", 1)[0]
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(base + "/other", timeout=10)
    err.value.close()
    assert err.value.code == 404
    req = urllib.request.Request(daemon.metrics_url, data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    err.value.close()
    assert err.value.code == 405
    assert scrape(daemon.metrics_url)[("farcudad_workers_idle", ())] == 1


def test_metrics_label_processes_by_address(tmp_path, fc, program, shim):
    """Without tokens every process is a tenant: the metrics count them by address."""
    d = fc.start_daemon(tmp_path, "memory", config={"log_level": "info",
                                                   "metrics": {"listen": "127.0.0.1:0"}})
    try:
        url = re.search(r"metrics at (http://\S+/metrics)", d.log()).group(1)
        exe = program("ci_memory")
        for _ in range(2):
            r = fc.run_remote(exe, shim, d.address)
            assert r.returncode == 0 and "PASSED" in r.stdout, r.stdout + r.stderr
        time.sleep(0.5)
        m = scrape(url)
        tenants = {dict(k[1]).get("tenant") for k in m if k != "_types"} - {None}
        assert tenants == {"127.0.0.1"}, tenants  # two processes, one label
        assert value(m, "farcudad_calls_total", tenant="127.0.0.1", kind="DEVICE_OPEN") == 2
        assert ("farcudad_energy_joules_total", (("tenant", "127.0.0.1"),)) not in m  # no NVML
    finally:
        d.stop()
