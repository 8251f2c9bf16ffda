"""One session per process: a -cudart shared program that also calls the driver API
(tests/programs/driver/ci_mixed.cu) runs with the runtime shim and the driver layer both
loaded. They share one connection and one context per virtual device: the daemon sees one
session, which opened the device once, and each layer's memory works in the other's copies
and launches.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1] / "programs" / "driver"
CUDA_INCLUDE = Path("/usr/local/cuda/include")

EXPECTED = """\
cudaMalloc memory through the driver API: equal
its device pointer: itself
cuMemAlloc memory through the runtime API: equal
its type: device, device 0
runtime copy between them: equal
driver copy between them: equal
the primary context is current: yes
PASSED
"""
# the daemon's lines for a session: who the client is, what it was served
_SESSION = re.compile(r"session (\d+): client \S+ tenant=\S+ exe=\S+ pid=(\d+)")
_ENDED = re.compile(r"session (\d+): ended; counts=(\{[^}]*\})")


def _sessions(log: str, pid: int) -> dict[int, dict | None]:
    """The sessions of a client process: id -> the counts it was served (None: not ended)."""
    ended = {int(m.group(1)): ast.literal_eval(m.group(2)) for m in _ENDED.finditer(log)}
    return {int(m.group(1)): ended.get(int(m.group(1))) for m in _SESSION.finditer(log)
            if int(m.group(2)) == pid}


@pytest.fixture(scope="module")
def mixed_program(tmp_path_factory, fc, driver):
    nvcc = fc.programs_build.nvcc_path()
    if not nvcc.exists() or not (CUDA_INCLUDE / "cuda.h").exists():
        pytest.skip("needs nvcc and cuda.h")
    d = tmp_path_factory.mktemp("driver_mixed")
    subprocess.run([str(nvcc), "-cubin", "-arch=sm_90", "-o", str(d / "kernels.cubin"),
                    str(HERE / "kernels.cu")], check=True)
    subprocess.run([str(nvcc), "-cudart", "shared", "-arch=sm_90", "-o", str(d / "ci_mixed"),
                    str(HERE / "ci_mixed.cu"), f"-L{driver}", "-l:libcuda.so.1"], check=True)
    return d


def run_mixed(d: Path, shim: Path, driver: Path, server: str,
              args=()) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA_")
           and k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")}
    env["LD_LIBRARY_PATH"] = f"{shim.parent}:{driver}"  # as `farcuda run` sets it
    env["FARCUDA_SERVER"] = server
    return subprocess.run([str(d / "ci_mixed"), str(d / "kernels.cubin"), *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_runtime_and_driver_share_one_session(mixed_program, shim, driver, memory_daemon):
    r = run_mixed(mixed_program, shim, driver, memory_daemon.address)
    assert r.returncode == 0, r.stdout + r.stderr
    first, rest = r.stdout.split("\n", 1)
    assert rest == EXPECTED, r.stdout + r.stderr
    assert "farcuda:" not in r.stderr, r.stderr
    pid = int(first.split()[1])
    deadline = time.monotonic() + 10
    while (None in _sessions(memory_daemon.log(), pid).values()
           and time.monotonic() < deadline):
        time.sleep(0.05)
    log = memory_daemon.log()
    sessions = _sessions(log, pid)
    assert len(sessions) == 1, log[-3000:]  # one connection
    (served,) = sessions.values()
    assert served is not None, log[-3000:]
    assert served["DEVICE_OPEN"] == 1, served  # one context on the device
    # what each layer sent went through it: the shim's module and the driver layer's image
    assert served["MODULE_LOAD"] == 1 and served["MODULE_IMAGE"] == 1, served
    launches = memory_daemon.launches()
    assert [x["kernel"] for x in launches] == ["fill", "scale"]
    a = int.from_bytes(bytes.fromhex(launches[0]["params"][:16]), "little")
    b = int.from_bytes(bytes.fromhex(launches[1]["params"][:16]), "little")
    # cudaMalloc's pointer in the driver API's launch, cuMemAlloc's in the runtime's: both in
    # the one window of the device, one allocation apart
    assert a != b and abs(a - b) < 1 << 30, (hex(a), hex(b))


def test_driver_layer_alone_has_its_own_session(mixed_program, driver, memory_daemon, fc):
    """Without the shim (a static-runtime program), the core makes its session itself."""
    exe = mixed_program / "ci_driver_only"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("needs a C compiler")
    exe.with_suffix(".c").write_text(
        "#include <cuda.h>\n#include <stdio.h>\nint main(void) {\n"
        "  CUdevice d; CUcontext c; CUdeviceptr p;\n"
        "  if (cuInit(0) || cuDeviceGet(&d, 0) || cuDevicePrimaryCtxRetain(&c, d)\n"
        "      || cuCtxSetCurrent(c) || cuMemAlloc(&p, 64)) return 1;\n"
        "  puts(\"ok\");\n  return cuMemFree(p);\n}\n")
    subprocess.run([cc, f"-I{CUDA_INCLUDE}", "-o", str(exe), str(exe.with_suffix(".c")),
                    f"-L{driver}", "-l:libcuda.so.1"], check=True)
    r = fc.run_driver(exe, driver, memory_daemon.address)
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr
    assert re.search(r"session \d+: client .* exe=ci_driver_only", memory_daemon.log())
