"""The CUDA pfm program builds with nvcc and rejects bad input before touching CUDA.

Runs on machines without a GPU: every case here must fail (exit 2, message on stderr) during
validation, before the first CUDA runtime call. Skipped with a reason when nvcc is missing.
"""

from __future__ import annotations

import gzip
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from farcuda.pfm.runner import BuildError, build_pfm, find_nvcc

SOURCE = Path(__file__).resolve().parents[2] / "pfm_cuda"


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if find_nvcc() is None:
        pytest.skip("nvcc not found ($CUDA_HOME/bin/nvcc, /usr/local/cuda/bin/nvcc or PATH)")
    if shutil.which("make") is None:
        pytest.skip("make not found")
    try:
        return build_pfm(tmp_path_factory.mktemp("pfm-build"), source_dir=SOURCE)
    except BuildError as exc:
        pytest.fail(str(exc))


def run(binary: Path, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *map(str, args)], capture_output=True, text=True, timeout=60
    )


def test_builds_against_the_shared_runtime(binary: Path) -> None:
    # -cudart shared: libcudart.so.13 is a NEEDED entry, so farcuda's shim can stand in for it.
    assert b"libcudart.so.13" in binary.read_bytes()


def test_help(binary: Path) -> None:
    proc = run(binary, "--help")
    assert proc.returncode == 0
    assert "--mode exact|batched" in proc.stdout and "--r-method explicit|lemma" in proc.stdout


def pfmd(n: int, nf: int, values: list[float] | None = None, extra: bytes = b"") -> bytes:
    vals = values if values is not None else [float(i % 7) + 0.1 * i for i in range(n * nf)]
    return struct.pack("<4sIQQ", b"PFMD", 1, n, nf) + struct.pack(f"<{len(vals)}d", *vals) + extra


BAD_INPUTS = {
    # name: (file content or None for a missing file, expected stderr fragment)
    "missing": (None, "no such file"),
    "ragged": (b"1,2\n3,4\n5,6,7\n", "ragged row: 3 values, expected 2"),
    "ragged-short": (b"1 2\n3\n", "ragged row: 1 values, expected 2"),
    "nan": (b"1 2\nnan 4\n5 6\n", "non-finite value 'nan'"),
    "inf": (b"1 2\n3 -inf\n5 6\n", "non-finite value '-inf'"),
    "not-a-number": (b"1 2\n3 four\n", "not a number: 'four'"),
    "hex": (b"1 2\n3 0x10\n", "not a number"),
    "one-point": (b"1,2,3\n", "need at least 2 points, got n=1"),
    "empty": (b"# only a comment\n\n", "no data rows"),
    "too-wide": ((",".join(["1"] * 65) + "\n").encode() * 3, "F=65 features exceeds the limit"),
    "constant-feature": (b"1 5\n2 5\n3 5\n", "feature 1 is constant"),
    "dependent-features": (b"1 2\n2 4\n3 6\n4 8.0000000000000001\n", "singular"),
    "n-not-above-F": (b"1 0 0\n0 1 0\n0 0 1\n", "need n > F"),
    "gzip": (gzip.compress(b"1 2\n3 4\n5 7\n"), "gzip-compressed input"),
    "binary-nan": (pfmd(3, 2, [1.0, 2.0, float("nan"), 4.0, 5.0, 7.0]), "non-finite value"),
    "binary-truncated": (pfmd(4, 2)[:-8], "does not match header"),
    "binary-too-wide": (pfmd(2, 65), "F=65 features exceeds the limit"),
    "binary-one-point": (pfmd(1, 2), "need at least 2 points"),
    "binary-bad-version": (b"PFMD" + struct.pack("<IQQ", 9, 2, 2) + bytes(32), "version 9"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_reported_before_cuda(binary: Path, tmp_path: Path, name: str) -> None:
    content, fragment = BAD_INPUTS[name]
    path = tmp_path / f"{name}.dat"
    if content is not None:
        path.write_bytes(content)
    proc = run(binary, path)
    assert proc.returncode == 2, proc.stderr
    assert fragment in proc.stderr
    assert str(path) in proc.stderr  # the message names the file
    assert "CUDA" not in proc.stderr  # validation came first


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--mode", "fast"], "--mode: 'fast' is not exact or batched"),
        (["--r-method", "lu"], "--r-method: 'lu' is not explicit or lemma"),
        (["--devices", "0"], "--devices: 0 is not in 1..1024"),
        (["--starts", "-3"], "--starts: -3 is negative"),
        (["--eps1", "zero"], "--eps1: not a number"),
        (["--bogus", "1"], "unknown option '--bogus'"),
        (["--out", "/nonexistent/dir/p.csv"], "--out /nonexistent/dir/p.csv: cannot write"),
        ([], "no DATA file given"),
    ],
)
def test_bad_options(binary: Path, tmp_path: Path, args: list[str], fragment: str) -> None:
    data = tmp_path / "ok.csv"
    data.write_text("0 0\n1 0\n0 1\n1 1.5\n")
    proc = run(binary, *args, *([data] if args else []))
    assert proc.returncode == 2, proc.stderr
    assert fragment in proc.stderr
