"""Shared fixtures: the installed shim, nvcc-built test programs, and real daemons on port 0.

Tests marked ``gpu`` run only where the CUDA driver initializes (checked in a subprocess, so
the test process itself never touches CUDA); elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS_DIR = ROOT / "tests" / "programs"


def _load_build_module():
    spec = importlib.util.spec_from_file_location("farcuda_test_programs_build",
                                                  PROGRAMS_DIR / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


programs_build = _load_build_module()

_GPU_PROBE = ("from cuda.bindings import driver as d; import sys; "
              "sys.exit(0 if d.cuInit(0)[0] == d.CUresult.CUDA_SUCCESS and "
              "d.cuDeviceGetCount()[1] > 0 else 1)")


def gpu_available() -> bool:
    if not hasattr(gpu_available, "cached"):
        try:
            r = subprocess.run([sys.executable, "-c", _GPU_PROBE], capture_output=True,
                               timeout=120)
            gpu_available.cached = r.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            gpu_available.cached = False
    return gpu_available.cached


def pytest_collection_modifyitems(config, items):
    if any("gpu" in item.keywords for item in items) and not gpu_available():
        skip = pytest.mark.skip(reason="needs an NVIDIA GPU with a CUDA 13 driver")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


def nvcc_available() -> bool:
    return programs_build.nvcc_path().is_file()


needs_nvcc = pytest.mark.skipif(not nvcc_available(), reason="nvcc (CUDA 13.0) not found")


@pytest.fixture(scope="session")
def shim() -> Path:
    from farcuda.interposer.cli import shim_path
    p = shim_path()
    if not p.exists():
        pytest.fail(f"farcuda is installed without its shim ({p}): reinstall with pip")
    return p


@pytest.fixture(scope="session")
def program(tmp_path_factory):
    """program(name, compressed=False, static=False) -> path of the nvcc-built test program
    (static: built with -cudart static, for the driver layer)."""
    if not nvcc_available():
        pytest.skip("nvcc (CUDA 13.0) not found")
    out = Path(os.environ.get("FARCUDA_TEST_BUILD") or tmp_path_factory.mktemp("programs"))

    def get(name: str, compressed: bool = False, static: bool = False) -> Path:
        return programs_build.build(name, out, compressed=compressed, static=static)
    return get


# ---------------------------------------------------------------- daemons

_MEMORY_DAEMON = textwrap.dedent("""
    import asyncio, json, os, signal, sys
    from farcuda.daemon.server import Daemon
    from farcuda.daemon.config import from_dict
    from farcuda.daemon.logs import setup_logging
    async def main():
        setup_logging("info")
        cfg = from_dict(json.loads(sys.argv[1]))
        d = Daemon(cfg, backend=sys.argv[2], backend_options=json.loads(sys.argv[3]))
        addrs = await d.start()
        print("ready", addrs[0][0], addrs[0][1], flush=True)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(d.shutdown()))
        await d.stopped
    asyncio.run(main())
