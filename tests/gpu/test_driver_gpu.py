"""The driver layer on the GPU: static-runtime programs, CuPy and PyTorch, natively and through
farcuda on the same GPU, with the same results.

The farcuda runs cannot open a GPU of this machine (a mount namespace where every /dev/nvidia*
is /dev/null, where the machine allows it) and must map no libcuda.so.1 but farcuda's. CuPy
and PyTorch run in this test's Python (where farcuda is installed), through `farcuda run`,
which gives a Python program the driver layer only.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.gpu

# every program of tests/programs that passes natively, built with -cudart static (not
# ci_pool: its transcript is farcuda's, see its header; stream_alloc is its native twin)
STATIC_PROGRAMS = [
    "vector_add", "matmul_tiled", "symbols", "struct_args", "errors", "device_props", "memory",
    "launch_api", "streams_events", "callbacks", "printf_assert", "graph", "stream_alloc",
    "cooperative", "device_malloc", "multi_device", "threads", "ci_memory", "ci_launch",
    "ci_graph", "ci_devices", "ci_streams", "oob", "d2h_iter", "stencil_borders",
    "alloc_borders", "copy_limits", "host_device_loop", "scalar_params", "uninit_reads",
    "fault", "ci_memcpy3d", "graph_nodes", "ci_graph_nodes",
]
NATIVE_STATUS = {"fault": 3}
PRINTS_ADDRESSES = {"oob"}
_ADDRESS = re.compile(r"0x[0-9a-f]{6,}")


def _diff(want: str, got: str) -> str:
    return "\n".join(difflib.unified_diff(want.splitlines(), got.splitlines(), "native",
                                          "farcuda", lineterm="", n=1))


def _no_real_driver(maps: str, driver) -> None:
    real = [ln for ln in maps.splitlines() if re.search(r"lib(cuda|nvidia-ml)\.so", ln)
            and str(driver) not in ln]
    assert not real, real
    assert not [ln for ln in maps.splitlines() if "libcudart.so" in ln], "a libcudart loaded"


@pytest.mark.parametrize("name", STATIC_PROGRAMS)
def test_static_programs_same_output(name, program, driver, cuda_daemon, tmp_path, fc):
    exe = program(name, static=True)
    native = fc.run_native(exe)
    assert native.returncode == NATIVE_STATUS.get(name, 0), native.stdout[-2000:]
    maps = tmp_path / "maps.txt"
    remote = fc.run_driver(exe, driver, cuda_daemon.address,
                           env={"FARCUDA_MAPS_FILE": str(maps)}, isolated=fc.can_isolate())
    want, got = native.stdout, remote.stdout
    if name in PRINTS_ADDRESSES:
        want, got = _ADDRESS.sub("ADDR", want), _ADDRESS.sub("ADDR", got)
    if got != want:
        pytest.fail(f"{name} (static) differs (exit {remote.returncode}):\n{_diff(want, got)}"
                    f"\n--- farcuda stderr\n{remote.stderr[-3000:]}\n--- daemon log (end)\n"
                    f"{cuda_daemon.log()[-3000:]}", pytrace=False)
    assert remote.returncode == native.returncode, remote.stderr
    _no_real_driver(maps.read_text(), driver)


def _python(script: str, tmp_path, *, remote: str | None, fc, timeout: float = 900):
    path = tmp_path / ("remote.py" if remote else "native.py")
    path.write_text(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA_")
           and k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")}
    cmd = [sys.executable, str(path)]
    if remote:
        env["FARCUDA_MAPS_FILE"] = str(tmp_path / "maps.txt")
        cmd = [sys.executable, "-m", "farcuda.interposer.cli", "run", "--server", remote,
               "--explain", "--", *cmd]
        if fc.can_isolate():
            cmd = ["unshare", "-m", "--", "sh", "-c",
                   'for d in /dev/nvidia*; do [ -c "$d" ] && mount --bind /dev/null "$d"; '
                   'done; exec "$@"', "sh", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def _results(stdout: str) -> dict:
    return json.loads([ln for ln in stdout.splitlines() if ln.startswith("{")][-1])


CUPY = textwrap.dedent("""
    import json
    import cupy as cp
    out = {"devices": cp.cuda.runtime.getDeviceCount()}
    a = cp.arange(1 << 20, dtype=cp.float32)
    out["elementwise"] = float((a * 2 + 1).sum())
    out["reduce"] = [float(a.max()), float(cp.mean(a))]
    m = cp.random.default_rng(1).standard_normal((128, 128), dtype=cp.float32)
    out["matmul"] = float((m @ m).sum())
    out["fft"] = float(cp.abs(cp.fft.fft(cp.arange(1024, dtype=cp.complex64))).sum())
    out["random"] = float(cp.random.RandomState(5).uniform(size=100).sum())
    k = cp.RawKernel(r'extern "C" __global__ void sq(float* x, int n) {'
                     r' int i = blockIdx.x*blockDim.x+threadIdx.x; if (i < n) x[i] = x[i]*x[i]; }',
                     'sq')
    b = cp.arange(256, dtype=cp.float32)
    k((1,), (256,), (b, cp.int32(256)))
    out["rawkernel"] = float(b.sum())
    print(json.dumps(out))
