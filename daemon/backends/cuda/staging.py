"""Pinned host memory for copies between the client and a device.

``Staging`` lends slots of SLOT bytes: a payload is received into one (or copied there) and
copied to the device from it; a slot is reusable once the event recorded behind its copy
completed. ``Chunks`` are buffers of SMALL bytes for deferred device-to-host results, and
``DeferredCopy`` is one such copy, queued on its stream with an event behind it.
"""

from __future__ import annotations

import ctypes
from collections import deque
from collections.abc import Awaitable
from typing import Any, Protocol

from ...errors import CudaError
from .driver import NOT_READY, SUCCESS, check, cu

__all__ = ["SLOT", "SMALL", "Staging", "Chunks", "DeferredCopy"]

SLOT = 4 << 20
SMALL = 64 << 10  # device-to-host copies up to this size may take the synchronous shortcut


class Owner(Protocol):
    """What the staging memory needs of the device it belongs to (device.CudaDevice): its
    pool of events, a thread to wait in, and where slots and chunks go back to."""

    staging: Staging
    _chunks: Chunks

    def _get_event(self) -> Any: ...

    def _put_event(self, ev: Any) -> None: ...

    def _in_thread(self, fn: Any, *args: Any) -> Awaitable[Any]: ...


class Staging:
    """Pinned host slots for copies; a slot is reusable once its event completed."""

    def __init__(self, dev: Owner, count: int = 8) -> None:
        self.dev = dev
        self.free: deque[int] = deque()
        self.busy: deque[tuple[int, object]] = deque()  # (slot, event) in issue order
        self.bases: list[int] = []
        for _ in range(count):
            p = check(cu.cuMemHostAlloc(SLOT, 0))
            self.bases.append(int(p))
            self.free.append(int(p))

    def view(self, slot: int, n: int) -> memoryview:
        return memoryview((ctypes.c_char * n).from_address(slot)).cast("B")

    MAX_SLOTS = 32  # beyond this many (128 MiB), wait for the oldest copy instead of adding

    def acquire(self) -> int:
        if not self.free and self.busy:
            self._reap(block=False)
        while not self.free:
            # Every slot is lent out (to the socket) or waits for a copy that may sit behind a
            # long kernel: add one rather than block the event loop, up to MAX_SLOTS.
            if not self.busy or len(self.bases) < self.MAX_SLOTS:
                p = int(check(cu.cuMemHostAlloc(SLOT, 0)))
                self.bases.append(p)
                return p
            self._reap(block=True)
        return self.free.popleft()

    def _reap(self, block: bool) -> None:
        while self.busy:
            slot, ev = self.busy[0]
            err = cu.cuEventQuery(ev)[0]
            if err == NOT_READY:
                if not block:
                    return
                cu.cuEventSynchronize(ev)  # a copy of at most one slot: short
                continue
            self.busy.popleft()
            self.dev._put_event(ev)
            self.free.append(slot)
            block = False

    def release_after(self, slot: int, stream) -> None:
        ev = self.dev._get_event()
        check(cu.cuEventRecord(ev, stream))
        self.busy.append((slot, ev))
        self._reap(block=False)

    def release(self, slot: int) -> None:
        self.free.append(slot)

    def close(self) -> None:
        for p in self.bases:
            cu.cuMemFreeHost(p)
        self.bases.clear()


class Chunks:
    """Pinned buffers of SMALL bytes for pending device-to-host results, carved from blocks
    of 16 and kept for reuse (the client bounds how many are pending at once)."""

    PER_BLOCK = 16

    def __init__(self) -> None:
        self.free: list[int] = []
        self.blocks: list[int] = []

    def take(self) -> int:
        if not self.free:
            base = int(check(cu.cuMemHostAlloc(SMALL * self.PER_BLOCK, 0)))
            self.blocks.append(base)
            self.free += [base + i * SMALL for i in range(self.PER_BLOCK)]
        return self.free.pop()

    def give(self, p: int) -> None:
        self.free.append(p)

    def close(self) -> None:
        for b in self.blocks:
            cu.cuMemFreeHost(b)
        self.blocks.clear()
        self.free.clear()


class DeferredCopy:
    """A device-to-host copy the client does not wait for: queued on its stream into pinned
    memory, with an event behind it; the session sends the bytes once ready()."""

    __slots__ = ("dev", "buf", "n", "ev", "chunk", "waiting", "closed")

    def __init__(self, dev: Owner, buf: int, n: int, ev, chunk: bool) -> None:
        self.dev, self.buf, self.n, self.ev, self.chunk = dev, buf, n, ev, chunk
        self.waiting = self.closed = False

    def ready(self) -> bool:
        return cu.cuEventQuery(self.ev)[0] != NOT_READY

    async def wait(self) -> None:
        self.waiting = True
        try:
            err = (await self.dev._in_thread(cu.cuEventSynchronize, self.ev))[0]
        finally:
            self.waiting = False
            if self.closed:  # sent meanwhile: the event can go back now that nobody waits on it
                self.dev._put_event(self.ev)
        if err != SUCCESS:
            raise CudaError(int(err))

    def result(self) -> memoryview:
        err = cu.cuEventQuery(self.ev)[0]
        if err != SUCCESS:
            raise CudaError(int(err))
        return self.dev.staging.view(self.buf, self.n)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.chunk:
            self.dev._chunks.give(self.buf)
        else:
            self.dev.staging.release(self.buf)
        if not self.waiting:
            self.dev._put_event(self.ev)
