"""The driver API as frameworks use it (tests/programs/driver/ci_driver_api.c): libcuda.so.1
dlopened, entry points through cuGetProcAddress, contexts by hand, the error codes programs
probe for, modules from a cubin file, cubin bytes, a fat binary library and PTX text, launches
from kernelParams and from a packed buffer; against the in-memory daemon, each launch checked
byte by byte at the daemon.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1] / "programs" / "driver"
CUDA_INCLUDE = Path("/usr/local/cuda/include")

EXPECTED = """\
cuInit: 0
driver version >= 12000: yes
cuDeviceGetCount: 0
cuDeviceGet 99: 101
device 0: farcuda in-memory test device, compute capability 9
current context at start: none
cuCtxGetApiVersion(NULL) with none current: 201
cuCtxGetApiVersion(bogus): 201
cuMemAlloc without a context: 201
201 is CUDA_ERROR_INVALID_CONTEXT
primary context: active 1, flags 0
cuCtxGetApiVersion(NULL): 0
api version 3020
context device 0
created context is current: yes
tools table: size 24, current context: yes
context flags map host: yes
popped it: yes, primary current again: yes
cuCtxGetApiVersion(destroyed): 201
sets: 12341234 deadbe56, others bad 0
round trip through two allocations and pinned memory: equal; host function: 42
workspace keys: stream same, per-thread same, legacy same, distinct yes, bogus 400
address range: base ok yes, size 1048576, memory type 2
cuModuleGetFunction(nope): 500
fill's parameters: 0+8 8+4 16+8; a fourth: 1
cuLaunchKernel with a zero grid: 1
cuLaunchKernel with grid.y 65536: 1
cuLaunchKernel with 64 KiB dynamic shared memory: 1
cuCtxSynchronize after them: 0
global table: 16 bytes, starts 11 22 33 44
launches queued: 4
functions: module 1 (scale), library 1 (fill), cuFFT's way 1 (scale); context id same
tensor map: tiled 0, address replaced 0 (changed yes), misaligned 1
max threads 1024, blocks per SM at 128 threads 16, capturing 0, dynamic smem set 1024
events: elapsed >= 0: yes, query 0
cuModuleUnload twice: 400
cuMemFree twice: 1
PASSED
"""


@pytest.fixture(scope="module")
def api_program(tmp_path_factory, fc):
    nvcc = fc.programs_build.nvcc_path()
    cc = shutil.which("cc") or shutil.which("gcc")
    if not nvcc.exists() or cc is None or not (CUDA_INCLUDE / "cuda.h").exists():
        pytest.skip("needs nvcc, a C compiler and cuda.h")
    d = tmp_path_factory.mktemp("driver_api")
    src = HERE / "kernels.cu"
    subprocess.run([str(nvcc), "-cubin", "-arch=sm_90", "-o", str(d / "kernels.cubin"),
                    str(src)], check=True)
    subprocess.run([str(nvcc), "-fatbin", "-arch=sm_90", "-o", str(d / "kernels.fatbin"),
                    str(src)], check=True)
    subprocess.run([cc, "-Wall", "-Wextra", "-Werror", f"-I{CUDA_INCLUDE}", "-o",
                    str(d / "ci_driver_api"), str(HERE / "ci_driver_api.c"), "-ldl"], check=True)
    return d


def test_driver_api(api_program, driver, memory_daemon, fc):
    d = api_program
    r = fc.run_driver(d / "ci_driver_api", driver, memory_daemon.address,
                      args=[d / "kernels.cubin", d / "kernels.fatbin"])
    assert r.stdout == EXPECTED, r.stdout + r.stderr
    assert r.returncode == 0
    assert "farcuda:" not in r.stderr, r.stderr
    deadline = time.monotonic() + 5
    got = memory_daemon.launches()
    while len(got) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
        got = memory_daemon.launches()
    assert [(x["kernel"], x["grid"], x["block"], x["shmem"]) for x in got] == [
        ("fill", [256, 1, 1], [128, 1, 1], 0), ("fill", [2, 3, 4], [32, 2, 1], 64),
        ("fill", [1, 1, 1], [1, 1, 1], 0), ("scale", [1, 1, 1], [64, 1, 1], 0)]
    b = bytes.fromhex(got[0]["params"][:16])
    a = bytes.fromhex(got[1]["params"][:16])
    assert got[0]["params"] == (b + bytes.fromhex("04030201" "00000000")
                                + (1 << 18).to_bytes(8, "little")).hex()  # padding: zeros
    assert got[1]["params"] == (a + (7).to_bytes(4, "little") + bytes(4)
                                + (9).to_bytes(8, "little")).hex()  # the packed buffer as is
    assert got[2]["params"] == got[0]["params"]  # the library's kernel, the same arguments
    assert got[3]["params"] == (a + struct.pack("<f", 2.5) + bytes(4)
                                + struct.pack("<3I", 1, 2, 3)).hex()  # the PTX layout
    assert got[0]["stream"] == got[2]["stream"] != 0 and got[1]["stream"] == 0
    # three questions each, one round trip (two for the attributes: a setting came between);
    # no capture under way: no round trip to ask whether the stream captures
    deadline = time.monotonic() + 10
    while "'FUNC_ATTRS'" not in memory_daemon.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = memory_daemon.log()
    assert "'FUNC_ATTRS': 2," in log and "'OCCUPANCY': 1," in log, log[-1500:]
    assert "CAPTURE_STATUS" not in log


def test_fork(driver, shared_memory_daemon, tmp_path, fc):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not (CUDA_INCLUDE / "cuda.h").exists():
        pytest.skip("needs a C compiler and cuda.h")
    exe = tmp_path / "ci_fork"
    subprocess.run([cc, "-Wall", "-Wextra", "-Werror", f"-I{CUDA_INCLUDE}", "-o", str(exe),
                    str(HERE / "ci_fork.c"), f"-L{driver}", "-l:libcuda.so.1"], check=True)
    r = fc.run_driver(exe, driver, shared_memory_daemon.address)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == ["parent 7", "child: the parent's pointer -> 1", "child 9",
                                     "parent again 7, child exit 0"]


GRAPH_EXPECTED = """\
graph: 6 nodes, 1 root (the memset), copy after the memset, types 0 4, kernel v 5 block 8
a kernel node with a zero grid: 1
launched: copy of the memset yes, child graph's memset after it yes, event 0
update to another topology: 910, result 2
destroying a node: 801
graph destroyed twice: 400
PASSED
"""


def test_explicit_graph(api_program, driver, memory_daemon, fc):
    """A graph built with the node API (tests/programs/driver/ci_graph_nodes.c): its nodes
    run on the server in their order, and a kernel node changed in the exec runs with its new
    arguments."""
    cc = shutil.which("cc") or shutil.which("gcc")
    exe = api_program / "ci_graph_nodes"
    subprocess.run([cc, "-Wall", "-Wextra", "-Werror", f"-I{CUDA_INCLUDE}", "-o", str(exe),
                    str(HERE / "ci_graph_nodes.c"), f"-L{driver}", "-l:libcuda.so.1"],
                   check=True)
    r = fc.run_driver(exe, driver, memory_daemon.address, args=[api_program / "kernels.cubin"])
    assert r.stdout == GRAPH_EXPECTED, r.stdout + r.stderr
    assert r.returncode == 0
    named = [ln for ln in r.stderr.splitlines() if ln.startswith("farcuda:")]
    assert len(named) == 1 and "cuGraphDestroyNode" in named[0], r.stderr
    deadline = time.monotonic() + 5
    got = memory_daemon.launches()
    while len(got) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
        got = memory_daemon.launches()
    assert [(x["kernel"], x["grid"], x["block"]) for x in got] == [("fill", [1, 1, 1],
                                                                    [8, 1, 1])] * 3
    values = [int.from_bytes(bytes.fromhex(x["params"])[8:12], "little") for x in got]
    assert values == [5, 9, 5]  # the graph, the exec with its changed node, the graph's clone
    b = bytes.fromhex(got[0]["params"])[:8]
    assert all(bytes.fromhex(x["params"]) == b + v.to_bytes(4, "little") + bytes(4)
               + (8).to_bytes(8, "little") for x, v in zip(got, values, strict=True))
