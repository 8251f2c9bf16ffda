"""One session per process: a -cudart shared program that also calls the driver API
(tests/programs/driver/ci_mixed.cu) runs with the runtime shim and the driver layer both
loaded. They share one connection and one context per virtual device: the daemon sees one
session, which opened the device once, and each layer's memory works in the other's copies
and launches.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "farcuda_test_service_helpers_mixed", Path(__file__).with_name("service_helpers.py"))
helpers = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = helpers
_spec.loader.exec_module(helpers)

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
child on the driver API: 0 0 0 9
child exit 0
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


def one_session(read_log: Callable[[], str], pid: int) -> dict:
    """What the one session of a client process was served (it must have had one only)."""
    deadline = time.monotonic() + 10  # the worker logs its counts once the client is gone
    while None in _sessions(read_log(), pid).values() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = read_log()
    sessions = _sessions(log, pid)
    assert len(sessions) == 1, log[-3000:]  # one connection
    (served,) = sessions.values()
    assert served is not None, log[-3000:]
    return served


def build_mixed(out: Path, nvcc: Path, driver: Path) -> Path:
    subprocess.run([str(nvcc), "-cubin", "-arch=sm_90", "-o", str(out / "kernels.cubin"),
                    str(HERE / "kernels.cu")], check=True)
    subprocess.run([str(nvcc), "-cudart", "shared", "-arch=sm_90", "-o", str(out / "ci_mixed"),
                    str(HERE / "ci_mixed.cu"), f"-L{driver}", "-l:libcuda.so.1"], check=True)
    return out


@pytest.fixture(scope="module")
def mixed_program(tmp_path_factory, fc, driver):
    nvcc = fc.programs_build.nvcc_path()
    if not nvcc.exists() or not (CUDA_INCLUDE / "cuda.h").exists():
        pytest.skip("needs nvcc and cuda.h")
    return build_mixed(tmp_path_factory.mktemp("driver_mixed"), nvcc, driver)


def run_mixed(how: str, d: Path, shim: Path, driver: Path, server: str, fc):
    args = [d / "ci_mixed", d / "kernels.cubin"]
    if how == "library-path":  # both layers found as the program's libraries
        return fc.run_remote(args[0], shim, server, args=args[1:], mode="dropin",
                             env={"LD_LIBRARY_PATH": f"{shim.parent}:{driver}"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA_")
           and k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")}
    return subprocess.run([sys.executable, "-m", "farcuda.interposer.cli", "run", "--server",
                           server, "--", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.mark.parametrize("how", ["farcuda-run", "library-path"])
def test_runtime_and_driver_share_one_session(how, mixed_program, shim, driver, memory_daemon,
                                              fc):
    r = run_mixed(how, mixed_program, shim, driver, memory_daemon.address, fc)
    assert r.returncode == 0, r.stdout + r.stderr
    first, rest = r.stdout.split("\n", 1)
    assert rest == EXPECTED, r.stdout + r.stderr
    assert "farcuda:" not in r.stderr, r.stderr
    served = one_session(memory_daemon.log, int(first.split()[1]))
    assert served["DEVICE_OPEN"] == 1, served  # one context on the device
    # and its child's session: a connection of its own
    assert len(re.findall(r"session \d+: client \S+ tenant=\S+ exe=ci_mixed ",
                          memory_daemon.log())) == 2, memory_daemon.log()[-3000:]
    # what each layer sent went through it: the shim's module and the driver layer's image
    assert served["MODULE_LOAD"] == 1 and served["MODULE_IMAGE"] == 1, served
    launches = memory_daemon.launches()
    assert [x["kernel"] for x in launches] == ["fill", "scale"]
    a = int.from_bytes(bytes.fromhex(launches[0]["params"][:16]), "little")
    b = int.from_bytes(bytes.fromhex(launches[1]["params"][:16]), "little")
    # cudaMalloc's pointer in the driver API's launch, cuMemAlloc's in the runtime's: both in
    # the one window of the device
    assert a != b and abs(a - b) < 1 << 30, (hex(a), hex(b))


def test_one_session_through_tls_with_a_token(mixed_program, shim, driver, tmp_path_factory,
                                              fc):
    """The shim's TLS and token carry the driver layer's requests too."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make test certificates with")
    pki = helpers.make_pki(tmp_path_factory.mktemp("pki"))
    d = fc.start_daemon(tmp_path_factory.mktemp("tlsd"), "memory", config={
        "log_level": "info", "auth": {"tokens": {"alice": "a token of alice's"}},
        "tls": {"cert": str(pki / "server.crt"), "key": str(pki / "server.key")}})
    try:
        exe = mixed_program / "ci_mixed"
        r = fc.run_remote(exe, shim, d.address, args=[mixed_program / "kernels.cubin"],
                          mode="dropin", env={
                              "LD_LIBRARY_PATH": f"{shim.parent}:{driver}", "FARCUDA_TLS": "1",
                              "FARCUDA_TLS_CA": str(pki / "ca.crt"),
                              "FARCUDA_TOKEN": "a token of alice's"})
        assert r.returncode == 0, r.stdout + r.stderr
        first, rest = r.stdout.split("\n", 1)
        assert rest == EXPECTED, r.stdout + r.stderr
        pid = int(first.split()[1])
        served = one_session(d.log, pid)
        assert served["DEVICE_OPEN"] == 1 and served["MODULE_IMAGE"] == 1, served
        assert re.search(rf"tenant=alice exe=ci_mixed pid={pid}\b", d.log()), d.log()[-2000:]
    finally:
        d.stop()