""")


@dataclass
class DaemonProc:
    proc: subprocess.Popen
    host: str
    port: int
    log_path: Path
    record_path: Path | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def launches(self) -> list[dict]:
        if not self.record_path or not self.record_path.exists():
            return []
        return [json.loads(x) for x in self.record_path.read_text().splitlines() if x]

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.stdout:
            self.proc.stdout.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_daemon(tmp: Path, backend: str = "memory", config: dict | None = None,
                 backend_options: dict | None = None, timeout: float = 120.0) -> DaemonProc:
    """A real daemon (front and worker processes) on 127.0.0.1, on a free port."""
    cfg = {"listen": ["127.0.0.1:0"], "prestart": 1, "log_level": "debug"}
    cfg.update(config or {})
    opts = dict(backend_options or {})
    record = None
    if backend == "memory":
        record = tmp / f"launches-{time.monotonic_ns()}.jsonl"
        opts.setdefault("record_path", str(record))
    log_path = tmp / f"daemon-{time.monotonic_ns()}.log"
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD",)}
    with open(log_path, "w") as logf:
        proc = subprocess.Popen([sys.executable, "-c", _MEMORY_DAEMON, json.dumps(cfg), backend,
                                 json.dumps(opts)], stdout=subprocess.PIPE, stderr=logf, env=env,
                                text=True)
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line or proc.poll() is not None:
            break
    if not line.startswith("ready"):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"daemon did not start: {log_path.read_text()[-3000:]}")
    _, host, port = line.split()
    return DaemonProc(proc, host, int(port), log_path, record)


@pytest.fixture
def memory_daemon(tmp_path):
    d = start_daemon(tmp_path, "memory")
    yield d
    d.stop()


@pytest.fixture(scope="module")
def shared_memory_daemon(tmp_path_factory):
    d = start_daemon(tmp_path_factory.mktemp("memd"), "memory")
    yield d
    d.stop()


@pytest.fixture(scope="module")
def cuda_daemon(tmp_path_factory):
    if not gpu_available():
        pytest.skip("needs an NVIDIA GPU with a CUDA 13 driver")
    d = start_daemon(tmp_path_factory.mktemp("cudad"), "cuda")
    yield d
    d.stop()


# ---------------------------------------------------------------- running programs

@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_native(exe: Path, args=(), env: dict | None = None, timeout: float = 120) -> Result:
    e = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA_")
         and k not in ("LD_PRELOAD",)}
    e.update(env or {})
    p = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, env=e,
                       timeout=timeout)
    return Result(p.returncode, p.stdout, p.stderr)


# Runs a command with every NVIDIA device node of this machine replaced by /dev/null, in a
# mount namespace of its own: a client started so can reach a GPU only through farcuda.
_NO_GPU = ('for d in /dev/nvidia*; do [ -c "$d" ] && mount --bind /dev/null "$d"; done; '
           'exec "$@"')


def can_isolate() -> bool:
    """Whether run_remote(..., isolated=True) works here (root, unshare; the GPU machine)."""
    return os.geteuid() == 0 and shutil.which("unshare") is not None


def run_remote(exe: Path, shim: Path, server: str | None, args=(), mode: str = "preload",
               env: dict | None = None, timeout: float = 120, isolated: bool = False) -> Result:
    """Run an unmodified program through farcuda: LD_PRELOAD, or as the libcudart found on
    LD_LIBRARY_PATH (drop-in). ``isolated``: the program cannot open a GPU of this machine."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA_")
         and k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")}
    if mode == "preload":
        e["LD_PRELOAD"] = str(shim)
    elif mode == "dropin":
        e["LD_LIBRARY_PATH"] = str(shim.parent)
    else:
        raise ValueError(mode)
    if server:
        e["FARCUDA_SERVER"] = server
    e.update(env or {})
    cmd = [str(exe), *map(str, args)]
    if isolated:
        cmd = ["unshare", "-m", "--", "sh", "-c", _NO_GPU, "sh", *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=timeout)
    return Result(p.returncode, p.stdout, p.stderr)


@pytest.fixture(scope="session")
def has_tool():
    return lambda name: shutil.which(name) is not None


class _Helpers:
    run_native = staticmethod(run_native)
    run_remote = staticmethod(run_remote)
    can_isolate = staticmethod(can_isolate)
    start_daemon = staticmethod(start_daemon)
    programs_build = programs_build


@pytest.fixture(scope="session")
def fc() -> _Helpers:
    """Helpers for tests: fc.run_native, fc.run_remote, fc.start_daemon."""
    return _Helpers()


@pytest.fixture(scope="session")
def driver() -> Path:
    """The folder of the driver layer (libcuda.so.1 and the client core)."""
    from farcuda.interposer.cli import driver_dir
    d = driver_dir()
    if not (d / "libcuda.so.1").exists():
        pytest.fail(f"farcuda is installed without its driver layer ({d}): reinstall with pip")
    return d


def run_driver(exe: Path, driver: Path, server: str | None, args=(), env: dict | None = None,
               timeout: float = 120, isolated: bool = False) -> Result:
    """Run an unmodified program on the driver layer: farcuda's libcuda.so.1 (and nothing of
    the runtime shim) first on LD_LIBRARY_PATH. ``isolated``: no GPU of this machine."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA_")
         and k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")}
    e["LD_LIBRARY_PATH"] = str(driver)
    if server:
        e["FARCUDA_SERVER"] = server
    e.update(env or {})
    cmd = [str(exe), *map(str, args)]
    if isolated:
        cmd = ["unshare", "-m", "--", "sh", "-c", _NO_GPU, "sh", *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=timeout)
    return Result(p.returncode, p.stdout, p.stderr)


_Helpers.run_driver = staticmethod(run_driver)
