"""The driver layer (farcuda's libcuda.so.1) under unmodified static-runtime programs, against a
daemon with the in-memory backend.

nvcc's default, ``-cudart static``, links NVIDIA's runtime into the program: it dlopens
libcuda.so.1, resolves every entry point through cuGetProcAddress, asks for the export tables
(and checks the driver's integrity answer), then works through the driver API. The CI
programs of tests/programs, built so, must pass the same byte-exact checks as through the
runtime shim (tests/integration/test_shim_memory.py), with nothing of the shim loaded.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

EXPECTED_LAUNCH = Path(__file__).resolve().parent.parent / "programs" / "ci_launch.expected.json"


def _match_hex(expected: str, got: str) -> None:
    assert len(expected) == len(got), (expected, got)
    for i in range(0, len(expected), 2):
        e = expected[i:i + 2]
        if e != "??":
            assert e == got[i:i + 2], f"byte {i // 2}: expected {e}, got {got[i:i + 2]}"


def test_memory_round_trips(program, driver, shared_memory_daemon, fc):
    r = fc.run_driver(program("ci_memory", static=True), driver, shared_memory_daemon.address)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASSED" in r.stdout
    assert "equal: no" not in r.stdout
    assert "farcuda:" not in r.stderr, r.stderr


def test_memcpy3d(program, driver, shared_memory_daemon, fc):
    """3D copies and sets of linear memory (tests/programs/ci_memcpy3d.cu) through the static
    runtime's cuMemcpy3D and 2D sets: the same lines as through the runtime shim."""
    r = fc.run_driver(program("ci_memcpy3d", static=True), driver, shared_memory_daemon.address)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == [
        "malloc3d: pitched volumes", "memset3d: whole volume equal",
        "memcpy3d: host to device and back equal", "memcpy3d: box device to device equal",
        "memcpy3d async: pinned box equal", "memset3d async: box equal",
        "memcpy3d default: equal", "memcpy3d(NULL): cudaErrorInvalidValue", "PASSED"]
    assert "farcuda:" not in r.stderr, r.stderr


def test_launch_marshalling(program, driver, memory_daemon, fc):
    """Every launch reaches the daemon with exactly the parameter bytes the ABI prescribes:
    the layouts the daemon answered cuModuleGetFunction with, packed from kernelParams."""
    r = fc.run_driver(program("ci_launch", static=True), driver, memory_daemon.address)
    assert r.returncode == 0, r.stdout + r.stderr
    expected = json.loads(EXPECTED_LAUNCH.read_text())
    launches = expected["launches"] if isinstance(expected, dict) else expected
    deadline = time.monotonic() + 5
    got = memory_daemon.launches()
    while len(got) < len(launches) and time.monotonic() < deadline:
        time.sleep(0.05)
        got = memory_daemon.launches()
    assert len(got) == len(launches)
    streams = set()
    for want, have in zip(launches, got, strict=True):
        assert have["kernel"] == want["mangled"]
        assert list(want["grid"]) == have["grid"]
        assert list(want["block"]) == have["block"]
        assert want["shared_bytes"] == have["shmem"]
        assert (have["stream"] == 0) == (want["stream"] == "default")
        if want["stream"] == "created":
            streams.add(have["stream"])
        _match_hex(want["params_hex"], have["params"])
        for p in want["params"]:
            if "pointer" in p:  # a device pointer: it lies in the client's address window
                off = p["offset"]
                ptr = int.from_bytes(bytes.fromhex(have["params"][2 * off:2 * off + 16]),
                                     "little")
                assert 0x200000000000 <= ptr < 0x300000000000, hex(ptr)
    assert len(streams) == 1


def test_stream_order_and_async_copies(program, driver, shared_memory_daemon, fc):
    r = fc.run_driver(program("ci_streams", static=True), driver, shared_memory_daemon.address)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1] == "PASSED", r.stdout
    assert "last error: cudaSuccess" in r.stdout


def test_devices(program, driver, shared_memory_daemon, fc):
    r = fc.run_driver(program("ci_devices", static=True), driver, shared_memory_daemon.address)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASSED" in r.stdout


def test_no_server_configured(program, driver, fc):
    """Nothing configured: the program's first CUDA call fails, and farcuda says why in one
    line naming the variables."""
    r = fc.run_driver(program("ci_memory", static=True), driver, None)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("farcuda:")]
    assert len(lines) == 1 and "FARCUDA_SERVER" in lines[0], r.stderr


def test_unreachable_server_fails_fast(program, driver, fc):
    t0 = time.monotonic()
    r = fc.run_driver(program("ci_memory", static=True), driver, "127.0.0.1:9",
                      env={"FARCUDA_CONNECT_TIMEOUT": "2"})
    assert time.monotonic() - t0 < 2 + 1.5
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("farcuda:")]
    assert len(lines) == 1 and "127.0.0.1:9" in lines[0] and "FARCUDA_SERVER" in lines[0], \
        r.stderr


