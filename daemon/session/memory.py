"""Device memory and copies (the client's csrc/memory.c): allocation and free, copies in every
direction, sets, pointer queries. Every pointer is checked against the session's memory
(DeviceState.check) before the backend sees it."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from farcuda.wire import Frame, ProtocolError, compress
from farcuda.wire import messages as msg
from farcuda.wire.abi import cudaMemoryType

from ..allocator import ARENA as ARENA_SIZE
from ..errors import CudaError, E
from .table import DEFERRED, INLINE_REPLY, Bulk, data_reply, handler

if TYPE_CHECKING:
    from .core import Session
    from .device import DeviceState

_TYPE_DEVICE = cudaMemoryType["cudaMemoryTypeDevice"]
_MOST = 1 << 42  # bytes no allocation reaches


def allocate(s: Session, f: Frame, d: DeviceState, size: int, reply: dict):
    """Allocate ``size`` bytes on ``d`` and answer ``reply`` with the pointer.

    Out of memory (or over a quota) while stream-ordered frees are still pending, it waits for
    those frees and tries once more, as CUDA's pools hand memory freed by cudaFreeAsync to
    later allocations."""
    oom = E["cudaErrorMemoryAllocation"]
    s.frees.reap()
    if not s.frees.pending:
        return s.quota.allocate(f.vdev, d, size, reply)

    async def after_frees():
        await s.frees.settle()
        if s.devices.get(f.vdev) is not d:  # reset or closed meanwhile
            raise CudaError(E["cudaErrorInvalidDevice"])
        result = s.quota.allocate(f.vdev, d, size, reply)
        return (await result) if asyncio.iscoroutine(result) else result
    try:
        result = s.quota.allocate(f.vdev, d, size, reply)
    except CudaError as exc:
        if exc.status != oom:
            raise
        return after_frees()
    if not asyncio.iscoroutine(result):
        return result

    async def or_after_frees():
        try:
            return await result
        except CudaError as exc:
            if exc.status != oom or not s.frees.pending:
                raise
        return await after_frees()
    return or_after_frees()


def _later(result, then):
    """``then(result)``, or an awaitable of it when the backend must wait first."""
    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
        async def later():
            return then(await result)
        return later()
    return then(result)


@handler
def MALLOC(s: Session, f: Frame, m: msg.MALLOC):
    if m.size == 0 or m.size > _MOST:
        raise CudaError(E["cudaErrorMemoryAllocation"] if m.size else E["cudaErrorInvalidValue"])
    return allocate(s, f, s.dev(f), m.size, {})


@handler
def FREE(s: Session, f: Frame, m: msg.FREE):
    d, ptr = s.dev(f), m.ptr
    if not d.alloc.owns(ptr) or ptr in d.freeing:
        raise CudaError(E["cudaErrorInvalidValue"], "not an allocation of this client")
    pending = d.be.synchronize()  # cudaFree waits for the device, as CUDA's does
    if pending is None:
        s.quota.free(f.vdev, d, ptr)
        return None

    async def later():
        await pending
        s.quota.free(f.vdev, d, ptr)
    return later()


def arenas_offered(s: Session) -> bool:
    """Client-side sub-allocation is offered where no quota counts the bytes: a quota's
    verdict on each allocation is the daemon's (or the front's) to give."""
    return s.quota.quota_bytes is None and (s.front is None or s.front.quota is None)


@handler
def ARENA(s: Session, f: Frame, m: msg.ARENA):
    d = s.dev(f)
    if not arenas_offered(s):
        raise CudaError(E["cudaErrorNotSupported"], "no arenas under a memory quota")
    s.frees.reap()
    try:
        base = d.alloc.client_arena()
    except MemoryError:
        raise CudaError(E["cudaErrorMemoryAllocation"]) from None
    except CudaError as exc:  # the backend could not map it
        raise CudaError(E["cudaErrorMemoryAllocation"]) from exc
    return msg.ARENA_REPLY(base, ARENA_SIZE)


@handler
def SUBALLOC(s: Session, f: Frame, m: msg.SUBALLOC):
    try:
        s.dev(f).alloc.adopt(m.ptr, m.size)
    except ValueError as exc:
        raise CudaError(E["cudaErrorInvalidValue"], str(exc)) from None


@handler
def SUBFREE(s: Session, f: Frame, m: msg.SUBFREE):
    d = s.dev(f)
    if not d.alloc.owns(m.ptr) or m.ptr in d.freeing:
        raise CudaError(E["cudaErrorInvalidValue"], "not an allocation of this client")
    d.alloc.free(m.ptr)


@handler
def ARENA_RELEASE(s: Session, f: Frame, m: msg.ARENA_RELEASE):
    try:
        s.dev(f).alloc.release_arena(m.ptr)
    except ValueError as exc:
        raise CudaError(E["cudaErrorInvalidValue"], str(exc)) from None


@handler
def MALLOC_PITCH(s: Session, f: Frame, m: msg.MALLOC_PITCH):
    d = s.dev(f)
    pitch = d.be.pitch_for(m.width)
    if pitch * m.height > _MOST:
        raise CudaError(E["cudaErrorMemoryAllocation"])
    if pitch * m.height == 0:  # a zero width or height: nothing to place, as cudaMalloc(0)
        return {"ptr": 0, "pitch": pitch}
    return allocate(s, f, d, pitch * m.height, {"pitch": pitch})


@handler
def MEMCPY_HTOD(s: Session, f: Frame, m: msg.MEMCPY_HTOD):
    if f.tail is None and s._sunk is not None:  # the payload is in a staging slot
        d, slot = s._sunk
        s._sunk = None
        n = f.size_of_tail
        try:
            d.check(m.dst, n)
            d.be.memcpy_htod_slot(m.dst, slot, n, m.stream)
        except BaseException:
            d.be.staging_release(slot)
            raise
        return
    data = f.tail if f.tail is not None else b""
    d = s.dev(f)
    d.check(m.dst, len(data))
    d.be.memcpy_htod(m.dst, data, m.stream)


@handler
def MEMCPY_HTOD_Z(s: Session, f: Frame, m: msg.MEMCPY_HTOD_Z):
    if m.size > msg.PIECE:
        raise ProtocolError("MEMCPY_HTOD_Z: a piece larger than PIECE")
    d = s.dev(f)
    d.check(m.dst, m.size)
    try:
        data = compress.decompress(f.tail if f.tail is not None else b"", m.size)
    except ValueError as exc:
        raise CudaError(E["cudaErrorInvalidValue"], str(exc)) from None
    d.be.memcpy_htod(m.dst, data, m.stream)


@handler
def MEMCPY_DTOH(s: Session, f: Frame, m: msg.MEMCPY_DTOH):
    d = s.dev(f)
    d.check(m.src, m.size)
    if m.flags & msg.MEMCPY_DTOH_DEFERRED and f.rid:
        s.async_round_trips += 1
        s.d2h.check(m.size)
        s.d2h.defer(f, d.be.dtoh_deferred(m.src, m.size, m.stream))
        return DEFERRED
    z = bool(m.flags & msg.MEMCPY_DTOH_COMPRESSED) and compress.available()
    if m.size > INLINE_REPLY:
        pieces = d.be.memcpy_dtoh_pieces(m.src, m.size, m.stream)
        if pieces is not None:
            bulk = Bulk(pieces)
            bulk.z = z
            return bulk

    def reply(data):
        out = data_reply(data)
        if isinstance(out, Bulk):
            out.z = z
        return out
    return _later(d.be.memcpy_dtoh(m.src, m.size, m.stream), reply)


@handler
def MEMCPY_DTOD(s: Session, f: Frame, m: msg.MEMCPY_DTOD):
    d = s.dev(f)
    d.check(m.dst, m.size)
    d.check(m.src, m.size)
    d.be.memcpy_dtod(m.dst, m.src, m.size, m.stream)


@handler
def MEMSET(s: Session, f: Frame, m: msg.MEMSET):
    d = s.dev(f)
    d.check(m.dst, m.size)
    if m.elem in (0, 1):  # the runtime shim's sets are bytes
        d.be.memset(m.dst, m.value & 0xFF, m.size, m.stream)
    elif m.elem in (2, 4) and m.size % m.elem == 0 and m.dst % m.elem == 0:
        d.be.memset(m.dst, m.value, m.size, m.stream, m.elem)  # cuMemsetD16/D32
    else:
        raise CudaError(E["cudaErrorInvalidValue"], f"a set of {m.elem}-byte elements")


@handler
def MEMCPY2D_HTOD(s: Session, f: Frame, m: msg.MEMCPY2D_HTOD):
    data = f.tail if f.tail is not None else b""
    if len(data) != m.width * m.height:
        raise ProtocolError("MEMCPY2D_HTOD: tail is not width*height bytes")
    d = s.dev(f)
    d.check2d(m.dst, m.dpitch, m.width, m.height)
    d.be.memcpy2d_htod(m.dst, m.dpitch, data, m.width, m.height, m.stream)


@handler
def MEMCPY2D_DTOH(s: Session, f: Frame, m: msg.MEMCPY2D_DTOH):
    d = s.dev(f)
    d.check2d(m.src, m.spitch, m.width, m.height)
    return _later(d.be.memcpy2d_dtoh(m.src, m.spitch, m.width, m.height, m.stream), data_reply)


@handler
def MEMCPY2D_DTOD(s: Session, f: Frame, m: msg.MEMCPY2D_DTOD):
    d = s.dev(f)
    d.check2d(m.dst, m.dpitch, m.width, m.height)
    d.check2d(m.src, m.spitch, m.width, m.height)
    d.be.memcpy2d_dtod(m.dst, m.dpitch, m.src, m.spitch, m.width, m.height, m.stream)


@handler
def MEMSET2D(s: Session, f: Frame, m: msg.MEMSET2D):
    d = s.dev(f)
    d.check2d(m.dst, m.pitch, m.width, m.height)
    d.be.memset2d(m.dst, m.pitch, m.value & 0xFF, m.width, m.height, m.stream)


@handler
def POINTER_INFO(s: Session, f: Frame, m: msg.POINTER_INFO):
    hit = s.dev(f).alloc.find(m.ptr)
    if hit is None:
        raise CudaError(E["cudaErrorInvalidValue"])
    return msg.POINTER_INFO_REPLY(_TYPE_DEVICE, hit[0], hit[1])


@handler
def MEMCPY_PEER(s: Session, f: Frame, m: msg.MEMCPY_PEER):
    sd, dd = s.peer(m.src_vdev), s.peer(m.dst_vdev)
    sd.check(m.src, m.size)
    dd.check(m.dst, m.size)
    sd.be.peer_copy(m.dst, dd.be, m.src, m.size, m.stream)
