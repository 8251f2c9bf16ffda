"""One client's session: frames in, CUDA work on the backend, replies out.

Frames are executed in the order they arrive, which is the client's program order per host
thread; a request that must wait for the GPU (a synchronization, a device-to-host copy behind
running work) is awaited in a task while later frames keep executing, so one stream's wait
never stalls another stream or another host thread of the client.

Every pointer a client passes to a memory operation must lie in memory of this session
(its allocations or its modules' globals): anything else is cudaErrorInvalidValue, whatever
the GPU would have done with it. An error of an async frame is sent as ASYNC_ERROR and
surfaces at the client's next call; a malformed frame ends the session, never the daemon.

Tenant limits shared by several sessions live in the front (daemon/tenants.py): with a
``front`` (the worker's link to it), a cudaMalloc first reserves its bytes there and every
free returns them, and a DEVICE_OPEN is admitted there when GPUs have a tenant limit. Without
one (tests, or no limits configured) everything is decided here, synchronously.

Busy time, per GPU (``BusyClock``), is what the front attributes energy by: the union of the
times a call of this session executes for that GPU and the times a request waits for its work
on that GPU to complete.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import struct
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable

from farcuda.wire import (
    BY_NAME,
    HEADER,
    MESSAGES,
    Frame,
    FrameReader,
    ProtocolError,
    encode,
    encode_reply,
)

from farcuda.wire import messages as msg

from .allocator import SMALL_ALIGN, SMALL_LIMIT, WindowAllocator
from .errors import CudaError, E
from .faults import STICKY, demangle, describe

__all__ = ["Session", "DeviceState", "BusyClock", "Refusal"]

log = logging.getLogger("farcudad.session")

_REPLY = BY_NAME["REPLY"]
_DATA = BY_NAME["DATA"]
_DATA_CHUNK = msg.PIECE
_HTOD_OP = BY_NAME["MEMCPY_HTOD"].op
_SINK_MIN = 64 << 10
_INLINE_REPLY = 64 << 10  # device-to-host results up to this size travel in the REPLY itself
_NOTIFY = {n: BY_NAME[n] for n in ("HEARTBEAT", "CALLBACK", "ASYNC_ERROR", "STDOUT", "GOODBYE",
                                   "FETCH", "PUSH", "FAULT")}
_DEVICE_OPEN_OP = BY_NAME["DEVICE_OPEN"].op
_OP_NAMES = {m.op: m.name for m in MESSAGES}
# Requests whose success shows that the device's work up to them ran without a fault (see
# daemon/faults.py: what a later fault may be blamed on).
_SYNCS = frozenset(BY_NAME[n].op for n in ("DEVICE_SYNC", "STREAM_SYNC", "EVENT_SYNC",
                                           "MEMCPY_DTOH", "MEMCPY2D_DTOH"))
_FAST_OUT = 24 + (64 << 10)  # the C path's reply buffer: a REPLY with a small copy's bytes
_DTOH_DEFERRED = msg.MEMCPY_DTOH_DEFERRED
_DEFERRED = object()  # a handler's result: the request is answered later, by other means
_D2H_PENDING_MAX = 1024  # deferred copies a client may have pending
_D2H_BYTES_MAX = 256 << 20  # and the bytes they may hold
# Requests that may wait on the front, not on the GPU: not busy time.
_NOT_GPU_WAITS = frozenset(BY_NAME[n].op for n in ("MALLOC", "MALLOC_PITCH", "MALLOC_ASYNC",
                                                   "DEVICE_OPEN", "MEM_GET_INFO", "STATUS"))


def _charge(size: int) -> int:
    """The bytes an allocation of ``size`` holds (small ones are rounded as the allocator
    packs them), which is what a tenant's quota counts."""
    return size if size >= SMALL_LIMIT else -(-size // SMALL_ALIGN) * SMALL_ALIGN


class Refusal(CudaError):
    """A call refused by the daemon's policy (a tenant limit): the client is told why."""


class BusyClock:
    """The union of the intervals in which a GPU had work of this session (monotonic ns): a
    call executing for it, or a request waiting for its work. Overlapping waits count once."""

    __slots__ = ("total", "pending", "since")

    def __init__(self) -> None:
        self.total = 0
        self.pending = 0
        self.since = 0

    def add(self, ns: int) -> None:
        if not self.pending:  # inside a pending wait the time is counted already
            self.total += ns

    def begin(self) -> None:
        if not self.pending:
            self.since = time.perf_counter_ns()
        self.pending += 1

    def end(self, _task=None) -> None:
        self.pending -= 1
        if not self.pending:
            self.total += time.perf_counter_ns() - self.since

    def seconds(self) -> float:
        extra = time.perf_counter_ns() - self.since if self.pending else 0
        return (self.total + extra) / 1e9


class DeviceState:
    """A virtual device of the session: its backend context and the memory it owns."""

    def __init__(self, vdev: int, be, window_size: int, params: dict) -> None:
        self.vdev = vdev
        self.be = be
        self.params = params
        self.window_size = window_size
        watch = be if hasattr(be, "track") else None  # a backend that checks pointers itself
        self.alloc = WindowAllocator(be.window_base, window_size,
                                     getattr(be, "granule", 2 << 20), be.map_extent,
                                     be.unmap_extent, watch, be.apron, be.map_apron,
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

    def add_symbol(self, base: int, size: int) -> None:
        if (base, size) not in self.symbols:
            bisect.insort(self.symbols, (base, size))
            if hasattr(self.be, "track"):
                self.be.track(base, size)

    def memory_held(self) -> int:
        return self.alloc.bytes_in_use


class Session(asyncio.BufferedProtocol):
    def __init__(self, backend, *, session_id: int = 0, identity: dict | None = None,
                 heartbeat_ms: int = 1000, client_timeout: float = 60.0,
                 quota_bytes: int | None = None, on_close: Callable[[], None] | None = None,
                 drain_output: Callable[[], bytes] | None = None, front=None,
                 output_fd: int = -1) -> None:
        self.backend = backend
        self.session_id = session_id
        self.identity = identity or {}
        self.heartbeat_ms = heartbeat_ms
        self.client_timeout = client_timeout
        self.quota_bytes = quota_bytes
        self.on_close = on_close
        self.drain_output = drain_output
        self._output_fd = output_fd  # the pipe device printf output arrives in (-1: none)
        self._may_print = False  # a kernel has run: device printf output may be waiting
        self._sock_fd = -1
        self.devices: dict[int, DeviceState] = {}
        self.callbacks: dict[int, Callable[[], None]] = {}
        self.fast = getattr(backend, "fastpath", None)  # the C path, when the backend has one
        self._sunk = None  # (device, staging slot) holding the tail of the frame in flight
        self.reader = FrameReader("c2s", sink=self._sink,
                                  fast=self._run_fast if self.fast is not None else None)
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_event_loop().create_future()
        self.counts: Counter[str] = Counter()
        self.errors: Counter[int] = Counter()  # CUDA status -> requests answered with it
        self.bytes_in = 0
        self.bytes_out = 0
        self.started = time.time()
        self.busy_ns = 0
        # The worker's link to the front (daemon/worker.py FrontLink) when limits or energy
        # are kept there: .quota (bytes per tenant or None), .gpu_limit, .energy (bools).
        self.front = front
        self.energy_j: float | None = None  # attributed by the front; None: unavailable
        self._clocks: dict[int, BusyClock] = {}  # physical GPU -> busy clock
        self._charged: dict[tuple[int, int], int] = {}  # (vdev, ptr) -> bytes reserved
        # Stream-ordered frees not reached yet, in arrival order: (device of the stream, the
        # stream, its marker, device of the memory, pointer); the reaper task frees them as
        # their streams get there.
        self._freeing: list[tuple[DeviceState, int, object, DeviceState, int]] = []
        self._reaper: asyncio.Future | None = None
        self._last_rx = self._last_tx = time.monotonic()
        self._acked = 0  # bytes_in as the last HEARTBEAT told the client
        self._timer: asyncio.TimerHandle | None = None
        self._writable: asyncio.Future | None = None
        self._tasks: set[asyncio.Task] = set()
        # Async device-to-host copies not yet sent, in issue order: (frame, backend job). Each
        # is sent as soon as its copy completed, and at the latest before any later reply or
        # notice that could tell the client it completed (see _deliver_d2h).
        self._d2h: deque = deque()
        self._d2h_bytes = 0
        self._d2h_task: asyncio.Task | None = None
        self._handlers = {m.op: getattr(self, "op_" + m.name) for m in MESSAGES
                          if m.direction == "c2s" and m.name != "HELLO"}
        if self.fast is not None:
            self._fast_res = self.fast[0].new("fp_result *")
            self._fast_out = self.fast[0].new("unsigned char[]", _FAST_OUT)

    # ------------------------------------------------------------ transport
    def connection_made(self, transport) -> None:
        self.transport = transport
        info = getattr(transport, "get_extra_info", None)  # (test transports may not have it)
        sock = info("socket") if info is not None else None
        self._sock_fd = sock.fileno() if sock is not None else -1
        self._schedule_tick()

    def connection_lost(self, exc) -> None:
        self.transport = None
        if self._timer:
            self._timer.cancel()
        for t in list(self._tasks):
            t.cancel()
        if self._reaper is not None:
            self._reaper.cancel()
        self.release()
        if not self.closed.done():
            self.closed.set_result(exc)
        if self.on_close:
            self.on_close()

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = asyncio.get_event_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    async def _drain(self) -> None:
        if self._writable is not None and not self._writable.done():
            await self._writable

    async def _drain_all(self) -> None:
        """Until the transport's buffer is empty (staging memory it referenced is free)."""
        while self.transport is not None and self.transport.get_write_buffer_size():
            self._writable = asyncio.get_event_loop().create_future()
            self.transport.set_write_buffer_limits(high=1, low=0)
            await self._writable
        if self.transport is not None:
            self.transport.set_write_buffer_limits()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.reader.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self._last_rx = time.monotonic()
        self.bytes_in += nbytes
        try:
            frames = self.reader.buffer_updated(nbytes)
            while frames:
                for f in frames:
                    self.dispatch(f)
                if self.transport is None:
                    return
                frames = self.reader.buffer_updated(0)
        except ProtocolError as exc:
            self.abort(f"malformed frame: {exc}")

    def eof_received(self) -> bool:
        return False

    def _write(self, data: bytes | memoryview) -> None:
        if self.transport is not None:
            self.transport.write(data)
            self.bytes_out += len(data)
            self._last_tx = time.monotonic()

    def abort(self, why: str) -> None:
        log.warning("session %d: closing: %s", self.session_id, why)
        if self.transport is not None:
            try:
                self._write(encode(_NOTIFY["GOODBYE"], {"status": E["cudaErrorUnknown"]},
                                   why.encode()[:400]))
            finally:
                self.transport.abort()

    def goodbye(self, why: str) -> None:
        """End the session in order (daemon shutdown): tell the client why, then close."""
        if self.transport is not None:
            self._write(encode(_NOTIFY["GOODBYE"], {"status": E["cudaErrorDevicesUnavailable"]},
                               why.encode()[:400]))
            self.transport.close()

    def _schedule_tick(self) -> None:
        loop = asyncio.get_event_loop()
        self._timer = loop.call_later(self.heartbeat_ms / 1000.0, self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        if self.transport is None:
            return
        if now - self._last_rx > self.client_timeout:
            self.abort(f"no sign of life from the client for {self.client_timeout:.0f} s")
            return
        # Received bytes are acknowledged every period, even while other frames go out (a
        # download streaming DATA): the client fails the link when what it sent stays
        # unacknowledged, so an ack must not wait for the daemon to fall idle.
        if (self.bytes_in != self._acked
                or now - self._last_tx >= self.heartbeat_ms / 1000.0 * 0.9):
            self._acked = self.bytes_in
            self._write(encode(_NOTIFY["HEARTBEAT"], {"received": self.bytes_in}))
        self._schedule_tick()

    # ------------------------------------------------------------ dispatch
    def _clock(self, vdev: int) -> BusyClock | None:
        d = self.devices.get(vdev)
        if d is None:
            return None
        if d.clock is None:  # one clock per physical GPU, shared by its virtual devices
            d.clock = self._clocks.setdefault(d.params["gpu"], BusyClock())
        return d.clock

    def dispatch(self, f: Frame) -> None:
        self.counts[f.msg.name] += 1
        handler = self._handlers.get(f.op)
        t0 = time.perf_counter_ns()
        clock = None
        try:
            if handler is None:
                raise ProtocolError(f"{f.msg.name} is not a request")
            result = handler(f)
        except CudaError as exc:
            self._failed(f, exc.status, exc)
            return
        except ProtocolError as exc:
            self.abort(str(exc))
            return
        except Exception:
            log.error("session %d: %s failed:\n%s", self.session_id, f.msg.name,
                      traceback.format_exc())
            self._failed(f, E["cudaErrorUnknown"])
            return
        finally:
            dt = time.perf_counter_ns() - t0
            self.busy_ns += dt
            clock = self._clock(f.vdev)
            if clock is not None:
                clock.add(dt)
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            task = asyncio.ensure_future(self._finish(f, result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            if clock is not None and f.op not in _NOT_GPU_WAITS:
                clock.begin()  # the request waits for this session's work on the GPU
                task.add_done_callback(clock.end)
        elif f.rid and result is not _DEFERRED:
            self._answer(f, result)

    async def _finish(self, f: Frame, pending) -> None:
        try:
            result = await pending
        except CudaError as exc:
            self._failed(f, exc.status, exc)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.error("session %d: %s failed:\n%s", self.session_id, f.msg.name,
                      traceback.format_exc())
            self._failed(f, E["cudaErrorUnknown"])
            return
        if f.rid:
            if isinstance(result, Bulk):
                await self._send_bulk(f, result)
            else:
                self._answer(f, result)

    def _flush_output(self) -> None:
        # no kernel ran in this session yet: no device printf output can be waiting
        if self.drain_output is not None and self._may_print:
            out = self.drain_output()
            if out:
                self._write(encode(_NOTIFY["STDOUT"], None, out))

    def _answer(self, f: Frame, result) -> None:
        self._flush_output()
        self._deliver_d2h()
        if f.op in _SYNCS:
            self._synced(f.vdev)
        if isinstance(result, Bulk):
            task = asyncio.ensure_future(self._send_bulk(f, result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        values, tail = (result if isinstance(result, tuple) else (result, b""))
        self._write(encode_reply(f.rid, 0, f.msg, values, tail or b"", f.vdev))

    def _failed(self, f: Frame, status: int, exc: CudaError | None = None) -> None:
        self.errors[status] += 1
        self._flush_output()
        self._deliver_d2h()
        self._fault(f.vdev, status)
        if f.rid:
            # A DEVICE_OPEN refused by policy says why (the client asks for it with a bulk
            # reply, so a tail is welcome there and nowhere else).
            why = (str(exc).encode()[:400] if isinstance(exc, Refusal)
                   and f.op == _DEVICE_OPEN_OP else b"")
            self._write(encode_reply(f.rid, status, None, None, why, f.vdev))
        else:
            self._write(encode(_NOTIFY["ASYNC_ERROR"], {"status": status, "op": f.op},
                               vdev=f.vdev))

    async def _send_bulk(self, f: Frame, bulk: Bulk) -> None:
        """A large result: DATA frames of at most _DATA_CHUNK bytes, then the REPLY.

        Pieces may be plain buffers, or (come from an async iterator as) (view, release)
        pairs: staging memory that is written to the socket directly and handed back once the
        transport no longer holds it."""
        off = 0
        try:
            pieces = bulk.pieces
            if hasattr(pieces, "__aiter__"):
                async for view, release in pieces:
                    self._write(HEADER.pack(8 + len(view), _DATA.op, 0, f.rid, f.vdev, 0)
                                + struct.pack("<Q", off))
                    self._write(view)
                    off += len(view)
                    if self.transport is not None and self.transport.get_write_buffer_size():
                        await self._drain_all()
                    release()
            else:
                for piece in pieces:
                    view = memoryview(piece)
                    for start in range(0, len(view), _DATA_CHUNK):
                        part = view[start:start + _DATA_CHUNK]
                        self._write(HEADER.pack(8 + len(part), _DATA.op, 0, f.rid, f.vdev, 0)
                                    + struct.pack("<Q", off))
                        self._write(part)
                        off += len(part)
                        await self._drain()
        except CudaError as exc:
            self._failed(f, exc.status)
            return
        self._flush_output()
        self._deliver_d2h()
        if f.op in _SYNCS:
            self._synced(f.vdev)
        self._write(encode_reply(f.rid, 0, f.msg, bulk.values, b"", f.vdev))

    # -- faults: a context left unusable is reported once (daemon/faults.py) --
    def _synced(self, vdev: int) -> None:
        d = self.devices.get(vdev)
        if d is not None:
            d.be.synced()

    def _fault(self, vdev: int, status: int) -> None:
        """A request of this device failed with ``status``: if that is a fault, log it with
        the kernel it came from and tell the client (before the failed request's answer)."""
        d = self.devices.get(vdev)
        if status not in STICKY or d is None or d.dead is not None:
            return
        first, last = d.be.launch_window()

        def name(kid: int) -> str:
            return demangle(d.kernel_names.get(kid, f"#{kid}"))
        culprit, error = describe(status, first and (first[0], name(first[1])),
                                  last and (last[0], name(last[1])))
        d.dead = {"status": status, "error": error, "culprit": culprit, "at": time.time()}
        log.warning("session %d: device %d: %s failed with %s; its context is unusable",
                    self.session_id, vdev, culprit, error)
        self._write(encode(_NOTIFY["FAULT"], {"status": status,
                                              "first": first[0] if first else 0,
                                              "last": last[0] if last else 0},
                           culprit.encode()[:400], vdev=vdev))

    # -- async device-to-host copies: the client does not wait, its synchronizations do --
    def _deliver_d2h(self) -> None:
        """Send every pending async copy whose data is ready. Called before each reply and
        notice: whatever a synchronization (or a host callback, or a query that reports
        completion) implies is complete reaches the client before the news of it does."""
        if not self._d2h:
            return
        keep: deque = deque()
        for f, job in self._d2h:
            if job.ready():
                self._send_d2h(f, job)
            else:
                keep.append((f, job))
        self._d2h = keep

    def _send_d2h(self, f: Frame, job) -> None:
        self._d2h_bytes -= job.n
        try:
            data = bytes(job.result())
            head = HEADER.pack(8 + len(data), _REPLY.op, 0, f.rid, f.vdev, 0)
            self._write(head + struct.pack("<II", 0, 0) + data)
        except CudaError as exc:
            self._fault(f.vdev, exc.status)
            self._write(encode_reply(f.rid, exc.status, None, None, b"", f.vdev))
        finally:
            job.close()

    async def _watch_d2h(self) -> None:
        """Send pending copies as they complete (the oldest first: their order on the wire
        does not matter, only that each precedes what reports it complete)."""
        try:
            while self._d2h:
                _f, job = self._d2h[0]
                if not job.ready():
                    try:
                        await job.wait()
                    except CudaError:
                        pass  # its reply carries the error
                self._deliver_d2h()
        finally:
            self._d2h_task = None

    def _defer_d2h(self, f: Frame, job) -> object:
        self._d2h.append((f, job))
        self._d2h_bytes += job.n
        if self._d2h_task is None:
            self._d2h_task = asyncio.ensure_future(self._watch_d2h())
            self._tasks.add(self._d2h_task)
            self._d2h_task.add_done_callback(self._tasks.discard)
        return _DEFERRED

    def _sink(self, header: tuple, fixed: bytes, tail_len: int):
        """Large host-to-device payloads are received straight into pinned staging memory."""
        if header[1] != _HTOD_OP or tail_len < _SINK_MIN:
            return None
        d = self.devices.get(header[4])
        take = getattr(d.be, "staging_take", None) if d is not None else None
        if take is None:
            return None
        slot, view = take(tail_len)
        self._sunk = (d, slot)
        return view

    def _run_fast(self, buf: bytearray, start: int, end: int) -> int:
        """Let the C path execute the async launches and event operations at buf[start:], and
        answer a synchronous request that need not wait."""
        ffi, lib = self.fast
        res = self._fast_res
        # While async copies are pending, Python answers synchronous requests (it sends the
        # copies' data first); the C path still runs the async frames. The C path sends its
        # reply itself when the transport holds nothing that must go first.
        out = ffi.NULL if self._d2h else self._fast_out
        sock = self._sock_fd if not self.transport.get_write_buffer_size() else -1
        lib.fp_run(ffi.cast("const unsigned char *", ffi.from_buffer(buf)) + start, end - start,
                   out, _FAST_OUT, sock, self._output_fd if self._may_print else -1, res)
        n = res.consumed
        if n:
            if res.launches:
                self.counts["LAUNCH"] += res.launches
                self._may_print = True
            if res.records:
                self.counts["EVENT_RECORD"] += res.records
            if res.waits:
                self.counts["STREAM_WAIT_EVENT"] += res.waits
            self.backend.context_unknown()
            size = res.out_len
            if size:
                if res.sync_status:
                    self._fault(res.sync_vdev, res.sync_status)  # before its reply
                    self.errors[res.sync_status] += 1
                self.counts[_OP_NAMES[res.sync_op]] += 1
                clock = self._clock(res.sync_vdev)
                if clock is not None:
                    clock.add(res.sync_ns)
                self.busy_ns += res.sync_ns
                sent = res.out_sent
                if sent == size:
                    self.bytes_out += size
                    self._last_tx = time.monotonic()
                else:
                    if not sent:
                        self._flush_output()  # device printf the synchronization flushed
                    self.bytes_out += sent
                    self._write(ffi.buffer(self._fast_out + sent, size - sent)[:])
            if res.error:
                self._fault(res.error_vdev, res.error)
                self.errors[res.error] += 1
                self._write(encode(_NOTIFY["ASYNC_ERROR"], {"status": res.error,
                                                            "op": res.error_op},
                                   vdev=res.error_vdev))
        return n

    def dev(self, f: Frame) -> DeviceState:
        d = self.devices.get(f.vdev)
        if d is None:
            raise CudaError(E["cudaErrorInvalidDevice"], f"virtual device {f.vdev} not open")
        return d

    def peer(self, vdev: int) -> DeviceState:
        d = self.devices.get(vdev)
        if d is None:
            raise CudaError(E["cudaErrorInvalidDevice"], f"virtual device {vdev} not open")
        return d

    def release(self) -> None:
        """Free everything the client held (its contexts go with them)."""
        for _f, job in self._d2h:
            job.close()
        self._d2h.clear()
        self._d2h_bytes = 0
        self._return_charges(None)
        self._freeing.clear()
        for d in self.devices.values():
            try:
                d.alloc.release_all()
            except Exception:
                log.exception("session %d: releasing memory", self.session_id)
            try:
                d.be.close()
            except Exception:
                log.exception("session %d: closing a context", self.session_id)
        self.devices.clear()

    def memory_held(self) -> int:
        return sum(d.memory_held() for d in self.devices.values())

    def busy_by_gpu(self) -> dict[str, float]:
        return {str(g): c.seconds() for g, c in self._clocks.items()}

    def status(self) -> dict:
        self._reap()
        return {"session": self.session_id, "identity": self.identity,
                "devices": {str(v): {"gpu": d.params["gpu"], "sm_budget": d.params["sm_budget"],
                                     "memory_held": d.memory_held(),
                                     **({"dead": d.dead} if d.dead else {})}
                            for v, d in self.devices.items()},
                "memory_held": self.memory_held(), "calls": sum(self.counts.values()),
                "counts": dict(self.counts), "errors": dict(self.errors),
                "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out, "since": self.started,
                "busy_s": self.busy_ns / 1e9, "busy_s_by_gpu": self.busy_by_gpu(),
                "energy_j": self.energy_j}

    # ------------------------------------------------------------ session ops
    def op_PING(self, f):
        return None

    def op_BYE(self, f):
        if self.transport is not None:
            self.transport.close()

    def op_GPU_INFO(self, f):
        (gpu,) = f.values()
        return {}, json.dumps(self.backend.gpu_info(gpu)).encode()

    def op_STATUS(self, f):
        if self.front is not None and self.front.energy:
            async def fresh():  # the front attributes up to now first (FARCUDA_REPORT's figure)
                self.energy_j = await self.front.energy_now()
                return {}, json.dumps(self.status()).encode()
            return fresh()
        return {}, json.dumps(self.status()).encode()

    # ------------------------------------------------------------ devices
    def op_DEVICE_OPEN(self, f):
        v = f.as_dict()
        if f.vdev in self.devices:
            raise CudaError(E["cudaErrorInvalidDevice"], "virtual device opened twice")
        if v["window_size"] == 0 or v["window_size"] > 1 << 42:
            raise CudaError(E["cudaErrorInvalidValue"], "bad window size")
        if self.front is None or not self.front.gpu_limit:
            return self._open(f, v)

        async def admitted():  # limits.tenants_per_gpu: the front admits the tenant first
            why = await self.front.open_gpu(v["gpu"])
            if why:
                raise Refusal(E["cudaErrorDevicesUnavailable"], why)
            try:
                if f.vdev in self.devices:
                    raise CudaError(E["cudaErrorInvalidDevice"], "virtual device opened twice")
                return self._open(f, v)
            except BaseException:
                if not any(d.params["gpu"] == v["gpu"] for d in self.devices.values()):
                    self.front.close_gpu(v["gpu"])
                raise
        return admitted()

    def _open(self, f: Frame, v: dict):
        be = self.backend.open_device(v["gpu"], v["sm_budget"], v["flags"], v["window_base"],
                                      v["window_size"], vdev=f.vdev)
        self.devices[f.vdev] = DeviceState(f.vdev, be, v["window_size"], v)
        info = be.info()
        return {"window_base": be.window_base, "sm_count": be.sm_count}, json.dumps(info).encode()

    def op_DEVICE_SYNC(self, f):
        return self.dev(f).be.synchronize()

    def op_DEVICE_RESET(self, f):
        d = self.dev(f)
        params = d.params
        self._return_charges(f.vdev)
        d.alloc.release_all()
        d.be.close()
        del self.devices[f.vdev]
        be = self.backend.open_device(params["gpu"], params["sm_budget"], params["flags"],
                                      d.be.window_base, d.window_size, vdev=f.vdev)
        self.devices[f.vdev] = DeviceState(f.vdev, be, d.window_size, params)
        self._reap()  # frees pending in the old context are void, or due at once
        if self._reaper is not None:  # it may be waiting for the old context
            self._reaper.cancel()
            self._reaper = None
        if self._freeing:
            self._reaper = asyncio.ensure_future(self._reap_later())

    def op_SET_LIMIT(self, f):
        limit, _, value = f.values()
        self.dev(f).be.set_limit(limit, value)

    def op_GET_LIMIT(self, f):
        (limit,) = f.values()
        return {"value": self.dev(f).be.get_limit(limit)}

    def op_MEM_GET_INFO(self, f):
        self._reap()
        free, total = self.dev(f).be.mem_info()
        if self.quota_bytes is not None:
            free = min(free, max(0, self.quota_bytes - self.memory_held()))
        if self.front is None or self.front.quota is None:
            return {"free": free, "total": total}

        async def tenant_free():  # what is left of the quota across the tenant's sessions
            used = await self.front.usage()
            return {"free": min(free, max(0, self.front.quota - used)), "total": total}
        return tenant_free()

    def op_SET_FLAGS(self, f):
        self.dev(f).be.set_flags(f.values()[0])

    def op_SET_CACHE_CONFIG(self, f):
        self.dev(f).be.set_cache_config(f.values()[0])

    # ------------------------------------------------------------ memory
    def _alloc(self, d: DeviceState, size: int) -> int:
        if self.quota_bytes is not None and self.memory_held() + size > self.quota_bytes:
            raise CudaError(E["cudaErrorMemoryAllocation"], "over the tenant's memory quota")
        try:
            return d.alloc.alloc(size)
        except MemoryError:
            raise CudaError(E["cudaErrorMemoryAllocation"]) from None

    def _alloc_reply(self, f: Frame, d: DeviceState, size: int, reply: dict):
        """Allocate ``size`` bytes on ``d`` and answer ``reply`` with the pointer.

        Out of memory (or over a quota) while stream-ordered frees are still pending, it waits
        for those frees and tries once more, as CUDA's pools hand memory freed by
        cudaFreeAsync to later allocations."""
        oom = E["cudaErrorMemoryAllocation"]
        self._reap()
        if not self._freeing:
            return self._alloc_once(f, d, size, reply)

        async def after_frees():
            await self._settle()
            if self.devices.get(f.vdev) is not d:  # reset or closed meanwhile
                raise CudaError(E["cudaErrorInvalidDevice"])
            result = self._alloc_once(f, d, size, reply)
            return (await result) if asyncio.iscoroutine(result) else result
        try:
            result = self._alloc_once(f, d, size, reply)
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
                if exc.status != oom or not self._freeing:
                    raise
            return await after_frees()
        return or_after_frees()

    def _alloc_once(self, f: Frame, d: DeviceState, size: int, reply: dict):
        """Allocate ``size`` bytes on ``d`` and answer ``reply`` with the pointer. With a
        tenant quota kept by the front, the bytes are reserved there first (a short wait on
        the control link), and returned by ``_free`` or when the device or session ends."""
        if self.front is None or self.front.quota is None:
            return dict(reply, ptr=self._alloc(d, size))
        n = _charge(size)

        async def reserved():
            why = await self.front.reserve(n)
            if why:
                log.info("session %d: cudaMalloc of %d bytes refused: %s", self.session_id,
                         size, why)
                raise CudaError(E["cudaErrorMemoryAllocation"], why)
            try:
                if self.devices.get(f.vdev) is not d:  # reset or closed meanwhile
                    raise CudaError(E["cudaErrorInvalidDevice"])
                ptr = self._alloc(d, size)
            except BaseException:
                self.front.release(n)
                raise
            self._charged[(f.vdev, ptr)] = n
            return dict(reply, ptr=ptr)
        return reserved()

    def _free(self, vdev: int, d: DeviceState, ptr: int) -> None:
        if ptr not in d.alloc._blocks:
            # Freed while this free waited for the device: a second free of the pointer, or
            # a reset of the device. An error for the client, not for the allocator.
            raise CudaError(E["cudaErrorInvalidValue"], "not an allocation of this client")
        d.alloc.free(ptr)
        n = self._charged.pop((vdev, ptr), 0)
        if n:
            self.front.release(n)

    def _return_charges(self, vdev: int | None) -> None:
        """Give back the reservations of one device (None: of all), all in one notice."""
        mine = [k for k in self._charged if vdev is None or k[0] == vdev]
        n = sum(self._charged.pop(k) for k in mine)
        if n and self.front is not None:
            self.front.release(n)

    def op_MALLOC(self, f):
        size, _flags = f.values()
        if size == 0 or size > 1 << 42:
            raise CudaError(E["cudaErrorMemoryAllocation"] if size else E["cudaErrorInvalidValue"])
        return self._alloc_reply(f, self.dev(f), size, {})

    def op_FREE(self, f):
        d = self.dev(f)
        (ptr,) = f.values()
        if ptr not in d.alloc._blocks or ptr in d.freeing:
            raise CudaError(E["cudaErrorInvalidValue"], "not an allocation of this client")
        pending = d.be.synchronize()  # cudaFree waits for the device, as CUDA's does

        async def later():
            if pending is not None:
                await pending
            self._free(f.vdev, d, ptr)
        if pending is None:
            self._free(f.vdev, d, ptr)
            return None
        return later()

    def op_MALLOC_PITCH(self, f):
        width, height = f.values()
        d = self.dev(f)
        pitch = d.be.pitch_for(width)
        if pitch * height > 1 << 42:
            raise CudaError(E["cudaErrorMemoryAllocation"])
        if pitch * height == 0:  # a zero width or height: nothing to place, as cudaMalloc(0)
            return {"ptr": 0, "pitch": pitch}
        return self._alloc_reply(f, d, pitch * height, {"pitch": pitch})

    # Stream-ordered allocation. The client keeps the pools (their handles, attributes and
    # statistics); here an allocation is an allocation of the device's window like any other,
    # so quotas, status and the cleanup of a dead client count it as they count cudaMalloc.
    # The allocation itself needs no stream order: its memory is usable at once.
    def op_MALLOC_ASYNC(self, f):
        size, stream = f.values()
        if size == 0:
            return {"ptr": 0, "used": 0, "reserved": 0}
        if size > 1 << 42:
            raise CudaError(E["cudaErrorMemoryAllocation"])
        d = self.dev(f)
        ptr = self._take_pending(d, stream, size)
        if ptr is not None:
            used, reserved = d.alloc.held(ptr)
            return {"ptr": ptr, "used": used, "reserved": reserved}

        def sizes(reply: dict) -> dict:
            try:
                used, reserved = d.alloc.held(reply["ptr"])
            except KeyError:  # freed by a (hostile) client before this reply
                used = reserved = 0
            return dict(reply, used=used, reserved=reserved)
        result = self._alloc_reply(f, d, size, {})
        if asyncio.iscoroutine(result):
            async def later():
                return sizes(await result)
            return later()
        return sizes(result)

    def op_FREE_ASYNC(self, f):
        """Free when the stream (of the frame's device) gets to this point: work queued
        before it still sees the memory. The client does not wait for it; its memory stays
        held (and counted) until then."""
        ptr, stream = f.values()
        d = self.dev(f)
        md = self.peer(f.aux) if f.aux != f.vdev else d  # the memory's device
        if ptr not in md.alloc._blocks or ptr in md.freeing:
            raise CudaError(E["cudaErrorInvalidValue"], "not an allocation of this client")
        marker = d.be.stream_mark(stream)
        if marker is None:  # nothing queued before it can still run
            self._free(md.vdev, md, ptr)
            return None
        md.freeing.add(ptr)
        self._freeing.append((d, stream, marker, md, ptr))
        if self._reaper is None:
            self._reaper = asyncio.ensure_future(self._reap_later())
        return None

    def _take_pending(self, d: DeviceState, stream: int, size: int) -> int | None:
        """A block of this very size whose free is pending in this same stream: the new
        allocation takes it over as it is (as CUDA's pools reuse a free in the stream that
        allocates; the stream's order keeps the old work and the new apart), instead of
        mapping new memory while the old waits to be unmapped."""
        need = _charge(size)
        for i, (sd, sid, marker, md, ptr) in enumerate(self._freeing):
            if (sd is d and md is d and sid == stream and ptr in d.alloc._blocks
                    and d.alloc.held(ptr)[0] == need):
                del self._freeing[i]
                d.freeing.discard(ptr)
                d.be.marker_release(marker)
                return ptr
        return None

    def _reap(self) -> None:
        """Free the memory of the pending stream-ordered frees whose streams got there."""
        if not self._freeing:
            return
        keep = []
        for entry in self._freeing:
            sd, _sid, marker, md, ptr = entry
            if self.devices.get(md.vdev) is not md:
                continue  # the memory's device was reset or closed: the memory went with it
            # (a reset of the stream's device ended the work the free waited for)
            if self.devices.get(sd.vdev) is sd and not sd.be.marker_done(marker):
                keep.append(entry)
                continue
            md.freeing.discard(ptr)
            if ptr in md.alloc._blocks:
                self._free(md.vdev, md, ptr)
        self._freeing = keep

    async def _reap_later(self) -> None:
        """Wait for the oldest pending free's stream (one wait at a time, whatever the number
        of frees) and free everything whose stream got there meanwhile."""
        try:
            while self._freeing:
                entry = self._freeing[0]
                sd, marker = entry[0], entry[2]
                if self.devices.get(sd.vdev) is sd:
                    try:
                        await sd.be.marker_wait(marker)
                    except CudaError:
                        pass  # a broken context: nothing runs in it any more
                self._reap()
                if self._freeing and self._freeing[0] is entry:
                    await asyncio.sleep(0.01)  # its wait ended early: look again, not at once
        finally:
            if self._reaper is asyncio.current_task():
                self._reaper = None

    async def _settle(self) -> None:
        """Until every stream-ordered free pending now has happened."""
        for entry in list(self._freeing):
            sd, marker = entry[0], entry[2]
            if entry in self._freeing and self.devices.get(sd.vdev) is sd:
                try:
                    await sd.be.marker_wait(marker)
                except CudaError:
                    pass
        self._reap()

    def op_MEMCPY_HTOD(self, f):
        dst, stream, _ = f.values()
        if f.tail is None and self._sunk is not None:  # the payload is in a staging slot
            d, slot = self._sunk
            self._sunk = None
            n = f.size_of_tail
            try:
                d.check(dst, n)
                d.be.memcpy_htod_slot(dst, slot, n, stream)
            except BaseException:
                d.be.staging_release(slot)
                raise
            return
        data = f.tail if f.tail is not None else b""
        d = self.dev(f)
        d.check(dst, len(data))
        d.be.memcpy_htod(dst, data, stream)

    def op_MEMCPY_DTOH(self, f):
        src, size, stream, flags = f.values()
        d = self.dev(f)
        d.check(src, size)
        if flags & _DTOH_DEFERRED and f.rid:
            if size > _DATA_CHUNK:
                raise CudaError(E["cudaErrorInvalidValue"], "a deferred copy is one piece")
            # the shim keeps far fewer in flight (256 copies, 64 MiB)
            if len(self._d2h) >= _D2H_PENDING_MAX or self._d2h_bytes + size > _D2H_BYTES_MAX:
                raise ProtocolError("too many device-to-host copies pending")
            return self._defer_d2h(f, d.be.dtoh_deferred(src, size, stream))
        if size > _INLINE_REPLY and hasattr(d.be, "memcpy_dtoh_pieces"):
            return Bulk(d.be.memcpy_dtoh_pieces(src, size, stream))
        result = d.be.memcpy_dtoh(src, size, stream)
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            async def later():
                return _data_reply(await result)
            return later()
        return _data_reply(result)

    def op_MEMCPY_DTOD(self, f):
        dst, src, size, stream, _ = f.values()
        d = self.dev(f)
        d.check(dst, size)
        d.check(src, size)
        d.be.memcpy_dtod(dst, src, size, stream)

    def op_MEMSET(self, f):
        dst, size, value, stream, _elem = f.values()
        d = self.dev(f)
        d.check(dst, size)
        d.be.memset(dst, value & 0xFF, size, stream)

    def _check2d(self, d: DeviceState, ptr: int, pitch: int, width: int, height: int) -> None:
        if width > pitch:
            raise CudaError(E["cudaErrorInvalidPitchValue"])
        d.check(ptr, (height - 1) * pitch + width if height else 0)

    def op_MEMCPY2D_HTOD(self, f):
        dst, dpitch, width, height, stream, _ = f.values()
        data = f.tail if f.tail is not None else b""
        if len(data) != width * height:
            raise ProtocolError("MEMCPY2D_HTOD: tail is not width*height bytes")
        d = self.dev(f)
        self._check2d(d, dst, dpitch, width, height)
        d.be.memcpy2d_htod(dst, dpitch, data, width, height, stream)

    def op_MEMCPY2D_DTOH(self, f):
        src, spitch, width, height, stream, _ = f.values()
        d = self.dev(f)
        self._check2d(d, src, spitch, width, height)
        result = d.be.memcpy2d_dtoh(src, spitch, width, height, stream)
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            async def later():
                return _data_reply(await result)
            return later()
        return _data_reply(result)

    def op_MEMCPY2D_DTOD(self, f):
        dst, dpitch, src, spitch, width, height, stream, _ = f.values()
        d = self.dev(f)
        self._check2d(d, dst, dpitch, width, height)
        self._check2d(d, src, spitch, width, height)
        d.be.memcpy2d_dtod(dst, dpitch, src, spitch, width, height, stream)

    def op_MEMSET2D(self, f):
        dst, pitch, width, height, value, stream = f.values()
        d = self.dev(f)
        self._check2d(d, dst, pitch, width, height)
        d.be.memset2d(dst, pitch, value & 0xFF, width, height, stream)

    def op_POINTER_INFO(self, f):
        (ptr,) = f.values()
        d = self.dev(f)
        hit = d.alloc.find(ptr)
        if hit is None:
            raise CudaError(E["cudaErrorInvalidValue"])
        return {"type": 2, "base": hit[0], "size": hit[1]}

    def op_MEMCPY_PEER(self, f):
        dst, dst_vdev, src_vdev, src, size, stream, _ = f.values()
        sd, dd = self.peer(src_vdev), self.peer(dst_vdev)
        sd.check(src, size)
        dd.check(dst, size)
        sd.be.peer_copy(dst, dd.be, src, size, stream)

    # ------------------------------------------------------------ modules and launches
    def op_MODULE_LOAD(self, f):
        module, nk, nv = f.values()
        tail = bytes(f.tail or b"")
        if len(tail) < 16:
            raise CudaError(E["cudaErrorInvalidKernelImage"], "no fat binary")
        magic, _ver, hsize, size = struct.unpack_from("<IHHQ", tail)
        end = hsize + size
        if magic != 0xBA55ED50 or hsize < 16 or end > len(tail):
            raise CudaError(E["cudaErrorInvalidKernelImage"], "malformed fat binary")
        try:
            names = json.loads(tail[end:])
            kernels = [(int(k), str(n)) for k, n in names["kernels"]]
            variables = [(int(v), str(n), int(s)) for v, n, s in names["vars"]]
        except (ValueError, KeyError, TypeError):
            raise ProtocolError("MODULE_LOAD: malformed name table") from None
        if len(kernels) != nk or len(variables) != nv:
            raise ProtocolError("MODULE_LOAD: name counts disagree")
        d = self.dev(f)
        kinfo, vinfo = d.be.module_load(module, tail[:end], [n for _, n in kernels],
                                        [n for _, n, _ in variables])
        for (kid, kname), info in zip(kernels, kinfo):
            if info is not None:
                d.be.set_kernel(kid, info)
                d.kernels.add(kid)
                d.kernel_names[kid] = kname
        vout = []
        for (_vid, _name, size), info in zip(variables, vinfo):
            if info is None:
                vout.append(None)
                continue
            if "addr" not in info:  # the backend keeps globals in window memory
                info["addr"] = d.alloc.alloc(max(info["size"], size, 1))
            d.add_symbol(info["addr"], info["size"])
            vout.append({"addr": info["addr"], "size": info["size"]})
        kout = [None if i is None else {k: i[k] for k in ("params", "param_size", "max_threads",
                                                          "max_dyn_smem")}
                for i in kinfo]
        return {}, json.dumps({"kernels": kout, "vars": vout}).encode()

    def _kernel(self, d: DeviceState, kid: int) -> int:
        if kid not in d.kernels:
            raise CudaError(E["cudaErrorInvalidDeviceFunction"])
        return kid

    def op_FUNC_ATTRS(self, f):
        (kid,) = f.values()
        d = self.dev(f)
        return {}, json.dumps(d.be.func_attrs(self._kernel(d, kid))).encode()

    def op_FUNC_SET_ATTR(self, f):
        kid, attr, value = f.values()
        d = self.dev(f)
        d.be.func_set_attr(self._kernel(d, kid), attr, value)

    def op_OCCUPANCY(self, f):
        kid, block, shmem, flags = f.values()
        d = self.dev(f)
        return {"blocks": d.be.occupancy(self._kernel(d, kid), block, shmem, flags)}

    def op_OCCUPANCY_CLUSTERS(self, f):
        v = f.values()
        kid, nattrs, what = v[0], v[8], v[9]
        tail = bytes(f.tail or b"")
        if len(tail) != msg.LAUNCH_ATTR_SIZE * nattrs or what not in (
                msg.OCCUPANCY_CLUSTERS_MAX_ACTIVE, msg.OCCUPANCY_CLUSTERS_MAX_SIZE):
            raise ProtocolError("OCCUPANCY_CLUSTERS: malformed")
        d = self.dev(f)
        return {"value": d.be.occupancy_clusters(self._kernel(d, kid), v[1:4], v[4:7], v[7],
                                                 tail, what)}

    def op_OCCUPANCY_SMEM(self, f):
        kid, blocks, block = f.values()
        d = self.dev(f)
        return {"bytes": d.be.occupancy_smem(self._kernel(d, kid), blocks, block)}

    def op_LAUNCH(self, f):
        self._may_print = True
        v = f.values()
        kid, stream = v[0], v[1]
        d = self.dev(f)
        d.be.launch(self._kernel(d, kid), stream, v[2:5], v[5:8], v[8], f.tail or b"", v[9])
        d.be.launched(kid)

    def op_LAUNCH_EX(self, f):
        self._may_print = True
        v = f.values()
        kid, stream, nattrs = v[0], v[1], v[9]
        tail = bytes(f.tail or b"")
        n = nattrs * msg.LAUNCH_ATTR_SIZE
        if n > len(tail):
            raise ProtocolError("LAUNCH_EX: attributes past the end")
        d = self.dev(f)
        d.be.launch_ex(self._kernel(d, kid), stream, v[2:5], v[5:8], v[8], tail[:n], tail[n:])
        d.be.launched(kid)

    def op_FUNC_MAX_CLUSTER(self, f):
        raise CudaError(E["cudaErrorNotSupported"])

    # ------------------------------------------------------------ streams and events
    def op_STREAM_CREATE(self, f):
        sid, flags, prio = f.values()
        self.dev(f).be.stream_create(sid, flags, prio)

    def op_STREAM_DESTROY(self, f):
        self.dev(f).be.stream_destroy(f.values()[0])

    def op_STREAM_SYNC(self, f):
        return self.dev(f).be.stream_sync(f.values()[0])

    def op_STREAM_QUERY(self, f):
        if not self.dev(f).be.stream_query(f.values()[0]):
            raise CudaError(E["cudaErrorNotReady"])

    def op_STREAM_WAIT_EVENT(self, f):
        sid, eid, flags = f.values()
        d = self.dev(f)
        peer = self.peer(f.aux) if f.aux != f.vdev else d
        d.be.stream_wait_event(sid, peer.be, eid, flags)

    def op_STREAM_SET_ATTR(self, f):
        sid, attr = f.values()
        self.dev(f).be.stream_set_attr(sid, attr, bytes(f.tail or b""))

    def op_EVENT_CREATE(self, f):
        eid, flags = f.values()
        self.dev(f).be.event_create(eid, flags)

    def op_EVENT_DESTROY(self, f):
        self.dev(f).be.event_destroy(f.values()[0])

    def op_EVENT_RECORD(self, f):
        eid, sid, flags = f.values()
        self.dev(f).be.event_record(eid, sid, flags)

    def op_EVENT_SYNC(self, f):
        return self.dev(f).be.event_sync(f.values()[0])

    def op_EVENT_QUERY(self, f):
        if not self.dev(f).be.event_query(f.values()[0]):
            raise CudaError(E["cudaErrorNotReady"])

    def op_EVENT_ELAPSED(self, f):
        a, b = f.values()
        return {"ms": self.dev(f).be.event_elapsed(a, b)}

    def op_HOST_FUNC(self, f):
        sid, cb = f.values()
        vdev = f.vdev
        if cb in self.callbacks:
            raise CudaError(E["cudaErrorInvalidValue"], "callback id reused")

        def reached():
            self._deliver_d2h()  # copies before the callback in its stream are complete
            self._write(encode(_NOTIFY["CALLBACK"], {"callback": cb}, vdev=vdev))
        persistent = f.aux == 1  # captured into a graph: it runs at every replay
        self.callbacks[cb] = (self.dev(f).be.host_func(sid, reached, persistent), persistent)

    def op_CALLBACK_DONE(self, f):
        (cb,) = f.values()
        done, persistent = self.callbacks.get(cb, (None, False))
        if done is None:
            raise CudaError(E["cudaErrorInvalidValue"], "unknown callback")
        if not persistent:
            del self.callbacks[cb]
        done()

    def op_CAPTURE_HTOD(self, f):
        dst, size, sid, node = f.values()
        d, vdev = self.dev(f), f.vdev
        d.check(dst, size)

        def fetch():
            self._deliver_d2h()
            self._write(encode(_NOTIFY["FETCH"], {"node": node}, vdev=vdev))
        d.be.capture_htod(dst, size, sid, node, fetch)

    def op_CAPTURE_DTOH(self, f):
        src, size, sid, node = f.values()
        d, vdev = self.dev(f), f.vdev
        d.check(src, size)

        def push(view) -> None:
            for off in range(0, len(view), _DATA_CHUNK):
                part = view[off:off + _DATA_CHUNK]
                last = off + _DATA_CHUNK >= len(view)
                self._write(encode(_NOTIFY["PUSH"], {"node": node, "last": int(last),
                                                     "offset": off}, part, vdev=vdev))
        d.be.capture_dtoh(src, size, sid, node, push)

    def op_HOST_DATA(self, f):
        node, _, offset = f.values()
        self.dev(f).be.host_data(node, offset, f.tail or b"")

    def op_PUSH_DONE(self, f):
        self.dev(f).be.push_done(f.values()[0])

    # ------------------------------------------------------------ graphs
    def op_CAPTURE_BEGIN(self, f):
        sid, mode = f.values()
        self.dev(f).be.capture_begin(sid, mode)

    def op_CAPTURE_END(self, f):
        sid, gid = f.values()
        self.dev(f).be.capture_end(sid, gid)

    def op_CAPTURE_STATUS(self, f):
        return {"status": self.dev(f).be.capture_status(f.values()[0])}

    def op_GRAPH_INSTANTIATE(self, f):
        gid, xid, flags = f.values()
        self.dev(f).be.graph_instantiate(gid, xid, flags)

    def op_GRAPH_LAUNCH(self, f):
        self._may_print = True
        xid, sid = f.values()
        self.dev(f).be.graph_launch(xid, sid)

    def op_GRAPH_UPLOAD(self, f):
        # Uploading ahead is an optimization the first launch performs anyway.
        xid, _sid = f.values()
        self.dev(f).be.graph_check(xid)

    def op_GRAPH_DESTROY(self, f):
        self.dev(f).be.graph_destroy(f.values()[0])

    def op_GRAPH_EXEC_DESTROY(self, f):
        self.dev(f).be.graph_exec_destroy(f.values()[0])


def _data_reply(data) -> tuple | Bulk:
    """A device-to-host result: inline in the REPLY when small, else as DATA frames."""
    if len(data) <= _INLINE_REPLY:
        return {}, data
    return Bulk([data])


class Bulk:
    """A reply whose tail is large: sent as DATA frames, then the REPLY."""

    def __init__(self, pieces: list, values: dict | None = None) -> None:
        self.pieces = pieces
        self.values = values

