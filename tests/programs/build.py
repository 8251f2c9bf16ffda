#!/usr/bin/env python3
"""Build the CUDA test programs in this folder.

Each ``<name>.cu`` here is compiled with nvcc against the *shared* CUDA runtime
(``-cudart shared``), so that the resulting binary calls ``libcudart.so.13`` and
can run either natively or through farcuda's interposer. The ``static`` variant
(nvcc's default, ``-cudart static``) carries the runtime inside itself and reaches
the GPU through ``libcuda.so.1``: through farcuda's driver layer.

Importable::

    from tests.programs.build import build, PROGRAMS
    exe = build("vector_add", out_dir)                    # -> Path
    exe = build("vector_add", out_dir, compressed=True)   # -Xfatbin -compress-all
    exe = build("vector_add", out_dir, static=True)       # -cudart static

Command line::

    python tests/programs/build.py [names...] [--out DIR] [--compressed] [--static] [--force]

With no names, every program is built.  Binaries are cached: a program is only
recompiled when its source (or this file) is newer than the binary, or when the
nvcc command line changed (recorded next to the binary as ``<binary>.cmd``).
NVCC is taken from ``$CUDA_HOME/bin/nvcc`` (default ``/usr/local/cuda``).
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "build"

# Flags every program is built with.
BASE_FLAGS: tuple[str, ...] = (
    "-cudart", "shared",
    "-O2",
    "-std=c++17",
    "-gencode", "arch=compute_90,code=sm_90",
    "-gencode", "arch=compute_90,code=compute_90",
)

# Variant: compress every entry of the fat binary (cubins and PTX).
COMPRESS_FLAGS: tuple[str, ...] = ("-Xfatbin", "-compress-all")

# Per-program extra flags (none of the programs needs any: cooperative groups'
# grid.sync() and clusters work without -rdc=true in CUDA 13).
PROGRAM_FLAGS: dict[str, tuple[str, ...]] = {}

# Per-program extra link libraries.
PROGRAM_LIBS: dict[str, tuple[str, ...]] = {
    "multi_device": ("-lpthread",),
    "threads": ("-lpthread",),
    "ci_pool": ("-lpthread",),
}


def _programs() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.cu"))


PROGRAMS: list[str] = _programs()


def cuda_home() -> Path:
    return Path(os.environ.get("CUDA_HOME") or "/usr/local/cuda")


def nvcc_path() -> Path:
    return cuda_home() / "bin" / "nvcc"


def binary_name(name: str, compressed: bool = False, static: bool = False) -> str:
    return name + ("_compressed" if compressed else "") + ("_static" if static else "")


def command(name: str, out: Path, extra_flags: Sequence[str] = (),
            compressed: bool = False, static: bool = False) -> list[str]:
    """The nvcc command line that builds program ``name`` into ``out``."""
    src = HERE / f"{name}.cu"
    base = list(BASE_FLAGS)
    if static:
        base[base.index("-cudart") + 1] = "static"
    cmd = [str(nvcc_path()), *base, *PROGRAM_FLAGS.get(name, ())]
    if compressed:
        cmd += COMPRESS_FLAGS
    cmd += list(extra_flags)
    cmd += ["-o", str(out), str(src), *PROGRAM_LIBS.get(name, ())]
    return cmd


def build(name: str, out_dir: os.PathLike | str = DEFAULT_OUT,
          extra_flags: Iterable[str] = (), *, compressed: bool = False,
          static: bool = False, force: bool = False) -> Path:
    """Compile ``tests/programs/<name>.cu`` into ``out_dir`` and return the binary path.

    ``compressed=True`` builds the variant with ``-Xfatbin -compress-all``; it is
    written as ``<name>_compressed`` so both variants can live in one folder.
    ``static=True`` links the runtime statically (``<name>_static``).
    Raises ``FileNotFoundError`` for an unknown program and
    ``subprocess.CalledProcessError`` (with nvcc's output attached) on a failed build.
    """
    src = HERE / f"{name}.cu"
    if not src.is_file():
        raise FileNotFoundError(f"no such test program: {src}")
    if not nvcc_path().is_file():
        raise FileNotFoundError(f"nvcc not found at {nvcc_path()} (set CUDA_HOME)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / binary_name(name, compressed, static)
    cmd = command(name, out, tuple(extra_flags), compressed, static)
    cmd_file = out.with_name(out.name + ".cmd")
    cmd_text = shlex.join(cmd)

    if not force and out.is_file() and cmd_file.is_file():
        newest_input = max(src.stat().st_mtime, Path(__file__).stat().st_mtime)
        if out.stat().st_mtime > newest_input and cmd_file.read_text() == cmd_text:
            return out

    tmp = out.with_name(out.name + ".tmp")
    tmp_cmd = cmd[:cmd.index("-o") + 1] + [str(tmp)] + cmd[cmd.index("-o") + 2:]
    proc = subprocess.run(tmp_cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise subprocess.CalledProcessError(proc.returncode, tmp_cmd,
                                            output=proc.stdout, stderr=proc.stderr)
    if proc.stdout.strip() or proc.stderr.strip():
        # Warnings are not errors, but they should not go unnoticed.
        sys.stderr.write(f"[build {name}] {proc.stdout}{proc.stderr}")
    os.replace(tmp, out)
    cmd_file.write_text(cmd_text)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="programs to build (default: all)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder")
    ap.add_argument("--compressed", action="store_true",
                    help="build with -Xfatbin -compress-all (binary <name>_compressed)")
    ap.add_argument("--static", action="store_true",
                    help="build with -cudart static (binary <name>_static)")
    ap.add_argument("--force", action="store_true", help="ignore the build cache")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 4)
    ap.add_argument("--print-command", action="store_true",
                    help="print the nvcc command lines instead of building")
    args = ap.parse_args(argv)

    names = args.names or PROGRAMS
    unknown = [n for n in names if n not in PROGRAMS]
    if unknown:
        ap.error(f"unknown program(s): {', '.join(unknown)}; known: {', '.join(PROGRAMS)}")
    out_dir = Path(args.out)
    if args.print_command:
        for n in names:
            print(shlex.join(command(n, out_dir / binary_name(n, args.compressed, args.static),
                                     (), args.compressed, args.static)))
        return 0

    def one(n: str):
        try:
            return n, build(n, out_dir, compressed=args.compressed, static=args.static,
                            force=args.force), None
        except (subprocess.CalledProcessError, FileNotFoundError) as e:
            return n, None, e

    rc = 0
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for n, path, err in pool.map(one, names):
            if err is None:
                print(f"ok    {n} -> {path}")
            else:
                rc = 1
                detail = (f"{err.stdout or ''}{err.stderr or ''}"
                          if isinstance(err, subprocess.CalledProcessError) else str(err))
                print(f"FAIL  {n}\n{detail}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
