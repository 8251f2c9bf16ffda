"""The session's transport and dispatch: frames in, handlers called, answers out.

Frames are executed in the order they arrive, which is the client's program order per host
thread; a request that must wait for the GPU (a synchronization, a device-to-host copy behind
running work) is awaited in a task while later frames keep executing, so one stream's wait
never stalls another stream or another host thread of the client.

Every answer leaves in an order the client can rely on: device printf output that a
synchronization flushed, then the deferred copies it covers, then a FAULT notice if the device
just became unusable, then the reply itself. An error of an async frame is sent as
ASYNC_ERROR and surfaces at the client's next call; a malformed frame ends the session, never
the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

from farcuda.wire import (
    BY_NAME,
    HEADER,
    Frame,
    FrameReader,
    ProtocolError,
    compress,
    encode,
    encode_reply,
    encode_value,
)
from farcuda.wire import messages as msg

from ..backends.base import Backend
from ..errors import CudaError, E
from ..faults import STICKY, demangle, describe
from ..modcache import ModuleCache
from .busy import BusyClock, BusyTime
from .d2h import DeferredCopies
from .device import DeviceState, Refusal
from .fast import CPath
from .frees import StreamOrderedFrees
from .heartbeat import Heartbeat
from .modules import ModuleImages
from .quota import Quota
from .table import DEFERRED, HANDLERS, Bulk

__all__ = ["Session"]

log = logging.getLogger("farcudad.session")

_DATA = BY_NAME["DATA"].op
_DATA_Z = BY_NAME["DATA_Z"].op
_HTOD_OP = BY_NAME["MEMCPY_HTOD"].op
_DEVICE_OPEN_OP = BY_NAME["DEVICE_OPEN"].op
_MODULE_IMAGE_OP = BY_NAME["MODULE_IMAGE"].op  # its failures say why, too
_SINK_MIN = 64 << 10  # payloads from this size on are received straight into staging memory
# Requests whose success shows that the device's work up to them ran without a fault (see
# daemon/faults.py: what a later fault may be blamed on).
_SYNCS = frozenset(BY_NAME[n].op for n in ("DEVICE_SYNC", "STREAM_SYNC", "EVENT_SYNC",
                                           "MEMCPY_DTOH", "MEMCPY2D_DTOH"))
# Requests that may wait on the front, not on the GPU: not busy time.
_NOT_GPU_WAITS = frozenset(BY_NAME[n].op for n in ("MALLOC", "MALLOC_PITCH", "MALLOC_ASYNC",
                                                   "DEVICE_OPEN", "MEM_GET_INFO", "STATUS"))


class Session(asyncio.BufferedProtocol):
    def __init__(self, backend: Backend, *, session_id: int = 0, identity: dict | None = None,
                 heartbeat_ms: int = 1000, client_timeout: float = 60.0,
                 quota_bytes: int | None = None, on_close: Callable[[], None] | None = None,
                 drain_output: Callable[[], bytes] | None = None, front=None,
                 output_fd: int = -1, module_cache: ModuleCache | None = None) -> None:
        self.backend = backend
        self.session_id = session_id
        self.identity = identity or {}
        self.on_close = on_close
        self.drain_output = drain_output
        # The worker's link to the front (daemon/worker.py FrontLink) when limits or energy
        # are kept there: .quota (bytes per tenant or None), .gpu_limit, .energy (bools).
        self.front = front
        self.devices: dict[int, DeviceState] = {}
        self.callbacks: dict[int, tuple[Callable[[], None], bool]] = {}
        self.counts: Counter[str] = Counter()
        self.errors: Counter[int] = Counter()  # CUDA status -> requests answered with it
        # requests that carry a reply (a request id), and of them those no caller waits for
        # (deferred device-to-host copies): the client's round trips, as the daemon sees them
        self.round_trips = 0
        self.async_round_trips = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.started = time.time()
        self.energy_j: float | None = None  # attributed by the front; None: unavailable
        self.busy = BusyTime()
        self.quota = Quota(self, quota_bytes)
        self.frees = StreamOrderedFrees(self)
        self.d2h = DeferredCopies(self)
        self.images = ModuleImages(module_cache)
        self.heartbeat = Heartbeat(self, heartbeat_ms, client_timeout)
        self.fast = CPath(self, backend.fastpath) if backend.fastpath is not None else None
        self.reader = FrameReader("c2s", sink=self._sink,
                                  fast=self.fast.run if self.fast is not None else None)
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_event_loop().create_future()
        self._output_fd = output_fd  # the pipe device printf output arrives in (-1: none)
        self._may_print = False  # a kernel has run: device printf output may be waiting
        self._sock_fd = -1
        self._sunk: tuple[DeviceState, int] | None = None  # the staging slot of a payload
        self._last_rx = self._last_tx = time.monotonic()
        self._writable: asyncio.Future | None = None
        self._tasks: set[asyncio.Task] = set()

    # the pieces' state under the names the tests look at
    @property
    def _freeing(self) -> list:
        return self.frees.pending

    @property
    def _reaper(self) -> asyncio.Future | None:
        return self.frees.reaper

    def _tick(self) -> None:
        self.heartbeat.tick()

    # ------------------------------------------------------------ transport
    def connection_made(self, transport) -> None:
        self.transport = transport
        info = getattr(transport, "get_extra_info", None)  # (test transports may not have it)
        sock = info("socket") if info is not None else None
        self._sock_fd = sock.fileno() if sock is not None else -1
        self.heartbeat.start()

    def connection_lost(self, exc) -> None:
        self.transport = None
        self.heartbeat.stop()
        for t in list(self._tasks):
            t.cancel()
        self.frees.cancel()
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
                self._write(encode_value(msg.GOODBYE(E["cudaErrorUnknown"]),
                                         why.encode()[:400]))
            finally:
                self.transport.abort()

    def goodbye(self, why: str) -> None:
        """End the session in order (daemon shutdown): tell the client why, then close."""
        if self.transport is not None:
            self._write(encode_value(msg.GOODBYE(E["cudaErrorDevicesUnavailable"]),
                                     why.encode()[:400]))
            self.transport.close()

    def _sink(self, header: tuple, fixed: bytes, tail_len: int) -> memoryview | None:
        """Large host-to-device payloads are received straight into pinned staging memory
        (when the backend lends it); MEMCPY_HTOD finds the slot in ``_sunk``."""
        if header[1] != _HTOD_OP or tail_len < _SINK_MIN:
            return None
        d = self.devices.get(header[4])
        if d is None:
            return None
        taken = d.be.staging_take(tail_len)
        if taken is None:
            return None
        slot, view = taken
        self._sunk = (d, slot)
        return view

    # ------------------------------------------------------------ dispatch
    def _clock(self, vdev: int) -> BusyClock | None:
        d = self.devices.get(vdev)
        if d is None:
            return None
        if d.clock is None:  # one clock per physical GPU, shared by its virtual devices
            d.clock = self.busy.clock(d.params["gpu"])
        return d.clock

    def dispatch(self, f: Frame) -> None:
        self.counts[f.msg.name] += 1
        if f.rid:
            self.round_trips += 1
        entry = HANDLERS.get(f.op)
        t0 = time.perf_counter_ns()
        clock = None
        try:
            if entry is None:
                raise ProtocolError(f"{f.msg.name} is not a request")
            decode, fn = entry
            result = fn(self, f, decode(f.fixed, f.aux))
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
            self.busy.ns += dt
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
        elif f.rid and result is not DEFERRED:
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

    # ------------------------------------------------------------ answers
    def _flush_output(self) -> None:
        # no kernel ran in this session yet: no device printf output can be waiting
        if self.drain_output is not None and self._may_print:
            out = self.drain_output()
            if out:
                self._write(encode(BY_NAME["STDOUT"], None, out))

    def _answer(self, f: Frame, result: Any) -> None:
        self._flush_output()
        self.d2h.deliver()
        if f.op in _SYNCS:
            self._synced(f.vdev)
        if isinstance(result, Bulk):
            task = asyncio.ensure_future(self._send_bulk(f, result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        values, tail = result if type(result) is tuple else (result, b"")
        self._write(encode_reply(f.rid, 0, f.msg, values, tail or b"", f.vdev))

    def _failed(self, f: Frame, status: int, exc: CudaError | None = None) -> None:
        self.errors[status] += 1
        self._flush_output()
        self.d2h.deliver()
        self._fault(f.vdev, status)
        if f.rid:
            # A DEVICE_OPEN refused by policy, and a module that failed to load, say why (the
            # client asks for those with a bulk reply, so a tail is welcome there only).
            why = (str(exc).encode()[:400]
                   if (isinstance(exc, Refusal) and f.op == _DEVICE_OPEN_OP)
                   or (exc is not None and f.op == _MODULE_IMAGE_OP) else b"")
            self._write(encode_reply(f.rid, status, None, None, why, f.vdev))
        else:
            self._write(encode_value(msg.ASYNC_ERROR(status, f.op), vdev=f.vdev))

    def _data(self, f: Frame, off: int, view: Any, z: bool) -> None:
        """One piece of a bulk result: compressed (DATA_Z) when asked for and worth it."""
        if z and compress.worth(view):
            packed = compress.compress(view)
            if packed is not None:
                self._write(HEADER.pack(16 + len(packed), _DATA_Z, 0, f.rid, f.vdev, 0)
                            + struct.pack("<QQ", off, len(view)))
                self._write(packed)
                return
        self._write(HEADER.pack(8 + len(view), _DATA, 0, f.rid, f.vdev, 0)
                    + struct.pack("<Q", off))
        self._write(view)

    async def _send_bulk(self, f: Frame, bulk: Bulk) -> None:
        """A large result: DATA frames of at most PIECE bytes, then the REPLY."""
        off = 0
        try:
            pieces = bulk.pieces
            if hasattr(pieces, "__aiter__"):  # (view, release) pairs of staging memory
                async for view, release in pieces:
                    self._data(f, off, view, bulk.z)
                    off += len(view)
                    if self.transport is not None and self.transport.get_write_buffer_size():
                        await self._drain_all()
                    release()
            else:
                for piece in pieces:
                    view = memoryview(piece)
                    for start in range(0, len(view), msg.PIECE):
                        part = view[start:start + msg.PIECE]
                        self._data(f, off, part, bulk.z)
                        off += len(part)
                        await self._drain()
        except CudaError as exc:
            self._failed(f, exc.status)
            return
        self._flush_output()
        self.d2h.deliver()
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
        if first is None:  # nothing of its own since it was fine: a device of its context?
            culprit = self._shared_culprit(vdev, d, status) or culprit
        d.dead = {"status": status, "error": error, "culprit": culprit, "at": time.time()}
        log.warning("session %d: device %d: %s failed with %s; its context is unusable",
                    self.session_id, vdev, culprit, error)
        self._write(encode_value(msg.FAULT(status, first[0] if first else 0,
                                           last[0] if last else 0),
                                 culprit.encode()[:400], vdev=vdev))

    def _shared_culprit(self, vdev: int, d: DeviceState, status: int) -> str | None:
        """The session's devices of one GPU without an SM budget share its context (both
        backends route them so), and a sticky error of one is every one's: the culprit
        another of them reported, or launched since it was last fine."""
        def shares(o: DeviceState) -> bool:
            return (o.params["gpu"] == d.params["gpu"] and not o.params["sm_budget"]
                    and not d.params["sm_budget"])
        for v, o in sorted(self.devices.items()):
            if v == vdev or not shares(o):
                continue
            if o.dead is not None:
                return f"{o.dead['culprit']} on device {v}, which shares this device's context"
            first, last = o.be.launch_window()
            if first is not None:
                def name(kid: int, o: DeviceState = o) -> str:
                    return demangle(o.kernel_names.get(kid, f"#{kid}"))
                what, _ = describe(status, (first[0], name(first[1])),
                                   last and (last[0], name(last[1])))
                return f"{what} on device {v}, which shares this device's context"
        return None

    # ------------------------------------------------------------ devices of the session
    def dev(self, f: Frame) -> DeviceState:
        """The frame's virtual device."""
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
        self.d2h.close_all()
        self.quota.return_charges(None)
        self.frees.pending.clear()
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
        return self.busy.by_gpu()

    def status(self) -> dict:
        self.frees.reap()
        return {"session": self.session_id, "identity": self.identity,
                "devices": {str(v): {"gpu": d.params["gpu"], "sm_budget": d.params["sm_budget"],
                                     "memory_held": d.memory_held(),
                                     **({"dead": d.dead} if d.dead else {})}
                            for v, d in self.devices.items()},
                "memory_held": self.memory_held(), "calls": sum(self.counts.values()),
                "round_trips": self.round_trips,
                "sync_round_trips": self.round_trips - self.async_round_trips,
                "counts": dict(self.counts), "errors": dict(self.errors),
                "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out, "since": self.started,
                "busy_s": self.busy.ns / 1e9, "busy_s_by_gpu": self.busy.by_gpu(),
                "energy_j": self.energy_j}
