"""Build farcuda.daemon._fastpath (cffi, API mode) from daemon/fastpath.c; used by setup.py.

The C path declares what it offers in fastpath.h (cffi reads the same declarations) and reads
frames with the layouts of the wire's generated header, wire/c/fc_wire.h.
"""

from __future__ import annotations

import re
from pathlib import Path

import cffi

HERE = Path(__file__).resolve().parent

WIRE_C = HERE.parent / "wire" / "c"  # fc_wire.h, the wire's C header (generated)


def cdef() -> str:
    """fastpath.h's declarations, for cffi: without its preprocessor lines and comments."""
    text = (HERE / "fastpath.h").read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))


def make_ffi(module: str = "farcuda.daemon._fastpath", libcuda: str | None = None,
             extra_args: tuple[str, ...] = ()) -> cffi.FFI:
    """The extension module; ``libcuda`` replaces the driver it opens (the tests' recording
    stand-in), ``extra_args`` go to the compiler and the linker (sanitizers)."""
    ffi = cffi.FFI()
    ffi.cdef(cdef())
    macros = [("FP_LIBCUDA", '"' + libcuda + '"')] if libcuda else []
    ffi.set_source(module, (HERE / "fastpath.c").read_text(), libraries=["dl"],
                   include_dirs=[str(HERE), str(WIRE_C)], define_macros=macros,
                   extra_compile_args=["-O2", "-Wall", *extra_args],
                   extra_link_args=list(extra_args))
    return ffi


def build(build_lib: str) -> str:
    """Compile in a scratch folder and place only the extension module in build_lib."""
    import shutil
    import tempfile
    with tempfile.TemporaryDirectory(prefix="farcuda-fastpath-") as tmp:
        built = Path(make_ffi().compile(tmpdir=tmp))
        dest = Path(build_lib) / "farcuda" / "daemon" / built.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built, dest)
    return str(dest)


if __name__ == "__main__":
    import sys
    print(build(sys.argv[1] if len(sys.argv) > 1 else "."))
