"""pytest-benchmark microbenchmarks: per call kind, natively and through farcuda.

    python -m pytest bench/test_micro.py --benchmark-only [--benchmark-json FILE]

Each benchmark process loads either the real CUDA runtime or farcuda's shim (against a
local farcudad), then a small library of CUDA entry points (bench/programs/microlib.cu,
built with -cudart shared); one subprocess per side keeps the two runtimes apart. Kinds:
synchronous round trip (4-byte device-to-host cudaMemcpy), async launch throughput (1000
launches and one synchronization; every launch is counted on the device), and cudaMemcpy
bandwidth by size in both directions. Needs a GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
NVCC = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"
SIZES = [4 << 10, 256 << 10, 4 << 20, 64 << 20]


def _gpu() -> bool:
    probe = ("from cuda.bindings import driver as d; import sys; "
             "sys.exit(0 if d.cuInit(0)[0] == 0 else 1)")
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _gpu(), reason="needs a GPU")]


@pytest.fixture(scope="session")
def microlib() -> Path:
    out = Path(tempfile.gettempdir()) / "farcuda-libmicro.so"
    subprocess.run([str(NVCC), "-cudart", "shared", "-Xcompiler", "-fPIC", "-shared",
                    "-gencode", "arch=compute_90,code=sm_90", "-o", str(out),
                    str(HERE / "programs" / "microlib.cu")], check=True)
    return out


@pytest.fixture(scope="session")
def server():
    from farcuda.interposer.cli import start_local_daemon
    proc, addr = start_local_daemon()
    yield addr
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="session", params=["native", "farcuda"])
def side(request, server, microlib):
    """A child Python that loads the runtime and the library and runs timed loops for us."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA")}
    if request.param == "farcuda":
        from farcuda.interposer.cli import shim_path
        env["FARCUDA_SERVER"] = server
        env["FARCUDA_BENCH_SHIM"] = str(shim_path())
    child = subprocess.Popen([sys.executable, str(HERE / "microchild.py"), str(microlib)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def call(cmd: str) -> str:
        child.stdin.write(cmd + "\n")
        child.stdin.flush()
        line = child.stdout.readline().strip()
        if not line.startswith("ok"):
            raise RuntimeError(f"{request.param}: {cmd} -> {line}")
        return line[3:]
    call("init")
    yield request.param, call
    child.stdin.close()
    child.wait(timeout=30)
    child.stdout.close()


def test_sync_round_trip(benchmark, side):
    name, call = side
    benchmark.extra_info["side"] = name
    benchmark.pedantic(call, args=("rtt 1000",), rounds=5)


def test_launch_throughput(benchmark, side):
    name, call = side
    benchmark.extra_info["side"] = name
    before = int(call("count"))
    benchmark.pedantic(call, args=("launch 1000",), rounds=5)
    assert int(call("count")) - before == 5000  # every launch ran


@pytest.mark.parametrize("direction", ["h2d", "d2h"])
@pytest.mark.parametrize("size", SIZES)
def test_memcpy_bandwidth(benchmark, side, direction, size):
    name, call = side
    reps = max(1, (256 << 20) // size)
    benchmark.extra_info.update(side=name, bytes=size * reps)
    benchmark.pedantic(call, args=(f"{direction} {size} {reps}",), rounds=3)
