"""A virtual device of a session: its backend, its memory, what it knows of its modules.

Every pointer a client passes to a memory operation must lie in memory of this session: one
of its allocations or one of its modules' globals (``check``); anything else is
cudaErrorInvalidValue, whatever the GPU would have done with it.
"""

from __future__ import annotations

import bisect

from ..allocator import WindowAllocator
from ..backends.base import DeviceBackend
from ..errors import CudaError, E
from .busy import BusyClock

__all__ = ["DeviceState", "Refusal"]


class Refusal(CudaError):
    """A call refused by the daemon's policy (a tenant limit): the client is told why."""


class DeviceState:
    def __init__(self, vdev: int, be: DeviceBackend, window_size: int, params: dict) -> None:
        self.vdev = vdev
        self.be = be
        self.params = params  # DEVICE_OPEN's fields: gpu, sm_budget, flags, window_...
        self.window_size = window_size
        # the backend hears of every allocation (the C path checks pointers with its own copy)
        self.alloc = WindowAllocator(be.window_base, window_size, be.granule, be.map_extent,
                                     be.unmap_extent, be, be.apron, be.map_apron,
                                     be.unmap_apron, be.apron_floor)
        self.symbols: list[tuple[int, int]] = []  # sorted (base, size) of module globals
        self.kernels: set[int] = set()
        self.clock: BusyClock | None = None  # its GPU's busy clock in the session
        self.freeing: set[int] = set()  # allocations with a stream-ordered free pending
        self.kernel_names: dict[int, str] = {}
        self.dead: dict | None = None  # the fault that left its context unusable

    def check(self, ptr: int, n: int) -> None:
        """ptr..ptr+n must lie inside one allocation or global of this session."""
        if n == 0:
            return
        hit = self.alloc.find(ptr)
        if hit is None:
            i = bisect.bisect_right(self.symbols, (ptr, 1 << 64)) - 1
            hit = self.symbols[i] if i >= 0 and ptr < sum(self.symbols[i]) else None
        if hit is None or ptr + n > hit[0] + hit[1]:
            raise CudaError(E["cudaErrorInvalidValue"], f"0x{ptr:x}+{n} is not memory of "
                            "this client")

    def check2d(self, ptr: int, pitch: int, width: int, height: int) -> None:
        """The rows of a 2D copy or set: ``height`` rows of ``width`` bytes, ``pitch`` apart."""
        if width > pitch:
            raise CudaError(E["cudaErrorInvalidPitchValue"])
        self.check(ptr, (height - 1) * pitch + width if height else 0)

    def kernel(self, kid: int) -> int:
        """A kernel this device has loaded."""
        if kid not in self.kernels:
            raise CudaError(E["cudaErrorInvalidDeviceFunction"])
        return kid

    def add_symbol(self, base: int, size: int) -> None:
        if (base, size) not in self.symbols:
            bisect.insort(self.symbols, (base, size))
            self.be.track(base, size)

    def memory_held(self) -> int:
        return self.alloc.bytes_in_use
