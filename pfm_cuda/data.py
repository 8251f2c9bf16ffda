"""Loading and writing data sets for FM/PFM.

Three input forms, all yielding a C-contiguous float64 array of shape (n, F):

- text: one point per line, values separated by commas and/or whitespace; blank lines and lines
  starting with ``#`` are skipped; every row must have the same number of values;
- the same text gzip-compressed (detected by the gzip magic, not by the file name);
- the PFMD binary format, which the CUDA program reads without parsing text:

  ======  =====  =====================================================
  offset  size   field
  ======  =====  =====================================================
  0       4      magic ``b"PFMD"``
  4       4      u32 version, little-endian, currently 1
  8       8      u64 n (points), little-endian
  16      8      u64 F (features), little-endian
  24      8*n*F  n*F float64 little-endian, row-major (point after point)
  ======  =====  =====================================================

The file size must be exactly ``24 + 8*n*F``. Invariant: every loader rejects what the C loader
(``pfm_cuda/io.cu``) rejects, with the same kind of message (missing file, ragged rows,
non-numeric token, NaN/inf, empty data), so a data set either works on both sides or on neither.
"""

from __future__ import annotations

import gzip
import math
import re
import struct
from pathlib import Path

import numpy as np

__all__ = [
    "BINARY_MAGIC",
    "BINARY_VERSION",
    "HEADER",
    "DataError",
    "load",
    "load_binary",
    "load_labels",
    "load_text",
    "parse_text",
    "write_binary",
    "write_text",
]

BINARY_MAGIC = b"PFMD"
BINARY_VERSION = 1
#: magic, u32 version, u64 n, u64 F; little-endian, no padding (24 bytes).
HEADER = struct.Struct("<4sIQQ")
_GZIP_MAGIC = b"\x1f\x8b"
_SPLIT = re.compile(r"[,\s]+")


class DataError(ValueError):
    """The input is missing or malformed; the message names the file and the problem."""


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None


def parse_text(text: str, name: str = "<text>") -> np.ndarray:
    """Parse comma/whitespace separated rows into an (n, F) float64 array (see module doc)."""
    rows: list[list[float]] = []
    width = -1
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tokens = [t for t in _SPLIT.split(line) if t]
        if width < 0:
            width = len(tokens)
        elif len(tokens) != width:
            raise DataError(f"{name}:{lineno}: ragged row: {len(tokens)} values, expected {width}")
        values = []
        for tok in tokens:
            try:
                val = float(tok)
            except ValueError:
                raise DataError(f"{name}:{lineno}: not a number: {tok!r}") from None
            if not math.isfinite(val):
                raise DataError(f"{name}:{lineno}: non-finite value {tok!r} (NaN/inf)")
            values.append(val)
        rows.append(values)
    if not rows:
        raise DataError(f"{name}: no data rows")
    return np.ascontiguousarray(np.array(rows, dtype=np.float64))


def load_text(path: str | Path) -> np.ndarray:
    """Load a text file, gzip-compressed or not (detected by content)."""
    path = Path(path)
    raw = _read_bytes(path)
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: corrupt gzip data: {exc}") from None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file (non-ASCII bytes)") from None
    return parse_text(text, str(path))


def _parse_binary(raw: bytes, name: str) -> np.ndarray:
    if len(raw) < HEADER.size:
        raise DataError(f"{name}: truncated PFMD header ({len(raw)} bytes)")
    magic, version, n, nf = HEADER.unpack_from(raw)
    if magic != BINARY_MAGIC:
        raise DataError(f"{name}: bad magic {magic!r}, expected {BINARY_MAGIC!r}")
    if version != BINARY_VERSION:
        raise DataError(f"{name}: unsupported PFMD version {version}")
    if n == 0 or nf == 0:
        raise DataError(f"{name}: empty data (n={n}, F={nf})")
    expected = HEADER.size + 8 * n * nf
    if len(raw) != expected:
        raise DataError(
            f"{name}: size {len(raw)} bytes does not match header (n={n}, F={nf}: {expected})"
        )
    X = np.frombuffer(raw, dtype="<f8", offset=HEADER.size).reshape(n, nf)
    bad = ~np.isfinite(X)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataError(f"{name}: non-finite value (NaN/inf) at point {i}, feature {j}")
    return np.ascontiguousarray(X, dtype=np.float64)


def load_binary(path: str | Path) -> np.ndarray:
    """Load a PFMD binary file (format in the module doc)."""
    path = Path(path)
    return _parse_binary(_read_bytes(path), str(path))


def load(path: str | Path) -> np.ndarray:
    """Load any supported form, chosen by the file's first bytes (PFMD, gzip, else text)."""
    path = Path(path)
    raw = _read_bytes(path)
    if raw[:4] == BINARY_MAGIC:
        return _parse_binary(raw, str(path))
    return load_text(path)


def load_labels(path: str | Path) -> np.ndarray:
    """Load a label file (one integer per line, text or gzip) as an int64 vector."""
    X = load_text(path)
    if X.shape[1] != 1:
        raise DataError(f"{path}: expected one label per line, got {X.shape[1]} columns")
    return X[:, 0].astype(np.int64)


def write_binary(path: str | Path, X: np.ndarray) -> None:
    """Write X (n, F) in the PFMD binary format."""
    X = np.ascontiguousarray(X, dtype="<f8")
    if X.ndim != 2:
        raise ValueError("X must be 2-dimensional (n, F)")
    n, nf = X.shape
    with open(path, "wb") as fh:
        fh.write(HEADER.pack(BINARY_MAGIC, BINARY_VERSION, n, nf))
        fh.write(X.tobytes())


def write_text(path: str | Path, X: np.ndarray) -> None:
    """Write X as CSV with round-trip precision (17 significant digits)."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError("X must be 2-dimensional (n, F)")
    np.savetxt(path, X, delimiter=",", fmt="%.17g")
