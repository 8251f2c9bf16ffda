"""The shim loaded into real nvcc-built programs, against a daemon with the in-memory backend.

Both ways of loading it (LD_PRELOAD, and as the libcudart on LD_LIBRARY_PATH) run the CI
programs of tests/programs: memory round trips must be byte-exact, and every kernel launch
must reach the daemon with exactly the parameter bytes the CUDA ABI prescribes.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

EXPECTED_LAUNCH = Path(__file__).resolve().parent.parent / "programs" / "ci_launch.expected.json"


@pytest.mark.parametrize("mode", ["preload", "dropin"])
def test_memory_round_trips(mode, program, shim, memory_daemon, fc):
    r = fc.run_remote(program("ci_memory"), shim, memory_daemon.address, mode=mode)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASSED" in r.stdout
    assert "equal: no" not in r.stdout


@pytest.mark.parametrize("mode", ["preload", "dropin"])
def test_ci_memcpy3d(mode, program, shim, memory_daemon, fc):
    """3D copies and sets of linear memory (tests/programs/ci_memcpy3d.cu): whole volumes in
    one 2D operation, boxes slice by slice, checked against a model on the host."""
    r = fc.run_remote(program("ci_memcpy3d"), shim, memory_daemon.address, mode=mode)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == [
        "malloc3d: pitched volumes", "memset3d: whole volume equal",
        "memcpy3d: host to device and back equal", "memcpy3d: box device to device equal",
        "memcpy3d async: pinned box equal", "memset3d async: box equal",
        "memcpy3d default: equal", "memcpy3d(NULL): cudaErrorInvalidValue", "PASSED"]
    assert "farcuda:" not in r.stderr, r.stderr  # nothing refused or unsupported on the way


_REFUSALS_3D = r"""
#include <stdio.h>
#include <cuda_runtime_api.h>
#include <driver_functions.h>
static void say(const char *what, cudaError_t e) { printf("%s: %s\n", what, cudaGetErrorName(e)); }
int main(void) {
    void *dev;
    size_t pitch;
    if (cudaMallocPitch(&dev, &pitch, 64, 8)) return 1;
    static char host[64 * 8];
    struct cudaMemcpy3DParms p = {0};
    p.srcPtr = make_cudaPitchedPtr(host, 64, 64, 8);
    p.dstPtr = make_cudaPitchedPtr(dev, pitch, 64, 8);
    p.extent = make_cudaExtent(64, 8, 1);
    p.kind = cudaMemcpyHostToDevice;
    say("linear", cudaMemcpy3D(&p));
    struct cudaMemcpy3DParms q = p;
    q.extent = make_cudaExtent(0, 8, 1);
    say("empty", cudaMemcpy3D(&q));
    q = p;
    q.extent = make_cudaExtent(65, 8, 1);
    say("wider than the pitch", cudaMemcpy3D(&q));
    q = p;
    q.srcPos = make_cudaPos(1, 0, 0);
    say("past the row", cudaMemcpy3D(&q));
    q = p;
    q.extent = make_cudaExtent(64, 8, 2);
    say("past the allocation", cudaMemcpy3D(&q));
    q = p;
    q.extent = make_cudaExtent(64, 9, 2);
    say("slices taller than ysize", cudaMemcpy3D(&q));
    q = p;
    q.srcArray = (cudaArray_t)0x1000;
    say("array and pointer", cudaMemcpy3D(&q));
    q.srcPtr.ptr = NULL;
    say("array", cudaMemcpy3D(&q));
    say("array again", cudaMemcpy3DAsync(&q, 0));
    void *fn = (void *)1;
    say("driver entry point", cudaGetDriverEntryPoint("cuInit", &fn, 0, NULL));
    return 0;
}
"""


def test_memcpy3d_refusals(shim, memory_daemon, fc, tmp_path, has_tool):
    """What a 3D copy refuses, with the error CUDA gives, and the reasons said once on
    stderr: arrays (farcuda makes none) and the driver API's entry points."""
    include = Path("/usr/local/cuda/include")
    if not (include / "cuda_runtime_api.h").exists() or not has_tool("gcc"):
        pytest.skip("needs the CUDA 13 headers and gcc")
    src = tmp_path / "refusals.c"
    src.write_text(_REFUSALS_3D)
    exe = tmp_path / "refusals"
    subprocess.run(["gcc", "-Wno-deprecated-declarations", "-o", str(exe), str(src),
                    f"-I{include}", str(shim)], check=True)
    r = fc.run_remote(exe, shim, memory_daemon.address, mode="dropin")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == [
        "linear: cudaSuccess", "empty: cudaSuccess",
        "wider than the pitch: cudaErrorInvalidPitchValue",
        "past the row: cudaErrorInvalidValue",
        "past the allocation: cudaErrorInvalidValue",
        "slices taller than ysize: cudaErrorInvalidValue",
        "array and pointer: cudaErrorInvalidValue",
        "array: cudaErrorNotSupported", "array again: cudaErrorNotSupported",
        "driver entry point: cudaErrorNotSupported"]
    said = [ln for ln in r.stderr.splitlines() if ln.startswith("farcuda:")]
    assert len(said) == 2, r.stderr
    assert "CUDA arrays are not supported" in said[0]
    assert "cudaGetDriverEntryPoint" in said[1] and "driver API" in said[1]


