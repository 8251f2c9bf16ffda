"""The daemon's side of stream-ordered allocation, on an in-process session (no sockets).

MALLOC_ASYNC answers what an allocation uses and what is mapped for it; FREE_ASYNC frees at
once when its stream is idle, else when the stream gets there (memory stays held and usable
meanwhile), in the order of another device's stream when told so, and never twice; a pending
free gives way to a device reset; an allocation over the quota waits for pending frees.
"""

from __future__ import annotations

import asyncio
import struct

import pytest
from farcuda.daemon.backends.memory import MemoryBackend
from farcuda.daemon.errors import E
from farcuda.daemon.session import Session
from farcuda.wire import BY_NAME, FrameReader, encode_header, pack_fixed

MiB = 1 << 20
WINDOW = 0x200000000000


class Transport:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.out = bytearray()
        self.closing = False

    def write(self, data) -> None:
        self.out += data

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.session.connection_lost, None)

    abort = close

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        pass

    def get_extra_info(self, name, default=None):
        return default


class Client:
    """Frames in, replies and notices out, as the shim would see them."""

    def __init__(self, gpus: int = 1, quota: int | None = None) -> None:
        self.backend = MemoryBackend(gpus=gpus, capacity=1 << 30)
        self.s = Session(self.backend, heartbeat_ms=3_600_000, client_timeout=3600.0,
                         quota_bytes=quota)
        self.tr = Transport(self.s)
        self.s.connection_made(self.tr)
        self.reader = FrameReader("s2c")
        self.seen = 0
        self.rid = 0
        self.replies: dict[int, tuple[int, dict]] = {}
        self.pending: dict[int, str] = {}  # request id -> message name
        self.async_errors: list[int] = []
        self.callbacks: list[int] = []

    def send(self, name: str, vdev: int = 0, aux: int = 0, sync: bool = False, **values) -> int:
        msg = BY_NAME[name]
        fixed = pack_fixed(msg, values)
        rid = 0
        if sync:
            self.rid += 1
            rid = self.rid
            self.pending[rid] = name
        data = encode_header(msg.op, len(fixed), rid, vdev, 0, aux) + fixed
        buf = self.s.get_buffer(len(data))
        buf[:len(data)] = data
        self.s.buffer_updated(len(data))
        return rid

    async def settle(self) -> None:
        for _ in range(20):
            await asyncio.sleep(0)
        for f in self.reader.feed(bytes(self.tr.out[self.seen:])):
            if f.msg.name == "REPLY":
                status, flen = struct.unpack_from("<II", f.fixed)
                values = {}
                if flen and status == 0:  # the reply's fixed fields lead the tail
                    req = BY_NAME[self.pending[f.rid]]
                    values = dict(zip(req.reply_names,
                                      struct.unpack_from(req.reply_fmt, bytes(f.tail or b"")),
                                      strict=True))
                self.replies[f.rid] = (status, values)
            elif f.msg.name == "ASYNC_ERROR":
                self.async_errors.append(f.values()[0])
            elif f.msg.name == "CALLBACK":
                self.callbacks.append(f.values()[0])
        self.seen = len(self.tr.out)

    async def call(self, name: str, vdev: int = 0, **values) -> tuple[int, dict]:
        rid = self.send(name, vdev, sync=True, **values)
        for _ in range(100):
            await self.settle()
            if rid in self.replies:
                return self.replies.pop(rid)
        raise AssertionError(f"no reply to {name}")

    async def open(self, vdev: int = 0, gpu: int = 0) -> None:
        status, _ = await self.call("DEVICE_OPEN", vdev, gpu=gpu, sm_budget=0, flags=0,
                                    window_base=WINDOW + (vdev << 38), window_size=1 << 34)
        assert status == 0

    async def malloc_async(self, size: int, vdev: int = 0) -> dict:
        status, rep = await self.call("MALLOC_ASYNC", vdev, size=size, stream=0)
        assert status == 0, status
        return rep

    def held(self) -> int:
        return self.s.memory_held()


def run(coro):
    return asyncio.run(coro)


def test_sizes_in_the_reply():
    async def main():
        c = Client()
        await c.open()
        big = await c.malloc_async(3 * MiB)
        small = await c.malloc_async(1000)
        zero = await c.malloc_async(0)
        assert (big["used"], big["reserved"]) == (3 * MiB, 4 * MiB)  # a 2 MiB granule
        assert (small["used"], small["reserved"]) == (1024, 1024)
        assert zero == {"ptr": 0, "used": 0, "reserved": 0}
        assert c.held() == 3 * MiB + 1024
    run(main())


