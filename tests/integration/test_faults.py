"""A kernel fault is never silent: against the in-memory backend, a kernel configured to fault
does as a faulting kernel does on a GPU (the error surfaces at the next synchronization and
the context is unusable), and the client, the daemon's log and `farcuda status` say which
kernel broke which device, once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

FAULTS = {"fault_kernels": {"wild_write": "cudaErrorIllegalAddress"}}
# the third launch of tests/programs/fault.cu, the only one since the last good synchronization
CULPRIT = "kernel wild_write(int*, long long) (launch 3)"


@pytest.fixture
def faulting_daemon(tmp_path, fc):
    d = fc.start_daemon(tmp_path, "memory", backend_options=FAULTS)
    yield d
    d.stop()


@pytest.mark.parametrize("mode", ["preload", "dropin"])
def test_fault_is_reported_once(mode, program, shim, faulting_daemon, fc):
    r = fc.run_remote(program("fault"), shim, faulting_daemon.address, mode=mode)
    assert r.returncode == 3, r.stdout + r.stderr
    # (kernels do not run on the in-memory backend: the copy reads what cudaMalloc gave)
    assert r.stdout.splitlines() == [
        "malloc: cudaSuccess", "fine: cudaSuccess", "copy: cudaSuccess 0 0",
        "fine again: cudaSuccess",
        "after wild_write: cudaErrorIllegalAddress", "get last error: cudaErrorIllegalAddress",
        "malloc after: cudaErrorIllegalAddress", "copy after: cudaErrorIllegalAddress",
        "launch after: cudaErrorIllegalAddress", "sync after: cudaErrorIllegalAddress",
        "FAULTED"], r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("farcuda:")]
    assert len(lines) == 1, r.stderr
    assert lines[0] == (
        f"farcuda: device 0 ({faulting_daemon.address}/0): {CULPRIT} failed with "
        "cudaErrorIllegalAddress (an illegal memory access was encountered); the device is "
        "unusable from now on: every later call on it fails"), lines[0]
    deadline = time.monotonic() + 10
    while "wild_write" not in faulting_daemon.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (f"device 0: {CULPRIT} failed with cudaErrorIllegalAddress; its context is "
            "unusable") in faulting_daemon.log()


def test_status_shows_the_dead_device(program, shim, faulting_daemon, fc):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA_")}
    env.update(LD_PRELOAD=str(shim), FARCUDA_SERVER=faulting_daemon.address)
    p = subprocess.Popen([str(program("fault")), "30"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in p.stdout:
            if line.strip() == "holding":
                break
        else:
            pytest.fail(f"the program ended early: {p.stderr.read()}")
        cli = [sys.executable, "-m", "farcuda.interposer.cli", "status", "--server",
               faulting_daemon.address]
        st = json.loads(subprocess.run(cli + ["--json"], capture_output=True, text=True,
                                       check=True).stdout)
        (tenant,) = st[faulting_daemon.address]["tenants"]
        dead = tenant["devices"]["0"]["dead"]
        assert dead["error"] == "cudaErrorIllegalAddress" and dead["status"] == 700
        assert dead["culprit"] == CULPRIT
        text = subprocess.run(cli, capture_output=True, text=True, check=True).stdout
        assert "devices=[0->gpu0 DEAD]" in text, text
        assert (f"device 0 is unusable: {CULPRIT} failed with cudaErrorIllegalAddress"
                in text), text
    finally:
        p.kill()
        p.wait()
        p.stdout.close()
        p.stderr.close()


def test_a_healthy_program_says_nothing(program, shim, faulting_daemon, fc):
    """The same daemon, a program that launches no faulting kernel: no fault, no line."""
    r = fc.run_remote(program("ci_launch"), shim, faulting_daemon.address)
    assert r.returncode == 0, r.stderr
    assert "unusable" not in r.stderr and "failed with" not in r.stderr
