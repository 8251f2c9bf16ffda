"""Virtual GPUs on the one physical GPU, and over two daemons; SM-budget devices.

multi_device uses every device it sees (one host thread each) and prints nothing that
depends on their number: its output through farcuda with 1, 2 and 4 virtual devices on one
GPU, and with devices spread over two daemons, must equal its native output on the GPU.
"""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("count", [1, 2, 4])
def test_multi_device_on_one_gpu(count, program, shim, cuda_daemon, fc):
    exe = program("multi_device")
    native = fc.run_native(exe)
    devices = ",".join([f"{cuda_daemon.address}/0"] * count)
    r = fc.run_remote(exe, shim, None, env={"FARCUDA_DEVICES": devices})
    assert (r.returncode, r.stdout) == (native.returncode, native.stdout), r.stderr


def test_devices_over_two_daemons(program, shim, cuda_daemon, tmp_path, fc):
    other = fc.start_daemon(tmp_path, "cuda")
    try:
        devices = f"{cuda_daemon.address}/0,{other.address}/0," * 2
        for name in ("multi_device", "ci_devices"):
            exe = program(name)
            r = fc.run_remote(exe, shim, None, env={"FARCUDA_DEVICES": devices.rstrip(",")})
            if name == "multi_device":
                assert (r.returncode, r.stdout) == (0, fc.run_native(exe).stdout), r.stderr
            else:  # peer copies (staged through the client across daemons) byte-exact
                assert r.returncode == 0 and "mismatches 0" in r.stdout, r.stdout + r.stderr
    finally:
        other.stop()


def test_sm_budget_reported_and_honoured(program, shim, cuda_daemon, fc):
    exe = program("sm_budget")
    a = cuda_daemon.address
    r = fc.run_remote(exe, shim, None, env={"FARCUDA_DEVICES": f"{a}/0@sm=8,{a}/0@sm=20"})
    assert r.returncode == 0, r.stdout + r.stderr
    rows = re.findall(r"device (\d): multiProcessorCount=(\d+) attribute=(\d+) sms_used=(\d+)",
                      r.stdout)
    assert [(int(c), int(at)) for _, c, at, _ in rows] == [(8, 8), (24, 24)], r.stdout
    assert int(rows[0][3]) <= 8 and int(rows[1][3]) <= 24, r.stdout
    assert "disjoint=yes" in r.stdout


@pytest.mark.parametrize("name", ["streams_events", "callbacks", "ci_streams", "vector_add"])
def test_stream_order_on_an_sm_budget(name, program, shim, cuda_daemon, fc):
    """An SM-budget device is a green context, whose NULL stream does not order itself with
    blocking streams as the legacy default stream must (the daemon restores the order with
    events): programs that mix the default stream and created streams give their native
    output on it."""
    exe = program(name)
    native = fc.run_native(exe)
    r = fc.run_remote(exe, shim, None, env={"FARCUDA_DEVICES": f"{cuda_daemon.address}/0@sm=16"})
    assert (r.returncode, r.stdout) == (native.returncode, native.stdout), r.stderr