def test_free_waits_for_its_stream():
    async def main():
        c = Client()
        await c.open()
        p = (await c.malloc_async(4 * MiB))["ptr"]
        q = (await c.malloc_async(4 * MiB))["ptr"]
        c.send("STREAM_CREATE", stream=1, flags=0, priority=0)
        c.send("HOST_FUNC", stream=1, callback=7)  # holds stream 1 until CALLBACK_DONE
        c.send("MEMCPY_DTOD", dst=q, src=p, size=4 * MiB, stream=1, flags=0)
        c.send("FREE_ASYNC", ptr=p, stream=1)
        await c.settle()
        assert c.callbacks == [7]
        assert c.held() == 8 * MiB  # pending: still the client's
        assert (await c.call("FREE", ptr=p))[0] == E["cudaErrorInvalidValue"]  # being freed
        c.send("FREE_ASYNC", ptr=p, stream=0)  # twice
        await c.settle()
        assert c.async_errors == [E["cudaErrorInvalidValue"]]
        assert c.s._reaper is not None
        c.send("CALLBACK_DONE", callback=7)
        assert (await c.call("STREAM_SYNC", stream=1))[0] == 0  # the copy did not fault
        await c.settle()
        assert c.held() == 4 * MiB and c.s._reaper is None
        c.send("FREE_ASYNC", ptr=q, stream=1)  # an idle stream: at once
        assert c.held() == 0
    run(main())


def test_free_in_the_order_of_another_devices_stream():
    async def main():
        c = Client(gpus=2)
        await c.open(0, 0)
        await c.open(1, 1)
        p = (await c.malloc_async(2 * MiB, vdev=1))["ptr"]
        c.send("STREAM_CREATE", vdev=0, stream=1, flags=0, priority=0)
        c.send("HOST_FUNC", vdev=0, stream=1, callback=3)
        c.send("FREE_ASYNC", vdev=0, aux=1, ptr=p, stream=1)
        await c.settle()
        assert c.async_errors == [] and c.held() == 2 * MiB
        c.send("CALLBACK_DONE", vdev=0, callback=3)
        await c.settle()
        assert c.held() == 0
        c.send("FREE_ASYNC", vdev=0, aux=0, ptr=p, stream=0)  # not device 0's memory
        await c.settle()
        assert c.async_errors == [E["cudaErrorInvalidValue"]]
    run(main())


@pytest.mark.parametrize("reset", ["memory", "stream"])
def test_reset_while_a_free_is_pending(reset):
    async def main():
        c = Client(gpus=2)
        await c.open(0, 0)
        await c.open(1, 1)
        p = (await c.malloc_async(2 * MiB, vdev=1))["ptr"]
        c.send("STREAM_CREATE", vdev=0, stream=1, flags=0, priority=0)
        c.send("HOST_FUNC", vdev=0, stream=1, callback=3)
        c.send("FREE_ASYNC", vdev=0, aux=1, ptr=p, stream=1)
        await c.settle()
        assert c.held() == 2 * MiB
        status, _ = await c.call("DEVICE_RESET", vdev=1 if reset == "memory" else 0)
        assert status == 0
        await c.settle()
        assert c.held() == 0 and c.s._freeing == [] and c.async_errors == []
    run(main())


def test_allocation_over_the_quota_waits_for_pending_frees():
    async def main():
        c = Client(quota=48 * MiB)
        await c.open()
        p = (await c.malloc_async(40 * MiB))["ptr"]
        c.send("STREAM_CREATE", stream=1, flags=0, priority=0)
        c.send("HOST_FUNC", stream=1, callback=5)
        c.send("FREE_ASYNC", ptr=p, stream=1)
        rid = c.send("MALLOC_ASYNC", sync=True, size=44 * MiB, stream=1)
        await c.settle()
        assert rid not in c.replies  # waiting for the free
        c.send("CALLBACK_DONE", callback=5)
        await c.settle()
        await c.settle()
        status, rep = c.replies.pop(rid)
        assert status == 0 and rep["used"] == 44 * MiB and c.held() == 44 * MiB
        # with nothing pending, over the quota is refused at once
        status, _ = await c.call("MALLOC_ASYNC", size=40 * MiB, stream=0)
        assert status == E["cudaErrorMemoryAllocation"]
    run(main())


