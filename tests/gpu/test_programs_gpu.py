"""Unmodified CUDA programs, natively and through farcuda on the same GPU: same output.

Each program of tests/programs runs natively, then through farcuda with the shim preloaded
and with the shim as the libcudart found on LD_LIBRARY_PATH; stdout and the exit status must
be identical, and the native run must itself have succeeded (its expected exit status). The
farcuda runs cannot open a GPU of this machine (a mount namespace where every /dev/nvidia*
is /dev/null) and must never map libcuda.so.1 or a real libcudart.
"""

from __future__ import annotations

import difflib
import re

import pytest

pytestmark = pytest.mark.gpu

PROGRAMS = [
    "vector_add",
    "matmul_tiled",
    "symbols",
    "struct_args",
    "errors",
    "device_props",
    "memory",
    "launch_api",
    "streams_events",
    "callbacks",
    "printf_assert",
    "graph",
    "graph_nodes",
    "stream_alloc",
    "cooperative",
    "device_malloc",
    "multi_device",
    "threads",
    "ci_memory",
    "ci_memcpy3d",
    "ci_launch",
    "ci_graph",
    "ci_graph_nodes",
    "ci_queries",
    "ci_suballoc",
    "ci_devices",
    "ci_streams",
    # reads just outside allocations, copies at the size limits, host/device alternation,
    # scalars after pointers, deliberate uninitialised reads, and a kernel fault
    "oob",
    "d2h_iter",
    "stencil_borders",
    "alloc_borders",
    "copy_limits",
    "host_device_loop",
    "scalar_params",
    "uninit_reads",
    "fault",
]

# The exit status a successful native run has (0 unless listed).
NATIVE_STATUS = {"fault": 3}
# Programs that print device addresses (natively and remotely they differ): compared with
# every address replaced.
PRINTS_ADDRESSES = {"oob"}
_ADDRESS = re.compile(r"0x[0-9a-f]{6,}")


@pytest.mark.parametrize("mode", ["preload", "dropin"])
@pytest.mark.parametrize("name", PROGRAMS)
def test_same_output(name, mode, program, shim, cuda_daemon, tmp_path, fc):
    exe = program(name)
    native = fc.run_native(exe)
    assert native.returncode == NATIVE_STATUS.get(name, 0), (
        f"the native run of {name} failed (exit {native.returncode}):\n{native.stdout[-2000:]}"
        f"\n{native.stderr[-2000:]}")
    maps = tmp_path / "maps.txt"
    remote = fc.run_remote(
        exe, shim, cuda_daemon.address, mode=mode, env={"FARCUDA_MAPS_FILE": str(maps)},
        isolated=fc.can_isolate()
    )
    want, got = native.stdout, remote.stdout
    if name in PRINTS_ADDRESSES:
        want, got = _ADDRESS.sub("ADDR", want), _ADDRESS.sub("ADDR", got)
    if got != want:
        diff = "\n".join(
            difflib.unified_diff(
                want.splitlines(),
                got.splitlines(),
                "native",
                "farcuda",
                lineterm="",
                n=1,
            )
        )
        pytest.fail(
            f"{name} ({mode}) differs (exit {remote.returncode}):\n{diff}\n--- farcuda stderr\n"
            f"{remote.stderr[-3000:]}\n--- daemon log (end)\n{cuda_daemon.log()[-3000:]}",
            pytrace=False,
        )
    assert remote.returncode == native.returncode, remote.stderr
    if name == "fault":  # the user learns which kernel broke the device, once
        said = [ln for ln in remote.stderr.splitlines() if "unusable from now on" in ln]
        assert len(said) == 1 and "kernel wild_write(int*, long long) (launch 3) failed with " \
            "cudaErrorIllegalAddress" in said[0], remote.stderr
    mapped = maps.read_text()
    assert "libcuda.so" not in mapped
    real = [
        ln
        for ln in mapped.splitlines()
        if re.search(r"libcudart\.so", ln) and str(shim.parent) not in ln
    ]
    assert not real, real


def test_mapped_memory_is_refused_clearly(program, shim, cuda_daemon, fc):
    """Zero-copy access to the client's memory is refused, never silently wrong."""
    exe = program("mapped")
    assert "PASSED" in fc.run_native(exe).stdout
    r = fc.run_remote(exe, shim, cuda_daemon.address)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout.splitlines() == ["mapped", "cudaHostGetDevicePointer -> cudaErrorNotSupported",
                                     "launch with the host pointer -> cudaErrorNotSupported",
                                     "REFUSED"], r.stdout
    assert sum("zero-copy" in ln for ln in r.stderr.splitlines()) == 2, r.stderr


def test_compressed_fatbin(program, shim, cuda_daemon, fc):
    exe = program("matmul_tiled", compressed=True)
    native = fc.run_native(exe)
    assert native.returncode == 0 and "PASSED" in native.stdout, native.stdout + native.stderr
    remote = fc.run_remote(exe, shim, cuda_daemon.address)
    assert (remote.returncode, remote.stdout) == (native.returncode, native.stdout)


def test_daemon_counts_calls(program, shim, tmp_path, fc):
    """The work went through the daemon: its per-call counters match the program's calls."""
    d = fc.start_daemon(tmp_path, "cuda")
    try:
        exe = program("ci_launch")
        r = fc.run_remote(exe, shim, d.address)
        assert r.returncode == 0, r.stderr
    finally:
        d.stop()
    counts = [ln for ln in d.log().splitlines() if "counts=" in ln]
    assert counts, d.log()[-2000:]
    launches = re.search(r"'LAUNCH': (\d+)", counts[-1])
    assert launches and int(launches.group(1)) == 8, counts[-1]
