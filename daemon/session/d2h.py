"""Deferred device-to-host copies: the client does not wait for them, its synchronizations do.

A MEMCPY_DTOH with DEFERRED (into the client's pinned memory, one PIECE at most) is queued on
its stream and answered once the copy completed: as soon as it has, and at the latest before
any later reply or notice that could tell the client it completed (a synchronization, a host
callback, a query that reports completion). Their order among themselves does not matter, only
that each precedes what reports it complete.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from typing import TYPE_CHECKING

from farcuda.wire import BY_NAME, HEADER, Frame, ProtocolError, encode_reply
from farcuda.wire import messages as msg

from ..backends.base import DeferredCopy
from ..errors import CudaError, E

if TYPE_CHECKING:
    from .core import Session

__all__ = ["DeferredCopies"]

_REPLY = BY_NAME["REPLY"].op
PENDING_MAX = 1024  # deferred copies a client may have pending (the shim keeps 256 at most)
BYTES_MAX = 256 << 20  # and the bytes they may hold (the shim: 64 MiB)


class DeferredCopies:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.queue: deque[tuple[Frame, DeferredCopy]] = deque()  # in issue order
        self.bytes = 0
        self.task: asyncio.Task | None = None

    def __bool__(self) -> bool:
        return bool(self.queue)

    def check(self, size: int) -> None:
        """A new deferred copy of ``size`` bytes may join the queue."""
        if size > msg.PIECE:
            raise CudaError(E["cudaErrorInvalidValue"], "a deferred copy is one piece")
        if len(self.queue) >= PENDING_MAX or self.bytes + size > BYTES_MAX:
            raise ProtocolError("too many device-to-host copies pending")

    def defer(self, f: Frame, job: DeferredCopy) -> None:
        self.queue.append((f, job))
        self.bytes += job.n
        if self.task is None:
            s = self.session
            self.task = asyncio.ensure_future(self._watch())
            s._tasks.add(self.task)
            self.task.add_done_callback(s._tasks.discard)

    def deliver(self) -> None:
        """Send every pending copy whose data is ready (called before each reply and notice)."""
        if not self.queue:
            return
        keep: deque = deque()
        for f, job in self.queue:
            if job.ready():
                self._send(f, job)
            else:
                keep.append((f, job))
        self.queue = keep

    def _send(self, f: Frame, job: DeferredCopy) -> None:
        s = self.session
        self.bytes -= job.n
        try:
            data = bytes(job.result())
            head = HEADER.pack(8 + len(data), _REPLY, 0, f.rid, f.vdev, 0)
            s._write(head + struct.pack("<II", 0, 0) + data)
        except CudaError as exc:
            s._fault(f.vdev, exc.status)
            s._write(encode_reply(f.rid, exc.status, None, None, b"", f.vdev))
        finally:
            job.close()

    async def _watch(self) -> None:
        """Send pending copies as they complete, the oldest first."""
        try:
            while self.queue:
                _f, job = self.queue[0]
                if not job.ready():
                    try:
                        await job.wait()
                    except CudaError:
                        pass  # its reply carries the error
                self.deliver()
        finally:
            self.task = None

    def close_all(self) -> None:
        for _f, job in self.queue:
            job.close()
        self.queue.clear()
        self.bytes = 0
