"""Stream-ordered frees (cudaFreeAsync): memory is freed when its stream gets there.

A free waits in ``pending``, in arrival order, with a marker of its stream's present point; its
memory stays held (and counted against quotas) until then. One task at a time (the reaper)
waits for the oldest pending free's stream, whatever the number of frees, and frees everything
whose stream got there meanwhile. An allocation of the very size of a free pending in its own
stream takes that block over, as CUDA's pools reuse a free in the stream that allocates.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..errors import CudaError
from .quota import charge

if TYPE_CHECKING:
    from .core import Session
    from .device import DeviceState

__all__ = ["StreamOrderedFrees"]

# (device of the stream, the stream, its marker, device of the memory, pointer)
Entry = tuple["DeviceState", int, Any, "DeviceState", int]


class StreamOrderedFrees:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.pending: list[Entry] = []
        self.reaper: asyncio.Future | None = None

    def add(self, sd: DeviceState, stream: int, marker: Any, md: DeviceState, ptr: int) -> None:
        md.freeing.add(ptr)
        self.pending.append((sd, stream, marker, md, ptr))
        if self.reaper is None:
            self.reaper = asyncio.ensure_future(self._reap_later())

    def take(self, d: DeviceState, stream: int, size: int) -> int | None:
        """A block of this very size whose free is pending in this same stream: the new
        allocation takes it over as it is (the stream's order keeps the old work and the new
        apart), instead of mapping new memory while the old waits to be unmapped."""
        need = charge(size)
        for i, (sd, sid, marker, md, ptr) in enumerate(self.pending):
            if (sd is d and md is d and sid == stream and d.alloc.owns(ptr)
                    and d.alloc.held(ptr)[0] == need):
                del self.pending[i]
                d.freeing.discard(ptr)
                d.be.marker_release(marker)
                return ptr
        return None

    def reap(self) -> None:
        """Free the memory of the pending frees whose streams got there."""
        if not self.pending:
            return
        devices = self.session.devices
        keep = []
        for entry in self.pending:
            sd, _sid, marker, md, ptr = entry
            if devices.get(md.vdev) is not md:
                continue  # the memory's device was reset or closed: the memory went with it
            # (a reset of the stream's device ended the work the free waited for)
            if devices.get(sd.vdev) is sd and not sd.be.marker_done(marker):
                keep.append(entry)
                continue
            md.freeing.discard(ptr)
            if md.alloc.owns(ptr):
                self.session.quota.free(md.vdev, md, ptr)
        self.pending = keep

    async def _reap_later(self) -> None:
        try:
            while self.pending:
                entry = self.pending[0]
                sd, marker = entry[0], entry[2]
                if self.session.devices.get(sd.vdev) is sd:
                    try:
                        await sd.be.marker_wait(marker)
                    except CudaError:
                        pass  # a broken context: nothing runs in it any more
                self.reap()
                if self.pending and self.pending[0] is entry:
                    await asyncio.sleep(0.01)  # its wait ended early: look again, not at once
        finally:
            if self.reaper is asyncio.current_task():
                self.reaper = None

    async def settle(self) -> None:
        """Until every free pending now has happened."""
        for entry in list(self.pending):
            sd, marker = entry[0], entry[2]
            if entry in self.pending and self.session.devices.get(sd.vdev) is sd:
                try:
                    await sd.be.marker_wait(marker)
                except CudaError:
                    pass
        self.reap()

    def device_reset(self) -> None:
        """A device was made anew: frees pending in its old context are void, or due at once,
        and the reaper may be waiting for that context."""
        self.reap()
        self.cancel()
        if self.pending:
            self.reaper = asyncio.ensure_future(self._reap_later())

    def cancel(self) -> None:
        if self.reaper is not None:
            self.reaper.cancel()
            self.reaper = None
