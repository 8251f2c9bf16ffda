"""Shared fixtures: the installed shim, nvcc-built test programs, real daemons on port 0, and
the daemon's C path built against a recording stand-in of the CUDA driver.

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
from dataclasses import dataclass, field
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


@pytest.fixture(scope="module", params=[1, 4], ids=["farcuda-1vdev", "farcuda-4vdev-1gpu"])
def pfm_runner(request, shim):
    """The pfm binary through farcuda (tests/gpu/test_pfm_gpu.py): one virtual device, and
    four virtual devices on one GPU (one shared context), the shim preloaded and the daemon
    of the module (``farcuda.pfm.runner.PfmRunner``'s contract)."""
    from farcuda.pfm.runner import PfmRunner
    if os.environ.get("PFM_TEST_NATIVE") == "1":  # pfm itself, on the GPUs of this machine
        return PfmRunner(devices=int(os.environ.get("PFM_TEST_DEVICES", "1")))
    daemon = request.getfixturevalue("cuda_daemon")
    env = {"LD_PRELOAD": str(shim),
           "FARCUDA_DEVICES": ",".join([f"{daemon.address}/0"] * request.param)}
    return PfmRunner(env=env, devices=request.param)


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


def launches_reaching(daemon, n: int, timeout: float = 5.0) -> list:
    """The launches the in-memory daemon recorded, once there are ``n`` (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    got = daemon.launches()
    while len(got) < n and time.monotonic() < deadline:
        time.sleep(0.05)
        got = daemon.launches()
    return got


def check_graph_nodes(r: Result, daemon) -> None:
    """tests/programs/graph_nodes.cu at the in-memory daemon (either layer): it runs no
    kernels, so the program's own checks fail; every launch of the graph's kernels reaches
    the daemon, in dependency order, with the arguments of each moment, on one stream."""
    assert "FAIL line" not in r.stdout, r.stdout + r.stderr
    assert r.stdout.startswith("graph: 6 nodes, 2 roots\n"), r.stdout + r.stderr
    assert "7 checks" in r.stdout and "farcuda:" not in r.stderr, r.stdout + r.stderr
    got = launches_reaching(daemon, 21)
    names = [x["kernel"] for x in got]
    assert names == ["_Z6squarePKiPii", "_Z6reducePKiPyii", "_Z4bumpPy"] * 7, names
    scales = [int.from_bytes(bytes.fromhex(x["params"])[20:24], "little") for x in got[1::3]]
    assert scales == [3, 3, 3, 3, 3, 7, 3]  # five launches, the changed exec, the clone
    assert len({x["stream"] for x in got}) == 1 and got[0]["stream"] != 0


CI_GRAPH_NODES_OUT = [
    "graph: 12 nodes, 5 roots; the copy back after 2 (child, kernel), types 4 7 1 5",
    "kernel node: value 5, block 64, func mark",
    "3 launches, 0 wrong; the graph recorded its event: yes",
    "clone: 12 nodes, 0 wrong",
    "update from the clone: cudaSuccess, result 0",
    "update to another shape: cudaErrorGraphExecUpdateFailure, result 2",
    "wait node: the copy saw the other stream's set: yes",
    "captured: 2 nodes (types 2 1), update cudaSuccess, the exec set 0x42",
    "PASSED"]


def check_ci_graph_nodes(r: Result, daemon) -> list:
    """tests/programs/ci_graph_nodes.cu at the in-memory daemon (either layer): its exact
    output, nothing refused, and the kernel node's value at each launch (three launches, the
    exec's changed node, the clone of the changed graph, the exec updated from the clone).
    Returns the launches."""
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == CI_GRAPH_NODES_OUT
    assert "farcuda:" not in r.stderr, r.stderr  # nothing refused on the way
    got = launches_reaching(daemon, 6)
    assert [x["kernel"] for x in got] == ["_Z4markPii"] * 6
    values = [int.from_bytes(bytes.fromhex(x["params"])[8:12], "little") for x in got]
    assert values == [5, 5, 5, 7, 9, 9]
    return got


_Helpers.check_graph_nodes = staticmethod(check_graph_nodes)
_Helpers.check_ci_graph_nodes = staticmethod(check_ci_graph_nodes)


# ---------------------------------------------------------------- the daemon's C path

FAKES_DIR = ROOT / "tests" / "fakes"
# the recording driver's kinds of call (tests/fakes/libcuda_recording.c)
REC = {name: i + 1 for i, name in enumerate(
    ("launch", "set_current", "record", "wait", "dtoh", "stream_query", "stream_sync",
     "event_query", "event_sync", "ctx_sync", "htod"))}
_REC_CDEF = """
typedef struct { int32_t fn; int32_t bad_extra; uint64_t a[10]; uint64_t params_off;
                 uint64_t params_len; } rec_call;
void rec_reset(void);
int rec_count(void);
const rec_call *rec_get(int i);
const unsigned char *rec_arena(void);
void rec_busy(void *handle, int busy);
void rec_busy_for(void *handle, int queries);
void rec_fail(int fn, int err);
unsigned char rec_byte_at(uint64_t addr);
"""


def _source_module(name: str):
    """A module of the source tree (build helpers are not installed)."""
    sys.path.insert(0, str(ROOT))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def build_recording_driver(out: Path, sanitize: tuple[str, ...] = ()) -> Path:
    so = out / "libcuda-recording.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-Wall", *sanitize, "-o", str(so),
                    str(FAKES_DIR / "libcuda_recording.c")], check=True)
    return so


@dataclass
class FastPath:
    """daemon/fastpath.c, loaded in this process, calling the recording driver.

    Handles are made-up addresses that say what they stand for (``stream_h``, ``event_h``,
    ``func_h``, ``CTX``), so a recorded call shows which handle the C path looked up."""

    ffi: object
    lib: object  # fp_* of daemon/build_fastpath.py's CDEF
    rffi: object
    rec: object  # the recording driver's rec_*
    driver: Path
    small: dict = field(default_factory=dict)  # vdev -> the bounce buffer registered

    CTX = {v: 0xC000 + 0x100 * v for v in range(64)}
    OUT_CAP = 24 + (64 << 10)  # the session's reply buffer (Session._FAST_OUT)
    SMALL = 64 << 10

    @staticmethod
    def stream_h(vdev: int, sid: int) -> int:
        return 0 if sid == 0 else 0x50000 + vdev * 0x1000 + sid

    @staticmethod
    def event_h(vdev: int, eid: int) -> int:
        return 0x60000 + vdev * 0x1000 + eid

    @staticmethod
    def func_h(vdev: int, kid: int) -> int:
        return 0x900000 + vdev * 0x10000 + kid

    def ptr(self, value: int):
        return self.ffi.cast("void *", value)

    def reset(self) -> None:
        for vdev in range(64):
            self.lib.fp_drop_device(vdev)
        self.lib.fp_note_current(self.ffi.NULL)
        self.rec.rec_reset()

    @staticmethod
    def legacy_h(vdev: int) -> int:
        """A device's stream 0 in a shared context (a stream of its own)."""
        return 0x40000 + vdev * 0x1000

    def device(self, vdev: int = 0, kernels: dict | None = None, streams: dict | None = None,
               events=(), ranges=(), shared: bool = False) -> None:
        """Register a virtual device as CudaDevice does: its context and bounce buffer,
        kernels (id -> parameter bytes), streams (id -> creation flags), events, memory.
        ``shared``: the device shares context CTX[0] with the others so registered, and its
        stream 0 is legacy_h(vdev)."""
        lib = self.lib
        assert lib.fp_set_context(vdev, self.ptr(self.CTX[0 if shared else vdev])) == 0
        if shared:
            assert lib.fp_set_legacy(vdev, self.ptr(self.legacy_h(vdev))) == 0
        buf = self.small.setdefault(vdev, self.ffi.new("unsigned char[]", self.SMALL))
        lib.fp_set_small(vdev, buf, self.SMALL)
        for kid, size in (kernels or {}).items():
            assert lib.fp_set_kernel(vdev, kid, self.ptr(self.func_h(vdev, kid)), size) == 0
        for sid, flags in (streams or {}).items():
            assert lib.fp_set_stream(vdev, sid, self.ptr(self.stream_h(vdev, sid)), flags) == 0
        for eid in events:
            assert lib.fp_set_event(vdev, eid, self.ptr(self.event_h(vdev, eid))) == 0
        for base, size in ranges:
            assert lib.fp_range_add(vdev, base, size) == 0

    def run(self, data: bytes, out: bool = True, out_cap: int | None = None, sock: int = -1,
            pipe: int = -1):
        """One fp_run over data, as Session._run_fast calls it: (result, reply bytes)."""
        ffi = self.ffi
        cap = self.OUT_CAP if out_cap is None else out_cap
        res = ffi.new("fp_result *")
        buf = ffi.new("unsigned char[]", max(1, len(data)))
        ffi.memmove(buf, data, len(data))
        outbuf = ffi.new("unsigned char[]", cap) if out else ffi.NULL
        self.lib.fp_run(buf, len(data), outbuf, cap, sock, pipe, res)
        reply = bytes(ffi.buffer(outbuf, res.out_len)) if out and res.out_len else b""
        return res, reply

    @staticmethod
    def sanitized_replay(out: Path) -> Path:
        """tests/fakes/fastpath_replay.c with daemon/fastpath.c and the recording driver, all
        built with AddressSanitizer and UndefinedBehaviorSanitizer."""
        flags = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                 "-fno-omit-frame-pointer", "-g")
        lib = build_recording_driver(out, flags)
        exe = out / "fastpath_replay"
        subprocess.run(["gcc", "-O1", "-Wall", *flags, f'-DFP_LIBCUDA="{lib}"',
                        f"-I{ROOT / 'daemon'}", f"-I{ROOT / 'wire' / 'c'}", "-o", str(exe),
                        str(ROOT / "daemon" / "fastpath.c"), str(FAKES_DIR / "fastpath_replay.c"),
                        "-ldl"], check=True)
        return exe

    def calls(self) -> list[tuple]:
        """Every driver call since the last reset: (kind, args..., [parameter bytes])."""
        kinds = {v: k for k, v in REC.items()}
        arena = self.rec.rec_arena()
        out = []
        for i in range(self.rec.rec_count()):
            c = self.rec.rec_get(i)
            kind = kinds[c.fn]
            if kind == "launch":
                assert not c.bad_extra, "a launch passed malformed extra arguments"
                params = bytes(self.rffi.buffer(arena + c.params_off, c.params_len))
                out.append((kind, *[int(c.a[k]) for k in range(9)], params))
            elif kind == "htod":  # (dst, n, stream, source address, the bytes copied)
                data = bytes(self.rffi.buffer(arena + c.params_off, c.params_len))
                out.append((kind, *[int(c.a[k]) for k in range(4)], data))
            else:
                n = {"record": 3, "wait": 3, "dtoh": 4, "ctx_sync": 0}.get(kind, 1)
                out.append((kind, *[int(c.a[k]) for k in range(n)]))
        return out


@pytest.fixture(scope="session")
def fastpath(tmp_path_factory) -> FastPath:
    """The daemon's C path (daemon/fastpath.c as build_fastpath.py builds it), opening the
    recording stand-in of libcuda.so.1 instead of the driver."""
    import cffi
    out = tmp_path_factory.mktemp("fastpath")
    driver = build_recording_driver(out)
    build = _source_module("daemon.build_fastpath")
    build.make_ffi("_fastpath_under_test", libcuda=str(driver)).compile(tmpdir=str(out))
    sys.path.insert(0, str(out))
    try:
        module = importlib.import_module("_fastpath_under_test")
    finally:
        sys.path.pop(0)
    rffi = cffi.FFI()
    rffi.cdef(_REC_CDEF)
    rec = rffi.dlopen(str(driver))
    assert module.lib.fp_init() == 0
    fp = FastPath(module.ffi, module.lib, rffi, rec, driver)
    fp.reset()
    return fp
