"""The daemon as a shared service, on the GPU: quotas, isolation, energy, faults.

- a tenant's memory quota holds on the real GPU, other tenants unaffected;
- two live tenants never see each other's memory (their windows start at the same address);
- NVML energy is attributed to the tenant that kept the GPU busy;
- a client killed while holding GPU memory gives it all back within 2 s;
- a dead daemon makes the client's next call fail within FARCUDA_LIVENESS_TIMEOUT, with one
  line on stderr; a long but healthy kernel is never cut off by that timeout.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

_spec = importlib.util.spec_from_file_location(
    "farcuda_gpu_service_helpers",
    Path(__file__).resolve().parent.parent / "integration" / "service_helpers.py")
helpers = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = helpers
_spec.loader.exec_module(helpers)
TenantClient = helpers.TenantClient
MiB = 1 << 20


def gpu_memory_used() -> int:
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                          "-i", "0"], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0]) * MiB


def test_quota_and_isolation(program, shim, tmp_path, fc):
    d = fc.start_daemon(tmp_path, "cuda", config={"limits": {"memory_per_tenant": "256MiB"}})
    a = b = None
    try:
        exe = program("ci_tenant")
        a = TenantClient(exe, shim, d.address)
        b = TenantClient(exe, shim, d.address)
        (pa,) = a.ok(f"malloc {192 * MiB}")
        assert a.do(f"malloc {96 * MiB}") == "err cudaErrorMemoryAllocation"
        (pb,) = b.ok(f"malloc {192 * MiB}")  # another tenant: its own quota
        assert pa == pb  # both windows start at the same address: same number, other memory
        a.ok(f"fill {pa} {MiB} 17")
        b.ok(f"fill {pb} {MiB} 99")
        assert a.ok(f"read {pa} {MiB}") == ["17", str(17 * MiB)]
        assert b.ok(f"read {pb} {MiB}") == ["99", str(99 * MiB)]
        a.ok(f"free {pa}")
        a.ok(f"malloc {96 * MiB}")  # freed memory counts again
    finally:
        for c in (a, b):
            if c:
                c.kill()
        d.stop()


def test_energy_on_the_gpu(program, shim, tmp_path, fc):
    pytest.importorskip("pynvml")
    from farcuda.interposer.cli import query_status
    d = fc.start_daemon(tmp_path, "cuda")
    c = None
    try:
        c = TenantClient(program("ci_tenant"), shim, d.address, {"FARCUDA_REPORT": "1"})
        c.ok("malloc 4096")
        c.ok("hold 2000")
        st = query_status(d.address, None)
        assert st["energy"]["available"], st["energy"]
        (tenant,) = st["tenants"]
        print(f"\nGPU power {st['gpus'][0].get('power_w')} W; tenant energy "
              f"{tenant['energy_j']:.1f} J over a 2 s hold")
        assert tenant["energy_j"] > 0
        rc, err = c.close()
        assert rc == 0
        (line,) = [ln for ln in err.splitlines() if "report:" in ln]
        assert float(line.rsplit("gpu_energy_j=", 1)[1]) > 0, line
    finally:
        if c:
            c.kill()
        d.stop()


def test_killed_client_frees_everything(program, shim, cuda_daemon, fc):
    exe = program("ci_tenant")
    before = gpu_memory_used()
    c = TenantClient(exe, shim, cuda_daemon.address)
    for _ in range(4):
        c.ok(f"malloc {1024 * MiB}")
    held = gpu_memory_used()
    assert held - before >= 4000 * MiB
    os.kill(c.pid, signal.SIGKILL)
    t0 = time.monotonic()
    c.kill()  # reaps it (the signal did the work)
    while gpu_memory_used() > before + 64 * MiB and time.monotonic() - t0 < 5:
        time.sleep(0.05)
    freed_after = time.monotonic() - t0
    print(f"\n4 GiB held, client killed: back to {gpu_memory_used() - before} bytes above the "
          f"start in {freed_after:.2f} s")
    assert freed_after < 2.0


def test_daemon_death_and_long_kernels(program, shim, tmp_path, fc):
    # a 6 s kernel under a 2 s liveness timeout: heartbeats keep it alive
    d = fc.start_daemon(tmp_path, "cuda")
    try:
        r = fc.run_remote(program("long_kernel"), shim, d.address, args=["6000"],
                          env={"FARCUDA_LIVENESS_TIMEOUT": "2"})
        assert r.returncode == 0 and r.stdout.split() == ["cudaSuccess", "42"], r.stderr
        # now the daemon dies while a call waits
        c = TenantClient(program("ci_tenant"), shim, d.address,
                         {"FARCUDA_LIVENESS_TIMEOUT": "2"})
        c.ok("malloc 4096")
        # the whole daemon dies at once: its worker processes, then the front
        subprocess.run(["pkill", "-9", "-P", str(d.proc.pid)], check=False)
        d.proc.kill()
        t0 = time.monotonic()
        got = c.do("sync", timeout=30)
        elapsed = time.monotonic() - t0
        assert got.startswith("err"), got
        assert elapsed < 2 + 1.5, elapsed
        # (the program wrote its line before the call returned; this process reads the
        # program's stderr in a thread of its own, which may not have got to it yet)
        deadline = time.monotonic() + 5
        while "farcuda:" not in c.stderr() and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = [ln for ln in c.stderr().splitlines() if ln.startswith("farcuda:")]
        assert len(lines) == 1, lines
        c.kill()
    finally:
        d.stop()