def test_driver_layer_alone_has_its_own_session(tmp_path, driver, memory_daemon, fc):
    """Without the shim (a program on the driver API only), the core makes its session."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not (CUDA_INCLUDE / "cuda.h").exists():
        pytest.skip("needs a C compiler and cuda.h")
    src = tmp_path / "ci_driver_only.c"
    src.write_text(
        "#include <cuda.h>\n#include <stdio.h>\n#include <unistd.h>\nint main(void) {\n"
        "  CUdevice d; CUcontext c; CUdeviceptr p;\n"
        "  if (cuInit(0) || cuDeviceGet(&d, 0) || cuDevicePrimaryCtxRetain(&c, d)\n"
        "      || cuCtxSetCurrent(c) || cuMemAlloc(&p, 64)) return 1;\n"
        "  printf(\"pid %d\\n\", (int)getpid());\n  return cuMemFree(p);\n}\n")
    exe = tmp_path / "ci_driver_only"
    subprocess.run([cc, f"-I{CUDA_INCLUDE}", "-o", str(exe), str(src), f"-L{driver}",
                    "-l:libcuda.so.1"], check=True)
    r = fc.run_driver(exe, driver, memory_daemon.address)
    assert r.returncode == 0, r.stdout + r.stderr
    served = one_session(memory_daemon.log, int(r.stdout.split()[1]))
    assert served["DEVICE_OPEN"] == 1 and served["MALLOC"] == 1, served


_MIXED_COPIES = r"""
#include <cuda.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#define N (4u << 20)
#define CK(x) do { int e_ = (int)(x); if (e_) { printf("%s: %d\n", #x, e_); return 1; } } while (0)
int main(void) {
  printf("pid %d\n", (int)getpid());
  unsigned char *h = malloc(N), *back = malloc(N);
  for (unsigned i = 0; i < N; i++) h[i] = (unsigned char)(i >> 12); /* compresses well */
  void *a, *s;
  CUdevice d; CUcontext c; CUdeviceptr pb;
  CK(cudaMalloc(&a, N));
  CK(cudaMemcpy(a, h, N, cudaMemcpyHostToDevice));
  CK(cuInit(0)); CK(cuDeviceGet(&d, 0)); CK(cuDevicePrimaryCtxRetain(&c, d));
  CK(cuCtxSetCurrent(c));
  memset(back, 0, N);
  CK(cuMemcpyDtoH(back, (CUdeviceptr)(uintptr_t)a, N));
  printf("the driver layer reads the shim's copy: %s\n", memcmp(h, back, N) ? "differs" : "equal");
  CK(cuMemAlloc(&pb, N));
  CK(cuMemcpyHtoD(pb, h, N));
  memset(back, 0, N);
  CK(cudaMemcpy(back, (void *)(uintptr_t)pb, N, cudaMemcpyDeviceToHost));
  printf("the shim reads the driver layer's copy: %s\n", memcmp(h, back, N) ? "differs" : "equal");
  CK(cudaMalloc(&s, 256));      /* placed by the shim in an arena */
  CK(cudaDeviceSynchronize());  /* nothing of the shim's is pending now */
  CK(cuMemsetD32(pb, 0, 16));   /* but the driver layer queued work since */
  CK(cudaFree(s));              /* which a free waits for, as CUDA's does */
  CK(cuMemFree(pb));
  CK(cudaFree(a));
  CK(cuDevicePrimaryCtxRelease(d));
  printf("PASSED\n");
  return 0;
}
"""


def test_one_session_compressing_what_the_shim_sends_only(tmp_path, shim, driver, memory_daemon,
                                                           fc):
    """FARCUDA_COMPRESS=on on the connection both layers share: the shim's copies go
    compressed either way, the driver layer's as they are (it compresses nothing and asks for
    nothing compressed), and each layer's bytes arrive exactly in the other's memory. The
    driver layer's frames count as the device's work for the shim too: a free after them waits
    for the device."""
    from farcuda.wire import compress
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not (CUDA_INCLUDE / "cuda_runtime.h").exists():
        pytest.skip("needs a C compiler and the CUDA headers")
    if not compress.available():
        pytest.skip("needs the lz4 package")
    src = tmp_path / "ci_mixed_copies.c"
    src.write_text(_MIXED_COPIES)
    exe = tmp_path / "ci_mixed_copies"
    subprocess.run([cc, f"-I{CUDA_INCLUDE}", "-o", str(exe), str(src), f"-L{shim.parent}",
                    "-l:libcudart.so.13", f"-L{driver}", "-l:libcuda.so.1"], check=True)
    r = fc.run_remote(exe, shim, memory_daemon.address, mode="dropin", env={
        "LD_LIBRARY_PATH": f"{shim.parent}:{driver}", "FARCUDA_COMPRESS": "on",
        "FARCUDA_REPORT": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    first, rest = r.stdout.split("\n", 1)
    assert rest == ("the driver layer reads the shim's copy: equal\n"
                    "the shim reads the driver layer's copy: equal\nPASSED\n"), r.stdout
    (line,) = [ln for ln in r.stderr.splitlines() if "report:" in ln]
    fields = dict(kv.split("=") for kv in line.split("report:")[1].split())
    raw, _ = (int(x) for x in fields["compressed"].split("->"))
    n = 4 << 20
    assert raw == 2 * n, line  # the shim's upload and download, nothing of the driver layer's
    # (the driver layer's upload and download went as they are)
    assert int(fields["bytes_to_server"]) > n and int(fields["bytes_from_server"]) > n, line
    served = one_session(memory_daemon.log, int(first.split()[1]))
    assert served["DEVICE_OPEN"] == 1 and served.get("SUBALLOC", 0) == 1, served
    assert served["DEVICE_SYNC"] == 2, served  # the program's, and the free's
