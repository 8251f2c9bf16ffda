"""farcuda.wire.fatbin against what nvcc really writes.

The nvcc tests compile one small CUDA program in several ways (once per module, in parallel)
and check the parser against facts that do not come from the parser: the C ABI layout of
each kernel's parameters (through ctypes), the sizes in the source, and the uncompressed
build's bytes. They skip, with the reason, where nvcc 13 is missing; the pure-Python tests
(LZ4, wrapper, synthetic containers) always run.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import os
import random
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest


def _load_fatbin():
    try:
        return importlib.import_module("farcuda.wire.fatbin")
    except ImportError:
        # A checkout that is not installed: load the module from its file (it has no imports
        # from the package).
        path = Path(__file__).resolve().parents[2] / "wire" / "fatbin.py"
        spec = importlib.util.spec_from_file_location("_farcuda_fatbin_under_test", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
        return module


fatbin = _load_fatbin()
FatbinError = fatbin.FatbinError

# --------------------------------------------------------------------------- the program

SOURCE = r"""
#include <cstdio>
struct S1 { char c; double d; int a[3]; };
struct Big { char b[1024]; };
struct Huge { char b[20000]; };
struct A16 { alignas(16) float v[4]; };

__device__ int g_int;
__device__ double g_arr[100];
__constant__ float c_tab[64];
__constant__ int c_one;
__device__ char g_big[5000];
__device__ float g_init[3] = {1.0f, 2.0f, 3.0f};
__managed__ int g_managed;
namespace ns { __device__ int nsvar; }

extern "C" __global__ void k_int(int a) { g_int = a + ns::nsvar + g_managed; }
extern "C" __global__ void k_double(double d) { g_arr[0] = d + g_init[2]; }
extern "C" __global__ void k_ptr(float *p) { p[0] = c_tab[0] + c_one; }
extern "C" __global__ void k_struct(S1 s) { g_arr[1] = s.c + s.d + s.a[2]; }
extern "C" __global__ void k_big(Big b) { g_big[0] = b.b[1000]; }
extern "C" __global__ void k_huge(int i, Huge h, double d) { g_big[1] = h.b[19999] + i + d; }
extern "C" __global__ void k_a16(char c, A16 a, char e) { g_arr[3] = c + a.v[3] + e; }
extern "C" __global__ void k_mix(char c, double d, short s, int *p, char c2) {
  p[0] = c + d + s + c2; }
extern "C" __global__ void k_20(int a0, int a1, int a2, int a3, int a4, int a5, int a6, int a7,
    int a8, int a9, float f0, float f1, float f2, float f3, float f4, double d5, double d6,
    double d7, char c8, long long l9) {
  g_arr[2] = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + f0 + f1 + f2 + f3 + f4 + d5 + d6
           + d7 + c8 + l9; }
extern "C" __global__ void k_none() { }
extern "C" __global__ void k_printf(int x) { printf("%d\n", x); }
template <typename T> __global__ void k_tmpl(T *p, T v, int n) { p[n] = v; }
template __global__ void k_tmpl<float>(float *, float, int);

int main() { k_int<<<1, 1>>>(1); return 0; }
"""


class S1(ctypes.Structure):
    _fields_ = [("c", ctypes.c_char), ("d", ctypes.c_double), ("a", ctypes.c_int * 3)]


# Parameter types in declaration order; the expected layout is the C struct with these members.
SIGNATURES: dict[str, list] = {
    "k_int": [ctypes.c_int],
    "k_double": [ctypes.c_double],
    "k_ptr": [ctypes.c_void_p],
    "k_struct": [S1],
    "k_big": [ctypes.c_char * 1024],
    "k_huge": [ctypes.c_int, ctypes.c_char * 20000, ctypes.c_double],
    "k_mix": [ctypes.c_char, ctypes.c_double, ctypes.c_short, ctypes.c_void_p, ctypes.c_char],
    "k_20": [ctypes.c_int] * 10
    + [ctypes.c_float] * 5
    + [ctypes.c_double] * 3
    + [ctypes.c_char, ctypes.c_longlong],
    "k_none": [],
    "k_printf": [ctypes.c_int],
    "_Z6k_tmplIfEvPT_S0_i": [ctypes.c_void_p, ctypes.c_float, ctypes.c_int],
}
# alignas(16) is beyond ctypes before Python 3.13: written out by hand.
EXPECTED_EXTRA = {"k_a16": ([(0, 1), (16, 16), (32, 1)], 33)}

GLOBALS = {
    "g_int": (4, False),
    "g_arr": (800, False),
    "c_tab": (256, True),
    "c_one": (4, True),
    "g_big": (5000, False),
    "g_init": (12, False),
    "g_managed": (4, False),
    "_ZN2ns5nsvarE": (4, False),
}


def abi_layout(types: list) -> tuple[list[tuple[int, int]], int]:
    """(offset, size) per parameter and the buffer's length, by the host C ABI."""
    if not types:
        return [], 0
    fields = [(f"p{i}", t) for i, t in enumerate(types)]
    struct_type = type("Params", (ctypes.Structure,), {"_fields_": fields})
    layout = [(getattr(struct_type, n).offset, ctypes.sizeof(t)) for n, t in fields]
    # ptxas does not round the buffer up to the struct's alignment: it ends at the last byte.
    return layout, layout[-1][0] + layout[-1][1]


