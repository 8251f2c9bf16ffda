"""The session's own requests and those of a virtual device as a whole (the client's
csrc/devices.c and the device calls of interposer/runtime.py): handshake-free session calls,
opening, synchronizing and resetting a device, limits, flags, memory figures."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from farcuda.wire import Frame, compress
from farcuda.wire import messages as msg

from ..allocator import ARENA
from ..errors import CudaError, E
from .device import DeviceState, Refusal
from .memory import arenas_offered
from .table import handler

if TYPE_CHECKING:
    from .core import Session


@handler
def PING(s: Session, f: Frame, m: msg.PING):
    return None


@handler
def BYE(s: Session, f: Frame, m: msg.BYE):
    if s.transport is not None:
        s.transport.close()


@handler
def GPU_INFO(s: Session, f: Frame, m: msg.GPU_INFO):
    return {}, json.dumps(s.backend.gpu_info(m.gpu)).encode()


@handler
def PROBE(s: Session, f: Frame, m: msg.PROBE):
    return None


@handler
def STATUS(s: Session, f: Frame, m: msg.STATUS):
    if s.front is not None and s.front.energy:
        async def fresh():  # the front attributes up to now first (FARCUDA_REPORT's figure)
            s.energy_j = await s.front.energy_now()
            return {}, json.dumps(s.status()).encode()
        return fresh()
    return {}, json.dumps(s.status()).encode()


@handler
def DEVICE_OPEN(s: Session, f: Frame, m: msg.DEVICE_OPEN):
    if f.vdev in s.devices:
        raise CudaError(E["cudaErrorInvalidDevice"], "virtual device opened twice")
    if m.window_size == 0 or m.window_size > 1 << 42:
        raise CudaError(E["cudaErrorInvalidValue"], "bad window size")
    front = s.front
    if front is None or not front.gpu_limit:
        return _open(s, f.vdev, m)

    async def admitted():  # limits.tenants_per_gpu: the front admits the tenant first
        why = await front.open_gpu(m.gpu)
        if why:
            raise Refusal(E["cudaErrorDevicesUnavailable"], why)
        try:
            if f.vdev in s.devices:
                raise CudaError(E["cudaErrorInvalidDevice"], "virtual device opened twice")
            return _open(s, f.vdev, m)
        except BaseException:
            if not any(d.params["gpu"] == m.gpu for d in s.devices.values()):
                front.close_gpu(m.gpu)
            raise
    return admitted()


def _open(s: Session, vdev: int, m: msg.DEVICE_OPEN):
    be = s.backend.open_device(m.gpu, m.sm_budget, m.flags, m.window_base, m.window_size,
                               vdev=vdev)
    s.devices[vdev] = DeviceState(vdev, be, m.window_size, m._asdict())
    info = dict(be.info(), arena=ARENA if arenas_offered(s) else 0,
                compress=compress.CODEC if compress.available() else "")
    return msg.DEVICE_OPEN_REPLY(be.window_base, be.sm_count), json.dumps(info).encode()


@handler
def DEVICE_SYNC(s: Session, f: Frame, m: msg.DEVICE_SYNC):
    return s.dev(f).be.synchronize()


@handler
def DEVICE_RESET(s: Session, f: Frame, m: msg.DEVICE_RESET):
    d = s.dev(f)
    params = d.params
    s.quota.return_charges(f.vdev)
    d.alloc.release_all()
    d.be.close()
    del s.devices[f.vdev]
    be = s.backend.open_device(params["gpu"], params["sm_budget"], params["flags"],
                               d.be.window_base, d.window_size, vdev=f.vdev)
    s.devices[f.vdev] = DeviceState(f.vdev, be, d.window_size, params)
    s.frees.device_reset()


@handler
def SET_LIMIT(s: Session, f: Frame, m: msg.SET_LIMIT):
    s.dev(f).be.set_limit(m.limit, m.value)


@handler
def GET_LIMIT(s: Session, f: Frame, m: msg.GET_LIMIT):
    return msg.GET_LIMIT_REPLY(s.dev(f).be.get_limit(m.limit))


@handler
def MEM_GET_INFO(s: Session, f: Frame, m: msg.MEM_GET_INFO):
    s.frees.reap()
    free, total = s.dev(f).be.mem_info()
    if s.quota.quota_bytes is not None:
        free = min(free, max(0, s.quota.quota_bytes - s.memory_held()))
    front = s.front
    if front is None or front.quota is None:
        return msg.MEM_GET_INFO_REPLY(free, total)

    async def tenant_free():  # what is left of the quota across the tenant's sessions
        used = await front.usage()
        return msg.MEM_GET_INFO_REPLY(min(free, max(0, front.quota - used)), total)
    return tenant_free()


@handler
def SET_FLAGS(s: Session, f: Frame, m: msg.SET_FLAGS):
    s.dev(f).be.set_flags(m.flags)


@handler
def SET_CACHE_CONFIG(s: Session, f: Frame, m: msg.SET_CACHE_CONFIG):
    s.dev(f).be.set_cache_config(m.config)