def test_token_required(program, driver, tmp_path, fc):
    """The handshake in C proves FARCUDA_TOKEN as the Python client does (HMAC-SHA256 over
    the daemon's challenge): right token in, wrong or missing token out."""
    d = fc.start_daemon(tmp_path, "memory", config={"auth": {"tokens": {"ci": "s3cret"}}})
    try:
        exe = program("ci_devices", static=True)
        ok = fc.run_driver(exe, driver, d.address, env={"FARCUDA_TOKEN": "s3cret"})
        assert ok.returncode == 0 and "PASSED" in ok.stdout, ok.stdout + ok.stderr
        bad = fc.run_driver(exe, driver, d.address, env={"FARCUDA_TOKEN": "wrong"})
        assert bad.returncode != 0
        assert "refused this client" in bad.stderr, bad.stderr
        none = fc.run_driver(exe, driver, d.address)
        assert none.returncode != 0
        assert "requires a token: set FARCUDA_TOKEN" in none.stderr, none.stderr
    finally:
        d.stop()


_BIG_MODULE = r"""
#include <cstdio>
#include <cuda_runtime.h>
// initialized device data makes the module's image large (300 kB)
__device__ unsigned char big[300000] = {7, 1, 2, 3};
__global__ void touch(unsigned char *out) { out[threadIdx.x] = big[threadIdx.x]; }
int main() {
  unsigned char h[4] = {0};
  cudaError_t e = cudaMemcpyFromSymbol(h, big, 4);
  printf("%s %d %d\n", cudaGetErrorName(e), h[0], h[3]);
  return e != cudaSuccess;
}
"""


def test_module_cache(driver, memory_daemon, tmp_path, fc):
    """An image crosses the link once per server: a second process's lookup by hash finds
    it in the daemon's module cache, and its bytes are not sent again."""
    nvcc = fc.programs_build.nvcc_path()
    if not nvcc.exists():
        pytest.skip("nvcc not found")
    src = tmp_path / "big.cu"
    src.write_text(_BIG_MODULE)
    exe = tmp_path / "big"
    subprocess.run([str(nvcc), "-cudart", "static", "-arch=sm_90", "-o", str(exe), str(src)],
                   check=True)
    sent = []
    for _ in range(2):
        r = fc.run_driver(exe, driver, memory_daemon.address, env={"FARCUDA_REPORT": "1"})
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.split() == ["cudaSuccess", "7", "3"], r.stdout
        report = [ln for ln in r.stderr.splitlines() if "report:" in ln][0]
        sent.append(int(report.split("bytes_to_server=")[1].split()[0]))
    assert sent[0] > 300000 > sent[1], sent
    deadline = time.monotonic() + 10  # the worker logs its counts once the client is gone
    while "'module cache hits': 1" not in memory_daemon.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "'module cache hits': 1" in memory_daemon.log(), memory_daemon.log()[-2000:]


@pytest.mark.parametrize("name", ["vector_add", "struct_args", "scalar_params", "launch_api"])
def test_more_programs_run(name, program, driver, shared_memory_daemon, fc):
    """Programs whose output needs no kernel execution to be right still have to get through
    every call they make (the in-memory backend runs no kernels: their results are not
    checked here, only that no call fails)."""
    r = fc.run_driver(program(name, static=True), driver, shared_memory_daemon.address)
    assert "not implemented" not in r.stderr, r.stderr
    assert "NotSupported" not in r.stdout, r.stdout


