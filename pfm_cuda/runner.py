"""Build and run the pfm CUDA program; shared by the tests and bench/pfm_bench.py.

``run_pfm(binary, args, env=None, prefix=())`` runs ``[*prefix, binary, *args]`` and returns
its exit status, output and parsed ``--json`` record; ``prefix`` is how the same binary runs
through farcuda (``("farcuda", "run", "--")``), so every caller compares like with like.
Invariant: nothing here interprets results; comparison lives in ``compare.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "SOURCE_DIR",
    "BuildError",
    "PfmRun",
    "PfmRunner",
    "build_pfm",
    "default_binary",
    "find_nvcc",
    "run_pfm",
]

#: The folder with Makefile and *.cu (this package's folder in a source checkout).
SOURCE_DIR = Path(__file__).resolve().parent


class BuildError(RuntimeError):
    """nvcc or make failed; the message holds their output."""


def find_nvcc() -> str | None:
    """nvcc as the Makefile finds it ($CUDA_HOME/bin/nvcc, default /usr/local/cuda), or PATH."""
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    cand = Path(home) / "bin" / "nvcc"
    if cand.is_file() and os.access(cand, os.X_OK):
        return str(cand)
    return shutil.which("nvcc")


def default_binary(source_dir: Path = SOURCE_DIR) -> Path:
    return source_dir / "build" / "pfm"


def build_pfm(
    build_dir: str | Path | None = None,
    source_dir: str | Path = SOURCE_DIR,
    timeout: float = 600,
) -> Path:
    """``make -C source_dir [BUILD=build_dir]``; returns the path of the built binary."""
    source_dir = Path(source_dir)
    if not (source_dir / "Makefile").is_file():
        raise BuildError(f"{source_dir}: no Makefile (the CUDA sources are not installed here)")
    cmd = ["make", "-C", str(source_dir), f"-j{min(4, os.cpu_count() or 1)}"]
    binary = default_binary(source_dir)
    if build_dir is not None:
        build_dir = Path(build_dir).resolve()
        cmd.append(f"BUILD={build_dir}")
        binary = build_dir / "pfm"
    nvcc = find_nvcc()
    if nvcc is not None:
        cmd.append(f"NVCC={nvcc}")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not binary.is_file():
        raise BuildError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return binary


@dataclass(frozen=True)
class PfmRunner:
    """How to run the pfm binary: natively (the default) or behind a command prefix.

    This is the contract of the ``pfm_runner`` pytest fixture that farcuda's conftest may
    provide (e.g. ``prefix=("farcuda", "run", "--")`` with an env giving several virtual
    devices); ``devices`` is how many devices the program will see.
    """

    prefix: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None
    devices: int = 1

    def run(self, binary: str | Path, args: Sequence[str], timeout: float | None = None) -> PfmRun:
        return run_pfm(binary, args, env=self.env, prefix=self.prefix, timeout=timeout)


@dataclass
class PfmRun:
    cmd: list[str]
    returncode: int
    stdout: str
    stderr: str
    record: dict | None  # the --json record, when the run succeeded
    wall: float  # seconds, as seen from the caller

    def check(self) -> PfmRun:
        """Raise with the command's stderr unless it exited 0."""
        if self.returncode != 0:
            raise RuntimeError(
                f"{' '.join(self.cmd)} exited {self.returncode}:\n{self.stderr.strip()}"
            )
        return self


def run_pfm(
    binary: str | Path,
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    prefix: Sequence[str] = (),
    timeout: float | None = None,
) -> PfmRun:
    """Run the pfm binary (optionally behind a command prefix) and parse its JSON record.

    ``--json`` is added (to a temporary file) unless ``args`` already has one; ``env`` is
    merged over the current environment.
    """
    args = [str(a) for a in args]
    full_env = {**os.environ, **(env or {})}
    with tempfile.TemporaryDirectory(prefix="pfm-run-") as tmp:
        json_path: Path | None = None
        if not any(a == "--json" or a.startswith("--json=") for a in args):
            json_path = Path(tmp) / "record.json"
            args += ["--json", str(json_path)]
        else:
            for i, a in enumerate(args):
                if a == "--json" and i + 1 < len(args):
                    json_path = Path(args[i + 1])
                elif a.startswith("--json="):
                    json_path = Path(a.split("=", 1)[1])
        cmd = [*map(str, prefix), str(binary), *args]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)
        wall = time.perf_counter() - t0
        record = None
        if proc.returncode == 0 and json_path is not None and json_path.is_file():
            record = json.loads(json_path.read_text())
    return PfmRun(cmd, proc.returncode, proc.stdout, proc.stderr, record, wall)
