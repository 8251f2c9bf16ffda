"""The CUDA backend's shared contexts, against a stand-in of the driver's Python bindings (no
GPU): which driver calls CudaDevice makes for virtual devices of one GPU.

Two devices of one GPU get one context and a stream 0 each (a non-blocking stream of their
own); every stream is non-blocking in the driver, and the legacy stream's order against the
device's blocking streams is restored with events; cudaDeviceSynchronize synchronizes the
device's own streams, never the context; closing a device releases its own objects and only
the last one destroys the context; a context a sticky error broke is not handed out again.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib
import sys
import types

import pytest

SUCCESS, NOT_READY = 0, 600
W0, W1 = 0x200000000000, 0x210000000000


class Anything:
    """Enumerations and structures of the bindings: any attribute, settable, callable."""

    def __getattr__(self, name):
        value = Anything()
        object.__setattr__(self, name, value)
        return value

    def __call__(self, *args):
        return Anything()


class FakeCu:
    """cuda.bindings.driver as far as CudaDevice uses it: every call is recorded and answers
    success with a fresh handle, except where it matters."""

    CUresult = types.SimpleNamespace(CUDA_SUCCESS=SUCCESS, CUDA_ERROR_NOT_READY=NOT_READY,
                                     CUDA_ERROR_OUT_OF_MEMORY=2, CUDA_ERROR_INVALID_VALUE=1)

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.busy: set[int] = set()  # streams with work pending
        self.fail: dict[str, int] = {}  # call -> the error its next call returns
        self._next = 0x1000
        self._host: dict[int, ctypes.Array] = {}

    @staticmethod
    def CUstream(value: int = 0) -> int:
        return value

    def _handle(self) -> int:
        self._next += 0x10
        return self._next

    def __getattr__(self, name):
        if not name.startswith("cu"):
            return Anything()

        def call(*args):
            self.calls.append((name, *args))
            if name in self.fail:
                return (self.fail.pop(name), None)
            special = type(self).__dict__.get("_" + name)
            return special(self, *args) if special else (SUCCESS, self._handle())
        return call

    def _cuStreamQuery(self, s):
        return (NOT_READY if s in self.busy else SUCCESS,)

    def _cuEventQuery(self, ev):
        return (SUCCESS,)

    def _cuMemHostAlloc(self, size, flags):
        buf = ctypes.create_string_buffer(size)
        self._host[ctypes.addressof(buf)] = buf
        return (SUCCESS, ctypes.addressof(buf))

    def _cuMemAddressReserve(self, size, align, base, flags):
        return (SUCCESS, base)

    def _cuMemGetAllocationGranularity(self, prop, flags):
        return (SUCCESS, 2 << 20)

    def _cuDeviceGetAttribute(self, attr, dev):
        return (SUCCESS, 132)

    def _cuDeviceGetCount(self):
        return (SUCCESS, 1)

    def _cuDriverGetVersion(self):
        return (SUCCESS, 13000)

    def named(self, name: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == name]


@pytest.fixture
def cuda(monkeypatch):
    """(the backend package imported with the stand-in driver, the stand-in)."""
    fake = FakeCu()
    drv = types.ModuleType("farcuda.daemon.backends.cuda.driver")

    def check(res):
        err = res[0]
        if err != SUCCESS:
            from farcuda.daemon.errors import CudaError
            raise CudaError(int(err))
        return None if len(res) == 1 else res[1]
    drv.__dict__.update(cu=fake, check=check, SUCCESS=SUCCESS, NOT_READY=NOT_READY,
                        HOSTFN=ctypes.CFUNCTYPE(None, ctypes.c_void_p))
    for name in ("farcuda.daemon.backends.cuda", "farcuda.daemon.backends.cuda.device",
                 "farcuda.daemon.backends.cuda.staging", "farcuda.daemon.backends.cuda.partitions"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(sys.modules, "farcuda.daemon.backends.cuda.driver", drv)
    pkg = importlib.import_module("farcuda.daemon.backends.cuda")
    yield pkg, fake
    for name in list(sys.modules):
        if name.startswith("farcuda.daemon.backends.cuda"):
            del sys.modules[name]


def test_devices_of_one_gpu_share_one_context_with_streams_of_their_own(cuda):
    pkg, cu = cuda
    be = pkg.CudaBackend(fast=False)
    a = be.open_device(0, 0, 0, W0, 1 << 34, vdev=0)
    b = be.open_device(0, 0, 0, W1, 1 << 34, vdev=1)
    assert a.ctx is b.ctx and len(cu.named("cuCtxCreate")) == 1
    assert 0 not in (a.streams[0], b.streams[0]) and a.streams[0] != b.streams[0]
    # stream 0 of each: a non-blocking stream of its own
    assert [c[1] for c in cu.named("cuStreamCreateWithPriority")] == [1, 1]
    other = pkg.CudaBackend(fast=False, share=False)  # the former way: a context each
    other.open_device(0, 0, 0, W0, 1 << 34)
    other.open_device(0, 0, 0, W1, 1 << 34)
    assert len(cu.named("cuCtxCreate")) == 3


def test_the_legacy_order_is_kept_per_device(cuda):
    pkg, cu = cuda
    be = pkg.CudaBackend(fast=False)
    a = be.open_device(0, 0, 0, W0, 1 << 34, vdev=0)
    b = be.open_device(0, 0, 0, W1, 1 << 34, vdev=1)
    a.memset(W0, 0, 4, 0)  # legacy work, then a blocking stream: it waits for that work
    cu.calls.clear()
    a.stream_create(1, 0, 0)
    assert cu.named("cuStreamCreateWithPriority")[0][1] == 1  # non-blocking in the driver
    s1 = a.streams[1]
    (rec,), (wait,) = cu.named("cuEventRecord"), cu.named("cuStreamWaitEvent")
    assert rec[2] == a.streams[0] and wait[1:3] == (s1, rec[1])
    a.stream_create(2, 1, 0)  # non-blocking: orders with nothing
    cu.calls.clear()
    a.memset(W0, 0, 4, 1)  # blocking stream: nothing new in the legacy stream to wait for
    a.memset(W0, 0, 4, 2)
    assert not cu.named("cuStreamWaitEvent")
    a.memset(W0, 0, 4, 0)  # legacy: waits for stream 1's work, not stream 2's
    (rec,), (wait,) = cu.named("cuEventRecord"), cu.named("cuStreamWaitEvent")
    assert rec[2] == s1 and wait[1] == a.streams[0]
    cu.calls.clear()
    a.memset(W0, 0, 4, 1)  # and stream 1 now waits for that legacy work
    (rec,), (wait,) = cu.named("cuEventRecord"), cu.named("cuStreamWaitEvent")
    assert rec[2] == a.streams[0] and wait[1] == s1
    cu.calls.clear()
    b.memset(W1, 0, 4, 0)  # device 1 orders with none of device 0's streams
    assert not cu.named("cuStreamWaitEvent") and not cu.named("cuEventRecord")
    assert cu.named("cuMemsetD8Async")[0][-1] == b.streams[0]


def test_device_synchronize_waits_for_the_devices_own_streams(cuda):
    pkg, cu = cuda
    be = pkg.CudaBackend(fast=False)
    a = be.open_device(0, 0, 0, W0, 1 << 34, vdev=0)
    b = be.open_device(0, 0, 0, W1, 1 << 34, vdev=1)
    a.stream_create(1, 0, 0)
    cu.busy.add(b.streams[0])  # device 1's work does not hold device 0's synchronization
    cu.calls.clear()
    assert a.synchronize() is None
    assert sorted(c[1] for c in cu.named("cuStreamSynchronize")) == sorted(a.streams.values())
    assert not cu.named("cuCtxSynchronize")
    cu.busy.add(a.streams[1])
    cu.calls.clear()
    wait = a.synchronize()
    assert wait is not None
    asyncio.run(wait)  # (in a wait thread)
    assert {c[1] for c in cu.named("cuStreamSynchronize")} == set(a.streams.values())
    assert not cu.named("cuCtxSynchronize")


def test_closing_a_device_leaves_the_context_to_the_others(cuda):
    pkg, cu = cuda
    be = pkg.CudaBackend(fast=False)
    a = be.open_device(0, 0, 0, W0, 1 << 34, vdev=0)
    b = be.open_device(0, 0, 0, W1, 1 << 34, vdev=1)
    a.stream_create(3, 0, 0)
    a.event_create(1, 0)
    a.map_extent(W0, 2 << 20)
    mine = set(a.streams.values())
    ctx = a.ctx
    cu.calls.clear()
    a.close()
    assert not cu.named("cuCtxDestroy")
    assert {c[1] for c in cu.named("cuStreamDestroy")} == mine
    assert cu.named("cuMemUnmap")[0][1:] == (W0, 2 << 20)
    assert cu.named("cuMemAddressFree")[0][1:] == (W0, 1 << 34)
    a = be.open_device(0, 0, 0, W0, 1 << 34, vdev=0)  # a reset: the same context again
    assert a.ctx is ctx is b.ctx
    a.close()
    b.close()
    assert [c[1] for c in cu.named("cuCtxDestroy")] == [ctx]


def test_a_broken_context_is_not_handed_out_again(cuda):
    pkg, cu = cuda
    be = pkg.CudaBackend(fast=False)
    a = be.open_device(0, 0, 0, W0, 1 << 34, vdev=0)
    b = be.open_device(0, 0, 0, W1, 1 << 34, vdev=1)
    a.close()
    cu.fail["cuStreamCreateWithPriority"] = 700  # the context's sticky error
    a = be.open_device(0, 0, 0, W0, 1 << 34, vdev=0)
    assert a.ctx is not b.ctx and len(cu.named("cuCtxCreate")) == 2
    b.close()  # the broken one goes with its last device
    assert [c[1] for c in cu.named("cuCtxDestroy")] == [b.ctx]
    a.close()
    c = be.open_device(0, 0, 0, W1, 1 << 34, vdev=1)
    cu.fail["cuCtxSetCurrent"] = 719  # (the sticky error, already when made current)
    d = be.open_device(0, 0, 0, W0, 1 << 34, vdev=0)
    assert c.ctx is not d.ctx and len(cu.named("cuCtxCreate")) == 4
