"""Build the driver layer: libfarcuda.so.1 (the client core), libcuda.so.1 (the driver
stand-in) and libnvidia-ml.so.1 (NVML's), plain C with the system's compiler, no Python.

Used by setup.py at install time (and by tests that build into a scratch folder). The
libraries go to one folder of their own (farcuda/interposer/lib/driver), apart from the
runtime shim's, so that either layer can be put on LD_LIBRARY_PATH alone:

- libfarcuda.so.1: csrc/core + csrc/conn.c, everything under the version node
  FARCUDA_CORE_1; the one copy of the session every layer of a process uses.
- libcuda.so.1 (SONAME libcuda.so.1, and libcuda.so beside it): csrc/driver; it exports
  exactly the names driver 580 exports, unversioned as the real driver's are, and finds
  libfarcuda.so.1 next to itself (RUNPATH $ORIGIN).
- libnvidia-ml.so.1 (and libnvidia-ml.so): csrc/nvml, NVML's start-up questions answered from
  the servers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CSRC_CANDIDATES = (HERE.parent / "csrc", HERE / "csrc")
WIRE_C = HERE.parent / "wire" / "c"  # fc_wire.h, the wire's C header (generated)

CORE_SOURCES = ["core/config.c", "core/sha256.c", "core/md2.c", "core/json.c", "core/session.c",
                "core/ranges.c", "core/pools.c", "core/tls.c", "conn.c"]
NVML_SOURCES = ["nvml/nvml.c"]
DRIVER_SOURCES = ["driver/init.c", "driver/handles.c", "driver/context.c", "driver/memory.c",
                  "driver/stream.c", "driver/graph.c", "driver/pools.c", "driver/module.c",
                  "driver/darkapi.c", "driver/gen/exports.c"]
CFLAGS = ["-O2", "-g", "-fPIC", "-pthread", "-Wall", "-Wextra", "-D_GNU_SOURCE"]
# The core's exports are chosen by its version script (its C is shared with the shim, which
# declares nothing visible); the stand-in's by visibility, then its version script.
HIDDEN = ["-fvisibility=hidden"]


def csrc_dir() -> Path:
    for c in CSRC_CANDIDATES:
        if (c / "core" / "core.h").exists():
            return c
    raise FileNotFoundError("csrc/ not found next to interposer/")


def compiler() -> str:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or "cc"


def _run(cmd: list[str], verbose: bool) -> None:
    if verbose:
        print(" ".join(cmd), file=sys.stderr)
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"building the driver layer failed:\n{' '.join(cmd)}\n"
                           f"{p.stdout}{p.stderr}")
    if (p.stdout + p.stderr).strip():
        sys.stderr.write(p.stdout + p.stderr)  # warnings are not errors, but not silent


def _link(out: Path, soname: str, sources: list[Path], tmp: Path, extra: list[str],
          verbose: bool, cflags: list[str]) -> None:
    cc = compiler()
    objs = []
    for src in sources:
        obj = tmp / (src.parent.name + "_" + src.stem + ".o")
        _run([cc, *CFLAGS, *cflags, "-I", str(src.parent), "-I", str(WIRE_C), "-c", str(src),
              "-o", str(obj)], verbose)
        objs.append(str(obj))
    part = out.with_name(out.name + ".tmp")
    # -Bsymbolic: a library's own functions are its own, whatever else the process loaded that
    # exports the same names (another libcuda.so.1, a tool's wrappers): cuGetProcAddress and the
    # export tables hand out this library's entry points
    _run([cc, "-shared", "-pthread", "-o", str(part), *objs, f"-Wl,-soname,{soname}",
          "-Wl,--no-undefined", "-Wl,-Bsymbolic", *extra, "-ldl"], verbose)
    part.replace(out)


def build(out_dir: str | os.PathLike, verbose: bool = False) -> Path:
    """Compile the driver layer into out_dir; returns the path of libcuda.so.1."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csrc = csrc_dir()
    with tempfile.TemporaryDirectory(prefix="farcuda-driver-") as t:
        tmp = Path(t)
        core_map = tmp / "core.map"
        core_map.write_text("FARCUDA_CORE_1 {\n  global:\n    fcc_*;\n    fc_*;\n    fcx_*;\n"
                            "  local:\n    *;\n};\n")
        _link(out / "libfarcuda.so.1", "libfarcuda.so.1", [csrc / s for s in CORE_SOURCES],
              tmp, [f"-Wl,--version-script={core_map}"], verbose, [])
        drv_map = tmp / "cuda.map"
        # driver 580's names (all of them start with "cu") and the test hooks, nothing else
        drv_map.write_text("{\n  global:\n    cu*;\n    farcuda_*;\n  local:\n    *;\n};\n")
        _link(out / "libcuda.so.1", "libcuda.so.1", [csrc / s for s in DRIVER_SOURCES], tmp,
              [f"-Wl,--version-script={drv_map}", f"-L{out}", "-l:libfarcuda.so.1",
               "-Wl,-rpath,$ORIGIN", "-Wl,--enable-new-dtags"], verbose, HIDDEN)
        nvml_map = tmp / "nvml.map"
        nvml_map.write_text("{\n  global:\n    nvml*;\n  local:\n    *;\n};\n")
        _link(out / "libnvidia-ml.so.1", "libnvidia-ml.so.1", [csrc / s for s in NVML_SOURCES],
              tmp, [f"-Wl,--version-script={nvml_map}", f"-L{out}", "-l:libfarcuda.so.1",
                    "-Wl,-rpath,$ORIGIN", "-Wl,--enable-new-dtags"], verbose, HIDDEN)
    for name in ("libcuda.so", "libnvidia-ml.so"):  # the names some programs dlopen
        link = out / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(name + ".1")
    return out / "libcuda.so.1"


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else ".", verbose=True))
