"""Virtual devices of one session on one GPU share its context (in-process, in-memory backend).

The CUDA backend puts every virtual device of a session that maps to one physical GPU without
an SM budget into one context, so that their work overlaps; the in-memory backend routes them
the same way. Whatever CUDA promises per device must still hold per virtual device: its
streams, events and memory are its own, cudaDeviceSynchronize waits for its work only,
cudaDeviceReset resets it only, and memory is accounted to it. A sticky fault breaks the
context for all the devices in it; a reset device gets a new one.
"""

from __future__ import annotations

import asyncio
import struct

from farcuda.daemon.backends.memory import MemoryBackend
from farcuda.daemon.errors import CudaError, E
from farcuda.daemon.session import Session
from farcuda.wire import BY_NAME, FrameReader, encode_header, pack_fixed

MiB = 1 << 20
WINDOW = 0x200000000000


class Transport:
    def __init__(self) -> None:
        self.out = bytearray()

    def write(self, data) -> None:
        self.out += data

    def close(self) -> None:
        pass

    abort = close

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        pass

    def get_extra_info(self, name, default=None):
        return default


class Client:
    """Frames in, replies and callbacks out, as the shim would see them."""

    def __init__(self, gpus: int = 2) -> None:
        self.backend = MemoryBackend(gpus=gpus, capacity=1 << 30)
        self.s = Session(self.backend, heartbeat_ms=3_600_000, client_timeout=3600.0)
        self.tr = Transport()
        self.s.connection_made(self.tr)
        self.reader = FrameReader("s2c")
        self.seen = 0
        self.rid = 0
        self.replies: dict[int, tuple[int, dict]] = {}
        self.pending: dict[int, str] = {}
        self.callbacks: list[int] = []

    def send(self, name: str, vdev: int = 0, sync: bool = False, **values) -> int:
        msg = BY_NAME[name]
        fixed = pack_fixed(msg, values)
        rid = 0
        if sync:
            self.rid += 1
            rid = self.rid
            self.pending[rid] = name
        data = encode_header(msg.op, len(fixed), rid, vdev, 0, 0) + fixed
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
                if flen and status == 0:
                    req = BY_NAME[self.pending[f.rid]]
                    values = dict(zip(req.reply_names,
                                      struct.unpack_from(req.reply_fmt, bytes(f.tail or b"")),
                                      strict=True))
                self.replies[f.rid] = (status, values)
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

    async def open(self, vdev: int, gpu: int = 0, sm_budget: int = 0) -> None:
        status, _ = await self.call("DEVICE_OPEN", vdev, gpu=gpu, sm_budget=sm_budget, flags=0,
                                    window_base=WINDOW + (vdev << 38), window_size=1 << 34)
        assert status == 0

    def context(self, vdev: int):
        return self.s.devices[vdev].be.context  # type: ignore[attr-defined]

    def held(self, vdev: int) -> int:
        return self.s.status()["devices"][str(vdev)]["memory_held"]


def run(coro):
    return asyncio.run(coro)


def test_devices_on_one_gpu_share_a_context_and_budgeted_ones_do_not():
    async def main():
        c = Client(gpus=2)
        for vdev, gpu, budget in [(0, 0, 0), (1, 0, 0), (2, 0, 0), (3, 0, 8), (4, 1, 0)]:
            await c.open(vdev, gpu, budget)
        assert c.context(0) is c.context(1) is c.context(2)
        assert c.context(0).shared and not c.context(3).shared
        assert len({id(c.context(v)) for v in (0, 3, 4)}) == 3
        assert c.backend.contexts_made == 3
        assert c.context(0).devices == {c.s.devices[v].be for v in (0, 1, 2)}
    run(main())


def test_streams_and_events_are_each_devices_own():
    async def main():
        c = Client()
        await c.open(0)
        await c.open(1)
        c.send("STREAM_CREATE", vdev=0, stream=1, flags=0, priority=0)
        c.send("EVENT_CREATE", vdev=0, event=1, flags=0)
        await c.settle()
        # device 1 has neither (the client's ids are per device)
        assert (await c.call("STREAM_SYNC", vdev=1, stream=1))[0] == \
            E["cudaErrorInvalidResourceHandle"]
        assert (await c.call("EVENT_SYNC", vdev=1, event=1))[0] == \
            E["cudaErrorInvalidResourceHandle"]
        c.send("STREAM_CREATE", vdev=1, stream=1, flags=1, priority=0)  # the same id, its own
        await c.settle()
        assert (await c.call("STREAM_SYNC", vdev=1, stream=1))[0] == 0
        assert (await c.call("STREAM_SYNC", vdev=0, stream=1))[0] == 0
    run(main())


