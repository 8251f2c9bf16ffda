"""Device memory a session may hold, and the bytes it holds of its tenant's quota.

A quota per session (``quota_bytes``) is decided here. Tenant limits shared by several sessions
live in the front (daemon/tenants.py): with a ``front`` (the worker's link to it) that keeps a
quota, an allocation first reserves its bytes there (a short wait on the control link), and
every free, device reset or end of the session returns them. Without one (tests, or no limits
configured) everything is decided here, synchronously.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..allocator import SMALL_ALIGN, SMALL_LIMIT
from ..errors import CudaError, E

if TYPE_CHECKING:
    from .core import Session
    from .device import DeviceState

__all__ = ["Quota", "charge"]

log = logging.getLogger("farcudad.session")


def charge(size: int) -> int:
    """The bytes an allocation of ``size`` holds (small ones are rounded as the allocator
    packs them), which is what a tenant's quota counts."""
    return size if size >= SMALL_LIMIT else -(-size // SMALL_ALIGN) * SMALL_ALIGN


class Quota:
    def __init__(self, session: Session, quota_bytes: int | None) -> None:
        self.session = session
        self.quota_bytes = quota_bytes
        self.charged: dict[tuple[int, int], int] = {}  # (vdev, ptr) -> bytes reserved

    def take(self, d: DeviceState, size: int) -> int:
        """Allocate ``size`` bytes on ``d``, within the session's own quota."""
        if self.quota_bytes is not None and self.session.memory_held() + size > self.quota_bytes:
            raise CudaError(E["cudaErrorMemoryAllocation"], "over the tenant's memory quota")
        try:
            return d.alloc.alloc(size)
        except MemoryError:
            raise CudaError(E["cudaErrorMemoryAllocation"]) from None

    def allocate(self, vdev: int, d: DeviceState, size: int, reply: dict):
        """Allocate ``size`` bytes on ``d``: ``reply`` with the pointer, or an awaitable of it
        when the front reserves the bytes first."""
        s = self.session
        front = s.front
        if front is None or front.quota is None:
            return dict(reply, ptr=self.take(d, size))
        n = charge(size)

        async def reserved():
            why = await front.reserve(n)
            if why:
                log.info("session %d: cudaMalloc of %d bytes refused: %s", s.session_id,
                         size, why)
                raise CudaError(E["cudaErrorMemoryAllocation"], why)
            try:
                if s.devices.get(vdev) is not d:  # reset or closed meanwhile
                    raise CudaError(E["cudaErrorInvalidDevice"])
                ptr = self.take(d, size)
            except BaseException:
                front.release(n)
                raise
            self.charged[(vdev, ptr)] = n
            return dict(reply, ptr=ptr)
        return reserved()

    def free(self, vdev: int, d: DeviceState, ptr: int) -> None:
        if not d.alloc.owns(ptr):
            # Freed while this free waited for the device: a second free of the pointer, or
            # a reset of the device. An error for the client, not for the allocator.
            raise CudaError(E["cudaErrorInvalidValue"], "not an allocation of this client")
        d.alloc.free(ptr)
        n = self.charged.pop((vdev, ptr), 0)
        if n:
            self.session.front.release(n)

    def return_charges(self, vdev: int | None) -> None:
        """Give back the reservations of one device (None: of all), all in one notice."""
        mine = [k for k in self.charged if vdev is None or k[0] == vdev]
        n = sum(self.charged.pop(k) for k in mine)
        if n and self.session.front is not None:
            self.session.front.release(n)