def test_free_in_a_capturing_stream_is_refused():
    async def main():
        c = Client()
        await c.open()
        p = (await c.malloc_async(MiB))["ptr"]
        c.send("STREAM_CREATE", stream=1, flags=0, priority=0)
        assert (await c.call("CAPTURE_BEGIN", stream=1, mode=0))[0] == 0
        c.send("FREE_ASYNC", ptr=p, stream=1)
        await c.settle()
        assert c.async_errors == [E["cudaErrorStreamCaptureUnsupported"]]
        assert c.held() == MiB
    run(main())


def test_session_end_frees_pending_frees():
    async def main():
        c = Client()
        await c.open()
        p = (await c.malloc_async(8 * MiB))["ptr"]
        c.send("STREAM_CREATE", stream=1, flags=0, priority=0)
        c.send("HOST_FUNC", stream=1, callback=1)
        c.send("FREE_ASYNC", ptr=p, stream=1)
        await c.settle()
        assert c.held() == 8 * MiB and c.backend.total_mapped == 8 * MiB
        c.tr.close()
        await c.settle()
        assert c.s.closed.done() and c.backend.total_mapped == 0 and c.s._freeing == []
    run(main())


def test_same_size_in_the_same_stream_takes_over_a_pending_free():
    async def main():
        c = Client()
        await c.open()
        p = (await c.malloc_async(3 * MiB))["ptr"]
        small = (await c.malloc_async(1000))["ptr"]
        c.send("STREAM_CREATE", stream=1, flags=0, priority=0)
        c.send("STREAM_CREATE", stream=2, flags=0, priority=0)
        c.send("HOST_FUNC", stream=1, callback=1)
        c.send("FREE_ASYNC", ptr=p, stream=1)
        c.send("FREE_ASYNC", ptr=small, stream=1)
        await c.settle()
        mapped = c.backend.total_mapped
        other = await c.call("MALLOC_ASYNC", size=3 * MiB, stream=2)  # another stream: new
        assert other[0] == 0 and other[1]["ptr"] != p
        status, rep = await c.call("MALLOC_ASYNC", size=3 * MiB, stream=1)
        assert status == 0 and rep == {"ptr": p, "used": 3 * MiB, "reserved": 4 * MiB}
        status, rep = await c.call("MALLOC_ASYNC", size=1001, stream=1)  # rounds alike
        assert status == 0 and rep["ptr"] == small
        assert c.backend.total_mapped == mapped + 4 * MiB and len(c.s._freeing) == 0
        c.send("CALLBACK_DONE", callback=1)
        assert (await c.call("STREAM_SYNC", stream=1))[0] == 0
        assert c.held() == 2 * 3 * MiB + 1024  # nothing freed under the new owners
    run(main())


def test_reaper_goes_on_after_a_reset():
    """It was waiting for a stream of the device that was reset: the free pending on another
    device still happens as soon as its stream gets there, with no further call."""
    async def main():
        c = Client(gpus=2)
        await c.open(0, 0)
        await c.open(1, 1)
        p1 = (await c.malloc_async(2 * MiB, vdev=1))["ptr"]
        p0 = (await c.malloc_async(2 * MiB, vdev=0))["ptr"]
        c.send("STREAM_CREATE", vdev=1, stream=1, flags=0, priority=0)
        c.send("HOST_FUNC", vdev=1, stream=1, callback=1)
        c.send("FREE_ASYNC", vdev=1, aux=1, ptr=p1, stream=1)  # the one the reaper waits for
        c.send("STREAM_CREATE", vdev=0, stream=2, flags=0, priority=0)
        c.send("HOST_FUNC", vdev=0, stream=2, callback=2)
        c.send("FREE_ASYNC", vdev=0, aux=0, ptr=p0, stream=2)
        await c.settle()
        assert c.held() == 4 * MiB and len(c.s._freeing) == 2
        assert (await c.call("DEVICE_RESET", vdev=1))[0] == 0
        assert c.held() == 2 * MiB and len(c.s._freeing) == 1
        c.send("CALLBACK_DONE", vdev=0, callback=2)
        await c.settle()
        assert c.held() == 0 and c.s._freeing == [] and c.s._reaper is None
    run(main())
