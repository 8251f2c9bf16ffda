"""Modules, kernels and launches (the client's csrc/launch.c and the kernel calls of
interposer/runtime.py). A kernel is the client's id, known to a device once a module load on
that device found it; launches that the C path did not take come here."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from farcuda.wire import Frame, ProtocolError, fatbin
from farcuda.wire import messages as msg

from ..errors import CudaError, E
from .table import handler

if TYPE_CHECKING:
    from .core import Session

_LAYOUT = ("params", "param_size", "max_threads", "max_dyn_smem")  # what the client keeps
_CLUSTER_QUERIES = (msg.OCCUPANCY_CLUSTERS_MAX_ACTIVE, msg.OCCUPANCY_CLUSTERS_MAX_SIZE)
_TENSOR_MAP_KINDS = (msg.TENSOR_MAP_TILED, msg.TENSOR_MAP_IM2COL, msg.TENSOR_MAP_REPLACE)


@handler
def MODULE_LOAD(s: Session, f: Frame, m: msg.MODULE_LOAD):
    """The tail: a fat binary, then the JSON names of its kernels and variables, numbered by
    the client. The reply: each kernel's parameter layout, each variable's address."""
    tail = bytes(f.tail or b"")
    try:
        end = fatbin.fatbin_size(tail)
    except fatbin.FatbinError as exc:
        raise CudaError(E["cudaErrorInvalidKernelImage"], str(exc)) from None
    if end > len(tail):
        raise CudaError(E["cudaErrorInvalidKernelImage"], "a fat binary cut short")
    try:
        names = json.loads(tail[end:])
        kernels = [(int(k), str(n)) for k, n in names["kernels"]]
        variables = [(int(v), str(n), int(sz)) for v, n, sz in names["vars"]]
    except (ValueError, KeyError, TypeError):
        raise ProtocolError("MODULE_LOAD: malformed name table") from None
    if len(kernels) != m.nkernels or len(variables) != m.nvars:
        raise ProtocolError("MODULE_LOAD: name counts disagree")
    d = s.dev(f)
    kinfo, vinfo = d.be.module_load(m.module, tail[:end], [n for _, n in kernels],
                                    [n for _, n, _ in variables])
    for (kid, kname), info in zip(kernels, kinfo, strict=True):
        if info is not None:
            d.be.set_kernel(kid, info)
            d.kernels.add(kid)
            d.kernel_names[kid] = kname
    vout: list[dict | None] = []
    for (_vid, _name, size), info in zip(variables, vinfo, strict=True):
        if info is None:
            vout.append(None)
            continue
        if "addr" not in info:  # the backend keeps globals in window memory
            info["addr"] = d.alloc.alloc(max(info["size"], size, 1))
        d.add_symbol(info["addr"], info["size"])
        vout.append({"addr": info["addr"], "size": info["size"]})
    kout = [None if i is None else {k: i[k] for k in _LAYOUT} for i in kinfo]
    return {}, json.dumps({"kernels": kout, "vars": vout}).encode()


@handler
def FUNC_ATTRS(s: Session, f: Frame, m: msg.FUNC_ATTRS):
    d = s.dev(f)
    return {}, json.dumps(d.be.func_attrs(d.kernel(m.kernel))).encode()


@handler
def FUNC_SET_ATTR(s: Session, f: Frame, m: msg.FUNC_SET_ATTR):
    d = s.dev(f)
    d.be.func_set_attr(d.kernel(m.kernel), m.attr, m.value)


@handler
def OCCUPANCY(s: Session, f: Frame, m: msg.OCCUPANCY):
    d = s.dev(f)
    return msg.OCCUPANCY_REPLY(d.be.occupancy(d.kernel(m.kernel), m.block, m.shmem, m.flags))


@handler
def OCCUPANCY_SMEM(s: Session, f: Frame, m: msg.OCCUPANCY_SMEM):
    d = s.dev(f)
    return msg.OCCUPANCY_SMEM_REPLY(d.be.occupancy_smem(d.kernel(m.kernel), m.blocks, m.block))


@handler
def OCCUPANCY_CLUSTERS(s: Session, f: Frame, m: msg.OCCUPANCY_CLUSTERS):
    tail = bytes(f.tail or b"")
    if len(tail) != msg.LAUNCH_ATTR_SIZE * m.nattrs or m.what not in _CLUSTER_QUERIES:
        raise ProtocolError("OCCUPANCY_CLUSTERS: malformed")
    d = s.dev(f)
    return msg.OCCUPANCY_CLUSTERS_REPLY(d.be.occupancy_clusters(
        d.kernel(m.kernel), m.grid, m.block, m.shmem, tail, m.what))


@handler
def TENSOR_MAP(s: Session, f: Frame, m: msg.TENSOR_MAP):
    tail = bytes(f.tail or b"")
    if m.kind not in _TENSOR_MAP_KINDS or len(tail) != (128 if m.kind == msg.TENSOR_MAP_REPLACE
                                                       else 0):
        raise ProtocolError("TENSOR_MAP: malformed")
    if m.kind != msg.TENSOR_MAP_REPLACE and not 1 <= m.rank <= 5:
        raise CudaError(E["cudaErrorInvalidValue"], "a tensor map has a rank of 1 to 5")
    return {}, s.dev(f).be.tensor_map(m, tail)


@handler
def LAUNCH(s: Session, f: Frame, m: msg.LAUNCH):
    s._may_print = True
    d = s.dev(f)
    d.be.launch(d.kernel(m.kernel), m.stream, m.grid, m.block, m.shmem, f.tail or b"", m.flags)
    d.be.launched(m.kernel)


@handler
def LAUNCH_EX(s: Session, f: Frame, m: msg.LAUNCH_EX):
    s._may_print = True
    tail = bytes(f.tail or b"")
    n = m.nattrs * msg.LAUNCH_ATTR_SIZE
    if n > len(tail):
        raise ProtocolError("LAUNCH_EX: attributes past the end")
    d = s.dev(f)
    d.be.launch_ex(d.kernel(m.kernel), m.stream, m.grid, m.block, m.shmem, tail[:n], tail[n:])
    d.be.launched(m.kernel)


@handler
def FUNC_MAX_CLUSTER(s: Session, f: Frame, m: msg.FUNC_MAX_CLUSTER):
    raise CudaError(E["cudaErrorNotSupported"])
