"""The driver stand-in's table: its exports are driver 580's, its generated code is current,
and cuGetProcAddress answers as the real driver does for every request CUDA 13.0 makes.

The library is loaded into this process with ctypes: cuGetProcAddress and cuGetErrorName
need no server and no initialization.
"""

from __future__ import annotations

import ctypes
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"


def _tool():
    spec = importlib.util.spec_from_file_location("gen_driver", ROOT / "tools" / "gen_driver.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def libcuda():
    from farcuda.interposer.cli import driver_dir
    path = driver_dir() / "libcuda.so.1"
    if not path.exists():
        pytest.fail(f"farcuda is installed without its driver layer ({path})")
    return ctypes.CDLL(str(path))


def _exports(path: Path) -> set[str]:
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) not found")
    out = subprocess.run([nm, "-D", "--defined-only", str(path)], capture_output=True,
                         text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def test_generated_file_is_current():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_driver.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_exports_are_driver_580s(libcuda):
    from farcuda.interposer.cli import driver_dir
    want = set((DATA / "libcuda-580-exports.txt").read_text().split())
    assert len(want) == 707
    assert _exports(driver_dir() / "libcuda.so.1") == want


def test_core_exports_only_its_api():
    from farcuda.interposer.cli import driver_dir
    names = _exports(driver_dir() / "libfarcuda.so.1")
    assert names, "no exports"
    assert all(n.startswith(("fcc_", "fc_", "fcx_", "FARCUDA_CORE_1")) for n in names), \
        sorted(n for n in names if not n.startswith(("fcc_", "fc_", "fcx_")))


def test_every_implemented_call_is_written_by_hand():
    """C_CALLS are defined in csrc/driver/*.c, and not by the generator."""
    sys.path.insert(0, str(ROOT / "interposer"))
    try:
        spec = importlib.util.spec_from_file_location("driver_calls",
                                                      ROOT / "interposer" / "driver_calls.py")
        calls = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(calls)
    finally:
        sys.path.pop(0)
    hand = "".join(p.read_text() for p in (ROOT / "csrc" / "driver").glob("*.c"))
    generated = (ROOT / "csrc" / "driver" / "gen" / "exports.c").read_text()
    for name in calls.C_CALLS:
        assert f" {name}(" in hand, f"{name} is listed as implemented but not defined"
        assert f"CUresult {name}(void) {{ return fcd_unsupported" not in generated, name
    # and the ones not listed are all stubs
    stubs = generated.count("return fcd_unsupported(")
    assert stubs == 707 - len(calls.C_CALLS)


def _gpa(lib, name: str, version: int, flags: int):
    fn = ctypes.c_void_p()
    status = ctypes.c_int(-1)
    lib.cuGetProcAddress_v2.restype = ctypes.c_int
    r = lib.cuGetProcAddress_v2(name.encode(), ctypes.byref(fn), version,
                                ctypes.c_ulonglong(flags), ctypes.byref(status))
    return r, fn.value, status.value


def _addr(lib, symbol: str) -> int:
    return ctypes.cast(getattr(lib, symbol), ctypes.c_void_p).value


def test_every_runtime_request_is_answered(libcuda):
    """Each (name, version, flags) that CUDA 13.0's runtime and libraries asked a real driver
    for on the GPU machine gets CUDA_SUCCESS, symbol status SUCCESS and an entry point of
    this library."""
    rows = [ln.split() for ln in (DATA / "cuda-13.0-runtime-requests.txt").read_text()
            .splitlines() if ln and not ln.startswith("#")]
    assert len(rows) > 400
    exported = {_addr(libcuda, n) for n in
                set((DATA / "libcuda-580-exports.txt").read_text().split())
                if n.startswith("cu")}
    failed = []
    for name, version, flags in rows:
        r, fn, status = _gpa(libcuda, name, int(version), int(flags))
        if r != 0 or status != 0 or fn not in exported:
            failed.append((name, version, flags, r, status))
    assert not failed, failed[:20]


@pytest.mark.parametrize("name,version,flags,symbol", [
    ("cuCtxGetDevice", 2000, 0, "cuCtxGetDevice"),
    ("cuCtxGetDevice", 12090, 0, "cuCtxGetDevice"),
    ("cuCtxGetDevice", 13000, 0, "cuCtxGetDevice_v2"),
    ("cuCtxSynchronize", 13000, 0, "cuCtxSynchronize_v2"),
    ("cuMemAlloc", 2000, 0, "cuMemAlloc"),
    ("cuMemAlloc", 3020, 0, "cuMemAlloc_v2"),
    ("cuMemAlloc", 13000, 0, "cuMemAlloc_v2"),
    ("cuMemcpyHtoD", 7000, 2, "cuMemcpyHtoD_v2_ptds"),
    ("cuMemcpyHtoD", 7000, 1, "cuMemcpyHtoD_v2"),
    ("cuMemcpyAsync", 7000, 2, "cuMemcpyAsync_ptsz"),
    ("cuLaunchKernel", 7000, 2, "cuLaunchKernel_ptsz"),
    ("cuGetProcAddress", 11030, 0, "cuGetProcAddress"),
    ("cuGetProcAddress", 12000, 0, "cuGetProcAddress_v2"),
    ("cuStreamGetCaptureInfo", 10010, 0, "cuStreamGetCaptureInfo"),
    ("cuStreamGetCaptureInfo", 11030, 0, "cuStreamGetCaptureInfo_v2"),
    ("cuStreamGetCaptureInfo", 12030, 2, "cuStreamGetCaptureInfo_v3_ptsz"),
    ("cuCtxCreate", 12050, 0, "cuCtxCreate_v4"),
    ("cuCtxCreate", 11040, 0, "cuCtxCreate_v3"),
    ("cuDevicePrimaryCtxRelease", 11000, 0, "cuDevicePrimaryCtxRelease_v2"),
    ("cuMemPrefetchAsync", 12020, 2, "cuMemPrefetchAsync_v2_ptsz"),
    ("cuMemAdvise", 12020, 0, "cuMemAdvise_v2"),
    ("cuGraphInstantiate", 11000, 0, "cuGraphInstantiate_v2"),
    ("cuEventDestroy", 4000, 0, "cuEventDestroy_v2"),
    ("cuDeviceTotalMem", 3020, 0, "cuDeviceTotalMem_v2"),
])
def test_versioned_entry_points(libcuda, name, version, flags, symbol):
    """An entry point whose ABI changed is chosen by the CUDA version asked for."""
    r, fn, status = _gpa(libcuda, name, version, flags)
    assert (r, status) == (0, 0)
    assert fn == _addr(libcuda, symbol)


def test_not_found(libcuda):
    r, fn, status = _gpa(libcuda, "cuNoSuchFunction", 13000, 0)
    assert (r, fn, status) == (500, None, 1)  # CUDA_ERROR_NOT_FOUND, SYMBOL_NOT_FOUND
    r, fn, status = _gpa(libcuda, "cuMemAllocAsync", 11010, 0)  # introduced in 11.2
    assert (r, fn, status) == (500, None, 2)  # VERSION_NOT_SUFFICIENT
    r, fn, status = _gpa(libcuda, "cuMemAllocAsync", 11020, 0)
    assert (r, status) == (0, 0) and fn
    # the runtime's first probe: an empty name, answered as a real driver 580 answers it
    assert _gpa(libcuda, "", 0, 0) == (0, None, 1)
    # bad arguments
    fn = ctypes.c_void_p()
    assert libcuda.cuGetProcAddress_v2(None, ctypes.byref(fn), 13000, ctypes.c_ulonglong(0),
                                       None) == 1
    assert _gpa(libcuda, "cuInit", 13000, 4)[0] == 1


def test_v1_entry_point(libcuda):
    fn = ctypes.c_void_p()
    libcuda.cuGetProcAddress.restype = ctypes.c_int
    assert libcuda.cuGetProcAddress(b"cuMemFree", ctypes.byref(fn), 3020,
                                    ctypes.c_ulonglong(0)) == 0
    assert fn.value == _addr(libcuda, "cuMemFree_v2")


def test_error_names_and_strings(libcuda):
    name = ctypes.c_char_p()
    text = ctypes.c_char_p()
    for code, want_name, want_text in [(0, b"CUDA_SUCCESS", b"no error"),
                                       (1, b"CUDA_ERROR_INVALID_VALUE", b"invalid argument"),
                                       (201, b"CUDA_ERROR_INVALID_CONTEXT",
                                        b"invalid device context"),
                                       (500, b"CUDA_ERROR_NOT_FOUND", b"named symbol not found"),
                                       (801, b"CUDA_ERROR_NOT_SUPPORTED",
                                        b"operation not supported"),
                                       (999, b"CUDA_ERROR_UNKNOWN", b"unknown error")]:
        assert libcuda.cuGetErrorName(code, ctypes.byref(name)) == 0
        assert libcuda.cuGetErrorString(code, ctypes.byref(text)) == 0
        assert (name.value, text.value) == (want_name, want_text)
    assert libcuda.cuGetErrorName(12345, ctypes.byref(name)) == 1
    assert name.value is None
    assert len(_tool().read_curesult()) == 101


def test_calls_before_cuinit(libcuda):
    count = ctypes.c_int(-1)
    assert libcuda.cuDeviceGetCount(ctypes.byref(count)) == 3  # CUDA_ERROR_NOT_INITIALIZED
    version = ctypes.c_int(0)
    assert libcuda.cuDriverGetVersion(ctypes.byref(version)) == 0
    assert version.value >= 13000 or version.value > 0


def test_export_tables(libcuda):
    """The tables the CUDA 13 runtime asks for are there, with the sizes a real driver 580
    gives; an unknown UUID is refused, never a table of null pointers."""
    table = ctypes.c_void_p()
    sizes = {"6bd5fb6c-5bf4-e74a-8987-d93912fd9df9": 0x68,
             "a094798c-2e74-2e74-93f2-0800200c0a66": 0x38,
             "42d85a81-23f6-cb47-8298-f6e78a3aecdc": 0x18,
             "263e8860-7cd2-6143-92f6-bbd5006dfa7e": 0x78,
             "d4082055-bde6-704b-8d34-ba123c66e1f2": 0x18,
             "f8cff951-2146-8b4e-b9e2-fb469e7c0dd9": 0x18,
             "21318c60-9714-3248-8ca6-41ff7324c8f2": 0x2e8,
             "6e163fbe-b958-444d-835c-e182aff1991e": 0x318}
    for uuid, size in sizes.items():
        raw = bytes.fromhex(uuid.replace("-", ""))
        assert libcuda.cuGetExportTable(ctypes.byref(table), raw) == 0, uuid
        slots = (ctypes.c_void_p * (size // 8)).from_address(table.value)
        assert slots[0] == size
        assert all(slots[i] for i in range(1, size // 8)), uuid  # no null slot
    cls = bytes.fromhex("c693336e1121df11a8c368f355d89593")
    assert libcuda.cuGetExportTable(ctypes.byref(table), cls) == 0
    assert all((ctypes.c_void_p * 3).from_address(table.value))
    unknown = bytes(range(16))
    assert libcuda.cuGetExportTable(ctypes.byref(table), unknown) == 1
    assert table.value is None


_REFUSALS = r"""
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
h = ctypes.c_void_p()
print(lib.cuMemCreate(ctypes.byref(h), ctypes.c_size_t(1 << 21), None, ctypes.c_ulonglong(0)),
      lib.cuMemCreate(ctypes.byref(h), ctypes.c_size_t(1 << 21), None, ctypes.c_ulonglong(0)))
t = ctypes.c_void_p(1)
print(lib.cuGetExportTable(ctypes.byref(t), bytes(range(16))), t.value,
      lib.cuGetExportTable(ctypes.byref(t), bytes(range(16))))
"""


def test_refusals_name_themselves_once_on_stderr():
    """An entry point farcuda does not implement returns CUDA_ERROR_NOT_SUPPORTED and says so
    once; an unknown export table is an error that names its UUID (once), never a table."""
    from farcuda.interposer.cli import driver_dir
    r = subprocess.run([sys.executable, "-c", _REFUSALS, str(driver_dir() / "libcuda.so.1")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["801 801", "1 None 1"], r.stdout + r.stderr
    lines = r.stderr.splitlines()
    named = [ln for ln in lines if "cuMemCreate" in ln]
    assert len(named) == 1 and "CUDA_ERROR_NOT_SUPPORTED" in named[0], r.stderr
    assert named[0].startswith("farcuda: "), r.stderr
    uuid = [ln for ln in lines if "00010203-0405-0607-0809-0a0b0c0d0e0f" in ln]
    assert len(uuid) == 1 and "unknown table" in uuid[0], r.stderr
