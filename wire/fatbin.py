"""Fat binaries and cubins as nvcc 13.0 writes them: parse, select, read kernel layouts.

Pure Python, stdlib only, no I/O beyond reading a file named by the caller. Every layout fact
below was checked against nvcc 13.0 (V13.0.88) output on x86-64 Linux; the tests rebuild the
evidence with nvcc at test time.

Invariants: every parser here either returns a fully bounds-checked result or raises
:class:`FatbinError` (a ``ValueError``); malformed input never surfaces as ``IndexError``,
``struct.error`` or ``UnicodeDecodeError``. All integers are little-endian.

Wrapper (``__fatBinC_Wrapper_t``, ``fatbinary_section.h``), 24 bytes, in ``.nvFatBinSegment``::

    i32 magic = 0x466243B1; i32 version; u64 data; u64 filename_or_fatbins

``version`` 1: a translation unit's own fat binary (``filename_or_fatbins`` is 0);
``version`` 2: a device-linked binary, ``filename_or_fatbins`` points at the NULL-terminated
``__cudaPrelinkedFatbins`` array. nvcc 13 device-links *every* executable, so an executable
holds one wrapper of each version even without ``-rdc=true``; without ``-rdc`` only the
version 1 wrapper is passed to ``__cudaRegisterFatBinary`` (the link stub that would register
the other is called only from ``-rdc`` objects).

Container (``data`` points here; the ``.nv_fatbin`` section holds several, back to back)::

    u32 magic = 0xBA55ED50; u16 version (1); u16 header_size (16); u64 size
    then ``size`` bytes of entries; total length = header_size + size

An empty container (size 0) occurs: a PTX-only executable's device-link container.

Entry (header_size varies: 64 for a plain cubin, 72 with a name, 80 for PTX, 112 for sm_100+
cubins, 120 for LTO IR; always use the field)::

    off  0  u16 kind            1 PTX, 2 ELF cubin, 8 LTO IR (NVVM, -gencode code=lto_XX)
    off  2  u16 entry version   0x0101
    off  4  u32 header_size
    off  8  u64 payload_size    stored bytes after the header, padded to 8
    off 16  u32 compressed_size 0 when not compressed (<= payload_size, which is padded)
    off 20  u32 options_ref     0, or the offset in this header of {u32 off; u32 len} naming a
                                byte string in the header: ptxas options for PTX, cicc options
                                for LTO IR, binary compatibility data for sm_100+ cubins
    off 24  u16 minor, u16 major  ELF 1.8, PTX ISA 9.0 (CUDA 13.0)
    off 28  u32 sm_arch         75, 80, 90, 100, ... (the PTX entry's virtual arch likewise)
    off 32  u32 name_off        offset of the name in this header (0: none), e.g. "k.cu" with
    off 36  u32 name_len        -G/-lineinfo, or fatbinary --ident; not NUL-terminated
    off 40  u64 flags           0x1 64-bit, 0x2 debug (-G), 0x10 Linux host, 0x2000 LZ4,
                                0x8000 zstd, 0x10000 LTO IR, 0x100000 arch-specific (sm_90a),
                                0x200000 family (sm_100f), 0x1000000 seen on sm_100+ cubins
    off 48  u64 (0; a hash for LTO IR)
    off 56  u64 uncompressed_size  0 when not compressed
    (header_size - 64 further bytes: the name and the options record)

Compression (CUDA 13 compresses PTX by default): ``-Xfatbin -compress-all`` compresses cubins
too, with zstd (a standard zstd frame) unless ``-compress-mode=speed`` picks LZ4 (a raw LZ4
*block*, no frame); ``-compress-mode=none`` (or ``-no-compress``) stores everything plain.
``-rdc=true`` objects' images in ``__nv_relfatbin`` are zstd-compressed by default. An image
decompresses to exactly ``uncompressed_size`` bytes; PTX text includes its terminating NUL
there, and is NUL-padded to 8 bytes when stored uncompressed.

Kernels: with ``-rdc=true``, nvlink drops kernels the host code never references from the
linked cubin, although the host still registers them all.

Cubin ``.nv.info`` / ``.nv.info.<kernel>`` sections hold EIATTR records, each 4-byte aligned::

    u8 format; u8 attribute; then
      format 0x01 EIFMT_NVAL: u16 unused           (record is 4 bytes)
      format 0x02 EIFMT_BVAL: u8 value, u8 pad     (4 bytes)
      format 0x03 EIFMT_HVAL: u16 value            (4 bytes)
      format 0x04 EIFMT_SVAL: u16 size, then size payload bytes

Attributes read here (all EIFMT_SVAL unless said):

* 0x17 EIATTR_KPARAM_INFO, 12 bytes, one per parameter, in *reverse* ordinal order:
  ``u32 index; u16 ordinal; u16 offset; u32 w`` with size = w >> 18 (14 bits); bits 12-16 of
  ``w`` read 0x1f (cbank) for every parameter seen, the others 0.
* 0x45 EIATTR_KPARAM_INFO_V2 (not in SHIM-NOTES): replaces 0x17 for a whole kernel once its
  parameter buffer passes the old 4 KB limit (4100 bytes: 0x17; 8000: 0x45): ``u32 index;
  u16 ordinal; u16 offset; u32 size``.
* 0x0a EIATTR_PARAM_CBANK, 8 bytes: ``u32 symbol index; u16 bank offset; u16 size``, size is
  the parameter buffer's length (end of the last parameter, not rounded up: 33 for
  ``(char, double, short, int*, char)``).
* 0x19 EIATTR_CBANK_PARAM_SIZE, EIFMT_HVAL: the same length.
A kernel without parameters has none of these.

``__device__`` variables are STT_OBJECT symbols in ``.nv.global`` (NOBITS) or
``.nv.global.init`` (initialized), ``__constant__`` ones in ``.nv.constant3`` (bank 3 on
sm_75..sm_121); ``.nv.constant0.<kernel>`` is a kernel's parameter bank. nvcc also puts
``$str`` (printf formats) in ``.nv.global.init``; such ``$`` names are not user variables.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from os import PathLike
from typing import NamedTuple

__all__ = [
    "cubin_global_init",
    "IMAGE_CUBIN",
    "IMAGE_FATBIN",
    "IMAGE_PTX",
    "image_contents",
    "image_kind",
    "ptx_kernels",
    "COMPRESSION_LZ4",
    "COMPRESSION_NONE",
    "COMPRESSION_UNKNOWN",
    "COMPRESSION_ZSTD",
    "ElfSection",
    "FATBINC_MAGIC",
    "FATBIN_MAGIC",
    "FLAG_ARCH_FAMILY",
    "FLAG_ARCH_SPECIFIC",
    "FLAG_LZ4",
    "FLAG_ZSTD",
    "FatBinary",
    "FatbinEntry",
    "FatbinError",
    "FatbinWrapper",
    "GlobalVar",
    "KIND_ELF",
    "KIND_LTO_IR",
    "KIND_PTX",
    "KernelInfo",
    "NoUsableCubinError",
    "ParamInfo",
    "WRAPPER_SIZE",
    "cubin_globals",
    "cubin_kernels",
    "decompress_entry",
    "elf_sections",
    "fatbin_from_elf",
    "fatbin_size",
    "kernel_layouts",
    "lz4_block_decompress",
    "parse_fatbin",
    "parse_fatbins",
    "parse_wrapper",
    "zstd_available",
]

FATBIN_MAGIC = 0xBA55ED50
FATBINC_MAGIC = 0x466243B1
WRAPPER_SIZE = 24

KIND_PTX = 1
KIND_ELF = 2
KIND_LTO_IR = 8
_KIND_NAMES = {KIND_PTX: "ptx", KIND_ELF: "elf", KIND_LTO_IR: "lto"}

FLAG_64BIT = 0x1
FLAG_DEBUG = 0x2
FLAG_LINUX = 0x10
FLAG_LZ4 = 0x2000
FLAG_ZSTD = 0x8000
FLAG_ARCH_SPECIFIC = 0x100000  # sm_90a, sm_100a
FLAG_ARCH_FAMILY = 0x200000  # sm_100f, sm_120f
# 0x1000: a compression flag nvcc 13 never sets (older toolkits); reported as "unknown".
_COMPRESSION_MASK = 0x1000 | FLAG_LZ4 | FLAG_ZSTD

COMPRESSION_NONE = "none"
COMPRESSION_ZSTD = "zstd"
COMPRESSION_LZ4 = "lz4"
COMPRESSION_UNKNOWN = "unknown"

_CONTAINER_HEADER = struct.Struct("<IHHQ")
# kind, version, header_size, payload_size, compressed_size, options_ref, minor, major,
# sm_arch, name_off, name_len, flags, reserved, uncompressed_size
_ENTRY_HEADER = struct.Struct("<HHIQIIHHIIIQQQ")
assert _ENTRY_HEADER.size == 64
_WRAPPER = struct.Struct("<iiQQ")

EIFMT_NVAL = 0x01
EIFMT_BVAL = 0x02
EIFMT_HVAL = 0x03
EIFMT_SVAL = 0x04
EIATTR_PARAM_CBANK = 0x0A
EIATTR_KPARAM_INFO = 0x17
EIATTR_CBANK_PARAM_SIZE = 0x19
EIATTR_KPARAM_INFO_V2 = 0x45

# LZ4 cannot expand more than 255:1 (a match token adds at most 255 bytes per input byte);
# a larger claim is a corrupt header, and refusing it keeps a bad size from allocating GiBs.
_LZ4_MAX_RATIO = 256
# x86-64 executables keep .nv_fatbin within reach of 32-bit relocations.
_MAX_FATBIN_SIZE = 1 << 32


class FatbinError(ValueError):
    """Malformed or unsupported fat binary, wrapper, ELF file or cubin."""


class NoUsableCubinError(FatbinError):
    """The fat binary has no cubin this module can read (only PTX, LTO IR, or zstd cubins)."""


Buffer = bytes | bytearray | memoryview


def _as_view(blob: Buffer) -> memoryview:
    """A read-only, flat, byte-format view of ``blob`` (no copy)."""
    try:
        mv = memoryview(blob)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")  # e.g. a ctypes array of c_uint64
    except (TypeError, ValueError) as e:
        raise FatbinError(f"expected a bytes-like object, got {type(blob).__name__}: {e}") from e
    return mv.toreadonly()


def _unpack(st: struct.Struct, buf: memoryview, off: int, what: str) -> tuple:
    if off < 0 or off + st.size > len(buf):
        raise FatbinError(
            f"truncated {what}: needs {st.size} bytes at offset {off}, buffer has {len(buf)}"
        )
    return st.unpack_from(buf, off)


def _decode(raw: bytes | memoryview) -> str:
    # surrogateescape round-trips any byte string, so names still match the C side exactly.
    return bytes(raw).decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------- wrapper


class FatbinWrapper(NamedTuple):
    """``__fatBinC_Wrapper_t``: the pointers are addresses in the registering process."""

    magic: int
    version: int
    data: int
    filename_or_fatbins: int


def parse_wrapper(raw: Buffer) -> FatbinWrapper:
    """Parse the 24-byte ``__fatBinC_Wrapper_t`` passed to ``__cudaRegisterFatBinary``."""
    mv = _as_view(raw)
    magic, version, data, filename = _unpack(_WRAPPER, mv, 0, "fat binary wrapper")
    magic &= 0xFFFFFFFF
    if magic != FATBINC_MAGIC:
        raise FatbinError(
            f"bad fat binary wrapper magic {magic:#010x}, expected {FATBINC_MAGIC:#010x}"
        )
    return FatbinWrapper(magic, version, data, filename)


# --------------------------------------------------------------------------- container


@dataclass(frozen=True)
class FatbinEntry:
    """One image in a fat binary: a cubin, PTX text or LTO IR, possibly compressed."""

    kind: int
    offset: int  # of the entry header, from the start of its container
    header_size: int
    payload_size: int  # stored bytes, padded to 8
    compressed_size: int  # 0 when not compressed
    uncompressed_size: int  # 0 when not compressed
    version: int  # entry format, 0x0101
    format_version: tuple[int, int]  # (major, minor): ELF (1, 8), PTX ISA (9, 0)
    sm_arch: int
    flags: int
    compression: str  # COMPRESSION_NONE / _ZSTD / _LZ4 / _UNKNOWN
    name: str | None
    options: bytes  # ptxas/cicc options or sm_100+ compat data; b"" if none
    payload: memoryview = field(repr=False, compare=False)  # view into the parsed buffer

    @property
    def kind_name(self) -> str:
        return _KIND_NAMES.get(self.kind, f"unknown({self.kind})")

    @property
    def is_elf(self) -> bool:
        return self.kind == KIND_ELF

    @property
    def is_ptx(self) -> bool:
        return self.kind == KIND_PTX

    @property
    def is_compressed(self) -> bool:
        return self.compression != COMPRESSION_NONE

    @property
    def arch_suffix(self) -> str:
        """Arch variant: "a" for sm_90a-style images, "f" for sm_100f-style, else empty."""
        if self.flags & FLAG_ARCH_SPECIFIC:
            return "a"
        if self.flags & FLAG_ARCH_FAMILY:
            return "f"
        return ""

    def describe(self) -> str:
        return f"{self.kind_name} sm_{self.sm_arch}{self.arch_suffix} ({self.compression})"

    def data(self) -> bytes:
        """The image, decompressed; see :func:`decompress_entry`."""
        return decompress_entry(self)


@dataclass(frozen=True)
class FatBinary:
    """One fat binary container (what a wrapper's ``data`` points at)."""

    version: int
    header_size: int
    size: int  # bytes of entries after the header
    entries: tuple[FatbinEntry, ...]

    @property
    def total_size(self) -> int:
        return self.header_size + self.size

    def select_cubin(self, prefer_arch: int = 90) -> FatbinEntry:
        """The cubin to read layouts from: see :func:`kernel_layouts`."""
        return _select_cubin(self.entries, prefer_arch)


def _container_header(mv: memoryview) -> tuple[int, int, int]:
    magic, version, header_size, size = _unpack(_CONTAINER_HEADER, mv, 0, "fat binary header")
    if magic != FATBIN_MAGIC:
        raise FatbinError(f"bad fat binary magic {magic:#010x}, expected {FATBIN_MAGIC:#010x}")
    if header_size < _CONTAINER_HEADER.size:
        raise FatbinError(f"fat binary header size {header_size} is below 16")
    if header_size + size > _MAX_FATBIN_SIZE:
        # Checked here, not only against the buffer, because the shim sizes its copy out of
        # process memory with fatbin_size() before it has the whole blob.
        raise FatbinError(f"fat binary size {header_size + size} is implausible (over 4 GiB)")
    return version, header_size, size


def fatbin_size(blob: Buffer) -> int:
    """Total length of the fat binary at the start of ``blob`` (header + entries).

    Needs only the first 16 bytes, so the shim can size a registered fat binary before copying
    it out of process memory; checks the magic but not that ``blob`` holds the whole thing.
    """
    _, header_size, size = _container_header(_as_view(blob))
    return header_size + size


def _compression(flags: int) -> str:
    bits = flags & _COMPRESSION_MASK
    if bits == 0:
        return COMPRESSION_NONE
    if bits == FLAG_ZSTD:
        return COMPRESSION_ZSTD
    if bits == FLAG_LZ4:
        return COMPRESSION_LZ4
    return COMPRESSION_UNKNOWN


def _parse_entry(mv: memoryview, off: int, end: int) -> FatbinEntry:
    where = f"fat binary entry at offset {off}"
    if end - off < _ENTRY_HEADER.size:
        raise FatbinError(f"truncated {where}: {end - off} bytes left, header needs 64")
    (
        kind,
        version,
        header_size,
        payload_size,
        compressed_size,
        options_ref,
        minor,
        major,
        sm_arch,
        name_off,
        name_len,
        flags,
        _reserved,
        uncompressed_size,
    ) = _ENTRY_HEADER.unpack_from(mv, off)
    if header_size < _ENTRY_HEADER.size or header_size > end - off:
        raise FatbinError(f"{where}: header size {header_size} outside 64..{end - off}")
    if payload_size > end - off - header_size:
        raise FatbinError(
            f"{where}: payload of {payload_size} bytes runs past the container's end "
            f"({end - off - header_size} bytes left)"
        )
    header = mv[off : off + header_size]
    name: str | None = None
    if name_len:
        if name_off < _ENTRY_HEADER.size or name_off + name_len > header_size:
            raise FatbinError(f"{where}: name ({name_off}, {name_len}) outside the header")
        # nvcc writes e.g. "k.cu " (trailing blank) for its device-link image.
        name = _decode(header[name_off : name_off + name_len]).rstrip("\0 ")
    options = b""
    if options_ref:
        if options_ref < _ENTRY_HEADER.size or options_ref + 8 > header_size:
            raise FatbinError(f"{where}: options record at {options_ref} outside the header")
        opt_off, opt_len = struct.unpack_from("<II", header, options_ref)
        if opt_len and (opt_off < _ENTRY_HEADER.size or opt_off + opt_len > header_size):
            raise FatbinError(f"{where}: options ({opt_off}, {opt_len}) outside the header")
        options = bytes(header[opt_off : opt_off + opt_len])
    compression = _compression(flags)
    if compression != COMPRESSION_NONE and compressed_size > payload_size:
        raise FatbinError(
            f"{where}: compressed size {compressed_size} exceeds payload size {payload_size}"
        )
    start = off + header_size
    return FatbinEntry(
        kind=kind,
        offset=off,
        header_size=header_size,
        payload_size=payload_size,
        compressed_size=compressed_size,
        uncompressed_size=uncompressed_size,
        version=version,
        format_version=(major, minor),
        sm_arch=sm_arch,
        flags=flags,
        compression=compression,
        name=name,
        options=options,
        payload=mv[start : start + payload_size],
    )


def parse_fatbin(blob: Buffer) -> FatBinary:
    """Parse the fat binary container at the start of ``blob``; bytes after it are ignored.

    The entries' ``payload`` views share ``blob``'s memory: copy ``blob`` first if it may go
    away (a registered fat binary can be unmapped before ``__cudaUnregisterFatBinary``).
    """
    mv = _as_view(blob)
    version, header_size, size = _container_header(mv)
    total = header_size + size
    if total > len(mv):
        raise FatbinError(
            f"fat binary claims {total} bytes (header {header_size} + {size}), "
            f"only {len(mv)} available"
        )
    entries = []
    off = header_size
    while off < total:
        entry = _parse_entry(mv, off, total)
        entries.append(entry)
        off += entry.header_size + entry.payload_size
    return FatBinary(version, header_size, size, tuple(entries))


def parse_fatbins(blob: Buffer) -> list[FatBinary]:
    """Parse every container in ``blob``, e.g. a whole ``.nv_fatbin`` section.

    Containers follow each other directly (nvcc pads entries to 8, so they stay 8-aligned);
    zero padding up to the next 8-byte boundary, or at the very end, is skipped.
    """
    mv = _as_view(blob)
    out: list[FatBinary] = []
    off = 0
    while off < len(mv):
        if mv[off : off + 4] == b"\0\0\0\0"[: len(mv) - off]:
            if not bytes(mv[off:]).strip(b"\0"):
                break  # trailing zero padding
            if off % 8:
                off += 8 - off % 8
                continue
        try:
            fb = parse_fatbin(mv[off:])
        except FatbinError as e:
            raise FatbinError(f"container at offset {off}: {e}") from None
        out.append(fb)
        off += fb.total_size
    return out


# --------------------------------------------------------------------------- decompression


def lz4_block_decompress(src: Buffer, uncompressed_size: int) -> bytes:
    """Decompress one raw LZ4 block (no frame) that must expand to ``uncompressed_size``.

    Block format: sequences of ``token`` (high nibble literal count, low nibble match length
    - 4; 15 means "add the following bytes, each 255 continues"), the literals, a 2-byte
    little-endian match offset and the extra match length bytes. The last sequence has
    literals only.
    """
    s = _as_view(src)
    n = len(s)
    if uncompressed_size < 0 or uncompressed_size > _LZ4_MAX_RATIO * n + 16:
        raise FatbinError(
            f"LZ4: uncompressed size {uncompressed_size} impossible for {n} compressed bytes"
        )
    out = bytearray()
    i = 0
    try:
        while True:
            token = s[i]
            i += 1
            lit = token >> 4
            if lit == 15:
                while True:
                    b = s[i]
                    i += 1
                    lit += b
                    if b != 255:
                        break
            if i + lit > n:
                raise FatbinError(f"LZ4: literal run of {lit} bytes runs past the input")
            out += s[i : i + lit]
            i += lit
            if len(out) > uncompressed_size:
                raise FatbinError(f"LZ4: output exceeds the expected {uncompressed_size} bytes")
            if i == n:
                break  # the last sequence: literals only
            offset = s[i] | (s[i + 1] << 8)
            i += 2
            mlen = (token & 15) + 4
            if mlen == 19:
                while True:
                    b = s[i]
                    i += 1
                    mlen += b
                    if b != 255:
                        break
            if offset == 0 or offset > len(out):
                raise FatbinError(f"LZ4: match offset {offset} outside the {len(out)} bytes so far")
            if len(out) + mlen > uncompressed_size:
                raise FatbinError(f"LZ4: output exceeds the expected {uncompressed_size} bytes")
            start = len(out) - offset
            if mlen <= offset:
                out += out[start : start + mlen]
            else:  # overlapping copy: the match repeats the last `offset` bytes
                pattern = bytes(out[start:])
                reps, rest = divmod(mlen, offset)
                out += pattern * reps + pattern[:rest]
    except IndexError:
        raise FatbinError("LZ4: compressed block is truncated") from None
    if len(out) != uncompressed_size:
        raise FatbinError(f"LZ4: got {len(out)} bytes, expected {uncompressed_size}")
    return bytes(out)


def _zstd_decompressor():
    """A callable ``(data, size) -> bytes`` from an installed zstd module, or None."""
    try:  # Python 3.14+ ships zstd in the standard library
        from compression import zstd as _std_zstd  # type: ignore[import-not-found]

        return lambda data, size: _std_zstd.decompress(data)
    except ImportError:
        pass
    try:
        import zstandard  # type: ignore[import-not-found]
    except ImportError:
        return None
    return lambda data, size: zstandard.ZstdDecompressor().decompress(data, max_output_size=size)


def zstd_available() -> bool:
    """Whether zstd-compressed entries can be decompressed here."""
    return _zstd_decompressor() is not None


def decompress_entry(entry: FatbinEntry) -> bytes:
    """The entry's image as the compiler wrote it (PTX may keep its trailing NUL padding).

    LZ4 is decoded in pure Python. zstd needs ``compression.zstd`` (Python 3.14+) or the
    ``zstandard`` package; without either this raises :class:`FatbinError`.
    """
    if entry.compression == COMPRESSION_NONE:
        return bytes(entry.payload)
    stored = entry.compressed_size or entry.payload_size
    data = entry.payload[:stored]
    if entry.compression == COMPRESSION_LZ4:
        return lz4_block_decompress(data, entry.uncompressed_size)
    if entry.compression == COMPRESSION_ZSTD:
        decompress = _zstd_decompressor()
        if decompress is None:
            raise FatbinError(
                f"{entry.describe()} is zstd-compressed and no zstd decoder is importable "
                "(install 'zstandard', or rebuild with -compress-mode=speed for LZ4 or without "
                "-Xfatbin -compress-all; the driver loads it as it is)"
            )
        try:
            out = decompress(bytes(data), entry.uncompressed_size)
        except Exception as e:  # decoder libraries raise their own error types
            raise FatbinError(f"zstd: cannot decompress {entry.describe()}: {e}") from e
        if len(out) != entry.uncompressed_size:
            raise FatbinError(f"zstd: got {len(out)} bytes, expected {entry.uncompressed_size}")
        return out
    raise FatbinError(f"{entry.describe()}: unknown compression flags {entry.flags:#x}")


# --------------------------------------------------------------------------- ELF64

_ELF_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
_SECTION_HEADER = struct.Struct("<IIQQQQIIQQ")
_SYMBOL = struct.Struct("<IBBHQQ")
SHT_SYMTAB = 2
SHT_NOBITS = 8
SHT_SYMTAB_SHNDX = 18
SHN_XINDEX = 0xFFFF
STT_OBJECT = 1


@dataclass(frozen=True)
class ElfSection:
    index: int
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int
    info: int
    entsize: int
    data: memoryview = field(repr=False, compare=False)  # empty for NOBITS


def _elf_sections_view(mv: memoryview, what: str) -> list[ElfSection]:
    (
        ident,
        _type,
        _machine,
        _ver,
        _entry,
        _phoff,
        shoff,
        _flags,
        _ehsize,
        _phentsize,
        _phnum,
        shentsize,
        shnum,
        shstrndx,
    ) = _unpack(_ELF_HEADER, mv, 0, f"{what} ELF header")
    if ident[:4] != b"\x7fELF":
        raise FatbinError(f"{what} is not an ELF file (magic {bytes(ident[:4])!r})")
    if ident[4] != 2 or ident[5] != 1:
        raise FatbinError(f"{what} is not a little-endian ELF64 file")
    if shoff == 0:
        return []
    if shentsize < _SECTION_HEADER.size:
        raise FatbinError(f"{what}: section header size {shentsize} below 64")
    first = _unpack(_SECTION_HEADER, mv, shoff, f"{what} section header 0")
    if shnum == 0:  # more than 0xff00 sections: the count lives in section 0
        shnum = first[5]
    if shstrndx == SHN_XINDEX:
        shstrndx = first[6]
    if shoff + shnum * shentsize > len(mv):
        raise FatbinError(f"{what}: {shnum} section headers at {shoff} run past the end")
    raw = [_SECTION_HEADER.unpack_from(mv, shoff + i * shentsize) for i in range(shnum)]
    if shstrndx >= shnum:
        raise FatbinError(f"{what}: section name table index {shstrndx} out of range")
    sections = []
    for i, (_n, typ, flags, addr, off, size, link, info, _al, entsize) in enumerate(raw):
        if typ == SHT_NOBITS or i == 0:
            data = mv[0:0]
        elif off + size > len(mv):
            raise FatbinError(f"{what}: section {i} ({off}+{size}) runs past the end")
        else:
            data = mv[off : off + size]
        sections.append((i, typ, flags, addr, off, size, link, info, entsize, data))
    strtab = bytes(sections[shstrndx][9])
    out = []
    for (i, typ, flags, addr, off, size, link, info, entsize, data), r in zip(
        sections, raw, strict=True
    ):
        name = _cstring(strtab, r[0], f"{what} section {i} name")
        out.append(ElfSection(i, name, typ, flags, addr, off, size, link, info, entsize, data))
    return out


def _cstring(table: bytes, off: int, what: str) -> str:
    if off >= len(table):
        if off == 0:
            return ""
        raise FatbinError(f"{what}: string offset {off} outside its table ({len(table)} bytes)")
    end = table.find(b"\0", off)
    if end < 0:
        raise FatbinError(f"{what}: unterminated string")
    return _decode(table[off:end])


def _read_source(path_or_bytes: str | PathLike[str] | Buffer) -> memoryview:
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return _as_view(path_or_bytes)
    with open(path_or_bytes, "rb") as f:
        return memoryview(f.read())


def elf_sections(path_or_bytes: str | PathLike[str] | Buffer) -> dict[str, ElfSection]:
    """Section headers of an ELF64 file by name (the first of duplicate names wins)."""
    out: dict[str, ElfSection] = {}
    for s in _elf_sections_view(_read_source(path_or_bytes), "file"):
        out.setdefault(s.name, s)
    return out


def fatbin_from_elf(
    path_or_bytes: str | PathLike[str] | Buffer, section: str = ".nv_fatbin"
) -> bytes:
    """The ``.nv_fatbin`` section of an nvcc-built executable or shared object.

    It usually holds several containers (one per translation unit plus nvcc 13's device-link
    image): split it with :func:`parse_fatbins`. ``section="__nv_relfatbin"`` gives the
    relocatable images of ``-rdc=true`` objects instead.
    """
    sections = elf_sections(path_or_bytes)
    sec = sections.get(section)
    if sec is None:
        raise FatbinError(f"no {section} section: not built by nvcc, or built without device code")
    if sec.type == SHT_NOBITS:
        raise FatbinError(f"{section} has no file contents (NOBITS)")
    return bytes(sec.data)


# --------------------------------------------------------------------------- cubins


class ParamInfo(NamedTuple):
    offset: int  # in the parameter buffer
    size: int


@dataclass(frozen=True)
class KernelInfo:
    """A kernel's parameter buffer layout, as ptxas laid it out (the C ABI's natural one)."""

    name: str  # the mangled name, as passed to __cudaRegisterFunction's deviceName
    params: tuple[ParamInfo, ...]  # in ordinal (declaration) order
    param_size: int  # bytes of the parameter buffer; 0 without parameters


class GlobalVar(NamedTuple):
    size: int
    is_constant: bool  # __constant__ (else __device__ / __managed__)


def _cubin_view(cubin: Buffer) -> tuple[memoryview, list[ElfSection]]:
    mv = _as_view(cubin)
    return mv, _elf_sections_view(mv, "cubin")


def _eiattr_records(sec: ElfSection):
    """Yield ``(format, attribute, payload)`` for each record of an ``.nv.info*`` section."""
    d = sec.data
    off = 0
    while off < len(d):
        if off + 4 > len(d):
            raise FatbinError(f"{sec.name}: truncated attribute record at offset {off}")
        fmt, attr = d[off], d[off + 1]
        if fmt == EIFMT_SVAL:
            (size,) = struct.unpack_from("<H", d, off + 2)
            if off + 4 + size > len(d):
                raise FatbinError(
                    f"{sec.name}: attribute {attr:#04x} of {size} bytes runs past the section"
                )
            yield fmt, attr, d[off + 4 : off + 4 + size]
            off += 4 + size
        elif fmt in (EIFMT_NVAL, EIFMT_BVAL, EIFMT_HVAL):
            yield fmt, attr, d[off + 2 : off + 4]
            off += 4
        else:
            raise FatbinError(f"{sec.name}: unknown attribute format {fmt:#04x} at offset {off}")


def _kernel_info(name: str, sec: ElfSection) -> KernelInfo:
    by_ordinal: dict[int, ParamInfo] = {}
    cbank_size: int | None = None
    hval_size: int | None = None
    for fmt, attr, payload in _eiattr_records(sec):
        if fmt == EIFMT_SVAL and attr in (EIATTR_KPARAM_INFO, EIATTR_KPARAM_INFO_V2):
            if len(payload) < 12:
                raise FatbinError(f"{sec.name}: parameter record of {len(payload)} bytes < 12")
            _index, ordinal, offset, w = struct.unpack_from("<IHHI", payload)
            size = w >> 18 if attr == EIATTR_KPARAM_INFO else w
            if ordinal in by_ordinal:
                raise FatbinError(f"{sec.name}: parameter {ordinal} described twice")
            by_ordinal[ordinal] = ParamInfo(offset, size)
        elif fmt == EIFMT_SVAL and attr == EIATTR_PARAM_CBANK:
            if len(payload) < 8:
                raise FatbinError(f"{sec.name}: EIATTR_PARAM_CBANK of {len(payload)} bytes < 8")
            _sym, _bank_offset, cbank_size = struct.unpack_from("<IHH", payload)
        elif fmt == EIFMT_HVAL and attr == EIATTR_CBANK_PARAM_SIZE:
            (hval_size,) = struct.unpack_from("<H", payload)
    if sorted(by_ordinal) != list(range(len(by_ordinal))):
        raise FatbinError(f"{sec.name}: parameter ordinals {sorted(by_ordinal)} have gaps")
    params = tuple(by_ordinal[i] for i in range(len(by_ordinal)))
    end = max((p.offset + p.size for p in params), default=0)
    param_size = cbank_size if cbank_size is not None else hval_size
    if param_size is None:
        param_size = end
    if param_size < end:
        raise FatbinError(
            f"{sec.name}: parameters end at byte {end}, past the {param_size}-byte buffer"
        )
    return KernelInfo(name, params, param_size)


def cubin_kernels(cubin: Buffer) -> dict[str, KernelInfo]:
    """Kernels of an uncompressed cubin, by mangled name, with their parameter layouts.

    One kernel per ``.nv.info.<name>`` section (every ``__global__`` function has one, with
    or without parameters).
    """
    _, sections = _cubin_view(cubin)
    out = {}
    for sec in sections:
        if sec.name.startswith(".nv.info.") and len(sec.name) > len(".nv.info."):
            name = sec.name[len(".nv.info.") :]
            out[name] = _kernel_info(name, sec)
    return out


def _is_variable_section(name: str) -> bool:
    if name in (".nv.global", ".nv.global.init"):
        return True
    # .nv.constant<N> for user banks; .nv.constant0.<kernel> are parameter banks.
    return (
        name.startswith(".nv.constant")
        and name[len(".nv.constant") :].isdigit()
        and name != ".nv.constant0"
    )


def cubin_globals(cubin: Buffer) -> dict[str, GlobalVar]:
    """``__device__``/``__managed__``/``__constant__`` variables defined in a cubin, by name.

    Names are the ELF symbol names: mangled for namespaced variables, as passed to
    ``__cudaRegisterVar``'s ``deviceName``.
    """
    mv, sections = _cubin_view(cubin)
    symtab = next((s for s in sections if s.type == SHT_SYMTAB), None)
    if symtab is None:
        return {}
    if symtab.link >= len(sections):
        raise FatbinError(f"cubin: symbol table names string table {symtab.link}, out of range")
    strtab = bytes(sections[symtab.link].data)
    shndx_table = next(
        (s.data for s in sections if s.type == SHT_SYMTAB_SHNDX and s.link == symtab.index),
        None,
    )
    out: dict[str, GlobalVar] = {}
    for i in range(len(symtab.data) // _SYMBOL.size):
        st_name, st_info, _other, shndx, _value, size = _SYMBOL.unpack_from(
            symtab.data, i * _SYMBOL.size
        )
        if st_info & 0xF != STT_OBJECT or shndx == 0:
            continue  # not a data object, or undefined (extern in -rdc code)
        if shndx == SHN_XINDEX:
            if shndx_table is None or 4 * i + 4 > len(shndx_table):
                raise FatbinError(f"cubin: symbol {i} needs a missing extended section index")
            (shndx,) = struct.unpack_from("<I", shndx_table, 4 * i)
        if shndx >= len(sections):
            continue  # SHN_ABS, SHN_COMMON and friends: not device variables
        sec_name = sections[shndx].name
        if not _is_variable_section(sec_name):
            continue
        name = _cstring(strtab, st_name, f"cubin symbol {i}")
        if not name or name.startswith(("$", ".")):
            continue  # compiler-made: printf format strings ($str), section symbols
        out[name] = GlobalVar(size, sec_name.startswith(".nv.constant"))
    return out


def cubin_global_init(cubin: Buffer) -> dict[str, bytes]:
    """The initial bytes of the initialized variables of a cubin (``__device__ int x = 3;``,
    ``__constant__`` tables), by name: what a driver copies to the GPU when it loads it."""
    mv, sections = _cubin_view(cubin)
    symtab = next((s for s in sections if s.type == SHT_SYMTAB), None)
    if symtab is None or symtab.link >= len(sections):
        return {}
    strtab = bytes(sections[symtab.link].data)
    out: dict[str, bytes] = {}
    for i in range(len(symtab.data) // _SYMBOL.size):
        st_name, st_info, _other, shndx, value, size = _SYMBOL.unpack_from(
            symtab.data, i * _SYMBOL.size)
        if st_info & 0xF != STT_OBJECT or not 0 < shndx < len(sections):
            continue
        sec = sections[shndx]
        if not _is_variable_section(sec.name) or sec.name == ".nv.global":  # .bss-like
            continue
        if sec.type == SHT_NOBITS or value + size > len(sec.data):
            continue
        name = _cstring(strtab, st_name, f"cubin symbol {i}")
        if name and not name.startswith(("$", ".")):
            out[name] = bytes(sec.data[value:value + size])
    return out


# --------------------------------------------------------------------------- selection

_COMPRESSION_RANK = {COMPRESSION_NONE: 0, COMPRESSION_LZ4: 1, COMPRESSION_ZSTD: 2}


def _readable(entry: FatbinEntry) -> bool:
    if not entry.is_elf:
        return False
    if entry.compression in (COMPRESSION_NONE, COMPRESSION_LZ4):
        return True
    return entry.compression == COMPRESSION_ZSTD and zstd_available()


def _select_cubin(entries: tuple[FatbinEntry, ...], prefer_arch: int) -> FatbinEntry:
    usable = [e for e in entries if _readable(e)]
    if not usable:
        listing = ", ".join(e.describe() for e in entries) or "no entries"
        raise NoUsableCubinError(
            f"fat binary has no cubin readable here ({listing}): for PTX, LTO IR or "
            "zstd-compressed cubins ask the driver (cuKernelGetParamInfo), or rebuild with "
            "-arch=sm_XX and without -Xfatbin -compress-all, or with -compress-mode=speed (LZ4)"
        )

    def rank(e: FatbinEntry) -> tuple:
        # Exact arch, then the highest below, then the lowest above. Parameter layouts follow
        # the C ABI, not the GPU, so any cubin of the module gives the same answer; the order
        # only picks the image the GPU would run. Cheaper decompression breaks ties.
        if e.sm_arch == prefer_arch:
            tier = (0, 0)
        elif e.sm_arch < prefer_arch:
            tier = (1, -e.sm_arch)
        else:
            tier = (2, e.sm_arch)
        return tier, _COMPRESSION_RANK[e.compression], e.offset

    return min(usable, key=rank)


def kernel_layouts(fatbin_blob: Buffer, prefer_arch: int = 90) -> dict[str, KernelInfo]:
    """Kernel parameter layouts of a fat binary, by mangled kernel name.

    ``fatbin_blob`` is one container (what ``__cudaRegisterFatBinary`` registers) or several
    back to back (a ``.nv_fatbin`` section); empty containers are skipped. From each container
    the cubin of arch ``prefer_arch`` is read, else the highest below it, else the lowest
    above. Raises :class:`NoUsableCubinError` when a container holds only PTX, LTO IR or
    (without a zstd decoder) zstd-compressed cubins.
    """
    out: dict[str, KernelInfo] = {}
    for fb in parse_fatbins(fatbin_blob):
        if not fb.entries:
            continue
        entry = fb.select_cubin(prefer_arch)
        for name, info in cubin_kernels(entry.data()).items():
            out.setdefault(name, info)
    return out


# --------------------------------------------------------------------------- PTX

_PTX_ENTRY = re.compile(r"\.entry\s+([A-Za-z_$%][\w$%]*)\s*\(([^)]*)\)", re.S)
_PTX_PARAM = re.compile(
    r"\.param\s+((?:\.(?:align\s+\d+|ptr|global|const|shared|local)\s+)*)"
    r"\.([usbf])(8|16|32|64)\s+(?:\.(?:align\s+(\d+)|ptr|global|const)\s+)*"
    r"[A-Za-z_$%][\w$%]*\s*(?:\[\s*(\d+)\s*\])?")


def ptx_kernels(ptx: Buffer) -> dict[str, KernelInfo]:
    """Kernel parameter layouts from PTX text (``.entry name(.param ...)``), by name.

    Each parameter is aligned to its ``.align`` (else its element size) and the buffer is laid
    out in declaration order, as the driver lays out kernel parameters. Raises FatbinError on
    text that is not PTX.
    """
    text = _decode(bytes(_as_view(ptx)).split(b"\0", 1)[0])
    if ".version" not in text:
        raise FatbinError("not PTX: no .version directive")
    out: dict[str, KernelInfo] = {}
    for name, body in _PTX_ENTRY.findall(text):
        params = []
        off = 0
        for decl in (d.strip() for d in body.split(",")):
            if not decl:
                continue
            m = _PTX_PARAM.match(decl)
            if not m:
                raise FatbinError(f"PTX entry {name}: unreadable parameter {decl!r}")
            pre, _kind, bits, align_after, count = m.groups()
            elem = int(bits) // 8
            align = elem
            m_pre = re.search(r"\.align\s+(\d+)", pre or "")
            if m_pre:
                align = int(m_pre.group(1))
            elif align_after:
                align = int(align_after)
            size = elem * int(count or 1)
            off = (off + align - 1) // align * align
            params.append(ParamInfo(off, size))
            off += size
        out[name] = KernelInfo(name, tuple(params), off)
    return out


IMAGE_FATBIN, IMAGE_CUBIN, IMAGE_PTX = "fatbin", "cubin", "ptx"


def image_kind(image: Buffer) -> str:
    """What a module image handed to the driver is: a fat binary, a cubin or PTX."""
    mv = _as_view(image)
    if len(mv) >= 4 and struct.unpack_from("<I", mv)[0] == FATBIN_MAGIC:
        return IMAGE_FATBIN
    if bytes(mv[:4]) == b"\x7fELF":
        return IMAGE_CUBIN
    head = bytes(mv[:4096]).lstrip()
    if head.startswith((b"//", b".")):
        return IMAGE_PTX
    raise FatbinError("not a fat binary, cubin or PTX image")


def image_contents(image: Buffer, prefer_arch: int = 90
                   ) -> tuple[dict[str, KernelInfo], dict[str, GlobalVar], dict[str, bytes]]:
    """The kernels (with their layouts), the global variables and the initial bytes of the
    initialized ones, of a module image of any kind. PTX images have no readable globals
    here (the driver places them)."""
    kind = image_kind(image)
    if kind == IMAGE_CUBIN:
        return cubin_kernels(image), cubin_globals(image), cubin_global_init(image)
    if kind == IMAGE_PTX:
        return ptx_kernels(image), {}, {}
    kernels: dict[str, KernelInfo] = {}
    glob: dict[str, GlobalVar] = {}
    init: dict[str, bytes] = {}
    for fb in parse_fatbins(image):
        if not fb.entries:
            continue
        try:
            entry = fb.select_cubin(prefer_arch)
            cub = entry.data()
            for name, info in cubin_kernels(cub).items():
                kernels.setdefault(name, info)
            for name, g in cubin_globals(cub).items():
                glob.setdefault(name, g)
            for name, data in cubin_global_init(cub).items():
                init.setdefault(name, data)
        except NoUsableCubinError:
            for entry in fb.entries:  # PTX only: read the layouts from the PTX itself
                if entry.kind != KIND_PTX:
                    continue
                try:
                    text = entry.data()
                except FatbinError:  # compressed, and no decoder here
                    continue
                for name, info in ptx_kernels(text).items():
                    kernels.setdefault(name, info)
    return kernels, glob, init