""")


def test_cupy_same_results(cuda_daemon, driver, tmp_path, fc):
    """Elementwise kernels, reductions, a cuBLAS matmul, a cuFFT transform, cuRAND numbers
    and a RawKernel compiled by NVRTC: the same numbers as natively."""
    pytest.importorskip("cupy")
    native = _python(CUPY, tmp_path, remote=None, fc=fc)
    assert native.returncode == 0, native.stderr[-3000:]
    remote = _python(CUPY, tmp_path, remote=cuda_daemon.address, fc=fc)
    assert remote.returncode == 0, remote.stdout[-2000:] + remote.stderr[-4000:]
    assert "the driver layer" in remote.stderr
    assert _results(remote.stdout) == _results(native.stdout)
    _no_real_driver((tmp_path / "maps.txt").read_text(), driver)


TORCH = textwrap.dedent("""
    import json
    import torch
    torch.manual_seed(0)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    out = {"available": torch.cuda.is_available(), "count": torch.cuda.device_count(),
           "name": torch.cuda.get_device_name(0)}
    x = torch.randn(256, 256, device="cuda")
    out["ops"] = float((x * 2 + 1).relu().sum())
    out["matmul"] = float((x @ x).sum())
    big = torch.randn(1024, 1024, device="cuda")
    out["matmul_bf16"] = float((big.bfloat16() @ big.bfloat16()).float().sum())
    out["matmul_fp16"] = float((big.half() @ big.half()).float().sum())
    conv = torch.nn.Conv2d(3, 8, 3).cuda()
    img = torch.randn(4, 3, 32, 32, device="cuda")
    out["conv2d"] = float(conv(img).sum())
    w = torch.randn(64, 64, device="cuda", requires_grad=True)
    (w.tanh() ** 2).sum().backward()
    out["autograd"] = float(w.grad.sum())
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 10)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    data = torch.randn(32, 64, device="cuda")
    target = torch.randint(0, 10, (32,), device="cuda")
    losses = []
    for step in range(200):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(data), target)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    out["losses"] = losses
    g = torch.cuda.CUDAGraph()
    static_in = torch.randn(32, 64, device="cuda")
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        for _ in range(3):
            model(static_in)
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        static_out = model(static_in)
    g.replay()
    torch.cuda.synchronize()
    out["graph"] = float(static_out.sum())
    enc = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(
        64, 4, 128, batch_first=True), 2).cuda().eval()
    with torch.no_grad():
        y = enc(torch.randn(2, 16, 64, device="cuda"))
    out["transformer"] = [float(v) for v in y.flatten()[:64]]
    print(json.dumps(out))
""")


def test_pytorch_same_results(cuda_daemon, driver, tmp_path, fc):
    """Tensor ops, a matmul (cuBLAS), a conv2d (cuDNN), autograd, 200 training steps of a small
    model (deterministic settings), a CUDA graph, a small transformer's inference: the same
    numbers as natively."""
    pytest.importorskip("torch")
    native = _python(TORCH, tmp_path, remote=None, fc=fc)
    assert native.returncode == 0, native.stderr[-3000:]
    remote = _python(TORCH, tmp_path, remote=cuda_daemon.address, fc=fc)
    assert remote.returncode == 0, remote.stdout[-2000:] + remote.stderr[-4000:]
    want, got = _results(native.stdout), _results(remote.stdout)
    assert got["count"] == want["count"] and got["name"] == want["name"]
    assert got["losses"] == want["losses"]
    assert got == want
    _no_real_driver((tmp_path / "maps.txt").read_text(), driver)


MIXED_EXPECTED = """\
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


def test_runtime_and_driver_in_one_process(cuda_daemon, shim, driver, tmp_path, fc):
    """A -cudart shared program that also calls the driver API (tests/programs/driver/
    ci_mixed.cu) under `farcuda run`: the kernels of each layer run on the other layer's
    memory, and the daemon sees one session that opened the device once."""
    nvcc = fc.programs_build.nvcc_path()
    src = fc.programs_build.HERE / "driver"
    subprocess.run([str(nvcc), "-cubin", "-arch=sm_90", "-o", str(tmp_path / "kernels.cubin"),
                    str(src / "kernels.cu")], check=True)
    subprocess.run([str(nvcc), "-cudart", "shared", "-arch=sm_90", "-o",
                    str(tmp_path / "ci_mixed"), str(src / "ci_mixed.cu"), f"-L{driver}",
                    "-l:libcuda.so.1"], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA_")
           and k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")}
    cmd = [sys.executable, "-m", "farcuda.interposer.cli", "run", "--server",
           cuda_daemon.address, "--", str(tmp_path / "ci_mixed"), str(tmp_path / "kernels.cubin"),
           "gpu"]
    if fc.can_isolate():
        cmd = ["unshare", "-m", "--", "sh", "-c",
               'for d in /dev/nvidia*; do [ -c "$d" ] && mount --bind /dev/null "$d"; '
               'done; exec "$@"', "sh", *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    first, rest = r.stdout.split("\n", 1)
    assert rest == MIXED_EXPECTED, r.stdout + r.stderr
    pid = first.split()[1]
    ended = None
    deadline = time.monotonic() + 30  # the worker logs its counts once the client is gone
    while ended is None and time.monotonic() < deadline:
        log = cuda_daemon.log()
        sessions = re.findall(rf"session (\d+): client \S+ tenant=\S+ exe=\S+ pid={pid}\b", log)
        assert len(sessions) == 1, log[-3000:]  # one connection for both layers
        ended = re.search(rf"session {sessions[0]}: ended; counts=(\{{[^}}]*\}})", log)
        time.sleep(0.1)
    assert ended is not None, log[-3000:]
    assert re.search(r"'DEVICE_OPEN': 1\b", ended.group(1)), ended.group(1)  # one context
