"""Virtual GPUs on the one physical GPU, and over two daemons; SM-budget devices.

A session's virtual devices on one GPU share its context (each with streams of its own, its
own emulated legacy default stream, memory and modules): programs give their native output
through 1, 2 and 4 of them, and kernels of two of them run side by side. multi_device uses
every device it sees (one host thread each) and prints nothing that depends on their number;
the single-device programs run on device 0 beside idle virtual devices of the same context.
Every comparison with a native run first checks that the native run succeeded.
"""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.gpu

# single-device programs whose stream order (legacy default stream, blocking and
# non-blocking streams, callbacks, graphs, stream-ordered memory) a shared context emulates
ONE_DEVICE = ["streams_events", "callbacks", "ci_streams", "vector_add", "graph", "stream_alloc",
              "host_device_loop", "threads", "printf_assert", "symbols"]


def native_ok(fc, exe):
    native = fc.run_native(exe)
    assert native.returncode == 0, (
        f"the native run of {exe.name} failed (exit {native.returncode}):\n"
        f"{native.stdout[-2000:]}\n{native.stderr[-2000:]}")
    return native


def on_one_gpu(daemon, count: int, suffix: str = "") -> dict[str, str]:
    return {"FARCUDA_DEVICES": ",".join([f"{daemon.address}/0{suffix}"] * count)}


@pytest.mark.parametrize("count", [1, 2, 4])
def test_multi_device_on_one_gpu(count, program, shim, cuda_daemon, fc):
    exe = program("multi_device")
    native = native_ok(fc, exe)
    r = fc.run_remote(exe, shim, None, env=on_one_gpu(cuda_daemon, count))
    assert (r.returncode, r.stdout) == (native.returncode, native.stdout), r.stderr


@pytest.mark.parametrize("count", [1, 2, 4])
@pytest.mark.parametrize("name", ONE_DEVICE)
def test_programs_beside_other_virtual_devices(name, count, program, shim, cuda_daemon, fc):
    exe = program(name)
    native = native_ok(fc, exe)
    r = fc.run_remote(exe, shim, None, env=on_one_gpu(cuda_daemon, count))
    assert (r.returncode, r.stdout) == (native.returncode, native.stdout), (
        r.stderr[-3000:] + "\n--- daemon log (end)\n" + cuda_daemon.log()[-3000:])


@pytest.mark.parametrize("count", [2, 4])
def test_peer_copies_between_virtual_devices_of_one_gpu(count, program, shim, cuda_daemon, fc):
    r = fc.run_remote(program("ci_devices"), shim, None, env=on_one_gpu(cuda_daemon, count))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"devices {count}" in r.stdout and "mismatches 0" in r.stdout, r.stdout


def _overlap(r) -> float:
    assert r.returncode == 0 and "PASSED" in r.stdout, r.stdout + r.stderr
    m = re.search(r"devices (\d+) iters (\d+) alone_ms ([\d.]+) together_ms ([\d.]+) "
                  r"ratio ([\d.]+)", r.stdout)
    assert m, r.stdout
    return float(m.group(5))


@pytest.mark.parametrize("count", [2, 4])
def test_kernels_of_virtual_devices_of_one_gpu_overlap(count, program, shim, cuda_daemon, fc):
    """One-block kernels of a fixed amount of work (150 ms or more alone) on 2 and 4 virtual
    devices of one GPU at once finish in about the time of one, not count times it (separate
    contexts on one GPU take turns: about count times)."""
    exe = program("vdev_overlap")
    native_ok(fc, exe)  # (one physical device natively: the program itself works)
    r = fc.run_remote(exe, shim, None, env=on_one_gpu(cuda_daemon, count))
    ratio = _overlap(r)
    assert ratio < 1.5, f"{count} virtual devices took {ratio:.2f}x one alone:\n{r.stdout}"


def test_kernels_of_sm_budget_devices_overlap(program, shim, cuda_daemon, fc):
    """Two SM-budget devices are green contexts on disjoint SMs: their kernels run at once."""
    r = fc.run_remote(program("vdev_overlap"), shim, None,
                      env=on_one_gpu(cuda_daemon, 2, "@sm=8"))
    ratio = _overlap(r)
    assert ratio < 1.5, f"two 8-SM devices took {ratio:.2f}x one alone:\n{r.stdout}"


def test_devices_over_two_daemons(program, shim, cuda_daemon, tmp_path, fc):
    other = fc.start_daemon(tmp_path, "cuda")
    try:
        devices = f"{cuda_daemon.address}/0,{other.address}/0," * 2
        for name in ("multi_device", "ci_devices"):
            exe = program(name)
            r = fc.run_remote(exe, shim, None, env={"FARCUDA_DEVICES": devices.rstrip(",")})
            if name == "multi_device":
                assert (r.returncode, r.stdout) == (0, native_ok(fc, exe).stdout), r.stderr
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


def test_budgeted_and_whole_devices_side_by_side(program, shim, cuda_daemon, fc):
    """Virtual devices of the whole GPU (one shared context) and an SM-budget one (a green
    context) in one program: multi_device's native output."""
    exe = program("multi_device")
    native = native_ok(fc, exe)
    a = cuda_daemon.address
    r = fc.run_remote(exe, shim, None, env={"FARCUDA_DEVICES": f"{a}/0,{a}/0@sm=16,{a}/0"})
    assert (r.returncode, r.stdout) == (native.returncode, native.stdout), r.stderr


@pytest.mark.parametrize("name", ["streams_events", "callbacks", "ci_streams", "vector_add"])
def test_stream_order_on_an_sm_budget(name, program, shim, cuda_daemon, fc):
    """An SM-budget device is a green context, whose NULL stream does not order itself with
    blocking streams as the legacy default stream must (the daemon restores the order with
    events): programs that mix the default stream and created streams give their native
    output on it."""
    exe = program(name)
    native = native_ok(fc, exe)
    r = fc.run_remote(exe, shim, None, env={"FARCUDA_DEVICES": f"{cuda_daemon.address}/0@sm=16"})
    assert (r.returncode, r.stdout) == (native.returncode, native.stdout), r.stderr