def _match_hex(expected: str, got: str) -> None:
    assert len(expected) == len(got), (expected, got)
    for i in range(0, len(expected), 2):
        e = expected[i:i + 2]
        if e != "??":
            assert e == got[i:i + 2], f"byte {i // 2}: expected {e}, got {got[i:i + 2]}"


@pytest.mark.parametrize("mode", ["preload", "dropin"])
def test_launch_marshalling(mode, program, shim, memory_daemon, fc):
    exe = program("ci_launch")
    r = fc.run_remote(exe, shim, memory_daemon.address, mode=mode)
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


def test_no_server_configured(program, shim, fc):
    r = fc.run_remote(program("ci_memory"), shim, None)
    assert r.returncode != 0
    assert "FARCUDA_SERVER" in r.stderr
    assert r.stderr.count("farcuda:") == 1, r.stderr


def test_unreachable_server_fails_fast(program, shim, fc):
    exe = program("ci_memory")
    t0 = time.monotonic()
    r = fc.run_remote(exe, shim, "127.0.0.1:9", env={"FARCUDA_CONNECT_TIMEOUT": "2"})
    elapsed = time.monotonic() - t0
    assert r.returncode != 0
    assert elapsed < 2 + 1.5
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("farcuda:")]
    assert len(lines) == 1 and "127.0.0.1:9" in lines[0] and "FARCUDA_SERVER" in lines[0], \
        r.stderr
    assert "cudaErrorDevicesUnavailable" in r.stdout or "cudaErrorNoDevice" in r.stdout, r.stdout


def test_blackholed_server_times_out(program, shim, fc):
    """A server that never answers: the call fails within the connect timeout plus a second."""
    exe = program("ci_memory")
    t0 = time.monotonic()
    # 10.255.255.1 is not routed from the test machines: the connect never completes
    r = fc.run_remote(exe, shim, "10.255.255.1:7420", env={"FARCUDA_CONNECT_TIMEOUT": "1.5"})
    assert time.monotonic() - t0 < 1.5 + 1.5
    assert r.returncode != 0


def test_unsupported_call_is_named_once(tmp_path, shim, memory_daemon, fc):
    src = tmp_path / "managed.cu"
    src.write_text(r'''
#include <cstdio>
#include <cuda_runtime.h>
int main() {
  void *p = nullptr;
  for (int i = 0; i < 3; i++) {
    cudaError_t e = cudaMallocManaged(&p, 64);
    printf("%s\n", cudaGetErrorName(e));
  }
  return 0;
}
''')
    exe = tmp_path / "managed"
    nvcc = fc.programs_build.nvcc_path()
    if not nvcc.exists():
        pytest.skip("nvcc not found")
    subprocess.run([str(nvcc), "-cudart", "shared", "-o", str(exe), str(src)], check=True)
    r = fc.run_remote(exe, shim, memory_daemon.address)
    assert r.stdout.split() == ["cudaErrorNotSupported"] * 3
    notes = [ln for ln in r.stderr.splitlines() if "cudaMallocManaged" in ln]
    assert len(notes) == 1 and "managed memory" in notes[0]