def expected_layouts() -> dict[str, tuple[list[tuple[int, int]], int]]:
    out = {name: abi_layout(types) for name, types in SIGNATURES.items()}
    out.update(EXPECTED_EXTRA)
    return out


# --------------------------------------------------------------------------- building

BUILDS = {
    # nvcc 13's default: sm_75 cubin + PTX; PTX zstd-compressed, cubin plain.
    "default": [],
    "plain": ["-arch=sm_90", "-compress-mode=none"],
    "zstd": ["-arch=sm_90", "-Xfatbin", "-compress-all"],
    "lz4": ["-arch=sm_90", "-Xfatbin", "-compress-all", "-compress-mode=speed"],
    "ptx": ["-gencode", "arch=compute_90,code=compute_90"],
    "multi": [
        "-gencode",
        "arch=compute_80,code=sm_80",
        "-gencode",
        "arch=compute_90,code=sm_90",
    ],
    "rdc": ["-arch=sm_90", "-rdc=true"],
}


def find_nvcc() -> str | None:
    for candidate in (
        shutil.which("nvcc"),
        os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc"),
        "/usr/local/cuda/bin/nvcc",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, Path]:
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin)")
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"release (\d+)\.(\d+)", version)
    if not match or int(match.group(1)) < 13:
        pytest.skip(f"these facts are nvcc 13's; found {match.group(0) if match else version!r}")
    root = tmp_path_factory.mktemp("fatbin")
    src = root / "prog.cu"
    src.write_text(SOURCE)
    procs = {}
    for name, flags in BUILDS.items():
        cmd = [nvcc, "-cudart", "shared", *flags, "-o", str(root / name), str(src)]
        procs[name] = (cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    out = {}
    for name, (cmd, proc) in procs.items():
        log, _ = proc.communicate()
        if proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed:\n{log.decode(errors='replace')}")
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def sections(builds) -> dict[str, bytes]:
    return {name: fatbin.fatbin_from_elf(path) for name, path in builds.items()}


def containers(sections, name: str):
    return fatbin.parse_fatbins(sections[name])


def describe(fb) -> list[tuple[str, int, str]]:
    return [(e.kind_name, e.sm_arch, e.compression) for e in fb.entries]


# --------------------------------------------------------------------------- containers


def test_every_build_splits_into_whole_containers(sections):
    for name, sec in sections.items():
        fbs = containers(sections, name)
        assert fbs, name
        off = 0
        for fb in fbs:
            # fatbin_size needs only the 16-byte header, as the shim's first read gives it.
            assert fatbin.fatbin_size(memoryview(sec)[off : off + 16]) == fb.total_size
            assert fatbin.parse_fatbin(sec[off:]).total_size == fb.total_size
            assert fb.version == 1 and fb.header_size == 16
            for e in fb.entries:
                assert e.version == 0x0101
                assert len(e.payload) == e.payload_size and e.payload_size % 8 == 0
                assert e.flags & 0x11 == 0x11  # 64-bit, Linux host
            off += fb.total_size
        assert off == len(sec), name


def test_default_build_is_sm75_cubin_plus_zstd_ptx(sections):
    dlink, tu = containers(sections, "default")
    # nvcc 13 device-links every executable: a first container with the link image.
    assert describe(dlink) == [("elf", 75, "none")]
    assert describe(tu) == [("elf", 75, "none"), ("ptx", 75, "zstd")]
    ptx = tu.entries[1]
    assert ptx.flags & fatbin.FLAG_ZSTD and ptx.header_size == 80
    assert bytes(ptx.payload[:4]) == b"\x28\xb5\x2f\xfd"  # a zstd frame
    assert 0 < ptx.compressed_size <= ptx.payload_size
    assert ptx.format_version == (9, 0) and tu.entries[0].format_version == (1, 8)
    assert bytes(tu.entries[0].payload[:4]) == b"\x7fELF"


def test_compress_all_compresses_cubins_with_zstd(sections):
    plain = containers(sections, "plain")
    zstd = containers(sections, "zstd")
    assert [describe(fb) for fb in zstd] == [
        [("elf", 90, "zstd")],
        [("elf", 90, "zstd"), ("ptx", 90, "zstd")],
    ]
    for fb, ref in zip(zstd, plain, strict=True):
        for e, r in zip(fb.entries, ref.entries, strict=True):
            assert e.flags & fatbin.FLAG_ZSTD and not e.flags & fatbin.FLAG_LZ4
            assert bytes(e.payload[:4]) == b"\x28\xb5\x2f\xfd"
            assert e.compressed_size <= e.payload_size
            # The uncompressed size is the image's own length: the cubin's, or the PTX text's
            # plus its NUL terminator (stored uncompressed, PTX is NUL-padded to 8 bytes).
            if e.is_elf:
                assert e.uncompressed_size == r.payload_size
            else:
                assert e.uncompressed_size == len(bytes(r.payload).rstrip(b"\0")) + 1
    if fatbin.zstd_available():
        assert fatbin.kernel_layouts(sections["zstd"]) == fatbin.kernel_layouts(sections["plain"])
    else:
        with pytest.raises(FatbinError, match="zstd"):
            zstd[1].entries[0].data()
        with pytest.raises(fatbin.NoUsableCubinError, match="elf sm_90 \\(zstd\\)"):
            fatbin.kernel_layouts(sections["zstd"])


def test_compress_mode_speed_is_raw_lz4_blocks(sections):
    plain = containers(sections, "plain")
    lz4 = containers(sections, "lz4")
    assert [describe(fb) for fb in lz4] == [
        [("elf", 90, "lz4")],
        [("elf", 90, "lz4"), ("ptx", 90, "lz4")],
    ]
    for fb, ref in zip(lz4, plain, strict=True):
        for e, r in zip(fb.entries, ref.entries, strict=True):
            assert e.flags & fatbin.FLAG_LZ4 and not e.flags & fatbin.FLAG_ZSTD
            data = e.data()
            assert len(data) == e.uncompressed_size
            if e.is_elf:
                assert data == bytes(r.payload)
            else:  # NUL-terminated text, NUL-padded to 8 bytes when stored uncompressed
                assert data.endswith(b"\0")
                assert data[:-1] == bytes(r.payload).rstrip(b"\0")
    assert fatbin.kernel_layouts(sections["lz4"]) == fatbin.kernel_layouts(sections["plain"])


def test_ptx_only_build_has_no_cubin(sections):
    dlink, tu = containers(sections, "ptx")
    assert dlink.entries == () and dlink.total_size == 16  # an empty link container
    assert describe(tu) == [("ptx", 90, "zstd")]
    with pytest.raises(fatbin.NoUsableCubinError, match="ptx sm_90"):
        fatbin.kernel_layouts(sections["ptx"])
    with pytest.raises(fatbin.NoUsableCubinError):
        tu.select_cubin(90)


def test_multi_arch_selection(sections):
    for fb in containers(sections, "multi"):
        assert describe(fb) == [("elf", 80, "none"), ("elf", 90, "none")]
    tu = containers(sections, "multi")[1]
    assert tu.select_cubin(90).sm_arch == 90
    assert tu.select_cubin(89).sm_arch == 80  # highest below
    assert tu.select_cubin(120).sm_arch == 90
    assert tu.select_cubin(75).sm_arch == 80  # nothing below: layouts do not depend on arch
    by_arch = {e.sm_arch: fatbin.cubin_kernels(e.data()) for e in tu.entries}
    assert by_arch[80] == by_arch[90]


def test_wrappers_point_at_the_containers(builds, sections):
    secs = fatbin.elf_sections(builds["plain"])
    seg = secs[".nvFatBinSegment"].data
    assert len(seg) == 2 * fatbin.WRAPPER_SIZE
    wrappers = [fatbin.parse_wrapper(seg[i : i + 24]) for i in (0, 24)]
    assert [w.version for w in wrappers] == [2, 1]
    base = secs[".nv_fatbin"].addr
    offsets = [w.data - base for w in wrappers]
    fbs = containers(sections, "plain")
    assert offsets == [0, fbs[0].total_size]
    assert wrappers[1].filename_or_fatbins == 0  # version 1: no offline file name
    assert wrappers[0].filename_or_fatbins != 0  # version 2: __cudaPrelinkedFatbins
    # The version 1 wrapper is the one a non-rdc program registers: it holds the kernels.
    kernels = fatbin.kernel_layouts(sections["plain"][offsets[1] :][: fbs[1].total_size])
    assert set(kernels) == set(expected_layouts())
    assert fatbin.kernel_layouts(sections["plain"][: fbs[0].total_size]) == {}

    # -rdc=true: the registered (version 2) wrapper's data is the device-linked image in
    # .nv_fatbin; version 1 points into __nv_relfatbin (the relocatable images).
    rsecs = fatbin.elf_sections(builds["rdc"])
    rseg = rsecs[".nvFatBinSegment"].data
    rwrap = [fatbin.parse_wrapper(rseg[i : i + 24]) for i in range(0, len(rseg), 24)]
    assert [w.version for w in rwrap] == [2, 1]
    nv, rel = rsecs[".nv_fatbin"], rsecs["__nv_relfatbin"]
    assert nv.addr <= rwrap[0].data < nv.addr + nv.size
    assert rel.addr <= rwrap[1].data < rel.addr + rel.size
    linked = fatbin.kernel_layouts(bytes(nv.data[rwrap[0].data - nv.addr :]))
    assert "k_int" in linked  # nvlink drops kernels the host never references


# --------------------------------------------------------------------------- cubins


@pytest.mark.parametrize("build", ["default", "plain", "lz4", "multi"])
def test_parameter_layouts_follow_the_c_abi(sections, build):
    got = fatbin.kernel_layouts(sections[build], prefer_arch=90)
    want = expected_layouts()
    assert set(got) == set(want)
    for name, (params, size) in want.items():
        info = got[name]
        assert info.name == name
        assert [tuple(p) for p in info.params] == params, name
        assert info.param_size == size, name


def test_large_parameters_use_kparam_info_v2(sections):
    tu = containers(sections, "plain")[1]
    secs = fatbin.elf_sections(tu.entries[0].data())
    huge = bytes(secs[".nv.info.k_huge"].data)
    small = bytes(secs[".nv.info.k_big"].data)
    # EIFMT_SVAL, EIATTR_KPARAM_INFO_V2 (0x45) / EIATTR_KPARAM_INFO (0x17), 12 bytes
    assert b"\x04\x45\x0c\x00" in huge and b"\x04\x17\x0c\x00" not in huge
    assert b"\x04\x17\x0c\x00" in small and b"\x04\x45\x0c\x00" not in small


@pytest.mark.parametrize("build", ["default", "plain", "multi"])
def test_globals(sections, build):
    for fb in containers(sections, build)[1:]:
        for e in fb.entries:
            if e.is_elf:
                got = fatbin.cubin_globals(e.data())
                assert {k: tuple(v) for k, v in got.items()} == GLOBALS  # no "$str"


# --------------------------------------------------------------------------- malformed input


def assert_only_fatbin_errors(blob: bytes) -> None:
    """Run every parser over ``blob``: success or FatbinError, nothing else."""
    try:
        fbs = fatbin.parse_fatbins(blob)
    except FatbinError:
        fbs = []
    for fb in fbs:
        for e in fb.entries:
            try:
                data = e.data()
            except FatbinError:
                continue
            if e.is_elf:
                for parse in (fatbin.cubin_kernels, fatbin.cubin_globals):
                    try:
                        parse(data)
                    except FatbinError:
                        pass
    try:
        fatbin.kernel_layouts(blob)
    except FatbinError:
        pass


def test_bad_magic_truncation_and_overlong_sizes(sections):
    blob = sections["plain"]
    first = fatbin.parse_fatbin(blob)
    one = blob[: first.total_size]
    with pytest.raises(FatbinError, match="magic"):
        fatbin.parse_fatbin(b"\0" * 4 + one[4:])
    with pytest.raises(FatbinError, match="magic"):
        fatbin.fatbin_size(b"\x7fELF" + bytes(12))
    with pytest.raises(FatbinError, match="truncated"):
        fatbin.fatbin_size(one[:15])
    with pytest.raises(FatbinError, match="implausible"):
        fatbin.fatbin_size(one[:8] + struct.pack("<Q", 1 << 40))
    for cut in sorted({*range(0, 200), *range(len(one) - 80, len(one))}):
        with pytest.raises(FatbinError):
            fatbin.parse_fatbin(one[:cut])
    # The container's size past the end of the buffer.
    overlong = one[:8] + struct.pack("<Q", len(one)) + one[16:]
    with pytest.raises(FatbinError, match="claims"):
        fatbin.parse_fatbin(overlong)
    # An entry's payload size past the end of its container.
    bad_entry = bytearray(one)
    struct.pack_into("<Q", bad_entry, 16 + 8, 1 << 40)
    with pytest.raises(FatbinError, match="past"):
        fatbin.parse_fatbin(bytes(bad_entry))
    with pytest.raises(FatbinError):
        fatbin.cubin_kernels(first.entries[0].data()[:100])


@pytest.mark.parametrize("build", ["plain", "lz4", "default"])
def test_random_mutations_raise_only_fatbin_error(sections, build):
    blob = sections[build]
    rng = random.Random(f"fatbin-{build}")
    # Aim a share of the mutations at headers, where they change the parse.
    hot = []
    off = 0
    for fb in fatbin.parse_fatbins(blob):
        hot += range(off, off + 16)
        for e in fb.entries:
            hot += range(off + e.offset, off + e.offset + e.header_size + 64)
        off += fb.total_size
    for _ in range(150):
        data = bytearray(blob)
        for _ in range(rng.randint(1, 4)):
            pos = rng.choice(hot) if rng.random() < 0.6 else rng.randrange(len(data))
            if pos < len(data):
                data[pos] = rng.randrange(256)
        if rng.random() < 0.2:
            del data[rng.randrange(len(data)) :]
        assert_only_fatbin_errors(bytes(data))


def test_random_cubin_mutations_raise_only_fatbin_error(sections):
    cubin = fatbin.parse_fatbins(sections["plain"])[1].entries[0].data()
    secs = fatbin.elf_sections(cubin)
    hot = list(range(64))
    for s in secs.values():
        if s.name.startswith((".nv.info", ".symtab", ".shstrtab")) or s.index == 0:
            hot += range(s.offset, s.offset + min(s.size, 96))
    shoff = struct.unpack_from("<Q", cubin, 0x28)[0]
    hot += range(shoff, min(len(cubin), shoff + 64 * len(secs)))
    rng = random.Random("cubin")
    for _ in range(200):
        data = bytearray(cubin)
        for _ in range(rng.randint(1, 3)):
            data[rng.choice(hot)] = rng.randrange(256)
        for parse in (fatbin.cubin_kernels, fatbin.cubin_globals, fatbin.elf_sections):
            try:
                parse(bytes(data))
            except FatbinError:
                pass


def test_random_bytes():
    rng = random.Random(7)
    magic = struct.pack("<I", fatbin.FATBIN_MAGIC)
    for n in (0, 1, 15, 16, 17, 64, 100, 1000):
        junk = rng.randbytes(n)
        assert_only_fatbin_errors(junk)
        assert_only_fatbin_errors(magic + junk)
        assert_only_fatbin_errors(magic + struct.pack("<HHQ", 1, 16, n) + junk)
        for parse in (fatbin.cubin_kernels, fatbin.cubin_globals):
            with pytest.raises(FatbinError):
                parse(junk)


# --------------------------------------------------------------------------- no nvcc needed


def entry_header(kind=2, payload=b"", flags=0x11, arch=90, name=b"", options=b"", **kw):
    """A fat binary entry the way fatbinary lays one out (name, then options record)."""
    tail = bytearray()
    name_off = 64 if name else 0
    tail += name + bytes(-len(name) % 8)
    options_ref = 0
    if options or kind == fatbin.KIND_PTX:
        options_ref = 64 + len(tail)
        tail += struct.pack("<II", options_ref + 8, len(options)) + options
        tail += bytes(-len(tail) % 8)
    header_size = 64 + len(tail)
    padded = payload + bytes(-len(payload) % 8)
    head = struct.pack(
        "<HHIQIIHHIIIQQQ",
        kind,
        0x0101,
        header_size,
        len(padded),
        kw.get("compressed_size", 0),
        options_ref,
        kw.get("minor", 8),
        kw.get("major", 1),
        arch,
        name_off,
        len(name),
        flags,
        0,
        kw.get("uncompressed_size", 0),
    )
    return head + bytes(tail) + padded


def container(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", fatbin.FATBIN_MAGIC, 1, 16, len(body)) + body


def test_synthetic_container_fields():
    ptx = b".version 9.0\n.target sm_90\n"
    blob = container(
        entry_header(payload=b"\x7fELF" + bytes(60), name=b"k.cu"),
        entry_header(kind=1, payload=ptx, options=b" -O3", major=9, minor=0),
    )
    assert fatbin.fatbin_size(blob[:16]) == len(blob)
    fb = fatbin.parse_fatbin(blob + b"trailing bytes are not ours")
    elf, text = fb.entries
    assert (elf.kind_name, elf.name, elf.options) == ("elf", "k.cu", b"")
    assert elf.format_version == (1, 8) and elf.header_size == 72
    assert (text.kind_name, text.name, text.options) == ("ptx", None, b" -O3")
    assert text.data().rstrip(b"\0") == ptx and text.header_size == 80
    assert fatbin.parse_fatbins(blob + bytes(8)) == [fb]  # trailing zero padding is skipped
    bad = bytearray(blob)
    struct.pack_into("<II", bad, 16 + 32, 60, 10)  # name reaches past the entry header
    with pytest.raises(FatbinError, match="name"):
        fatbin.parse_fatbin(bytes(bad))
    with pytest.raises(fatbin.NoUsableCubinError):
        fatbin.parse_fatbin(container(entry_header(kind=1, payload=ptx))).select_cubin()


def test_unknown_compression_is_reported_not_guessed():
    blob = container(entry_header(payload=b"x" * 8, flags=0x1011, compressed_size=8))
    (e,) = fatbin.parse_fatbin(blob).entries
    assert e.compression == fatbin.COMPRESSION_UNKNOWN
    with pytest.raises(FatbinError, match="unknown compression"):
        e.data()


def test_wrapper():
    raw = struct.pack("<iiQQ", fatbin.FATBINC_MAGIC, 1, 0x7F0000001000, 0)
    assert fatbin.parse_wrapper(raw) == (fatbin.FATBINC_MAGIC, 1, 0x7F0000001000, 0)
    w = fatbin.parse_wrapper(memoryview(raw + b"extra"))
    assert (w.magic, w.version, w.data, w.filename_or_fatbins) == (
        0x466243B1,
        1,
        0x7F0000001000,
        0,
    )
    with pytest.raises(FatbinError, match="magic"):
        fatbin.parse_wrapper(struct.pack("<iiQQ", 0x12345678, 1, 0, 0))
    with pytest.raises(FatbinError, match="truncated"):
        fatbin.parse_wrapper(raw[:16])


def test_lz4_block():
    literals = b"\x50hello"  # 5 literals, end of block
    assert fatbin.lz4_block_decompress(literals, 5) == b"hello"
    # "ab" then a match of 4+6 at offset 2 (overlapping), then the final literal "!"
    block = b"\x26ab\x02\x00" + b"\x10!"
    assert fatbin.lz4_block_decompress(block, 13) == b"ab" * 6 + b"!"
    # 15+ literals: the length continues in the next bytes (15 + 255 + 3 = 273)
    long_lits = bytes(range(256)) + bytes(17)
    assert fatbin.lz4_block_decompress(b"\xf0\xff\x03" + long_lits, 273) == long_lits
    # a long match: 15 + 4 + 255 + 1 = 275 bytes of "z" after the literal
    assert fatbin.lz4_block_decompress(b"\x1fz\x01\x00\xff\x01\x00", 276) == b"z" * 276
    for bad, size in [
        (b"\x26ab\x03\x00\x10!", 13),  # offset past the output
        (b"\x26ab\x00\x00\x10!", 13),  # offset 0
        (b"\x26ab\x02", 13),  # truncated offset
        (b"\x50hel", 5),  # truncated literals
        (literals, 4),  # longer than announced
        (literals, 6),  # shorter than announced
        (b"", 0),  # not even a token
        (literals, 1 << 40),  # impossible ratio: refused before decoding
    ]:
        with pytest.raises(FatbinError, match="LZ4"):
            fatbin.lz4_block_decompress(bad, size)


def test_not_an_elf_file():
    with pytest.raises(FatbinError, match="not an ELF"):
        fatbin.fatbin_from_elf(b"MZ" + bytes(100))
    with pytest.raises(FatbinError):
        fatbin.fatbin_from_elf(b"\x7fELF")
    with pytest.raises(FatbinError, match="no .nv_fatbin"):
        fatbin.fatbin_from_elf(sys.executable)  # an ELF without device code