def test_every_entry_point_the_runtime_asks_for(program, driver, shared_memory_daemon, fc):
    """What this machine's CUDA 13.0 static runtime asks cuGetProcAddress for, every name and
    version, is answered (only its first, empty-name probe is not a symbol); and it is no
    more than the committed list taken on the GPU machine already holds."""
    r = fc.run_driver(program("ci_devices", static=True), driver, shared_memory_daemon.address,
                      env={"FARCUDA_TRACE_DRIVER": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    asked = [ln.partition("trace: cuGetProcAddress ")[2] for ln in r.stderr.splitlines()
             if "trace: cuGetProcAddress" in ln]
    assert len(asked) > 400
    answered = [a for a in asked if a.endswith("-> 0 status 0")]
    assert len(asked) - len(answered) == 1 and " 0 0 -> 0 status 1" in asked[0], \
        [a for a in asked if not a.endswith("-> 0 status 0")]
    data = Path(__file__).resolve().parents[1] / "data" / "cuda-13.0-runtime-requests.txt"
    known = {tuple(ln.split()) for ln in data.read_text().splitlines()
             if ln and not ln.startswith("#")}
    seen = {tuple(a.split(" -> ")[0].split()) for a in answered}
    assert seen <= known, sorted(seen - known)[:10]
    tables = [ln.split()[-1] for ln in r.stderr.splitlines() if "trace: cuGetExportTable" in ln]
    assert tables == ["f8cff951-2146-8b4e-b9e2-fb469e7c0dd9",
                      "6bd5fb6c-5bf4-e74a-8987-d93912fd9df9",
                      "a094798c-2e74-2e74-93f2-0800200c0a66",
                      "42d85a81-23f6-cb47-8298-f6e78a3aecdc",
                      "c693336e-1121-df11-a8c3-68f355d89593",
                      "263e8860-7cd2-6143-92f6-bbd5006dfa7e",
                      "d4082055-bde6-704b-8d34-ba123c66e1f2"]
    assert [ln.split()[-1] for ln in r.stderr.splitlines() if "integrity check" in ln] == \
        ["13000", "13001", "13002"]


def _shim_pools_test():
    import importlib.util
    path = Path(__file__).resolve().parent / "test_shim_pools.py"
    spec = importlib.util.spec_from_file_location("farcuda_test_shim_pools", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_captured_graph_with_host_copies(program, driver, shared_memory_daemon, fc):
    """Host memory in a captured graph is read and written at each replay, not at capture."""
    r = fc.run_driver(program("ci_graph", static=True), driver, shared_memory_daemon.address)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "graph nodes: 4 (memcpy 3, memset 1)" in r.stdout
    assert "replays 3, mismatches 0" in r.stdout


def test_pools(program, driver, memory_daemon, fc):
    """Stream-ordered allocation and pools, the same transcript as through the runtime shim;
    the same refusals, in the driver's words."""
    pools = _shim_pools_test()
    r = fc.run_driver(program("ci_pool", static=True), driver, memory_daemon.address)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == pools.TRANSCRIPT, r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("farcuda:")]
    assert len(lines) == len(pools.REFUSALS), r.stderr
    for what in pools.REFUSALS:
        assert sum(what in ln for ln in lines) == 1, r.stderr


def test_pools_across_devices_and_servers(tmp_path, program, driver, fc):
    """Devices 0 and 1 are one GPU of one server, device 2 another GPU of it, device 3 a GPU
    of another server: the driver layer's device map and peers, as the shim's."""
    a = fc.start_daemon(tmp_path, "memory", backend_options={"gpus": 2})
    b = fc.start_daemon(tmp_path, "memory")
    try:
        devices = f"{a.address}/0,{a.address}/0,{a.address}/1,{b.address}/0"
        r = fc.run_driver(program("ci_pool", static=True), driver, None,
                          env={"FARCUDA_DEVICES": devices})
        assert r.returncode == 0, r.stdout + r.stderr
        assert "devices: 4" in r.stdout
        granted = {1: "cudaSuccess, access now 3", 2: "cudaErrorNotSupported, access now 0",
                   3: "cudaErrorNotSupported, access now 0"}
        for dev, what in granted.items():
            assert f"device {dev}: grant read/write: {what}\n" in r.stdout, r.stdout
            assert (f"device {dev}: its pool on a stream of device 0: equal, used after the "
                    "free 0\n") in r.stdout, r.stdout
        assert r.stdout.endswith("pause end\nPASSED\n")
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize("name", ["ci_memory", "ci_launch", "ci_streams", "ci_graph"])
def test_real_runtime_on_the_driver_layer(name, program, driver, shared_memory_daemon, fc):
    """NVIDIA's own shared libcudart.so.13 (what PyTorch and CuPy load) on farcuda's driver
    layer: a -cudart shared program passes with the runtime shim nowhere in the process."""
    cuda_lib = fc.programs_build.cuda_home() / "lib64"
    if not (cuda_lib / "libcudart.so.13").exists():
        pytest.skip("no libcudart.so.13 of the CUDA toolkit here")
    r = fc.run_driver(program(name), driver, shared_memory_daemon.address,
                      env={"LD_LIBRARY_PATH": f"{driver}:{cuda_lib}"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASSED" in r.stdout or "launched 8" in r.stdout, r.stdout


def test_ci_graph_nodes_static(program, driver, memory_daemon, fc):
    """tests/programs/ci_graph_nodes.cu, static: a graph built node by node through the
    runtime's graph API and cudaGraphAddNode reaches the driver layer's (memset, memcpy with
    host memory on one side, event record and wait, child graph, empty and kernel nodes, a
    dependency on a node added later), every byte checked at each launch; kernel node
    parameters read back, a clone, cudaGraphExecUpdate of built and of captured graphs."""
    r = fc.run_driver(program("ci_graph_nodes", static=True), driver, memory_daemon.address)
    fc.check_ci_graph_nodes(r, memory_daemon)


def test_graph_built_node_by_node(program, driver, memory_daemon, fc):
    """tests/programs/graph_nodes.cu, static: the runtime's explicit graph API reaches the
    driver layer's (cudaGraphAdd*Node, cudaGraphExecKernelNodeSetParams, cudaGraphClone).
    This backend runs no kernels, so the program's own checks fail here; every launch of the
    graph's kernels reaches the daemon, in dependency order, with the arguments of each
    moment."""
    r = fc.run_driver(program("graph_nodes", static=True), driver, memory_daemon.address)
    fc.check_graph_nodes(r, memory_daemon)
