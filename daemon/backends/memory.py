"""The in-memory backend: a fake GPU for the test suite.

Device memory is host memory (one bytearray per mapped extent, at the addresses the window
allocator chose), copies and sets are real, kernels are not executed but every launch is
recorded (kernel name, configuration, the exact parameter bytes) so that tests can check the
client's marshalling byte by byte. Streams keep CUDA's order, including host callbacks: work
behind a callback waits until the client reports the callback done.

Contexts are routed as the CUDA backend routes them: the session's devices without an SM budget
on one GPU share one context, each with streams, events, kernels and memory of its own, and
a device with an SM budget has a context of its own. A kernel's sticky fault breaks its
context, for every device in it (each one's next synchronization reports it); a device opened
again after that (a reset) gets a new context.

It is selectable only through the Python API (``Daemon(..., backend="memory")``), never from
farcudad's command line or configuration.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import struct
import time
from collections import deque
from collections.abc import Callable

from farcuda.wire import fatbin
from farcuda.wire import messages as msg

from ..errors import CudaError, E
from ..faults import STICKY, LaunchLog, demangle

ATTRS_H100 = {  # a plausible sm_90 device; only used to answer queries in tests
    1: 1024, 2: 1024, 3: 1024, 4: 64, 5: 2147483647, 6: 65535, 7: 65535, 8: 49152, 9: 65536,
    10: 32, 11: 2147483647, 12: 65536, 14: 512, 16: 132, 18: 0, 19: 1, 30: 512, 31: 1, 32: 0,
    33: 0, 34: 0, 37: 5120, 38: 52428800, 39: 2048, 40: 5, 41: 1, 50: 0, 51: 32, 75: 9, 76: 0,
    78: 1, 81: 233472, 82: 65536, 95: 1, 97: 232448, 106: 32, 111: 1024,
}


def _completer(fut: asyncio.Future) -> Callable[[], None]:
    """What completes a waiter's future when the stream or event gets there (unless the
    waiter went away meanwhile)."""
    def complete() -> None:
        if not fut.done():
            fut.set_result(None)
    return complete


class _Stream:
    def __init__(self) -> None:
        self.queue: deque[Callable[[], None]] = deque()
        self.blocked = False  # a host callback is outstanding
        self.waiters: list[asyncio.Future] = []
        self.error: CudaError | None = None  # a queued operation failed: for the next waiter


class _Event:
    """An event: each record is a point in a stream, complete once the stream passed it.
    Queries, synchronizations and stream waits refer to the most recent record, as in CUDA."""

    __slots__ = ("gen", "pending", "time", "waiters")

    def __init__(self) -> None:
        self.gen = 0  # records so far; the most recent is this one
        self.pending: set[int] = set()  # records their streams have not reached yet
        self.time: float | None = None  # when the stream last passed a record
        self.waiters: list[tuple[int, Callable[[], None]]] = []  # (record, call when complete)

    def complete(self) -> bool:
        return self.gen not in self.pending

    def passed(self, g: int) -> None:
        self.pending.discard(g)
        self.time = time.perf_counter()
        ready = [fn for w, fn in self.waiters if w == g]
        self.waiters = [(w, fn) for w, fn in self.waiters if w != g]
        for fn in ready:
            fn()

    def when_complete(self, fn: Callable[[], None]) -> None:
        """Call fn once the most recent record (as of now) is complete."""
        if self.complete():
            fn()
        else:
            self.waiters.append((self.gen, fn))


class _DeferredCopy:
    """A device-to-host copy the client does not wait for (CudaDevice.dtoh_deferred's twin):
    its bytes are taken when the stream reaches it."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.data: bytes | None = None
        self.error: CudaError | None = None
        self.done = asyncio.get_running_loop().create_future()

    def ready(self) -> bool:
        return self.done.done()

    async def wait(self) -> None:
        await asyncio.shield(self.done)

    def result(self) -> bytes:
        if self.error is not None:
            raise self.error
        assert self.data is not None, "result() before the copy completed"
        return self.data

    def close(self) -> None:
        pass


class _Context:
    """A context of the fake GPU: the devices in it, and the sticky error that broke it."""

    __slots__ = ("gpu", "shared", "devices", "broken")

    def __init__(self, gpu: int, shared: bool) -> None:
        self.gpu = gpu
        self.shared = shared
        self.devices: set[MemoryDevice] = set()
        self.broken: CudaError | None = None


class MemoryDevice:
    granule = 2 << 20

    def __init__(self, backend: MemoryBackend, gpu: int, window_base: int,
                 context: _Context | None = None) -> None:
        self.backend = backend
        self.gpu = gpu
        self.context = context if context is not None else _Context(gpu, False)
        self.context.devices.add(self)
        self.window_base = window_base
        self.sm_count = 132
        self._extents: list[int] = []  # sorted bases
        self._mem: dict[int, bytearray] = {}
        self.streams: dict[int, _Stream] = {0: _Stream()}
        self.events: dict[int, _Event] = {}
        self.kernels: dict[int, dict] = {}
        # module -> (kernels, globals, initial bytes of the initialized globals)
        self.images: dict[int, tuple[dict, dict, dict]] = {}
        self.limits = {0: 1024, 1: 1048576, 2: 8388608, 4: 2048, 5: 64}
        self.graphs: dict[int, list] = {}
        self.capturing: dict[int, list] = {}
        self._nodes: dict[int, dict] = {}
        self._launches = LaunchLog()

    # -- memory --
    def info(self) -> dict:
        return {"priority_least": 0, "priority_greatest": -5, "sm_count": self.sm_count}

    def map_extent(self, base: int, size: int) -> None:
        if self.backend.total_mapped + size > self.backend.capacity:
            raise CudaError(E["cudaErrorMemoryAllocation"])
        bisect.insort(self._extents, base)
        self._mem[base] = bytearray(size)
        self.backend.total_mapped += size

    def unmap_extent(self, base: int, size: int) -> None:
        del self._extents[bisect.bisect_left(self._extents, base)]
        del self._mem[base]
        self.backend.total_mapped -= size

    # Kernels do not run here, so nothing reads outside an allocation: no aprons.
    apron = apron_floor = 0

    def map_apron(self, base: int, size: int) -> None:
        raise AssertionError("the in-memory backend maps no aprons")

    unmap_apron = map_apron

    # The C path is not used here: nothing keeps a copy of the session's memory.
    def track(self, base: int, size: int) -> None:
        pass

    def untrack(self, base: int) -> None:
        pass

    def untrack_all(self) -> None:
        pass

    def _view(self, ptr: int, n: int) -> memoryview:
        i = bisect.bisect_right(self._extents, ptr) - 1
        if i < 0:
            raise CudaError(E["cudaErrorIllegalAddress"])
        base = self._extents[i]
        buf = self._mem[base]
        if ptr + n > base + len(buf):
            raise CudaError(E["cudaErrorIllegalAddress"])
        return memoryview(buf)[ptr - base:ptr - base + n]

    def pitch_for(self, width: int) -> int:
        return -(-width // 512) * 512

    # -- ordering --
    def _run(self, stream: int, op: Callable[[], None]) -> None:
        s = self.streams.get(stream)
        if s is None:
            raise CudaError(E["cudaErrorInvalidResourceHandle"])
        if stream in self.capturing:  # captured: replayed by every launch of the graph
            self.capturing[stream].append(lambda sid: self._run(sid, op))
            return
        if s.blocked or s.queue:
            s.queue.append(op)
        else:
            op()

    def _drain(self, s: _Stream) -> None:
        while s.queue and not s.blocked:
            try:
                s.queue.popleft()()
            except CudaError as exc:
                # As a fault on a GPU: the stream goes on, the error surfaces at the next
                # synchronization. Raised from here it would leave the rest of the queue, and
                # everyone waiting for the stream, stuck for good.
                s.error = s.error or exc
        if not s.blocked and not s.queue:
            for w in s.waiters:
                if not w.done():
                    if s.error is not None:
                        w.set_exception(s.error)
                    else:
                        w.set_result(None)
            if s.waiters:
                s.error = None
            s.waiters.clear()

    def _idle(self, stream: int):
        s = self.streams.get(stream)
        if s is None:
            raise CudaError(E["cudaErrorInvalidResourceHandle"])
        if self.context.broken is not None and s.error is None:
            raise self.context.broken  # another device's kernel broke the context
        if not s.blocked and not s.queue:
            if s.error is not None:  # a queued operation failed since the last wait
                err, s.error = s.error, None
                raise err
            return None
        fut = asyncio.get_running_loop().create_future()
        s.waiters.append(fut)
        return fut

    # -- copies --
    def memcpy_htod(self, dst: int, data, stream: int) -> None:
        data = bytes(data)
        self._run(stream, lambda: self._view(dst, len(data)).__setitem__(slice(None), data))

    # No pinned staging: payloads stay in the reader's buffers, results go out whole.
    def staging_take(self, n: int) -> None:
        return None

    def staging_release(self, slot: int) -> None:
        raise AssertionError("the in-memory backend lends no staging slots")

    def memcpy_htod_slot(self, dst: int, slot: int, n: int, stream: int) -> None:
        raise AssertionError("the in-memory backend lends no staging slots")

    def memcpy_dtoh_pieces(self, src: int, n: int, stream: int) -> None:
        return None

    def memcpy_dtoh(self, src: int, n: int, stream: int):
        self._view(src, n)  # faults now, as the copy would
        wait = self._idle(stream)

        async def later():
            await wait
            return bytes(self._view(src, n))
        return later() if wait is not None else bytes(self._view(src, n))

    def dtoh_deferred(self, src: int, n: int, stream: int) -> _DeferredCopy:
        self._view(src, n)  # faults now, as the copy would
        job = _DeferredCopy(n)

        def op():
            try:
                job.data = bytes(self._view(src, n))
            except CudaError as exc:
                job.error = exc
                raise
            finally:
                if not job.done.done():
                    job.done.set_result(None)
        self._run(stream, op)
        return job

    def memcpy_dtod(self, dst: int, src: int, n: int, stream: int) -> None:
        def op():
            self._view(dst, n)[:] = bytes(self._view(src, n))
        self._run(stream, op)

    def memset(self, dst: int, value: int, n: int, stream: int, elem: int = 1) -> None:
        pattern = (value & ((1 << (8 * elem)) - 1)).to_bytes(elem, "little")
        self._run(stream, lambda: self._view(dst, n).__setitem__(slice(None),
                                                                pattern * (n // elem)))

    def memcpy2d_htod(self, dst, dpitch, data, width, height, stream) -> None:
        data = bytes(data)

        def op():
            for y in range(height):
                self._view(dst + y * dpitch, width)[:] = data[y * width:(y + 1) * width]
        self._run(stream, op)

    def memcpy2d_dtoh(self, src, spitch, width, height, stream):
        def read():
            return b"".join(bytes(self._view(src + y * spitch, width)) for y in range(height))
        wait = self._idle(stream)

        async def later():
            await wait
            return read()
        return later() if wait is not None else read()

    def memcpy2d_dtod(self, dst, dpitch, src, spitch, width, height, stream) -> None:
        def op():
            for y in range(height):
                self._view(dst + y * dpitch, width)[:] = bytes(self._view(src + y * spitch, width))
        self._run(stream, op)

    def memset2d(self, dst, pitch, value, width, height, stream) -> None:
        def op():
            for y in range(height):
                self._view(dst + y * pitch, width)[:] = bytes([value]) * width
        self._run(stream, op)

    def peer_copy(self, dst: int, peer: MemoryDevice, src: int, n: int, stream: int) -> None:
        def op():
            peer._view(dst, n)[:] = bytes(self._view(src, n))
        self._run(stream, op)

    # -- modules and kernels --
    def module_load(self, module: int, image: bytes, kernels: list[str],
                    variables: list[str]) -> tuple[list, list]:
        try:
            layouts = fatbin.kernel_layouts(image)
        except fatbin.FatbinError as exc:
            raise CudaError(E["cudaErrorInvalidKernelImage"], str(exc)) from None
        glob: dict = {}
        for fb in fatbin.parse_fatbins(image):
            for entry in fb.entries:
                if entry.is_elf and entry.compression in ("none", "lz4"):
                    glob.update(fatbin.cubin_globals(entry.data()))
        kout: list[dict | None] = []
        for name in kernels:
            info = layouts.get(name)
            if info is None:
                kout.append(None)
                continue
            kout.append({"params": [[p.offset, p.size] for p in info.params],
                         "param_size": info.param_size, "max_threads": 1024,
                         "max_dyn_smem": 49152, "name": name})
        vout = []
        for name in variables:
            g = glob.get(name)
            vout.append(None if g is None else {"size": g.size, "name": name})
        return kout, vout

    def set_kernel(self, kid: int, info: dict) -> None:
        self.kernels[kid] = info

    # -- modules from images (the driver layer) --
    def image_load(self, module: int, image: bytes) -> None:
        try:
            self.images[module] = fatbin.image_contents(image)
        except fatbin.FatbinError as exc:
            raise CudaError(E["cudaErrorInvalidKernelImage"], str(exc)) from None

    def image_function(self, module: int, name: str) -> dict | None:
        info = self.images[module][0].get(name)
        if info is None:
            return None
        return {"params": [[p.offset, p.size] for p in info.params],
                "param_size": info.param_size, "max_threads": 1024, "max_dyn_smem": 49152,
                "name": name}

    def image_function_names(self, module: int) -> list[str]:
        return list(self.images[module][0])

    def image_global(self, module: int, name: str) -> dict | None:
        g = self.images[module][1].get(name)
        if g is None:
            return None
        return {"size": g.size, "init": self.images[module][2].get(name, b"")}

    def tensor_map(self, m, old: bytes) -> bytes:
        """This backend's own encoding of a tensor map (a GPU's driver has another): the
        arguments packed into 128 bytes, after the checks a driver makes."""
        if m.kind == msg.TENSOR_MAP_REPLACE:
            if m.addr % 16:
                raise CudaError(E["cudaErrorInvalidValue"], "the address is not 16-byte aligned")
            return old[:32] + struct.pack("<Q", m.addr) + old[40:]
        rank = m.rank
        if (m.addr % 16 or any(st % 16 for st in m.strides[:rank - 1])
                or not all(1 <= b <= 256 for b in m.box[:rank] if m.kind == msg.TENSOR_MAP_TILED)
                or not all(1 <= e <= 8 for e in m.estrides[:rank])
                or (m.kind == msg.TENSOR_MAP_IM2COL and rank < 3)):
            raise CudaError(E["cudaErrorInvalidValue"], "not a tensor map a GPU accepts")
        tiled = m.kind == msg.TENSOR_MAP_TILED
        box = [m.box[i] if tiled and i < rank else 0 for i in range(5)]
        estrides = [m.estrides[i] if i < rank else 0 for i in range(5)]
        return (struct.pack("<8IQ5Q4Q", m.kind, m.dtype, rank, m.interleave, m.swizzle, m.l2,
                            m.oob, m.channels, m.addr, *m.dims, *m.strides)
                + struct.pack("<5H5B", *box, *estrides) + b"\0")

    def image_unload(self, module: int, kernels) -> None:
        self.images.pop(module, None)
        for kid in kernels:
            self.kernels.pop(kid, None)

    def launch(self, kid: int, stream: int, grid, block, shmem: int, params: bytes,
               flags: int) -> None:
        info = self.kernels.get(kid)
        if info is None:
            raise CudaError(E["cudaErrorInvalidDeviceFunction"])
        threads = block[0] * block[1] * block[2]
        # an H100's limits, as a GPU refuses a launch past them
        if (threads == 0 or threads > 1024 or 0 in grid or block[2] > 64
                or grid[0] > 2**31 - 1 or grid[1] > 65535 or grid[2] > 65535
                or shmem > info.get("max_dyn_smem_set", 49152)):
            raise CudaError(E["cudaErrorInvalidValue"])
        if len(params) != info["param_size"]:
            raise CudaError(E["cudaErrorInvalidValue"], "parameter buffer size")
        record = {"kernel": info["name"], "grid": list(grid), "block": list(block),
                  "shmem": shmem, "stream": stream, "flags": flags, "params": bytes(params).hex()}
        fault = self.backend.fault_kernels.get(
            info["name"], self.backend.fault_kernels.get(demangle(info["name"]).split("(")[0]))

        def run(sid: int) -> None:
            self.backend.record(dict(record, stream=sid))
            if fault is not None:  # as a kernel that faults on a GPU: the error surfaces at
                # the stream's next synchronization (and the session takes the device as dead)
                self.streams[sid].error = self.streams[sid].error or CudaError(E[fault])
                if E[fault] in STICKY:  # and on the other devices of its context
                    self.context.broken = self.context.broken or CudaError(E[fault])
        if stream in self.capturing:
            self.capturing[stream].append(lambda sid: self._run(sid, lambda: run(sid)))
            return
        self._run(stream, lambda: run(stream))

    def launch_ex(self, kid, stream, grid, block, shmem, attrs: bytes, params: bytes) -> None:
        self.launch(kid, stream, grid, block, shmem, params, 0)

    def launched(self, kid: int) -> None:
        self._launches.launched(kid)

    def synced(self) -> None:
        self._launches.synced()

    def launch_window(self):
        return self._launches.window()

    def func_attrs(self, kid: int) -> dict:
        if kid not in self.kernels:
            raise CudaError(E["cudaErrorInvalidDeviceFunction"])
        return {"maxThreadsPerBlock": 1024, "numRegs": 16, "ptxVersion": 90,
                "binaryVersion": 90,
                "maxDynamicSharedSizeBytes": self.kernels[kid].get("max_dyn_smem_set", 49152)}

    def func_set_attr(self, kid: int, attr: int, value: int) -> None:
        if kid not in self.kernels:
            raise CudaError(E["cudaErrorInvalidDeviceFunction"])
        if attr == 8:  # cudaFuncAttributeMaxDynamicSharedMemorySize, up to an H100's opt-in
            if not 0 <= value <= 232448:
                raise CudaError(E["cudaErrorInvalidValue"])
            self.kernels[kid]["max_dyn_smem_set"] = value

    def occupancy(self, kid: int, block: int, shmem: int, flags: int) -> int:
        if kid not in self.kernels or block <= 0:
            raise CudaError(E["cudaErrorInvalidValue"])
        return max(0, min(32, 2048 // block))

    def occupancy_smem(self, kid: int, blocks: int, block: int) -> int:
        return 49152

    def occupancy_clusters(self, kid, grid, block, shmem, attrs: bytes, what: int) -> int:
        if kid not in self.kernels:
            raise CudaError(E["cudaErrorInvalidDeviceFunction"])
        return 16 if what == 0 else 8

    # -- streams and events --
    def stream_create(self, sid: int, flags: int, priority: int) -> None:
        if sid == 0 or sid in self.streams:
            raise CudaError(E["cudaErrorInvalidResourceHandle"])
        self.streams[sid] = _Stream()

    def stream_destroy(self, sid: int) -> None:
        if sid == 0 or self.streams.pop(sid, None) is None:
            raise CudaError(E["cudaErrorInvalidResourceHandle"])

    def stream_sync(self, sid: int):
        return self._idle(sid)

    def stream_query(self, sid: int) -> bool:
        return self._idle(sid) is None

    def stream_mark(self, sid: int):
        """The stream's present point (a future done when the stream gets there), or None
        when nothing is queued in it."""
        s = self.streams.get(sid)
        if s is None:
            raise CudaError(E["cudaErrorInvalidResourceHandle"])
        if sid in self.capturing:
            raise CudaError(E["cudaErrorStreamCaptureUnsupported"])
        if not s.blocked and not s.queue:
            return None
        fut = asyncio.get_running_loop().create_future()
        s.queue.append(_completer(fut))
        return fut

    def marker_done(self, fut) -> bool:
        return fut.done()

    def marker_wait(self, fut):
        return asyncio.shield(fut)

    def marker_release(self, fut) -> None:
        pass

    def stream_wait_event(self, sid: int, peer: MemoryDevice, eid: int, flags: int) -> None:
        ev = peer.events.get(eid)
        s = self.streams.get(sid)
        if ev is None or s is None:
            raise CudaError(E["cudaErrorInvalidResourceHandle"])
        if sid in self.capturing and flags & 1:  # cudaEventWaitExternal: a node of the graph,
            # which waits at each replay for the record of the event current then
            self.capturing[sid].append(
                lambda rsid: self.stream_wait_event(rsid, peer, eid, flags & ~1))
            return
        if ev.complete():
            return
        g = ev.gen  # the record current now, not one made later

        def arrive():  # the stream holds here until that record is passed
            if g not in ev.pending:
                return
            s.blocked = True

            def go():
                s.blocked = False
                self._drain(s)
            ev.waiters.append((g, go))
        self._run(sid, arrive)

    def stream_set_attr(self, sid: int, attr: int, raw: bytes) -> None:
        if sid not in self.streams:
            raise CudaError(E["cudaErrorInvalidResourceHandle"])

    def event_create(self, eid: int, flags: int) -> None:
        self.events[eid] = _Event()

    def _ev(self, eid: int) -> _Event:
        ev = self.events.get(eid)
        if ev is None:
            raise CudaError(E["cudaErrorInvalidResourceHandle"])
        return ev

    def event_destroy(self, eid: int) -> None:
        if self.events.pop(eid, None) is None:
            raise CudaError(E["cudaErrorInvalidResourceHandle"])

    def event_record(self, eid: int, sid: int, flags: int) -> None:
        ev = self._ev(eid)
        if sid not in self.streams:
            raise CudaError(E["cudaErrorInvalidResourceHandle"])
        if sid in self.capturing:
            if flags & 1:  # cudaEventRecordExternal: a node of the graph, recorded at each replay
                self.capturing[sid].append(lambda rsid: self._record(ev, rsid))
            return  # else it joins streams at capture, and records nothing
        self._record(ev, sid)

    def _record(self, ev: _Event, sid: int) -> None:
        ev.gen += 1
        g = ev.gen
        ev.pending.add(g)
        self._run(sid, lambda: ev.passed(g))

    def event_sync(self, eid: int):
        ev = self._ev(eid)
        if ev.complete():
            return None
        fut = asyncio.get_running_loop().create_future()
        ev.when_complete(_completer(fut))
        return fut

    def event_query(self, eid: int) -> bool:
        return self._ev(eid).complete()

    def event_elapsed(self, a: int, b: int) -> float:
        ea, eb = self._ev(a), self._ev(b)
        if ea.time is None or eb.time is None or not ea.complete() or not eb.complete():
            raise CudaError(E["cudaErrorNotReady"] if ea.gen and eb.gen
                            else E["cudaErrorInvalidResourceHandle"])
        return (eb.time - ea.time) * 1000.0

    # host memory in captured graphs, served by the client at each replay (as the GPU
    # backend does it): the stream waits until the bytes came (FETCH) or went (PUSH)
    def capture_htod(self, dst, size, sid, node, fetch) -> None:
        if sid not in self.capturing or node in self._nodes:
            raise CudaError(E["cudaErrorIllegalState"])
        self._view(dst, size)
        self._nodes[node] = {"dst": dst, "n": size, "buf": bytearray(size), "got": 0}

        def arrive(rsid):
            self._nodes[node].update(got=0, stream=self.streams[rsid])
            self.streams[rsid].blocked = True
            fetch()
        self.capturing[sid].append(lambda rsid: self._run(rsid, lambda: arrive(rsid)))

    def capture_dtoh(self, src, size, sid, node, push) -> None:
        if sid not in self.capturing or node in self._nodes:
            raise CudaError(E["cudaErrorIllegalState"])
        self._view(src, size)
        self._nodes[node] = {"src": src, "n": size}

        def arrive(rsid):
            self._nodes[node]["stream"] = self.streams[rsid]
            self.streams[rsid].blocked = True
            push(memoryview(bytes(self._view(src, size))))
        self.capturing[sid].append(lambda rsid: self._run(rsid, lambda: arrive(rsid)))

    def host_data(self, node, offset, data) -> None:
        rec = self._nodes.get(node)
        if rec is None or "dst" not in rec or "stream" not in rec or offset + len(data) > rec["n"]:
            raise CudaError(E["cudaErrorInvalidValue"])
        rec["buf"][offset:offset + len(data)] = data
        rec["got"] += len(data)
        if rec["got"] >= rec["n"]:
            self._view(rec["dst"], rec["n"])[:] = rec["buf"]
            rec["stream"].blocked = False
            self._drain(rec["stream"])

    def push_done(self, node) -> None:
        rec = self._nodes.get(node)
        if rec is None or "src" not in rec or "stream" not in rec:
            raise CudaError(E["cudaErrorInvalidValue"])
        rec["stream"].blocked = False
        self._drain(rec["stream"])

    def host_func(self, sid: int, reached: Callable[[], None],
                  persistent: bool = False) -> Callable[[], None]:
        """Run ``reached`` when the stream gets there; the returned function unblocks it."""
        s = self.streams.get(sid)
        if s is None:
            raise CudaError(E["cudaErrorInvalidResourceHandle"])

        def arrive():
            s.blocked = True
            reached()

        def done():
            s.blocked = False
            self._drain(s)
        self._run(sid, arrive)
        return done

    # -- graphs --
    def capture_begin(self, sid: int, mode: int) -> None:
        if sid not in self.streams or sid in self.capturing:
            raise CudaError(E["cudaErrorIllegalState"])
        self.capturing[sid] = []

    def capture_end(self, sid: int, gid: int) -> None:
        if sid not in self.capturing:
            raise CudaError(E["cudaErrorIllegalState"])
        self.graphs[gid] = self.capturing.pop(sid)

    def capture_status(self, sid: int) -> int:
        return 1 if sid in self.capturing else 0

    def graph_instantiate(self, gid: int, xid: int, flags: int) -> None:
        if gid not in self.graphs:
            raise CudaError(E["cudaErrorInvalidValue"])
        self.graphs[-xid] = list(self.graphs[gid])

    def graph_launch(self, xid: int, sid: int) -> None:
        if -xid not in self.graphs:
            raise CudaError(E["cudaErrorInvalidValue"])
        for op in self.graphs[-xid]:
            op(sid)

    def graph_check(self, xid: int) -> None:
        if -xid not in self.graphs:
            raise CudaError(E["cudaErrorInvalidValue"])

    def graph_destroy(self, gid: int) -> None:
        self.graphs.pop(gid, None)

    def graph_exec_destroy(self, xid: int) -> None:
        self.graphs.pop(-xid, None)

    # -- device --
    def synchronize(self):
        waits = [w for w in (self._idle(s) for s in list(self.streams)) if w is not None]
        return asyncio.gather(*waits) if waits else None

    def set_limit(self, limit: int, value: int) -> None:
        if limit not in self.limits:
            raise CudaError(E["cudaErrorInvalidValue"] if limit > 6 else
                            E["cudaErrorUnsupportedLimit"])
        self.limits[limit] = value

    def get_limit(self, limit: int) -> int:
        if limit not in self.limits:
            raise CudaError(E["cudaErrorUnsupportedLimit"])
        return self.limits[limit]

    def mem_info(self) -> tuple[int, int]:
        return self.backend.capacity - self.backend.total_mapped, self.backend.capacity

    def set_flags(self, flags: int) -> None:
        pass

    def set_cache_config(self, config: int) -> None:
        pass

    def close(self) -> None:
        for base in list(self._mem):
            self.backend.total_mapped -= len(self._mem[base])
        self._mem.clear()
        self._extents.clear()
        self.context.devices.discard(self)
        if not self.context.devices and self.backend.contexts.get(self.gpu) is self.context:
            del self.backend.contexts[self.gpu]


class MemoryBackend:
    name = "memory"
    fastpath = None  # the daemon's C path calls the CUDA driver: not here

    def __init__(self, gpus: int = 1, capacity: int = 8 << 30, record_path: str | None = None,
                 driver_version: int = 13000, fault_kernels: dict[str, str] | None = None
                 ) -> None:
        self.gpus = gpus
        # kernel name -> the cudaError_t name its launches fault with (tests of fault reports)
        self.fault_kernels = dict(fault_kernels or {})
        self.capacity = capacity
        self.total_mapped = 0
        self.record_path = record_path
        self._driver = driver_version
        self.launches = 0
        self.contexts: dict[int, _Context] = {}  # gpu -> the context its devices share
        self.contexts_made = 0

    def gpu_count(self) -> int:
        return self.gpus

    def driver_version(self) -> int:
        return self._driver

    def gpu_info(self, gpu: int) -> dict:
        if not 0 <= gpu < self.gpus:
            return {"error": f"no GPU {gpu} (this server has {self.gpus})"}
        return {"name": "farcuda in-memory test device", "uuid": struct.pack("<4I", gpu, 0, 0, 0)
                .hex(), "total_mem": self.capacity,
                "attrs": {str(k): v for k, v in ATTRS_H100.items()}}

    def open_device(self, gpu: int, sm_budget: int, flags: int, window_base: int,
                    window_size: int, vdev: int = 0) -> MemoryDevice:
        if not 0 <= gpu < self.gpus:
            raise CudaError(E["cudaErrorInvalidDevice"])
        ctx = self.contexts.get(gpu) if not sm_budget else None
        if ctx is None or ctx.broken is not None:  # (a broken one is left to its devices)
            ctx = _Context(gpu, not sm_budget)
            self.contexts_made += 1
            if not sm_budget:
                self.contexts[gpu] = ctx
        dev = MemoryDevice(self, gpu, window_base, ctx)
        if sm_budget:
            dev.sm_count = min(132, -(-sm_budget // 8) * 8)
        return dev

    def context_unknown(self) -> None:
        pass

    def record(self, rec: dict) -> None:
        self.launches += 1
        if self.record_path:
            with open(self.record_path, "a") as f:
                f.write(json.dumps(rec) + "\n")

    def gpu_status(self) -> list[dict]:
        return [{"gpu": g, "name": "farcuda in-memory test device", "memory_total": self.capacity,
                 "memory_used": self.total_mapped} for g in range(self.gpus)]

    def close(self) -> None:
        pass
