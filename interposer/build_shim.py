"""Build the shim: a cffi-embedded shared library named libcudart.so.13.

Used by setup.py at install time (and by tests that build it into a scratch folder). The
library has the SONAME and the single version node of the real CUDA 13 runtime, exports every
function that runtime exports (csrc/ and the generated csrc/gen/exports.c define them) and
nothing else, and starts its embedded Python isolated (csrc/pyhost.c) with the paths recorded
here.
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
import tempfile
from pathlib import Path

import cffi

HERE = Path(__file__).resolve().parent
CSRC_CANDIDATES = (HERE.parent / "csrc", HERE / "csrc")
WIRE_C = HERE.parent / "wire" / "c"  # fc_wire.h, the wire's C header (generated)
TARGET = "libcudart.so.13"
MODULE = "_farcuda_shim"

# from the base up: each file calls only those before it (and the Python half); the exports
# (gen/exports.c) call all of them
SOURCES = ["log.c", "pyhost.c", "runtime.c", "conn.c", "connect.c", "core/ranges.c",
           "streams.c", "launch.c", "pools.c", "memory.c", "graphs.c", "devices.c", "join.c",
           "gen/exports.c"]

INIT_CODE = """
from _farcuda_shim import ffi, lib
from farcuda.interposer import runtime
runtime.install(ffi, lib)
"""

def csrc_dir() -> Path:
    for c in CSRC_CANDIDATES:
        if (c / "fc.h").exists():
            return c
    raise FileNotFoundError("csrc/ not found next to interposer/")


def _cdef_from_api(text: str) -> str:
    """The declarations of api.h without its preprocessor lines, for cffi."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    body = "\n".join(lines)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    return body


def _py_cdef(text: str) -> str:
    """cffi declarations of the entry points the C half calls into Python (the shim's own and
    the call table's Python rows), from the prototypes tools/gen_calls.py wrote into
    csrc/gen/pycalls.h."""
    return "\n".join(f'extern "Python+C" {ln.strip()}' for ln in text.splitlines()
                     if ln.startswith("int fcpy_"))


def python_paths() -> list[str]:
    """Folders the embedded interpreter needs: this Python's standard library and the
    site-packages folders of its base installation (the shim's own folder is added at run
    time from where the library lies)."""
    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix,
            "installed_base": sys.base_prefix, "installed_platbase": sys.base_exec_prefix}
    base_paths = sysconfig.get_paths(vars=base)
    out = [base_paths["stdlib"], base_paths["platstdlib"],
           os.path.join(base_paths["platstdlib"], "lib-dynload"), base_paths["purelib"],
           base_paths["platlib"]]
    # Debian's python keeps packages in dist-packages
    out += [p for p in sys.path if p.endswith("dist-packages") and p.startswith(sys.base_prefix)]
    seen: list[str] = []
    for p in out:
        if p and p not in seen and ":" not in p:
            seen.append(p)
    return seen


def make_ffi() -> cffi.FFI:
    csrc = csrc_dir()
    ffi = cffi.FFI()
    ffi.cdef(_cdef_from_api((csrc / "api.h").read_text()))
    ffi.cdef(_py_cdef((csrc / "gen" / "pycalls.h").read_text()))
    ffi.embedding_init_code(INIT_CODE)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ldlib = sysconfig.get_config_var("LDLIBRARY") or ""
    libpython = ldlib if ldlib.endswith(".so") or ".so." in ldlib else ""
    if libpython and os.path.exists(os.path.join(libdir, libpython + ".1.0")):
        libpython += ".1.0"
    version_script = Path(tempfile.mkdtemp(prefix="farcuda-build-")) / "libcudart.map"
    version_script.write_text(
        "libcudart.so.13 {\n  global:\n    cuda*;\n    __cuda*;\n    farcuda_*;\n"
        "  local:\n    *;\n};\n")

    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    ffi.set_source(
        MODULE,
        '#include "fc.h"\n#include "api.h"\n',
        sources=[str(csrc / s) for s in SOURCES],
        include_dirs=[str(csrc), str(WIRE_C)],
        define_macros=[("FC_PYTHON_HOME", q(sys.base_prefix)),
                       ("FC_PYTHON_PATHS", q(":".join(python_paths()))),
                       ("FC_LIBPYTHON", q(libpython)),
                       ("_GNU_SOURCE", "1")],
        extra_compile_args=["-O2", "-fvisibility=hidden", "-Wall", "-Wno-unused-function",
                            "-pthread"],
        extra_link_args=[f"-Wl,--version-script={version_script}",
                         f"-Wl,-soname,{TARGET}", "-pthread", "-ldl",
                         *([f"-Wl,-rpath,{libdir}"] if libdir else [])],
    )
    return ffi


def build(out_dir: str | os.PathLike, verbose: bool = False) -> Path:
    """Compile the shim into out_dir/libcudart.so.13 and return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ffi = make_ffi()
    with tempfile.TemporaryDirectory(prefix="farcuda-shim-") as tmp:
        built = ffi.compile(tmpdir=tmp, target=TARGET, verbose=verbose)
        dest = out / TARGET
        tmp_dest = out / (TARGET + ".tmp")
        Path(built).replace(tmp_dest)
        tmp_dest.replace(dest)
    return dest


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else ".", verbose=True))
