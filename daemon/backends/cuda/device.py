"""A virtual device on the CUDA driver: its streams, events, modules and address window in the
context its worker keeps for the physical GPU (shared by every virtual device of the session on
that GPU, so that their work overlaps as the work of different streams does), or a green context
of its own when it has an SM budget.

In a shared context a device's stream 0 is a stream of its own and every stream is created
non-blocking in the driver: the legacy default stream's order against the device's blocking
streams (and against no other device's) is restored with events (``_q``), as it is in a green
context, whose NULL stream does not keep it either.

Device memory is mapped with the driver's virtual memory API inside the address window the
client reserved (cuMemAddressReserve at the window's address, cuMemCreate/cuMemMap/
cuMemSetAccess per extent), so the client sees the real device addresses and they can never
alias its own host memory.

Nothing here blocks the event loop on GPU work: copies to and from the host go through
pinned staging slots with async copies; a wait is first a short spin on an event (most
complete within microseconds) and then a blocking wait in a thread. Kernel launches go
straight to libcuda through ctypes with the client's packed parameter buffer.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from farcuda.wire import messages as msg

from ...allocator import pow2_pieces
from ...errors import CudaError, E
from ...faults import LaunchLog
from . import driver as drv
from . import partitions
from .driver import NOT_READY, SUCCESS, check, cu
from .staging import SLOT, SMALL, Chunks, DeferredCopy, Staging

if TYPE_CHECKING:
    from . import CudaBackend

__all__ = ["CudaDevice"]

log = logging.getLogger("farcudad.cuda")

# Mapped address space around the allocations (see daemon/allocator.py), as far as reads
# outside cudaMalloc'd memory succeed natively (measured on an H100, driver 580: at least
# 256 MiB before the first allocation, 64 MiB past small ones)
APRON = 64 << 20
APRON_FLOOR = 256 << 20
SPIN_S = 60e-6
# launch attributes whose values hold handles of the client: not translated, refused
_HANDLE_ATTRS = {6, 12, 13}
_CAPTURE_REFUSED = "host<->device copies cannot be captured into a graph through farcuda"


class CudaDevice:
    granule = 2 << 20

    def __init__(self, backend: CudaBackend, gpu: int, sm_budget: int, flags: int,
                 window_base: int, window_size: int, vdev: int = 0) -> None:
        self.backend = backend
        self.gpu = gpu
        self.vdev = vdev
        fp = backend.fastpath
        self._ffi: Any = fp[0] if fp is not None else None
        self._fp: Any = fp[1] if fp is not None else None
        self.cudev = check(cu.cuDeviceGet(gpu))
        self.green = None
        self._sm_lock = None
        self._shared: list | None = None  # the backend's entry of the context shared
        legacy = cu.CUstream(0)
        if sm_budget:
            self.green, self.ctx, self.sm_count, self._sm_lock = partitions.claim(
                self.cudev, gpu, sm_budget)
            self.sm_groups = self._sm_lock[1]
        elif backend.share:
            self._shared, legacy = backend.shared_context(gpu, self.cudev, flags)
            self.ctx = self._shared[0]
        else:
            self.ctx = check(cu.cuCtxCreate(None, flags & 0x1F, self.cudev))
        self._legacy = legacy
        # the legacy stream's order is restored here (_q) in green and shared contexts
        self.emulated = self.green is not None or self._shared is not None
        if self._fp is not None:
            if not sm_budget:  # (green contexts go through Python: their order needs _q)
                self._fp.fp_set_context(vdev, self._ptr(self.ctx))
                if self._shared is not None:
                    self._fp.fp_set_legacy(vdev, self._ptr(legacy))
            self._fp.fp_note_current(self._ptr(self.ctx))
        if not sm_budget:
            self.sm_count = check(cu.cuDeviceGetAttribute(
                cu.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, self.cudev))
        backend._current = self.ctx
        check(cu.cuCtxSetCurrent(self.ctx))
        self.window_size = window_size
        res = cu.cuMemAddressReserve(window_size, 0, window_base, 0)
        if res[0] != SUCCESS:
            self._abandon()
            raise CudaError(int(res[0]))
        self.window_base = int(res[1])
        if self.window_base != window_base:
            log.info("gpu %d: window at 0x%x instead of 0x%x", gpu, self.window_base, window_base)
        prop = cu.CUmemAllocationProp()
        prop.type = cu.CUmemAllocationType.CU_MEM_ALLOCATION_TYPE_PINNED
        prop.location.type = cu.CUmemLocationType.CU_MEM_LOCATION_TYPE_DEVICE
        prop.location.id = gpu
        self._prop = prop
        acc = cu.CUmemAccessDesc()
        acc.location = prop.location
        acc.flags = cu.CUmemAccess_flags.CU_MEM_ACCESS_FLAGS_PROT_READWRITE
        self._access = acc
        self.granule = max(check(cu.cuMemGetAllocationGranularity(
            prop, cu.CUmemAllocationGranularity_flags.CU_MEM_ALLOC_GRANULARITY_MINIMUM)),
            2 << 20)
        self._handles: dict[int, object] = {}
        self._sizes: dict[int, int] = {}  # extent base -> its size
        self._guards: dict[int, object] = {}  # size -> the allocation aprons map
        self._fresh_guards: set[int] = set()
        self._apron_maps: dict[int, list[tuple[int, int]]] = {}  # apron piece -> mappings
        self._launches = LaunchLog()  # (without the C path)
        self.streams: dict[int, object] = {0: legacy}
        self.stream_flags: dict[int, int] = {}
        self.blocking: set[int] = set()  # created streams that synchronize with the legacy one
        # green and shared contexts only (see _q): work queued per stream, and what each stream
        # has waited for of another ((waiter, other) -> the other's count then)
        self._gen: dict[int, int] = {}
        self._seen: dict[tuple[int, int], int] = {}
        self.events: dict[int, object] = {}
        self.kernels: dict[int, dict] = {}
        self.libraries: list[tuple[object, bytes]] = []
        self.images: dict[int, tuple[object, bytes]] = {}  # module -> (library, image)
        self.graphs: dict[int, Any] = {}  # cuda.bindings CUgraph
        self.execs: dict[int, object] = {}
        self.capturing: set[int] = set()
        self._event_pool: list = []
        self._host_fns: dict[int, tuple] = {}
        self._capture_nodes: dict[int, dict] = {}
        self._hostfn_ids = 0
        self.staging = Staging(self)
        self._chunks = Chunks()
        self._small = int(check(cu.cuMemHostAlloc(SMALL, 0)))
        self._small_view = memoryview((ctypes.c_char * SMALL).from_address(self._small)).cast("B")
        if self._fp is not None:
            self._fp.fp_set_small(vdev, self._ptr(self._small), SMALL)
            self._fp.fp_set_spin(int(SPIN_S * 1e9))  # the C path spins as long as _wait

    def _abandon(self) -> None:
        """The device could not be opened: its context (or its part of the shared one) goes."""
        if self._fp is not None:
            self._fp.fp_drop_device(self.vdev)
        if self._shared is not None:
            cu.cuStreamDestroy(self._legacy)
            self.backend.release_context(self._shared)
        elif self.green is not None:
            cu.cuGreenCtxDestroy(self.green)
            if self._sm_lock is not None:
                partitions.release(*self._sm_lock)
        else:
            cu.cuCtxDestroy(self.ctx)
        self.backend._current = None

    def _ptr(self, h: Any) -> Any:
        """A driver handle as the C path's void * (None: NULL); only with the C path."""
        return self._ffi.cast("void *", int(h) if h is not None else 0)

    # ------------------------------------------------------------ context

    def cur(self) -> None:
        if self.backend._current is not self.ctx:
            check(cu.cuCtxSetCurrent(self.ctx))
            self.backend._current = self.ctx
            if self._fp is not None:
                self._fp.fp_note_current(self._ptr(self.ctx))

    def info(self) -> dict:
        self.cur()
        least, greatest = check(cu.cuCtxGetStreamPriorityRange())
        return {"priority_least": least, "priority_greatest": greatest,
                "sm_count": self.sm_count}

    def _get_event(self):
        if self._event_pool:
            return self._event_pool.pop()
        return check(cu.cuEventCreate(cu.CUevent_flags.CU_EVENT_DISABLE_TIMING))

    def _put_event(self, ev) -> None:
        self._event_pool.append(ev)

    def _in_thread(self, fn, *args):
        """Run a blocking driver call in the wait pool, with this context current."""
        def run():
            check(cu.cuCtxSetCurrent(self.ctx))
            return fn(*args)
        return asyncio.get_running_loop().run_in_executor(self.backend.pool, run)

    def _wait(self, ev, then=None, release=True):
        """None if the event already completed (after a short spin), else an awaitable."""
        deadline = time.perf_counter() + SPIN_S
        while True:
            err = cu.cuEventQuery(ev)[0]
            if err == SUCCESS:
                if release:
                    self._put_event(ev)
                return then() if then else None
            if err != NOT_READY:
                raise CudaError(int(err))
            if time.perf_counter() > deadline:
                break

        async def later():
            err = (await self._in_thread(cu.cuEventSynchronize, ev))[0]
            if release:
                self._put_event(ev)
            if err != SUCCESS:
                raise CudaError(int(err))
            return then() if then else None
        return later()

    def _mark(self, stream):
        ev = self._get_event()
        check(cu.cuEventRecord(ev, stream))
        return ev

    # ------------------------------------------------------------ memory
    def map_extent(self, base: int, size: int) -> None:
        self.cur()
        res = cu.cuMemCreate(size, self._prop, 0)
        if res[0] != SUCCESS:
            raise CudaError(E["cudaErrorMemoryAllocation"] if res[0] in (
                cu.CUresult.CUDA_ERROR_OUT_OF_MEMORY, cu.CUresult.CUDA_ERROR_INVALID_VALUE)
                else int(res[0]))
        h = res[1]
        try:
            check(cu.cuMemMap(base, size, 0, h, 0))
            check(cu.cuMemSetAccess(base, size, [self._access], 1))
        except CudaError:
            cu.cuMemUnmap(base, size)
            cu.cuMemRelease(h)
            raise
        self._handles[base] = h
        self._sizes[base] = size

    def unmap_extent(self, base: int, size: int) -> None:
        self.cur()
        h = self._handles.pop(base, None)
        self._sizes.pop(base, None)
        cu.cuMemUnmap(base, size)
        if h is not None:
            cu.cuMemRelease(h)

    # The address space around the allocator's extents (daemon/allocator.py) maps a few
    # allocations of this device's, each zeroed once and mapped at every apron: reads just
    # outside an allocation land in mapped memory, as they do natively. The driver maps an
    # allocation only whole (a smaller size is refused), so an apron piece of n granules is
    # made of power-of-two guards (5: 4 + 1), each created at first use.
    apron = APRON
    apron_floor = APRON_FLOOR

    def map_apron(self, base: int, size: int) -> None:
        self.cur()
        done: list[tuple[int, int]] = []
        try:
            at = base
            for n in pow2_pieces(size, self.apron):
                guard = self._guard_of(n, at)
                check(cu.cuMemMap(at, n, 0, guard, 0))
                done.append((at, n))
                check(cu.cuMemSetAccess(at, n, [self._access], 1))
                if n in self._fresh_guards:  # zeroed once, where it is first mapped
                    check(cu.cuMemsetD8(at, 0, n))
                    if self._shared is not None:  # (the NULL stream orders with no stream
                        # of a shared context; it holds nothing but this memset)
                        check(cu.cuStreamSynchronize(cu.CUstream(0)))
                    self._fresh_guards.discard(n)
                at += n
        except CudaError:
            for at, n in done:
                cu.cuMemUnmap(at, n)
            raise
        self._apron_maps[base] = done

    def _guard_of(self, size: int, at: int):
        g = self._guards.get(size)
        if g is None:
            res = cu.cuMemCreate(size, self._prop, 0)
            if res[0] != SUCCESS:
                raise CudaError(E["cudaErrorMemoryAllocation"], "no memory for an apron")
            g = self._guards[size] = res[1]
            self._fresh_guards.add(size)
        return g

    def unmap_apron(self, base: int, size: int) -> None:
        self.cur()
        for at, n in self._apron_maps.pop(base, [(base, size)]):
            cu.cuMemUnmap(at, n)

    # Which launches a fault may have come from (daemon/faults.py): the C path counts the
    # launches it makes itself, so the count lives there when it is built.
    def launched(self, kid: int) -> None:
        if self._fp is not None:
            self._fp.fp_note_launch(self.vdev, kid)
        else:
            self._launches.launched(kid)

    def synced(self) -> None:
        if self._fp is not None:
            self._fp.fp_note_synced(self.vdev)
        else:
            self._launches.synced()

    def launch_window(self):
        if self._fp is None:
            return self._launches.window()
        out = self._ffi.new("uint64_t[4]")
        self._fp.fp_launch_window(self.vdev, out)
        return ((int(out[0]), int(out[1])) if out[0] else None,
                (int(out[2]), int(out[3])) if out[2] else None)

    # The C path answers small copies itself: it keeps its own copy of the session's memory
    # (the allocator and the module globals report to these), to check pointers as
    # session.DeviceState.check does.
    def track(self, base: int, size: int) -> None:
        if self._fp is not None:
            self._fp.fp_range_add(self.vdev, base, size)

    def untrack(self, base: int) -> None:
        if self._fp is not None:
            self._fp.fp_range_remove(self.vdev, base)

    def untrack_all(self) -> None:
        if self._fp is not None:
            self._fp.fp_range_clear(self.vdev)

    def pitch_for(self, width: int) -> int:
        return -(-width // 512) * 512  # the driver's pitch on sm_90 (checked on an H100)

    def _idle_for(self, sid: int) -> bool:
        """Nothing can run before new work in this stream: the stream is idle, and so is what
        it implicitly waits for (the legacy stream waits for every blocking stream, and a
        blocking stream for the legacy one)."""
        if cu.cuStreamQuery(self._s(sid))[0] != SUCCESS:
            return False
        if self.stream_flags.get(sid, 0) & msg.STREAM_CREATE_NON_BLOCKING:
            return True
        others = self.blocking if sid == 0 else (0,)
        return all(cu.cuStreamQuery(self.streams[o])[0] == SUCCESS for o in others
                   if o != sid and o in self.streams)

    def _s(self, sid: int):
        s = self.streams.get(sid)
        if s is None:
            raise CudaError(E["cudaErrorInvalidResourceHandle"])
        return s

    def _q(self, sid: int):
        """The stream to queue work on. In a context made from a green context the NULL stream
        does not synchronize with blocking streams as the legacy default stream does (seen
        on an H200, driver 580), and in a shared context stream 0 is a non-blocking stream of
        the device's own: the order is restored here with events. Work in the legacy
        stream waits for what each blocking stream queued since it last did, and work in a
        blocking stream for what the legacy stream queued since it last did. (The C path
        queues work in stream 0 of a shared context only while the device has no blocking
        stream, and none in its blocking streams: a new blocking stream first waits for
        all the legacy stream holds, see stream_create.)"""
        s = self._s(sid)
        if not self.emulated or sid in self.capturing or (sid and sid not in self.blocking):
            return s
        gen, seen = self._gen, self._seen
        if sid == 0:
            for b in self.blocking:
                if gen.get(b, 0) != seen.get((0, b), 0) and b not in self.capturing:
                    self._follow(self.streams[b], s)
                    seen[(0, b)] = gen.get(b, 0)
        elif gen.get(0, 0) != seen.get((sid, 0), 0):
            self._follow(self.streams[0], s)
            seen[(sid, 0)] = gen.get(0, 0)
        gen[sid] = gen.get(sid, 0) + 1
        return s

    def _follow(self, before, after) -> None:
        """Work queued on `after` from now on waits for what `before` holds now."""
        ev = self._get_event()
        check(cu.cuEventRecord(ev, before))
        check(cu.cuStreamWaitEvent(after, ev, 0))
        self._put_event(ev)

    def _no_capture(self, sid: int) -> None:
        if sid in self.capturing:
            raise CudaError(E["cudaErrorStreamCaptureUnsupported"], _CAPTURE_REFUSED)

    def memcpy_htod(self, dst: int, data, stream: int) -> None:
        self.cur()
        s = self._q(stream)
        self._no_capture(stream)
        mv = memoryview(data).cast("B")
        for off in range(0, len(mv), SLOT):
            piece = mv[off:off + SLOT]
            slot = self.staging.acquire()
            self.staging.view(slot, len(piece))[:] = piece
            check(cu.cuMemcpyHtoDAsync(dst + off, slot, len(piece), s))
            self.staging.release_after(slot, s)

    # -- staging slots lent to the session: zero-copy receive and send --
    def staging_take(self, n: int) -> tuple[int, memoryview]:
        """A pinned slot for an incoming host-to-device payload of n <= SLOT bytes."""
        if n > SLOT:
            raise CudaError(E["cudaErrorInvalidValue"])
        self.cur()
        slot = self.staging.acquire()
        return slot, self.staging.view(slot, n)

    def staging_release(self, slot: int) -> None:
        self.staging.release(slot)

    def memcpy_htod_slot(self, dst: int, slot: int, n: int, stream: int) -> None:
        self.cur()
        s = self._q(stream)
        self._no_capture(stream)
        check(cu.cuMemcpyHtoDAsync(dst, slot, n, s))
        self.staging.release_after(slot, s)

    async def memcpy_dtoh_pieces(self, src: int, n: int, stream: int):
        """A large device-to-host copy as (view of a pinned slot, release) pieces, in order;
        up to four slot copies are in flight while earlier pieces go out on the socket."""
        self.cur()
        s = self._q(stream)
        self._no_capture(stream)
        inflight: deque = deque()
        off = 0
        try:
            while off < n or inflight:
                while off < n and len(inflight) < 4 and self.staging.free:
                    k = min(SLOT, n - off)
                    slot = self.staging.acquire()
                    self.cur()
                    check(cu.cuMemcpyDtoHAsync(slot, src + off, k, s))
                    inflight.append((slot, k, self._mark(s)))
                    off += k
                if not inflight:  # no free slot: acquire() waits for (or adds) one
                    slot = self.staging.acquire()
                    self.staging.release(slot)
                    continue
                slot, k, ev = inflight.popleft()
                w = self._wait(ev)
                if w is not None:
                    await w
                yield self.staging.view(slot, k), (lambda slot=slot: self.staging.release(slot))
        finally:
            for slot, *_ in inflight:
                self.staging.release(slot)

    def dtoh_deferred(self, src: int, n: int, stream: int) -> DeferredCopy:
        """Queue a copy of n <= SLOT bytes whose result the session sends when it is ready."""
        self.cur()
        s = self._q(stream)
        self._no_capture(stream)
        chunk = n <= SMALL
        buf = self._chunks.take() if chunk else self.staging.acquire()
        try:
            check(cu.cuMemcpyDtoHAsync(buf, src, n, s))
            ev = self._mark(s)
        except BaseException:
            if chunk:
                self._chunks.give(buf)
            else:
                self.staging.release(buf)
            raise
        return DeferredCopy(self, buf, n, ev, chunk)

    def memcpy_dtoh(self, src: int, n: int, stream: int):
        self.cur()
        s = self._q(stream)
        self._no_capture(stream)
        if n <= SMALL and self._idle_for(stream):
            # nothing runs before it in the stream: the copy itself takes microseconds, so
            # one synchronous call beats an async copy, an event and a wait
            check(cu.cuMemcpyDtoHAsync(self._small, src, n, s))
            check(cu.cuStreamSynchronize(s))
            return bytes(self._small_view[:n])
        if n <= SLOT:
            slot = self.staging.acquire()
            try:
                check(cu.cuMemcpyDtoHAsync(slot, src, n, s))
                ev = self._mark(s)
            except BaseException:
                self.staging.release(slot)
                raise

            def take():
                data = bytes(self.staging.view(slot, n))
                self.staging.release(slot)
                return data
            try:
                return self._wait(ev, take)
            except CudaError:
                self.staging.release(slot)
                raise
        return self._dtoh_large(src, n, s)

    async def _dtoh_large(self, src: int, n: int, s):
        """Pieces of a large copy: several slots in flight, each sent as it lands."""
        out = bytearray(n)
        inflight: deque = deque()
        off = 0
        try:
            while off < n or inflight:
                while off < n and len(inflight) < 4:
                    k = min(SLOT, n - off)
                    slot = self.staging.acquire()
                    self.cur()
                    check(cu.cuMemcpyDtoHAsync(slot, src + off, k, s))
                    inflight.append((slot, off, k, self._mark(s)))
                    off += k
                slot, o, k, ev = inflight.popleft()
                w = self._wait(ev)
                if w is not None:
                    await w
                out[o:o + k] = self.staging.view(slot, k)
                self.staging.release(slot)
        finally:
            for slot, *_ in inflight:
                self.staging.release(slot)
        return bytes(out)

    def memcpy_dtod(self, dst: int, src: int, n: int, stream: int) -> None:
        self.cur()
        check(cu.cuMemcpyDtoDAsync(dst, src, n, self._q(stream)))

    def memset(self, dst: int, value: int, n: int, stream: int, elem: int = 1) -> None:
        self.cur()
        if elem == 4:
            check(cu.cuMemsetD32Async(dst, value & 0xFFFFFFFF, n // 4, self._q(stream)))
        elif elem == 2:
            check(cu.cuMemsetD16Async(dst, value & 0xFFFF, n // 2, self._q(stream)))
        else:
            check(cu.cuMemsetD8Async(dst, value, n, self._q(stream)))

    def _copy2d(self, dst, dpitch, dtype, src, spitch, stype, width, height, s) -> None:
        p = cu.CUDA_MEMCPY2D()
        p.srcMemoryType = stype
        p.dstMemoryType = dtype
        if stype == cu.CUmemorytype.CU_MEMORYTYPE_HOST:
            p.srcHost = src
        else:
            p.srcDevice = src
        if dtype == cu.CUmemorytype.CU_MEMORYTYPE_HOST:
            p.dstHost = dst
        else:
            p.dstDevice = dst
        p.srcPitch = spitch
        p.dstPitch = dpitch
        p.WidthInBytes = width
        p.Height = height
        check(cu.cuMemcpy2DAsync(p, s))

    def memcpy2d_htod(self, dst, dpitch, data, width, height, stream) -> None:
        self.cur()
        s = self._q(stream)
        self._no_capture(stream)
        mv = memoryview(data).cast("B")
        rows = max(1, SLOT // width)
        HOST, DEV = cu.CUmemorytype.CU_MEMORYTYPE_HOST, cu.CUmemorytype.CU_MEMORYTYPE_DEVICE
        for y in range(0, height, rows):
            k = min(rows, height - y)
            if k * width > SLOT:  # a single row wider than a slot
                for x in range(0, width, SLOT):
                    w = min(SLOT, width - x)
                    self.memcpy_htod(dst + y * dpitch + x, mv[y * width + x:y * width + x + w],
                                     stream)
                continue
            slot = self.staging.acquire()
            self.staging.view(slot, k * width)[:] = mv[y * width:(y + k) * width]
            self._copy2d(dst + y * dpitch, dpitch, DEV, slot, width, HOST, width, k, s)
            self.staging.release_after(slot, s)

    def memcpy2d_dtoh(self, src, spitch, width, height, stream):
        self.cur()
        s = self._q(stream)
        self._no_capture(stream)
        HOST, DEV = cu.CUmemorytype.CU_MEMORYTYPE_HOST, cu.CUmemorytype.CU_MEMORYTYPE_DEVICE
        if width * height <= SLOT:
            slot = self.staging.acquire()
            try:
                self._copy2d(slot, width, HOST, src, spitch, DEV, width, height, s)
                ev = self._mark(s)
            except BaseException:
                self.staging.release(slot)
                raise

            def take():
                data = bytes(self.staging.view(slot, width * height))
                self.staging.release(slot)
                return data
            return self._wait(ev, take)

        async def rows():
            parts = []
            for y in range(height):
                r = self.memcpy_dtoh(src + y * spitch, width, stream)
                parts.append(await r if asyncio.iscoroutine(r) else r)
            return b"".join(parts)
        return rows()

    def memcpy2d_dtod(self, dst, dpitch, src, spitch, width, height, stream) -> None:
        self.cur()
        DEV = cu.CUmemorytype.CU_MEMORYTYPE_DEVICE
        self._copy2d(dst, dpitch, DEV, src, spitch, DEV, width, height, self._q(stream))

    def memset2d(self, dst, pitch, value, width, height, stream) -> None:
        self.cur()
        check(cu.cuMemsetD2D8Async(dst, pitch, value, width, height, self._q(stream)))

    def peer_copy(self, dst: int, peer: CudaDevice, src: int, n: int, stream: int) -> None:
        self.cur()
        if peer.ctx is self.ctx:  # a device of the same context
            check(cu.cuMemcpyDtoDAsync(dst, src, n, self._q(stream)))
            return
        check(cu.cuMemcpyPeerAsync(dst, peer.ctx, src, self.ctx, n, self._q(stream)))

    # ------------------------------------------------------------ modules and launches
    def module_load(self, module: int, image: bytes, kernels: list[str],
                    variables: list[str]) -> tuple[list, list]:
        self.cur()
        image = bytes(image)
        lib = check(cu.cuLibraryLoadData(image, None, None, 0, None, None, 0))
        self.libraries.append((lib, image))
        kout = [self._kernel_info(lib, name) for name in kernels]
        vout: list[dict | None] = []
        for name in variables:
            res = cu.cuLibraryGetGlobal(lib, name.encode())
            if res[0] != SUCCESS:
                vout.append(None)
                continue
            vout.append({"addr": int(res[1]), "size": int(res[2])})
        return kout, vout

    def _kernel_info(self, lib, name: str) -> dict | None:
        """A kernel of a loaded library: its function and parameter layout (None: not in
        the library; device linking may drop kernels nothing calls)."""
        res = cu.cuLibraryGetKernel(lib, name.encode())
        if res[0] != SUCCESS:
            return None
        kernel = res[1]
        func = check(cu.cuKernelGetFunction(kernel))
        params = []
        i = 0
        while True:
            r = cu.cuKernelGetParamInfo(kernel, i)
            if r[0] != SUCCESS:
                break
            params.append([int(r[1]), int(r[2])])
            i += 1
        max_threads = check(cu.cuFuncGetAttribute(
            cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, func))
        max_dyn = check(cu.cuFuncGetAttribute(
            cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, func))
        return {"params": params, "param_size": max((o + s for o, s in params), default=0),
                "max_threads": max_threads, "max_dyn_smem": max_dyn, "func": func,
                "name": name}

    # -- modules from images (the driver layer): cuLibraryLoadData takes every kind --
    def image_load(self, module: int, image: bytes) -> None:
        self.cur()
        image = bytes(image)
        res = cu.cuLibraryLoadData(image, None, None, 0, None, None, 0)
        if res[0] != SUCCESS:
            raise CudaError(int(res[0]), "the GPU's driver refused the image")
        self.images[module] = (res[1], image)

    def image_function(self, module: int, name: str) -> dict | None:
        self.cur()
        return self._kernel_info(self.images[module][0], name)

    def image_function_names(self, module: int) -> list[str]:
        self.cur()
        lib = self.images[module][0]
        count = check(cu.cuLibraryGetKernelCount(lib))
        names = []
        for kernel in check(cu.cuLibraryEnumerateKernels(count, lib)) if count else []:
            name = check(cu.cuKernelGetName(kernel))
            names.append(name.decode(errors="replace") if isinstance(name, bytes) else str(name))
        return names

    def image_global(self, module: int, name: str) -> dict | None:
        self.cur()
        res = cu.cuLibraryGetGlobal(self.images[module][0], name.encode())
        if res[0] != SUCCESS:
            return None
        return {"addr": int(res[1]), "size": int(res[2])}

    def image_unload(self, module: int, kernels) -> None:
        self.cur()
        for kid in kernels:
            self.kernels.pop(kid, None)
            if self._fp is not None:
                self._fp.fp_set_kernel(self.vdev, kid, self._ptr(None), 0)
        lib, _ = self.images.pop(module)
        check(cu.cuLibraryUnload(lib))

    def set_kernel(self, kid: int, info: dict) -> None:
        self.kernels[kid] = info
        if self._fp is not None:
            self._fp.fp_set_kernel(self.vdev, kid, self._ptr(info["func"]), info["param_size"])

    def _k(self, kid: int) -> dict:
        k = self.kernels.get(kid)
        if k is None:
            raise CudaError(E["cudaErrorInvalidDeviceFunction"])
        return k

    def launch(self, kid: int, stream: int, grid, block, shmem: int, params, flags: int) -> None:
        self.cur()
        k = self._k(kid)
        s = self._q(stream)
        if len(params) != k["param_size"]:
            raise CudaError(E["cudaErrorInvalidValue"], "parameter buffer size")
        buf = drv.cbuf(params)
        if flags & msg.LAUNCH_COOPERATIVE:
            arr = drv.param_array(buf, k["params"])
            err = drv.launch_cooperative(int(k["func"]), grid[0], grid[1], grid[2], block[0],
                                         block[1], block[2], shmem, int(s), arr)
        else:
            size = ctypes.c_size_t(len(params))
            extra = (ctypes.c_void_p * 5)(1, ctypes.addressof(buf), 2, ctypes.addressof(size), 0)
            err = drv.launch_kernel(int(k["func"]), grid[0], grid[1], grid[2], block[0],
                                    block[1], block[2], shmem, int(s), None, extra)
        if err:
            raise CudaError(err)

    def launch_ex(self, kid, stream, grid, block, shmem, attrs: bytes, params) -> None:
        self.cur()
        k = self._k(kid)
        s = self._q(stream)
        size = msg.LAUNCH_ATTR_SIZE
        n = len(attrs) // size
        for i in range(n):
            aid = int.from_bytes(attrs[i * size:i * size + 4], "little")
            if aid in _HANDLE_ATTRS:
                raise CudaError(E["cudaErrorNotSupported"],
                                f"launch attribute {aid} carries a handle")
        abuf = drv.cbuf(attrs)
        cfg = drv.LaunchConfig(grid[0], grid[1], grid[2], block[0], block[1], block[2], shmem,
                               int(s), ctypes.addressof(abuf) if n else None, n)
        buf = drv.cbuf(params)
        arr = drv.param_array(buf, k["params"])
        err = drv.launch_ex(ctypes.addressof(cfg), int(k["func"]), arr, None)
        if err:
            raise CudaError(err)

    _FUNC_ATTRS = ("maxThreadsPerBlock", "sharedSizeBytes", "constSizeBytes", "localSizeBytes",
                   "numRegs", "ptxVersion", "binaryVersion", "cacheModeCA",
                   "maxDynamicSharedSizeBytes", "preferredShmemCarveout",
                   "clusterDimMustBeSet", "requiredClusterWidth", "requiredClusterHeight",
                   "requiredClusterDepth", "nonPortableClusterSizeAllowed",
                   "clusterSchedulingPolicyPreference")

    def func_attrs(self, kid: int) -> dict:
        self.cur()
        func = self._k(kid)["func"]
        out = {}
        for i, name in enumerate(self._FUNC_ATTRS):
            r = cu.cuFuncGetAttribute(cu.CUfunction_attribute(i), func)
            if r[0] == SUCCESS:
                out[name] = int(r[1])
        return out

    def func_set_attr(self, kid: int, attr: int, value: int) -> None:
        self.cur()
        func = self._k(kid)["func"]
        if attr == msg.FUNC_SET_ATTR_CACHE_CONFIG:
            check(cu.cuFuncSetCacheConfig(func, cu.CUfunc_cache(value)))
            return
        try:
            a = cu.CUfunction_attribute(attr)
        except ValueError:
            raise CudaError(E["cudaErrorInvalidValue"]) from None
        check(cu.cuFuncSetAttribute(func, a, value))

    def occupancy(self, kid: int, block: int, shmem: int, flags: int) -> int:
        self.cur()
        return check(cu.cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
            self._k(kid)["func"], block, shmem, flags))

    def occupancy_clusters(self, kid, grid, block, shmem, attrs: bytes, what: int) -> int:
        self.cur()
        func = self._k(kid)["func"]
        n = len(attrs) // msg.LAUNCH_ATTR_SIZE
        abuf = drv.cbuf(attrs)
        cfg = drv.LaunchConfig(grid[0], grid[1], grid[2], block[0], block[1], block[2], shmem,
                               None, ctypes.addressof(abuf) if n else None, n)
        out = ctypes.c_int(0)
        fn = (drv.occupancy_max_active_clusters if what == msg.OCCUPANCY_CLUSTERS_MAX_ACTIVE
              else drv.occupancy_max_cluster_size)
        err = fn(ctypes.byref(out), int(func), ctypes.addressof(cfg))
        if err:
            raise CudaError(err)
        return out.value

    def tensor_map(self, m, old: bytes) -> bytes:
        self.cur()
        raw = (ctypes.c_char * 256)()  # the map is aligned as a CUtensorMap is: 128 bytes
        at = -ctypes.addressof(raw) % 128
        tmap = ctypes.addressof(raw) + at
        u64, u32, i32 = ctypes.c_uint64, ctypes.c_uint32, ctypes.c_int32
        if m.kind == msg.TENSOR_MAP_REPLACE:
            ctypes.memmove(tmap, old, 128)
            err = drv.tensor_map_replace(tmap, m.addr)
        elif m.kind == msg.TENSOR_MAP_TILED:
            err = drv.tensor_map_tiled(
                tmap, m.dtype, m.rank, m.addr, (u64 * 5)(*m.dims), (u64 * 4)(*m.strides),
                (u32 * 5)(*m.box), (u32 * 5)(*m.estrides), m.interleave, m.swizzle, m.l2, m.oob)
        else:
            err = drv.tensor_map_im2col(
                tmap, m.dtype, m.rank, m.addr, (u64 * 5)(*m.dims), (u64 * 4)(*m.strides),
                (i32 * 3)(*m.lower), (i32 * 3)(*m.upper), m.channels, m.pixels,
                (u32 * 5)(*m.estrides), m.interleave, m.swizzle, m.l2, m.oob)
        if err:
            raise CudaError(err)
        return bytes(raw[at:at + 128])

    def occupancy_smem(self, kid: int, blocks: int, block: int) -> int:
        self.cur()
        return check(cu.cuOccupancyAvailableDynamicSMemPerBlock(self._k(kid)["func"], blocks,
                                                                block))

    # ------------------------------------------------------------ streams and events
    def stream_create(self, sid: int, flags: int, priority: int) -> None:
        self.cur()
        if sid == 0 or sid in self.streams:
            raise CudaError(E["cudaErrorInvalidResourceHandle"])
        flags &= msg.STREAM_CREATE_NON_BLOCKING  # the only creation flag there is
        # (in a shared context no stream may order itself with the context's NULL stream)
        made = msg.STREAM_CREATE_NON_BLOCKING if self._shared is not None else flags
        self.streams[sid] = check(cu.cuStreamCreateWithPriority(made, priority))
        self.stream_flags[sid] = flags
        if not flags:
            self.blocking.add(sid)
            if self.emulated:  # what the legacy stream holds (some queued by the C path)
                self._follow(self.streams[0], self.streams[sid])
                self._seen[(sid, 0)] = self._gen.get(0, 0)
        if self._fp is not None:
            self._fp.fp_set_stream(self.vdev, sid, self._ptr(self.streams[sid]), flags)

    def stream_destroy(self, sid: int) -> None:
        self.cur()
        if sid == 0:
            raise CudaError(E["cudaErrorInvalidResourceHandle"])
        check(cu.cuStreamDestroy(self._s(sid)))
        del self.streams[sid]
        self.stream_flags.pop(sid, None)
        self.blocking.discard(sid)
        if self._fp is not None:
            self._fp.fp_drop_stream(self.vdev, sid)
        self.capturing.discard(sid)

    def stream_sync(self, sid: int):
        self.cur()
        return self._wait(self._mark(self._q(sid)))

    # Stream-ordered frees (cudaFreeAsync): the session frees the memory once the stream has
    # passed the point where the free was queued; one wait thread per session at most.
    def stream_mark(self, sid: int):
        """The stream's present point (an event), or None when nothing queued in it, or that
        it implicitly waits for, can still run."""
        self.cur()
        s = self._q(sid)
        if sid in self.capturing:
            raise CudaError(E["cudaErrorStreamCaptureUnsupported"],
                            "a stream-ordered free cannot be captured through farcuda")
        if self._idle_for(sid):
            return None
        return self._mark(s)

    def marker_done(self, ev) -> bool:
        err = cu.cuEventQuery(ev)[0]
        if err == NOT_READY:
            return False
        if err == SUCCESS:
            self._put_event(ev)
        return True  # an error: the context is broken and nothing runs in it any more

    def marker_wait(self, ev):
        return self._in_thread(cu.cuEventSynchronize, ev)

    def marker_release(self, ev) -> None:
        """Not needed any more (an event may be recorded again while a record is pending)."""
        self._put_event(ev)

    def stream_query(self, sid: int) -> bool:
        self.cur()
        err = cu.cuStreamQuery(self._s(sid))[0]
        if err == NOT_READY:
            return False
        if err != SUCCESS:
            raise CudaError(int(err))
        return True

    def stream_wait_event(self, sid: int, peer: CudaDevice, eid: int, flags: int) -> None:
        self.cur()
        ev = peer.events.get(eid)
        if ev is None:
            raise CudaError(E["cudaErrorInvalidResourceHandle"])
        check(cu.cuStreamWaitEvent(self._q(sid), ev, flags))

    def stream_set_attr(self, sid: int, attr: int, raw: bytes) -> None:
        self.cur()
        if attr in _HANDLE_ATTRS:
            raise CudaError(E["cudaErrorNotSupported"])
        buf = drv.cbuf(raw.ljust(64, b"\0"))
        err = drv.stream_set_attribute(int(self._s(sid)), attr, ctypes.addressof(buf))
        if err:
            raise CudaError(err)

    def event_create(self, eid: int, flags: int) -> None:
        self.cur()
        if eid in self.events:
            raise CudaError(E["cudaErrorInvalidResourceHandle"])
        self.events[eid] = check(cu.cuEventCreate(flags & 0x3))
        if self._fp is not None:
            self._fp.fp_set_event(self.vdev, eid, self._ptr(self.events[eid]))

    def _e(self, eid: int):
        ev = self.events.get(eid)
        if ev is None:
            raise CudaError(E["cudaErrorInvalidResourceHandle"])
        return ev

    def event_destroy(self, eid: int) -> None:
        self.cur()
        check(cu.cuEventDestroy(self._e(eid)))
        del self.events[eid]
        if self._fp is not None:
            self._fp.fp_drop_event(self.vdev, eid)

    def event_record(self, eid: int, sid: int, flags: int) -> None:
        self.cur()
        check(cu.cuEventRecordWithFlags(self._e(eid), self._q(sid), flags))

    def event_sync(self, eid: int):
        self.cur()
        return self._wait(self._e(eid), release=False)

    def event_query(self, eid: int) -> bool:
        self.cur()
        err = cu.cuEventQuery(self._e(eid))[0]
        if err == NOT_READY:
            return False
        if err != SUCCESS:
            raise CudaError(int(err))
        return True

    def event_elapsed(self, a: int, b: int) -> float:
        self.cur()
        return float(check(cu.cuEventElapsedTime(self._e(a), self._e(b))))

    def host_func(self, sid: int, reached, persistent: bool = False):
        """The stream runs a host function that tells the client and holds the stream until
        the client's callback is done (at every replay, when captured into a graph)."""
        self.cur()
        s = self._q(sid)
        loop = asyncio.get_running_loop()
        gate = threading.Event()
        self._hostfn_ids += 1
        key = self._hostfn_ids

        def fn(_user):
            loop.call_soon_threadsafe(reached)
            gate.wait()
            gate.clear()
            if not persistent:
                self._host_fns.pop(key, None)
        cfn = drv.HOSTFN(fn)
        self._host_fns[key] = (cfn, gate)
        err = drv.launch_host_func(int(s), cfn, None)
        if err:
            self._host_fns.pop(key, None)
            raise CudaError(err)
        return gate.set

    # -- host memory in captured graphs: served by the client at each replay --
    def _capture_node(self, node: int, size: int, to_device: bool) -> dict:
        if node in self._capture_nodes or size == 0:
            raise CudaError(E["cudaErrorInvalidValue"])
        # our own allocation must not count as the app's unsafe call during its capture
        mode = check(cu.cuThreadExchangeStreamCaptureMode(
            cu.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_RELAXED))
        try:
            buf = int(check(cu.cuMemHostAlloc(size, 0)))
        finally:
            cu.cuThreadExchangeStreamCaptureMode(mode)
        rec = {"buf": buf, "n": size, "got": 0, "gate": threading.Event(),
               "to_device": to_device}
        self._capture_nodes[node] = rec
        return rec

    def _host_node(self, s, rec, on_reach) -> None:
        loop = asyncio.get_running_loop()

        def fn(_user):
            rec["got"] = 0
            loop.call_soon_threadsafe(on_reach)
            rec["gate"].wait()
            rec["gate"].clear()
        rec["fn"] = drv.HOSTFN(fn)
        err = drv.launch_host_func(int(s), rec["fn"], None)
        if err:
            raise CudaError(err)

    def capture_htod(self, dst: int, size: int, sid: int, node: int, fetch) -> None:
        self.cur()
        s = self._s(sid)
        if sid not in self.capturing:
            raise CudaError(E["cudaErrorIllegalState"])
        rec = self._capture_node(node, size, True)
        self._host_node(s, rec, fetch)  # replay: get the bytes from the client ...
        check(cu.cuMemcpyHtoDAsync(dst, rec["buf"], size, s))  # ... then copy them up

    def capture_dtoh(self, src: int, size: int, sid: int, node: int, push) -> None:
        self.cur()
        s = self._s(sid)
        if sid not in self.capturing:
            raise CudaError(E["cudaErrorIllegalState"])
        rec = self._capture_node(node, size, False)
        check(cu.cuMemcpyDtoHAsync(rec["buf"], src, size, s))  # replay: copy down ...
        view = memoryview((ctypes.c_char * size).from_address(rec["buf"])).cast("B")
        self._host_node(s, rec, lambda: push(view))  # ... then hand the bytes to the client

    def host_data(self, node: int, offset: int, data) -> None:
        rec = self._capture_nodes.get(node)
        n = len(data)
        if rec is None or not rec["to_device"] or offset + n > rec["n"]:
            raise CudaError(E["cudaErrorInvalidValue"])
        memoryview((ctypes.c_char * rec["n"]).from_address(rec["buf"])).cast("B")[
            offset:offset + n] = data
        rec["got"] += n
        if rec["got"] >= rec["n"]:
            rec["gate"].set()

    def push_done(self, node: int) -> None:
        rec = self._capture_nodes.get(node)
        if rec is None or rec["to_device"]:
            raise CudaError(E["cudaErrorInvalidValue"])
        rec["gate"].set()

    # ------------------------------------------------------------ graphs
    def capture_begin(self, sid: int, mode: int) -> None:
        self.cur()
        check(cu.cuStreamBeginCapture(self._s(sid), cu.CUstreamCaptureMode(mode)))
        self.capturing.add(sid)

    def capture_end(self, sid: int, gid: int) -> None:
        self.cur()
        self.capturing.discard(sid)
        self.graphs[gid] = check(cu.cuStreamEndCapture(self._s(sid)))

    def capture_status(self, sid: int) -> int:
        self.cur()
        return int(check(cu.cuStreamIsCapturing(self._s(sid))))

    def graph_instantiate(self, gid: int, xid: int, flags: int) -> None:
        self.cur()
        g = self.graphs.get(gid)
        if g is None:
            raise CudaError(E["cudaErrorInvalidValue"])
        out = ctypes.c_void_p()
        err = drv.graph_instantiate(ctypes.byref(out), int(g), flags)
        if err:
            raise CudaError(err)
        self.execs[xid] = out.value

    def graph_check(self, xid: int) -> None:
        if xid not in self.execs:
            raise CudaError(E["cudaErrorInvalidValue"])

    def graph_launch(self, xid: int, sid: int) -> None:
        self.cur()
        self.graph_check(xid)
        err = drv.graph_launch(self.execs[xid], int(self._q(sid)))
        if err:
            raise CudaError(err)

    def graph_destroy(self, gid: int) -> None:
        self.cur()
        g = self.graphs.pop(gid, None)
        if g is not None:
            check(cu.cuGraphDestroy(g))

    def graph_exec_destroy(self, xid: int) -> None:
        self.cur()
        x = self.execs.pop(xid, None)
        if x is not None:
            err = drv.graph_exec_destroy(x)
            if err:
                raise CudaError(err)

    # ------------------------------------------------------------ device
    def synchronize(self):
        self.cur()
        if self._shared is not None:
            return self._sync_own()
        idle = all(cu.cuStreamQuery(s)[0] == SUCCESS for s in self.streams.values())
        if idle:
            err = cu.cuCtxSynchronize()[0]  # returns at once; reports sticky errors
            if err != SUCCESS:
                raise CudaError(int(err))
            return None

        async def later():
            err = (await self._in_thread(cu.cuCtxSynchronize))[0]
            if err != SUCCESS:
                raise CudaError(int(err))
        return later()

    def _sync_own(self):
        """cudaDeviceSynchronize in a shared context: every stream of this device's (the
        context's cuCtxSynchronize would wait for the other devices' work too)."""
        streams = [s for sid, s in self.streams.items() if sid not in self.capturing]

        def sync_all():
            for s in streams:  # flushes device printf, reports faults
                err = cu.cuStreamSynchronize(s)[0]
                if err != SUCCESS:
                    return err
            return SUCCESS
        if all(cu.cuStreamQuery(s)[0] == SUCCESS for s in streams):
            err = sync_all()  # returns at once
            if err != SUCCESS:
                raise CudaError(int(err))
            return None

        async def later():
            err = await self._in_thread(sync_all)
            if err != SUCCESS:
                raise CudaError(int(err))
        return later()

    def set_limit(self, limit: int, value: int) -> None:
        self.cur()
        try:
            lim = cu.CUlimit(limit)
        except ValueError:
            raise CudaError(E["cudaErrorInvalidValue"]) from None
        check(cu.cuCtxSetLimit(lim, value))

    def get_limit(self, limit: int) -> int:
        self.cur()
        try:
            lim = cu.CUlimit(limit)
        except ValueError:
            raise CudaError(E["cudaErrorInvalidValue"]) from None
        return int(check(cu.cuCtxGetLimit(lim)))

    def mem_info(self) -> tuple[int, int]:
        self.cur()
        free, total = check(cu.cuMemGetInfo())
        return int(free), int(total)

    def set_flags(self, flags: int) -> None:
        self.cur()
        check(cu.cuCtxSetFlags(flags & 0x1F))

    def set_cache_config(self, config: int) -> None:
        self.cur()
        check(cu.cuCtxSetCacheConfig(cu.CUfunc_cache(config)))

    def _release_own(self) -> None:
        """What a destroyed context would take with it, of this device only: its work is
        waited for, then its streams, events, graphs and mappings go (the other devices of
        the context go on)."""
        for s in self.streams.values():
            cu.cuStreamSynchronize(s)
        for x in self.execs.values():
            drv.graph_exec_destroy(x)
        self.execs.clear()
        for g in self.graphs.values():
            cu.cuGraphDestroy(g)
        self.graphs.clear()
        for s in self.streams.values():
            cu.cuStreamDestroy(s)
        self.streams.clear()
        for rec in self._capture_nodes.values():
            cu.cuMemFreeHost(rec["buf"])
        self._capture_nodes.clear()
        for ev in [*self.events.values(), *self._event_pool,
                   *(ev for _, ev in self.staging.busy)]:
            cu.cuEventDestroy(ev)
        self.events.clear()
        self._event_pool.clear()
        self.staging.busy.clear()
        for base, size in self._sizes.items():
            cu.cuMemUnmap(base, size)
        self._sizes.clear()
        for maps in self._apron_maps.values():
            for at, n in maps:
                cu.cuMemUnmap(at, n)
        self._apron_maps.clear()

    def close(self) -> None:
        """Destroy the device's context and everything in it, or in a shared context
        everything of this device's (errors ignored: it may be broken)."""
        if self._fp is not None:
            self._fp.fp_drop_device(self.vdev)
            self._fp.fp_note_current(self._ptr(None))
        try:
            cu.cuCtxSetCurrent(self.ctx)
            for gate in [g for _, g in self._host_fns.values()]:
                gate.set()
            for rec in self._capture_nodes.values():  # release driver threads held in them
                rec["gate"].set()
            if self._shared is not None:
                self._release_own()
            for h in list(self._handles.values()):
                cu.cuMemRelease(h)
            self._handles.clear()
            for g in self._guards.values():
                cu.cuMemRelease(g)
            self._guards.clear()
            self.staging.close()
            self._chunks.close()
            cu.cuMemFreeHost(self._small)
            for lib, _ in [*self.libraries, *self.images.values()]:
                cu.cuLibraryUnload(lib)
            cu.cuMemAddressFree(self.window_base, self.window_size)
        finally:
            if self.green is not None:
                cu.cuGreenCtxDestroy(self.green)
            elif self._shared is not None:
                self.backend.release_context(self._shared)
                self._shared = None
            else:
                cu.cuCtxDestroy(self.ctx)
            if self._sm_lock is not None:
                partitions.release(*self._sm_lock)
                self._sm_lock = None
            self.backend._current = None  # (made current above, or gone)
