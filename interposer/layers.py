"""Which of farcuda's layers a program gets under `farcuda run`, and why.

A program's own files say what it needs:

- an ELF program whose NEEDED entries name libcudart.so.13 (nvcc -cudart shared) gets the
  runtime shim, the fast path for its CUDA calls, and the driver layer beside it for the
  driver calls it or its CUDA libraries make;
- any other program gets the driver layer only: an ELF program that carries the CUDA runtime
  inside itself (nvcc's default, -cudart static) or dlopens CUDA itself, a Python interpreter
  (PyTorch, CuPy bring their own libcudart, which must stay theirs), and a script (what it
  runs is not known in advance; it sees the driver layer, and any libcudart it runs with
  reaches the GPU through it).

Either way the driver layer's libcuda.so.1 and libnvidia-ml.so.1 are preloaded, so that no
lookup of the CUDA driver in the program's process can find a local GPU's instead (a library
loaded already is what a later dlopen of its name returns). The runtime shim's folder is on
LD_LIBRARY_PATH only for programs that get the shim: a Python program's libcudart would be
replaced by it otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Choice", "choose", "elf_needed", "program_kind"]

RUNTIME, DRIVER = "runtime", "driver"
_PYTHON = re.compile(r"^python[0-9.]*$")


def elf_needed(path: str | os.PathLike) -> list[str] | None:
    """The NEEDED entries of an ELF file's dynamic section, in order; [] for a static ELF;
    None when the file is not an ELF64 little-endian file or cannot be read."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    if not shoff or shentsize < 64 or shoff + shnum * shentsize > len(data):
        return []
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
                for i in range(shnum)]
    out: list[str] = []
    for _name, typ, _fl, _addr, off, size, link, _info, _al, entsize in sections:
        if typ != 6 or link >= len(sections):  # SHT_DYNAMIC
            continue
        str_off, str_size = sections[link][4], sections[link][5]
        strtab = data[str_off:str_off + str_size]
        for k in range(0, min(size, len(data) - off) - 15, entsize or 16):
            tag, val = struct.unpack_from("<qQ", data, off + k)
            if tag == 0:
                break
            if tag == 1 and val < len(strtab):  # DT_NEEDED
                end = strtab.find(b"\0", val)
                out.append(strtab[val:end if end >= 0 else None].decode(errors="replace"))
    return out


def _shebang(path: str) -> list[str] | None:
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    return head[2:].split(b"\n", 1)[0].decode(errors="replace").split()


def program_kind(path: str) -> tuple[str, str]:
    """(kind, description): kind is "shared-runtime", "driver-program", "python" or
    "script"."""
    name = os.path.basename(path)
    interp = _shebang(path)
    if interp is not None:
        words = [w for w in interp if not w.startswith("-")]
        prog = os.path.basename(words[1] if len(words) > 1 and
                                os.path.basename(words[0]) == "env" else words[0]) \
            if words else "?"
        if _PYTHON.match(prog):
            return "python", f"a Python script (#!{' '.join(interp)})"
        return "script", f"a script run by {prog} (#!{' '.join(interp)})"
    needed = elf_needed(path)
    if needed is None:
        return "script", "not an ELF program (what it runs is not known in advance)"
    cudart = [n for n in needed if n.startswith("libcudart.so")]
    if _PYTHON.match(name) or any(n.startswith("libpython") for n in needed):
        return "python", "a Python interpreter"
    if cudart:
        return "shared-runtime", f"an ELF program that links {cudart[0]} (nvcc -cudart shared)"
    if any(n.startswith("libcuda.so") for n in needed):
        return "driver-program", "an ELF program that links libcuda.so.1 (the driver API)"
    return "driver-program", ("an ELF program without libcudart in its NEEDED entries: it "
                              "carries the CUDA runtime inside itself (nvcc -cudart static) "
                              "or loads CUDA itself")


@dataclass
class Choice:
    program: str
    kind: str
    description: str
    layers: list[str]
    preload: list[Path] = field(default_factory=list)
    library_path: list[Path] = field(default_factory=list)
    why: str = ""

    def explain(self) -> list[str]:
        """The lines `farcuda run --explain` prints."""
        names = {RUNTIME: "the runtime shim (libcudart.so.13)",
                 DRIVER: "the driver layer (libcuda.so.1, libnvidia-ml.so.1)"}
        lines = [f"{self.program}: {self.description}",
                 "layers: " + " and ".join(names[x] for x in self.layers) + f" ({self.why})",
                 "preloaded: " + ", ".join(str(p) for p in self.preload),
                 "first on LD_LIBRARY_PATH: " + ":".join(str(p) for p in self.library_path)]
        if RUNTIME not in self.layers:
            lines.append("the runtime shim is not on the library path: the program's own "
                         "libcudart (if any) stays its own and reaches the GPU through the "
                         "driver layer")
        return lines


def choose(program: str, env: dict, shim: Path, driver_dir: Path,
           force: str | None = None) -> Choice:
    """The layers for ``program`` (a name on PATH or a path); ``force``: "runtime",
    "driver" or None (decide from the program)."""
    path = program if os.sep in program else (shutil.which(program, path=env.get("PATH"))
                                              or program)
    kind, description = program_kind(path)
    if force == RUNTIME or (force is None and kind == "shared-runtime"):
        layers = [RUNTIME, DRIVER]
        why = ("asked for with --layer runtime" if force else
               "the shim serves its runtime calls; the driver layer its driver calls and "
               "its CUDA libraries'")
    else:
        layers = [DRIVER]
        why = ("asked for with --layer driver" if force else
               {"python": "the interpreter's CUDA libraries bring their own runtime",
                "script": "what it runs may bring its own CUDA runtime"}.get(
                    kind, "its CUDA runtime, if any, is its own"))
    preload = [driver_dir / "libcuda.so.1", driver_dir / "libnvidia-ml.so.1"]
    library_path = [driver_dir]
    if RUNTIME in layers:
        preload.insert(0, shim)
        library_path.insert(0, shim.parent)
    return Choice(program, kind, description, layers, preload, library_path, why)