def test_device_synchronize_waits_for_that_devices_work_only():
    async def main():
        c = Client()
        await c.open(0)
        await c.open(1)
        for vdev in (0, 1):
            c.send("STREAM_CREATE", vdev=vdev, stream=1, flags=0, priority=0)
        c.send("HOST_FUNC", vdev=0, stream=1, callback=5)  # holds device 0's stream 1
        await c.settle()
        assert c.callbacks == [5]
        assert (await c.call("DEVICE_SYNC", vdev=1))[0] == 0  # device 1 is idle
        assert (await c.call("STREAM_SYNC", vdev=1, stream=0))[0] == 0
        rid = c.send("DEVICE_SYNC", vdev=0, sync=True)
        await c.settle()
        assert rid not in c.replies  # waits for device 0's stream
        c.send("CALLBACK_DONE", vdev=0, callback=5)
        for _ in range(10):
            await c.settle()
        assert c.replies.pop(rid) == (0, {})
    run(main())


def test_reset_and_memory_stay_per_device():
    async def main():
        c = Client()
        await c.open(0)
        await c.open(1)
        st, a = await c.call("MALLOC", vdev=0, size=3 * MiB, flags=0)
        assert st == 0
        st, b = await c.call("MALLOC", vdev=1, size=5 * MiB, flags=0)
        assert st == 0
        assert (c.held(0), c.held(1)) == (3 * MiB, 5 * MiB)
        c.send("MEMSET", vdev=1, dst=b["ptr"], size=5 * MiB, value=7, stream=0, elem=1)
        c.send("STREAM_CREATE", vdev=1, stream=2, flags=0, priority=0)
        # one device's memory is not the other's
        assert (await c.call("MEMCPY_DTOH", vdev=0, src=b["ptr"], size=4, stream=0,
                             flags=0))[0] == E["cudaErrorInvalidValue"]
        shared = c.context(1)
        assert (await c.call("DEVICE_RESET", vdev=0))[0] == 0
        assert (c.held(0), c.held(1)) == (0, 5 * MiB)
        assert c.context(0) is c.context(1) is shared  # the context stays, device 1 in it
        assert c.backend.contexts_made == 1
        assert (await c.call("STREAM_SYNC", vdev=1, stream=2))[0] == 0  # its stream lives
        st, rep = await c.call("MEMCPY_DTOH", vdev=1, src=b["ptr"], size=4, stream=0, flags=0)
        assert st == 0
        assert (await c.call("FREE", vdev=0, ptr=a["ptr"]))[0] == E["cudaErrorInvalidValue"]
        assert (await c.call("FREE", vdev=1, ptr=b["ptr"]))[0] == 0
        assert c.held(1) == 0
    run(main())


def test_a_sticky_fault_breaks_the_shared_context_and_a_reset_gets_a_new_one():
    async def main():
        be = MemoryBackend(gpus=1, fault_kernels={"wild": "cudaErrorIllegalAddress"})
        a = be.open_device(0, 0, 0, WINDOW, 1 << 34, vdev=0)
        b = be.open_device(0, 0, 0, WINDOW + (1 << 38), 1 << 34, vdev=1)
        budget = be.open_device(0, 8, 0, WINDOW + (2 << 38), 1 << 34, vdev=2)
        a.set_kernel(1, {"name": "wild", "param_size": 0})
        a.launch(1, 0, (1, 1, 1), (1, 1, 1), 0, b"", 0)
        for dev in (a, b):
            try:
                dev.stream_sync(0)
            except CudaError as exc:
                assert exc.status == E["cudaErrorIllegalAddress"]
            else:
                raise AssertionError("the fault did not surface")
        assert budget.stream_sync(0) is None  # a context of its own
        a.close()
        a = be.open_device(0, 0, 0, WINDOW, 1 << 34, vdev=0)
        assert a.context is not b.context and a.stream_sync(0) is None
        b.close()
        assert be.contexts[0] is a.context
    run(main())


def test_a_fault_names_the_kernel_of_the_device_that_broke_the_context():
    async def main():
        c = Client()
        c.backend.fault_kernels["wild"] = "cudaErrorIllegalAddress"
        for vdev in (0, 1, 2):
            await c.open(vdev, 0, 8 if vdev == 2 else 0)
        d0 = c.s.devices[0]
        d0.be.set_kernel(1, {"name": "wild", "param_size": 0})
        d0.kernels.add(1)
        d0.kernel_names[1] = "wild"
        c.send("LAUNCH", vdev=0, kernel=1, stream=0, grid=(1, 1, 1), block=(1, 1, 1), shmem=0,
               flags=0)
        await c.settle()
        assert (await c.call("DEVICE_SYNC", vdev=1))[0] == E["cudaErrorIllegalAddress"]
        assert c.s.devices[1].dead is not None
        assert c.s.devices[1].dead["culprit"] == (
            "kernel wild (launch 1) on device 0, which shares this device's context")
        assert (await c.call("DEVICE_SYNC", vdev=0))[0] == E["cudaErrorIllegalAddress"]
        assert c.s.devices[0].dead["culprit"] == "kernel wild (launch 1)"
        assert (await c.call("DEVICE_SYNC", vdev=2))[0] == 0  # a context of its own
    run(main())