def test_captured_graph_with_host_copies(program, shim, memory_daemon, fc):
    """Host memory in a captured graph is read and written at each replay, not at capture."""
    r = fc.run_remote(program("ci_graph"), shim, memory_daemon.address)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "graph nodes: 4 (memcpy 3, memset 1)" in r.stdout
    assert "replays 3, mismatches 0" in r.stdout


def test_stream_order_and_async_copies(program, shim, memory_daemon, fc):
    """Async device-to-host copies into pinned memory do not wait, land before whatever
    reports them complete (synchronizations, successful queries, later host functions), and
    one held stream never holds up another (host functions stand in for slow kernels)."""
    r = fc.run_remote(program("ci_streams"), shim, memory_daemon.address)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == [
        "async copy returned before its stream reached it: yes",
        "after cudaStreamSynchronize: gate 1, data ok",
        "host function after the copy saw its data: yes",
        "event query while held: cudaErrorNotReady",
        "after cudaEventSynchronize: half ok",
        "after a successful cudaEventQuery (polled: yes): half ok",
        "after a successful cudaStreamQuery: ok",
        "stream b synchronized while a is held: yes, b's data ok",
        "after cudaDeviceSynchronize: a's data ok",
        "600 copies in flight at once: 0 wrong",
        "pageable destination: returned after the held stream yes, data ok",
        "cudaFreeHost returned after the copy's stream went on: yes",
        "last error: cudaSuccess",
        "PASSED",
    ]


def test_mapped_memory_is_refused_clearly(program, shim, memory_daemon, fc):
    """Zero-copy access to the client's memory is refused in the client, never left to fault
    or to read the server's memory: through the mapping's device pointer and through the host
    pointer itself passed to a kernel (unified addressing). One line on stderr each."""
    r = fc.run_remote(program("mapped"), shim, memory_daemon.address)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout.splitlines() == ["mapped", "cudaHostGetDevicePointer -> cudaErrorNotSupported",
                                     "launch with the host pointer -> cudaErrorNotSupported",
                                     "REFUSED"], r.stdout
    assert sum("zero-copy" in ln for ln in r.stderr.splitlines()) == 2, r.stderr
    assert not memory_daemon.launches(), "the refused launch reached the daemon"


def test_graph_built_node_by_node(program, shim, memory_daemon, fc):
    """tests/programs/graph_nodes.cu through the shim: a graph built node by node
    (cudaGraphAdd*Node, cudaGraphExecKernelNodeSetParams, cudaGraphClone) is instantiated by
    capturing its nodes through the shim's own calls. This backend runs no kernels, so the
    program's own checks fail here; every launch of the graph's kernels reaches the daemon,
    in dependency order, with the arguments of each moment."""
    r = fc.run_remote(program("graph_nodes"), shim, memory_daemon.address)
    fc.check_graph_nodes(r, memory_daemon)


@pytest.mark.parametrize("mode", ["preload", "dropin"])
def test_ci_graph_nodes(mode, program, shim, memory_daemon, fc):
    """A graph built node by node (tests/programs/ci_graph_nodes.cu): memset, memcpy (1D,
    pitched, 3D parameters), event record and wait, child graph, empty and kernel nodes,
    instantiated by capturing them through the shim, every byte checked at each launch; a
    kernel node changed in the graph and in the exec, a clone, cudaGraphExecUpdate (of built
    and of captured graphs)."""
    r = fc.run_remote(program("ci_graph_nodes"), shim, memory_daemon.address, mode=mode)
    got = fc.check_ci_graph_nodes(r, memory_daemon)
    assert [(x["grid"], x["block"]) for x in got] == [([1, 1, 1], [64, 1, 1])] * 6
    assert len({x["params"][:16] for x in got}) == 1  # the same scratch pointer each time


