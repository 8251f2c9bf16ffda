"""The session's requests for the driver layer: modules from images, looked up by name.

The runtime shim registers its kernels before the program runs and sends a module with the
names it wants (MODULE_LOAD); a program on the driver API hands over an image and asks for
functions and globals by name later, one at a time. These handlers serve that second way, for
every backend (each implements ``image_load``, ``image_function``, ``image_global`` and
``image_unload``). Images come from the client or from the daemon's module cache
(daemon/modcache.py), by SHA-256.
"""

from __future__ import annotations

import json

from .errors import CudaError, E
from .modcache import ModuleCache

__all__ = ["DriverOps"]

_MAX_NAME = 4096


class DriverOps:
    """Mixed into daemon.session.Session."""

    module_cache: ModuleCache
    # (vdev, module) -> the globals looked up so far {name: (addr, size)} and the kernels
    _images: dict[tuple[int, int], dict]

    def _driver_init(self, module_cache: ModuleCache | None) -> None:
        self.module_cache = module_cache or ModuleCache(None)
        self._images = {}

    def op_MODULE_IMAGE(self, f):
        module, _flags, size, *digest = f.values()
        digest = bytes(digest)
        d = self.dev(f)
        if (f.vdev, module) in self._images:
            raise CudaError(E["cudaErrorInvalidValue"], f"module {module} is loaded already")
        if f.size_of_tail:
            image = bytes(f.tail or b"")
            if len(image) != size:
                raise CudaError(E["cudaErrorInvalidValue"], "the image is not as long as said")
            if self.module_cache.put(image) != digest:
                raise CudaError(E["cudaErrorInvalidValue"], "the image does not have its hash")
        else:
            image = self.module_cache.get(digest)
            if image is None:
                raise CudaError(E["cudaErrorSymbolNotFound"], "not in the module cache")
            self.counts["module cache hits"] += 1
        d.be.image_load(module, image)
        self._images[(f.vdev, module)] = {"globals": {}, "kernels": set()}

    def _image(self, f, module: int) -> dict:
        try:
            return self._images[(f.vdev, module)]
        except KeyError:
            raise CudaError(E["cudaErrorInvalidResourceHandle"], "no such module") from None

    @staticmethod
    def _name(f) -> str:
        raw = bytes(f.tail or b"")
        if not raw or len(raw) > _MAX_NAME:
            raise CudaError(E["cudaErrorInvalidValue"], "no name")
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise CudaError(E["cudaErrorInvalidValue"], "the name is not UTF-8") from None

    def op_MODULE_FUNCTION(self, f):
        module, kid = f.values()
        rec = self._image(f, module)
        name = self._name(f)
        d = self.dev(f)
        info = d.be.image_function(module, name)
        if info is None:
            raise CudaError(E["cudaErrorSymbolNotFound"])
        d.be.set_kernel(kid, info)
        d.kernels.add(kid)
        d.kernel_names[kid] = name
        rec["kernels"].add(kid)
        out = {k: info[k] for k in ("params", "param_size", "max_threads", "max_dyn_smem")}
        return {}, json.dumps(out).encode()

    def op_MODULE_GLOBAL(self, f):
        (module,) = f.values()
        known = self._image(f, module)["globals"]
        name = self._name(f)
        if name not in known:
            d = self.dev(f)
            info = d.be.image_global(module, name)
            if info is None:
                raise CudaError(E["cudaErrorSymbolNotFound"])
            if "addr" not in info:  # the backend keeps globals in window memory
                info["addr"] = d.alloc.alloc(max(info["size"], 1))
                if info.get("init"):  # as a driver loads initialized variables
                    d.be.memcpy_htod(info["addr"], info["init"], 0)
            d.add_symbol(info["addr"], info["size"])
            known[name] = (info["addr"], info["size"])
        addr, size = known[name]
        return {"addr": addr, "size": size}

    def op_MODULE_UNLOAD(self, f):
        (module,) = f.values()
        rec = self._images.pop((f.vdev, module), None)
        if rec is None:
            raise CudaError(E["cudaErrorInvalidResourceHandle"], "no such module")
        d = self.dev(f)
        for kid in rec["kernels"]:  # its functions can no longer be launched
            d.kernels.discard(kid)
        d.be.image_unload(module, rec["kernels"])
