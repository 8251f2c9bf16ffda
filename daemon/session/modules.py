"""Modules by image, for the driver layer (csrc/driver/module.c): an image handed over whole,
its functions and globals asked for by name later, one at a time.

The runtime shim registers its kernels before the program runs and sends a module with the
names it wants (MODULE_LOAD, in ``launch``); a program on the driver API loads an image first
and looks names up afterwards. Every backend serves this second way (``image_load``,
``image_function``, ``image_global``, ``image_unload``). Images come from the client or from
the daemon's module cache (daemon/modcache.py), by SHA-256.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from farcuda.wire import Frame
from farcuda.wire import messages as msg

from ..errors import CudaError, E
from ..modcache import ModuleCache
from .table import handler

if TYPE_CHECKING:
    from .core import Session

_MAX_NAME = 4096


class ModuleImages:
    """The images a session loaded: (vdev, module) -> the globals looked up so far
    {name: (addr, size)} and the kernels found in it."""

    def __init__(self, cache: ModuleCache | None) -> None:
        self.cache = cache or ModuleCache(None)
        self.loaded: dict[tuple[int, int], dict] = {}

    def get(self, vdev: int, module: int) -> dict:
        try:
            return self.loaded[(vdev, module)]
        except KeyError:
            raise CudaError(E["cudaErrorInvalidResourceHandle"], "no such module") from None


def _name(f: Frame) -> str:
    raw = bytes(f.tail or b"")
    if not raw or len(raw) > _MAX_NAME:
        raise CudaError(E["cudaErrorInvalidValue"], "no name")
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise CudaError(E["cudaErrorInvalidValue"], "the name is not UTF-8") from None


@handler
def MODULE_IMAGE(s: Session, f: Frame, m: msg.MODULE_IMAGE):
    images = s.images
    d = s.dev(f)
    if (f.vdev, m.module) in images.loaded:
        raise CudaError(E["cudaErrorInvalidValue"], f"module {m.module} is loaded already")
    if f.size_of_tail:
        image = bytes(f.tail or b"")
        if len(image) != m.size:
            raise CudaError(E["cudaErrorInvalidValue"], "the image is not as long as said")
        if images.cache.put(image) != m.hash:
            raise CudaError(E["cudaErrorInvalidValue"], "the image does not have its hash")
    else:
        cached = images.cache.get(m.hash)
        if cached is None:
            raise CudaError(E["cudaErrorSymbolNotFound"], "not in the module cache")
        image = cached
        s.counts["module cache hits"] += 1
    d.be.image_load(m.module, image)
    images.loaded[(f.vdev, m.module)] = {"globals": {}, "kernels": set()}


@handler
def MODULE_FUNCTION(s: Session, f: Frame, m: msg.MODULE_FUNCTION):
    rec = s.images.get(f.vdev, m.module)
    name = _name(f)
    d = s.dev(f)
    info = d.be.image_function(m.module, name)
    if info is None:
        raise CudaError(E["cudaErrorSymbolNotFound"])
    d.be.set_kernel(m.kernel, info)
    d.kernels.add(m.kernel)
    d.kernel_names[m.kernel] = name
    rec["kernels"].add(m.kernel)
    out = {k: info[k] for k in ("params", "param_size", "max_threads", "max_dyn_smem")}
    return {}, json.dumps(out).encode()


@handler
def MODULE_NAMES(s: Session, f: Frame, m: msg.MODULE_NAMES):
    s.images.get(f.vdev, m.module)
    names = s.dev(f).be.image_function_names(m.module)
    return {}, b"".join(n.encode() + b"\0" for n in names)


@handler
def MODULE_GLOBAL(s: Session, f: Frame, m: msg.MODULE_GLOBAL):
    known = s.images.get(f.vdev, m.module)["globals"]
    name = _name(f)
    if name not in known:
        d = s.dev(f)
        info = d.be.image_global(m.module, name)
        if info is None:
            raise CudaError(E["cudaErrorSymbolNotFound"])
        if "addr" not in info:  # the backend keeps globals in window memory
            info["addr"] = d.alloc.alloc(max(info["size"], 1))
            if info.get("init"):  # as a driver loads initialized variables
                d.be.memcpy_htod(info["addr"], info["init"], 0)
        d.add_symbol(info["addr"], info["size"])
        known[name] = (info["addr"], info["size"])
    addr, size = known[name]
    return msg.MODULE_GLOBAL_REPLY(addr, size)


@handler
def MODULE_UNLOAD(s: Session, f: Frame, m: msg.MODULE_UNLOAD):
    rec = s.images.loaded.pop((f.vdev, m.module), None)
    if rec is None:
        raise CudaError(E["cudaErrorInvalidResourceHandle"], "no such module")
    d = s.dev(f)
    for kid in rec["kernels"]:  # its functions can no longer be launched
        d.kernels.discard(kid)
    d.be.image_unload(m.module, rec["kernels"])