_GRAPH_REFUSALS = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cuda_runtime_api.h>
#include <driver_functions.h>
static void say(const char *what, cudaError_t e) { printf("%s: %s\n", what, cudaGetErrorName(e)); }
static void host_fn(void *p) { (void)p; }
int main(void) {
    enum { N = 4096 };
    unsigned char *src = malloc(N), *dst = malloc(N), *dev;
    size_t pitch;
    for (int i = 0; i < N; i++) src[i] = (unsigned char)(i * 31 + 7);
    if (cudaMallocPitch((void **)&dev, &pitch, 64, 64)) return 1;
    cudaStream_t s;
    if (cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)) return 1;
    cudaGraph_t g;
    cudaGraphNode_t up, down, n;
    say("create", cudaGraphCreate(&g, 0));
    /* pageable host memory on both sides of 1D copies: read and written at each launch */
    say("pageable up", cudaGraphAddMemcpyNode1D(&up, g, NULL, 0, dev, src, N,
                                                cudaMemcpyHostToDevice));
    say("pageable down", cudaGraphAddMemcpyNode1D(&down, g, &up, 1, dst, dev, N,
                                                  cudaMemcpyDeviceToHost));
    cudaGraphExec_t x;
    say("instantiate", cudaGraphInstantiate(&x, g, 0));
    for (int r = 0; r < 2; r++) {
        for (int i = 0; i < N; i++) src[i] = (unsigned char)(i * 13 + r);
        memset(dst, 0, N);
        cudaGraphLaunch(x, s);
        cudaStreamSynchronize(s);
        printf("launch %d: %s\n", r, memcmp(src, dst, N) ? "differs" : "equal");
    }
    struct cudaMemcpy3DParms p = {0};
    p.srcPtr = make_cudaPitchedPtr(src, 64, 64, 64);
    p.dstPtr = make_cudaPitchedPtr(dev, pitch, 64, 64);
    p.extent = make_cudaExtent(32, 8, 1);
    p.kind = cudaMemcpyHostToDevice;
    say("pitched from host", cudaGraphAddMemcpyNode(&n, g, NULL, 0, &p));
    say("pitched from host again", cudaGraphAddMemcpyNode(&n, g, NULL, 0, &p));
    p.srcPtr = make_cudaPitchedPtr(dev, pitch, 64, 64);
    p.dstPtr = make_cudaPitchedPtr(dev + 32, pitch, 32, 64);
    p.kind = cudaMemcpyDeviceToDevice;
    say("pitched on the device", cudaGraphAddMemcpyNode(&n, g, NULL, 0, &p));
    say("host to host", cudaGraphAddMemcpyNode1D(&n, g, NULL, 0, dst, src, 16,
                                                 cudaMemcpyHostToHost));
    p.srcArray = (cudaArray_t)0x1000;
    p.srcPtr.ptr = NULL;
    say("array", cudaGraphAddMemcpyNode(&n, g, NULL, 0, &p));
    struct cudaMemsetParams ms = {0};
    ms.dst = src, ms.value = 1, ms.elementSize = 1, ms.width = 16, ms.height = 1;
    say("memset of host memory", cudaGraphAddMemsetNode(&n, g, NULL, 0, &ms));
    ms.dst = dev, ms.elementSize = 3;
    say("memset of 3-byte elements", cudaGraphAddMemsetNode(&n, g, NULL, 0, &ms));
    struct cudaKernelNodeParams kp = {0};
    kp.func = (void *)host_fn;
    kp.gridDim.x = kp.gridDim.y = kp.gridDim.z = 1;
    kp.blockDim.x = kp.blockDim.y = kp.blockDim.z = 1;
    say("kernel node of no kernel", cudaGraphAddKernelNode(&n, g, NULL, 0, &kp));
    struct cudaHostNodeParams hp = {host_fn, NULL};
    say("host node", cudaGraphAddHostNode(&n, g, NULL, 0, &hp));
    struct cudaGraphNodeParams np;
    memset(&np, 0, sizeof np);
    np.type = cudaGraphNodeTypeHost;
    say("host node by cudaGraphAddNode", cudaGraphAddNode(&n, g, NULL, NULL, 0, &np));
    np.type = cudaGraphNodeTypeMemAlloc;
    say("allocation node by cudaGraphAddNode", cudaGraphAddNode(&n, g, NULL, NULL, 0, &np));
    say("a cycle", cudaGraphAddDependencies(g, &down, &up, NULL, 1));
    cudaGraphExec_t y;
    say("instantiating the cycle", cudaGraphInstantiate(&y, g, 0));

    cudaGraph_t c, copy;
    cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal);
    cudaMemsetAsync(dev, 0, 64, s);
    cudaStreamEndCapture(s, &c);
    size_t roots = 0;
    say("roots of a captured graph", cudaGraphGetRootNodes(c, NULL, &roots));
    say("a node added to a captured graph", cudaGraphAddEmptyNode(&n, c, NULL, 0));
    say("clone of a captured graph", cudaGraphClone(&copy, c));
    say("a captured graph as a child", cudaGraphAddChildGraphNode(&n, g, NULL, 0, c));
    cudaGraphExec_t cx;
    cudaGraphExecUpdateResultInfo info;
    say("instantiate the captured graph", cudaGraphInstantiate(&cx, c, 0));
    cudaError_t e = cudaGraphExecUpdate(cx, g, &info);
    printf("update of a captured exec from a built graph: %s, result %d\n", cudaGetErrorName(e),
           (int)info.result);
    return 0;
}
"""


def test_graph_node_refusals(shim, memory_daemon, fc, tmp_path, has_tool):
    """Graphs built node by node through the shim: pageable host memory in 1D copy nodes works
    (read and written at each launch), and what farcuda refuses returns the CUDA error and
    says why once on stderr."""
    include = Path("/usr/local/cuda/include")
    if not (include / "cuda_runtime_api.h").exists() or not has_tool("gcc"):
        pytest.skip("needs the CUDA 13 headers and gcc")
    src = tmp_path / "graph_refusals.c"
    src.write_text(_GRAPH_REFUSALS)
    exe = tmp_path / "graph_refusals"
    subprocess.run(["gcc", "-Wall", "-Wno-deprecated-declarations", "-o", str(exe), str(src),
                    f"-I{include}", str(shim)], check=True)
    r = fc.run_remote(exe, shim, memory_daemon.address, mode="dropin")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == [
        "create: cudaSuccess", "pageable up: cudaSuccess", "pageable down: cudaSuccess",
        "instantiate: cudaSuccess", "launch 0: equal", "launch 1: equal",
        "pitched from host: cudaErrorNotSupported",
        "pitched from host again: cudaErrorNotSupported",
        "pitched on the device: cudaSuccess",
        "host to host: cudaErrorNotSupported",
        "array: cudaErrorNotSupported",
        "memset of host memory: cudaErrorInvalidValue",
        "memset of 3-byte elements: cudaErrorInvalidValue",
        "kernel node of no kernel: cudaErrorInvalidDeviceFunction",
        "host node: cudaErrorNotSupported",
        "host node by cudaGraphAddNode: cudaErrorNotSupported",
        "allocation node by cudaGraphAddNode: cudaErrorNotSupported",
        "a cycle: cudaSuccess",
        "instantiating the cycle: cudaErrorInvalidValue",
        "roots of a captured graph: cudaErrorNotSupported",
        "a node added to a captured graph: cudaErrorNotSupported",
        "clone of a captured graph: cudaErrorNotSupported",
        "a captured graph as a child: cudaErrorNotSupported",
        "instantiate the captured graph: cudaSuccess",
        "update of a captured exec from a built graph: cudaErrorGraphExecUpdateFailure, "
        "result 6"]
    said = [ln for ln in r.stderr.splitlines() if ln.startswith("farcuda:")]
    assert len(said) == 8, r.stderr
    for words in ("pitched (2D or 3D) memcpy node", "host memory to host memory",
                  "CUDA arrays are not supported", "cudaGraphAddHostNode: this part of the graph "
                  "API", "cudaGraphAddNode: host nodes", "cudaGraphAddNode: memory allocation "
                  "nodes", "changing a captured graph",
                  "between a captured graph and a graph built node by node"):
        assert sum(words in ln for ln in said) == 1, (words, said)
