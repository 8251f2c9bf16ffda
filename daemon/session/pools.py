"""Stream-ordered allocation (the client's csrc/pools.c): cudaMallocAsync, cudaFreeAsync.

The client keeps the pools (their handles, attributes and statistics); here an allocation is
an allocation of the device's window like any other, so quotas, status and the cleanup of a
dead client count it as they count cudaMalloc. The allocation itself needs no stream order:
its memory is usable at once. A free happens when its stream gets there (frees.py).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from farcuda.wire import Frame
from farcuda.wire import messages as msg

from ..errors import CudaError, E
from .memory import allocate
from .table import handler

if TYPE_CHECKING:
    from .core import Session


@handler
def MALLOC_ASYNC(s: Session, f: Frame, m: msg.MALLOC_ASYNC):
    """The reply carries what the allocation uses and what is mapped for it, for the
    client's pool statistics."""
    if m.size == 0:
        return msg.MALLOC_ASYNC_REPLY(0, 0, 0)
    if m.size > 1 << 42:
        raise CudaError(E["cudaErrorMemoryAllocation"])
    d = s.dev(f)
    ptr = s.frees.take(d, m.stream, m.size)
    if ptr is not None:
        return msg.MALLOC_ASYNC_REPLY(ptr, *d.alloc.held(ptr))

    def sizes(reply: dict) -> msg.MALLOC_ASYNC_REPLY:
        try:
            used, reserved = d.alloc.held(reply["ptr"])
        except KeyError:  # freed by a (hostile) client before this reply
            used = reserved = 0
        return msg.MALLOC_ASYNC_REPLY(reply["ptr"], used, reserved)
    result = allocate(s, f, d, m.size, {})
    if asyncio.iscoroutine(result):
        async def later():
            return sizes(await result)
        return later()
    return sizes(result)


@handler
def FREE_ASYNC(s: Session, f: Frame, m: msg.FREE_ASYNC):
    """Free when the stream (of the frame's device) gets to this point: work queued before it
    still sees the memory. The client does not wait for it; its memory stays held (and
    counted) until then."""
    d = s.dev(f)
    md = s.peer(m.mem_vdev) if m.mem_vdev != f.vdev else d  # the memory's device
    if not md.alloc.owns(m.ptr) or m.ptr in md.freeing:
        raise CudaError(E["cudaErrorInvalidValue"], "not an allocation of this client")
    marker = d.be.stream_mark(m.stream)
    if marker is None:  # nothing queued before it can still run
        s.quota.free(md.vdev, md, m.ptr)
        return None
    s.frees.add(d, m.stream, marker, md, m.ptr)
    return None
