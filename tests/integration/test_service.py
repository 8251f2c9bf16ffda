"""The daemon as a service: systemd's notifications, the graceful SIGTERM drain, `farcuda
status`, and the client's FARCUDA_REPORT line, against daemons with the in-memory backend.

The notification and drain tests run farcudad's own serving code (``daemon/cli.py run``: its
signal handlers, sd_notify and exit status) on uvloop as `farcudad` does, with the memory
backend in place of the GPU."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "farcuda_test_service_helpers", Path(__file__).with_name("service_helpers.py"))
helpers = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = helpers
_spec.loader.exec_module(helpers)
TenantClient, Farcudad = helpers.TenantClient, helpers.Farcudad

@pytest.fixture
def tenant_exe(program):
    return program("ci_tenant")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# ---------------------------------------------------------------- systemd notifications

@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_ready_and_stopping_reach_notify_socket(tmp_path, kind):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if kind == "path":
        addr = str(tmp_path / "notify.sock")
        sock.bind(addr)
    else:  # systemd may hand an abstract socket: NOTIFY_SOCKET=@name
        name = f"farcuda-test-{os.getpid()}-{time.monotonic_ns()}"
        sock.bind("\0" + name)
        addr = "@" + name
    sock.settimeout(30)
    d = None
    try:
        d = Farcudad(tmp_path, env={"NOTIFY_SOCKET": addr})
        # READY=1 comes once the daemon listens: a connection works right away
        assert sock.recv(4096) == b"READY=1"
        with socket.create_connection((d.host, d.port), timeout=5):
            pass
        d.proc.send_signal(signal.SIGTERM)
        assert sock.recv(4096) == b"STOPPING=1"
        assert d.proc.wait(30) == 0
    finally:
        sock.close()
        if d is not None:
            d.stop()


def test_no_notify_socket_no_harm(tmp_path):
    d = Farcudad(tmp_path)
    try:
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(30) == 0
    finally:
        d.stop()


# ---------------------------------------------------------------- SIGTERM drain

def test_sigterm_drains_then_says_goodbye(tmp_path, tenant_exe, shim):
    d = Farcudad(tmp_path, config={"shutdown_grace": 10})
    busy = idle = None
    try:
        busy = TenantClient(tenant_exe, shim, d.address)
        idle = TenantClient(tenant_exe, shim, d.address)
        busy.ok("malloc 4096")
        ptr = idle.ok("malloc 1048576")[0]
        idle.ok(f"fill {ptr} 1048576 7")
        workers = d.children()
        assert len(workers) >= 2
        # A call in flight on the server: a stream synchronization that waits for a host
        # function sleeping 2 s in the client.
        busy.proc.stdin.write("hold 2000\n")
        busy.proc.stdin.flush()
        time.sleep(0.5)
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        # New connections are refused at once, while the daemon still drains.
        deadline = time.monotonic() + 1.0
        refused = False
        while time.monotonic() < deadline and not refused:
            try:
                socket.create_connection((d.host, d.port), timeout=1).close()
                time.sleep(0.02)
            except ConnectionRefusedError:
                refused = True
        assert refused and d.proc.poll() is None, "new connections are still accepted"
        # The call in flight gets its reply...
        assert busy.lines.get(timeout=10) == "ok"
        assert time.monotonic() - t0 >= 1.0  # (it waited for the drain, as it should)
        # ...then GOODBYE, and the daemon exits 0 well within its grace; the clients' next
        # calls fail, with the reason said once.
        rc = d.proc.wait(15)
        assert rc == 0, d.log()[-3000:]
        assert time.monotonic() - t0 < 8
        assert busy.do("malloc 4096") == "err cudaErrorDevicesUnavailable"
        assert idle.do(f"read {ptr} 16") == "err cudaErrorDevicesUnavailable"
        for c in (busy, idle):
            _, err = c.close()
            lines = [ln for ln in err.splitlines() if ln.startswith("farcuda:")]
            assert len(lines) == 1 and "shutting down" in lines[0], err
        # Everything freed: no worker process is left.
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in workers)
        log = d.log()
        assert "shutting down: 2 session(s)" in log
        assert "Traceback" not in log
    finally:
        for c in (busy, idle):
            if c is not None:
                c.kill()
        d.stop()


# ---------------------------------------------------------------- farcuda status

def _farcuda(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA_")
         and k != "LD_PRELOAD"}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "farcuda.interposer.cli", *args],
                          capture_output=True, text=True, env=e, timeout=60)


def test_status_text_and_json_with_two_clients(tmp_path, tenant_exe, shim, fc):
    d = fc.start_daemon(tmp_path, "memory", config={
        "log_level": "info", "auth": {"tokens": {"alice": "a-secret", "bob": "b-secret"}},
        "limits": {"memory_per_tenant": "1GiB"}})
    alice = bob = None
    try:
        alice = TenantClient(tenant_exe, shim, d.address, {"FARCUDA_TOKEN": "a-secret"})
        bob = TenantClient(tenant_exe, shim, d.address, {"FARCUDA_TOKEN": "b-secret"})
        alice.ok("malloc 3145728")
        p = bob.ok("malloc 5242880")[0]
        bob.ok(f"fill {p} 5242880 1")
        bob.ok(f"read {p} 65536")
        before = time.time()
        r = _farcuda("status", "--server", d.address, "--json",
                     env={"FARCUDA_TOKEN": "a-secret"})
        assert r.returncode == 0, r.stderr
        st = json.loads(r.stdout)[d.address]
        assert st["auth"] is True and st["tls"] is False
        assert st["energy"]["available"] is False  # no NVML here: never invented
        (gpu,) = st["gpus"]
        assert gpu["name"] == "farcuda in-memory test device"
        assert gpu["memory_total"] == 8 << 30
        assert gpu["memory_used"] == (3 + 5) << 20 and gpu["memory_source"] == "tenants"
        assert gpu["utilization"] is None and gpu["power_w"] is None
        assert gpu["energy_j"] is None and gpu["tenants"] == 2
        by = {t["tenant"]: t for t in st["tenants"]}
        assert set(by) == {"alice", "bob"}
        for name, client, mib in (("alice", alice, 3), ("bob", bob, 5)):
            t = by[name]
            assert t["identity"]["pid"] == client.pid and t["identity"]["exe"] == "ci_tenant"
            assert t["peer"].startswith("127.0.0.1:")
            assert t["devices"] == {"0": {"gpu": 0, "sm_budget": 0, "memory_held": mib << 20}}
            assert t["memory_held"] == mib << 20 and t["tenant_memory"] == mib << 20
            assert t["calls"] >= 3
            assert 3 <= t["sync_round_trips"] <= t["round_trips"] <= t["calls"]
            assert before - 60 < t["since"] <= before
            assert t["energy_j"] is None
        assert by["bob"]["bytes_in"] > 5 << 20 > by["alice"]["bytes_in"]  # the fill
        assert by["bob"]["bytes_out"] > 65536 > by["alice"]["bytes_out"]  # the read
        r = _farcuda("status", "--server", d.address, env={"FARCUDA_TOKEN": "b-secret"})
        assert r.returncode == 0, r.stderr
        text = r.stdout
        assert f"{d.address}: driver 13000, 1 GPU(s), tokens, energy n/a" in text
        assert ("GPU 0: farcuda in-memory test device, memory 8.0 MiB / 8.0 GiB (held by "
                "tenants), utilization n/a, power n/a, energy n/a, tenants 2") in text
        assert "sessions: 2" in text
        for name, mib in (("alice", 3), ("bob", 5)):
            (line,) = [ln for ln in text.splitlines() if f"tenant={name}" in ln]
            assert f"memory={mib}.0 MiB" in line and "devices=[0->gpu0]" in line
            assert "exe=ci_tenant" in line and "energy=n/a" in line and "since=" in line
            assert "round_trips=" in line and "sync_round_trips=" in line
    finally:
        for c in (alice, bob):
            if c is not None:
                c.kill()
        d.stop()


def test_status_of_unreachable_server(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    r = _farcuda("status", "--server", f"127.0.0.1:{port}")
    # (a failure is said on stderr, in one line; stdout keeps the servers that answered)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.splitlines() == [f"farcuda: 127.0.0.1:{port}: unreachable: "
                                     "Connection refused"]
    r = _farcuda("status", "--server", f"127.0.0.1:{port}", "--json")
    assert r.returncode == 1 and "error" in json.loads(r.stdout)[f"127.0.0.1:{port}"]


# ---------------------------------------------------------------- FARCUDA_REPORT

def test_report_line_at_exit(tmp_path, tenant_exe, shim, fc):
    d = fc.start_daemon(tmp_path, "memory")
    try:
        c = TenantClient(tenant_exe, shim, d.address, {"FARCUDA_REPORT": "1"})
        p = c.ok("malloc 2097152")[0]
        c.ok(f"fill {p} 2097152 3")
        c.ok(f"read {p} 1048576")
        rc, err = c.close()
        assert rc == 0
        lines = [ln for ln in err.splitlines() if "report:" in ln]
        assert len(lines) == 1, err
        fields = dict(kv.split("=") for kv in lines[0].split("report:")[1].split())
        assert set(fields) == {"calls", "sync_calls", "round_trips", "sync_round_trips",
                               "compressed", "link_MBps", "bytes_to_server",
                               "bytes_from_server", "wait_s", "gpu_energy_j"}
        assert int(fields["calls"]) >= 4
        assert 1 <= int(fields["sync_round_trips"]) <= int(fields["round_trips"])
        assert int(fields["round_trips"]) <= int(fields["calls"])
        assert int(fields["bytes_to_server"]) >= 2097152
        assert int(fields["bytes_from_server"]) >= 1048576
        assert float(fields["wait_s"]) > 0
        assert fields["gpu_energy_j"] == "unavailable"  # no NVML on CI: not a made-up 0
        assert err.count("farcuda:") == 1
    finally:
        d.stop()
