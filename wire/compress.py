"""Compression of bulk payloads where the link is the bottleneck (LZ4 block format).

Both ends share this: the client compresses a host-to-device payload piece by piece when the
connection decided to (``decide``) and the piece looks compressible (``worth``, from a few
small samples, so that random data costs almost nothing); the daemon decompresses it. The
codec is the ``lz4`` package from PyPI (``pip install 'farcuda[compress]'``; the server extra
has it): without it ``available()`` is false, a client sends everything as it is, and a
daemon says it cannot decompress, so nothing is ever sent compressed to it.

``FARCUDA_COMPRESS``: ``off``; ``on`` (every piece that is worth it); ``auto`` (the default:
on where the connection's measured link rate is below ``AUTO_BELOW``, where a fast link
would wait for the compressor instead).
"""

from __future__ import annotations

from typing import Any

__all__ = ["CODEC", "MIN_PIECE", "AUTO_BELOW", "available", "worth", "compress", "decompress",
           "decide", "mode_from_env", "MODES"]

CODEC = "lz4"
MIN_PIECE = 64 << 10  # smaller payloads go as they are
AUTO_BELOW = 400e6  # bytes/s: one LZ4 thread compresses compressible data faster than this
SAMPLES = 8
SAMPLE = 4096
WORTH = 0.8  # samples compressed to at most this fraction: compress the piece
MODES = ("auto", "on", "off")

_block: Any = None


def available() -> bool:
    global _block
    if _block is None:
        try:
            import lz4.block as block
        except ImportError:
            _block = False
        else:
            _block = block
    return _block is not False


def worth(data: Any) -> bool:
    """Whether data (a buffer of at least MIN_PIECE bytes) looks compressible."""
    mv = memoryview(data).cast("B")
    n = len(mv)
    if n < MIN_PIECE or not available():
        return False
    step = (n - SAMPLE) // (SAMPLES - 1)
    raw = z = 0
    for i in range(SAMPLES):
        piece = mv[i * step:i * step + SAMPLE]
        raw += len(piece)
        z += len(_block.compress(piece, store_size=False))
    return z <= WORTH * raw


def compress(data: Any) -> bytes | None:
    """The LZ4 block of data, or None when it would not be smaller by a fifth."""
    if not available():
        return None
    out = _block.compress(data, store_size=False)
    return out if len(out) <= WORTH * len(memoryview(data).cast("B")) else None


def decompress(data: Any, size: int) -> bytes:
    """The size bytes an LZ4 block holds (ValueError if it does not hold exactly that)."""
    if not available():
        raise ValueError("the lz4 package is not installed")
    try:
        out = _block.decompress(data, uncompressed_size=size)
    except Exception as exc:  # lz4.block.LZ4BlockError: corrupt or short input
        raise ValueError(f"not an LZ4 block of {size} bytes: {exc}") from None
    if len(out) != size:
        raise ValueError(f"an LZ4 block of {len(out)} bytes, not {size}")
    return out


def decide(mode: str, rate: float | None) -> bool:
    """Compress on a connection? ``rate``: its measured link rate in bytes/s (None: unknown)."""
    if mode == "off" or not available():
        return False
    if mode == "on":
        return True
    return rate is not None and rate < AUTO_BELOW


def mode_from_env(text: str | None) -> str:
    mode = (text or "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"FARCUDA_COMPRESS={text!r} is not one of {', '.join(MODES)}")
    return mode
