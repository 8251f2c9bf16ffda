"""The CUDA driver backend: the daemon's GPUs through the CUDA driver API (cuda-bindings).

``CudaBackend`` is one per worker process; each virtual device it opens is a ``CudaDevice``
(device.py). The virtual devices of the worker's session on one physical GPU share one context
(contexts of one GPU take turns on it, streams of one context run side by side); those with an
SM budget are green contexts of their own. The driver's entry points (driver.py), pinned
staging memory (staging.py) and SM budgets (partitions.py) are pieces of their own. With the
daemon's C path built, runs of launches and event operations bypass Python
(daemon/fastpath.c): the devices register their handles with it as they create them.
"""

from __future__ import annotations

import concurrent.futures
import logging
import re
from typing import Any

from farcuda.wire import messages as msg

from ...errors import CudaError, E
from ...faults import STICKY
from .device import CudaDevice
from .driver import SUCCESS, check, cu

__all__ = ["CudaBackend", "CudaDevice"]

log = logging.getLogger("farcudad.cuda")


def _kernel_module_version() -> str | None:
    """The NVIDIA kernel module's version ("580.95.05"), from /proc, or None."""
    try:
        with open("/proc/driver/nvidia/version") as f:
            text = f.read()
    except OSError:
        return None
    m = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    return m.group(1) if m else None


class CudaBackend:
    name = "cuda"

    def __init__(self, wait_threads: int = 16, fast: bool = True, share: bool = True) -> None:
        err = cu.cuInit(0)[0]
        if err != SUCCESS:
            raise RuntimeError(f"the CUDA driver did not initialize ({err.name}): no usable "
                               "GPU on this machine")
        self.fastpath: tuple[Any, Any] | None = None  # (ffi, lib) of daemon/fastpath.c
        if fast:
            try:
                from ..._fastpath import ffi, lib
                if lib.fp_init() == 0:
                    self.fastpath = (ffi, lib)
            except ImportError:
                log.warning("the C fast path is not built: launches go through Python")
        self.pool = concurrent.futures.ThreadPoolExecutor(wait_threads, "farcudad-wait")
        self._current = None
        # share: a session's devices on one GPU share its context (False: a context each)
        self.share = share
        self._contexts: dict[int, list] = {}  # gpu -> [context, devices in it]
        self._count = check(cu.cuDeviceGetCount())
        self._driver = check(cu.cuDriverGetVersion())

    def gpu_count(self) -> int:
        return self._count

    def driver_version(self) -> int:
        return self._driver

    def gpu_info(self, gpu: int) -> dict:
        if not 0 <= gpu < self._count:
            return {"error": f"no GPU {gpu} (this server has {self._count})"}
        dev = check(cu.cuDeviceGet(gpu))
        name = check(cu.cuDeviceGetName(256, dev))
        name = bytes(name).split(b"\0")[0].decode(errors="replace")
        uuid = check(cu.cuDeviceGetUuid(dev))
        raw = uuid.bytes if hasattr(uuid, "bytes") else b""
        raw = bytes(raw if not isinstance(raw, str) else raw.encode("latin-1"))[:16]
        attrs = {}
        for a in range(1, 256):
            try:
                attr = cu.CUdevice_attribute(a)
            except ValueError:
                continue
            r = cu.cuDeviceGetAttribute(attr, dev)
            if r[0] == SUCCESS:
                attrs[str(a)] = int(r[1])
        info: dict[str, Any] = {"name": name, "uuid": raw.hex(),
                                "total_mem": int(check(cu.cuDeviceTotalMem(dev))),
                                "attrs": attrs}
        version = _kernel_module_version()
        if version:  # what NVML's nvmlSystemGetDriverVersion says, for the client's NVML
            info["driver_version"] = version
        return info

    def open_device(self, gpu: int, sm_budget: int, flags: int, window_base: int,
                    window_size: int, vdev: int = 0) -> CudaDevice:
        if not 0 <= gpu < self._count:
            raise CudaError(E["cudaErrorInvalidDevice"])
        return CudaDevice(self, gpu, sm_budget, flags, window_base, window_size, vdev)

    def shared_context(self, gpu: int, cudev, flags: int) -> tuple[list, object]:
        """(the entry of the GPU's shared context, a new non-blocking stream in it: the
        device's stream 0). A context a sticky error broke is left to the devices still in
        it, and a new one made: a device reset after a fault gets a working context."""
        for _ in range(2):
            entry = self._contexts.get(gpu)
            if entry is None:
                entry = [check(cu.cuCtxCreate(None, flags & 0x1F, cudev)), 0]
                self._contexts[gpu] = entry
            self._current = None
            err, stream = cu.cuCtxSetCurrent(entry[0])[0], None
            if err == SUCCESS:
                self._current = entry[0]
                err, stream = cu.cuStreamCreateWithPriority(msg.STREAM_CREATE_NON_BLOCKING, 0)
            if err == SUCCESS:
                entry[1] += 1
                return entry, stream
            if int(err) not in STICKY:
                raise CudaError(int(err))
            log.info("gpu %d: the shared context is broken (%s): a new one", gpu, err)
            del self._contexts[gpu]
            if entry[1] == 0:
                cu.cuCtxDestroy(entry[0])
        raise CudaError(int(err))

    def release_context(self, entry: list) -> None:
        """A device of a shared context is gone; the last one destroys it."""
        entry[1] -= 1
        if entry[1] > 0:
            return
        self._contexts = {g: e for g, e in self._contexts.items() if e is not entry}
        cu.cuCtxDestroy(entry[0])
        if self._current is entry[0]:
            self._current = None

    def context_unknown(self) -> None:
        """The C path may have switched contexts: make the next call set its own."""
        self._current = None

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
