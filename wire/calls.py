"""The call table: every function libcudart.so.13 exports, what it becomes on the wire, and who
implements it.

One row per CUDA runtime call; its ``_ptsz``/``_ptds`` twins (where the real library exports
them) are the same row, generated with ``ptds`` 1 (the per-thread default stream). A row says:

- ``how`` it is implemented:
  - MANUAL: the exported symbol is written by hand in csrc/ (the compiler's entry points:
    registration and the launch configuration; the calls that read or clear the error
    state; what returns something other than a cudaError_t);
  - C: a generated export that calls the hand-written C the row names (``impl``, a C
    expression of the parameters): the hot paths, and what works on the client's state;
  - STUB: a generated export that marshals straight to its message and back, with no
    hand-written code at all (``fields``, ``reply``): the simple cold calls;
  - PY: a generated export that calls the shim's embedded Python (interposer/runtime.py
    ``<name>``), for cold calls that keep Python state;
  - UNSUPPORTED (every export without a row): answers cudaErrorNotSupported and names
    itself once on stderr, with the reason OUT_OF_SCOPE or IN_PART gives, if any;
- ``sig``, its C parameters (``void``: none), and for the data it reads or writes through
  pointers their sizes (``ins``/``outs``: parameter -> size in bytes, a C expression);
- ``msgs``, the messages it becomes (wire/_messages.py), in the order of the cases it takes;
  ``sync``: whether the call waits for the daemon (None: as its message's mode says);
- ``fields``/``reply`` (STUB, and documenting PY rows): message field <- C expression, and
  out-parameter <- reply field. ``kernel(p)`` is the kernel id of the host function ``p``,
  its module loaded on the current device;
- ``errors``: "last" (a failure becomes the thread's last error, as CUDA does) or "query"
  (cudaErrorNotReady is an answer, not an error).

The driver API (a libcuda.so.1 stand-in, generated from this table too) will add rows of
its own that map onto the same messages: ``cuCtxGetLimit(size_t *pvalue, CUlimit limit)`` is
GET_LIMIT as cudaDeviceGetLimit is, with a CUfunction handle where the runtime has a host
function, and CUresult codes where it returns cudaError_t. Nothing in a row is specific to
the runtime except its name, its C types and its ``errors``.

tools/gen_calls.py turns this table into csrc/gen/exports.{h,c} and csrc/gen/pycalls.h;
tests/unit/test_table.py checks that every export is covered, that every row names messages,
fields and parameters that exist, and that the generated files are current.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .abi import EXPORTS

__all__ = ["Call", "ROWS", "BY_EXPORT", "MANUAL", "C", "STUB", "PY", "UNSUPPORTED",
           "TWINS", "PY_INTERNAL", "OUT_OF_SCOPE", "IN_PART", "CALLS", "C_CALLS", "PY_CALLS",
           "kind", "reason", "params", "base_of"]

MANUAL = "manual"
C = "c"
STUB = "stub"
PY = "py"
UNSUPPORTED = "unsupported"
TWINS = ("_ptsz", "_ptds")


@dataclass(frozen=True)
class Call:
    name: str
    how: str
    sig: str
    msgs: tuple[str, ...] = ()
    impl: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    reply: dict[str, str] = field(default_factory=dict)
    ins: dict[str, str] = field(default_factory=dict)
    outs: dict[str, str] = field(default_factory=dict)
    sync: bool | None = None
    returns: str = "cudaError_t"
    errors: str = "last"


def _r(name: str, how: str, sig: str, msgs: str = "", impl: str = "", **kw) -> Call:
    return Call(name, how, sig, tuple(msgs.split()), impl, **kw)


def params(sig: str) -> list[tuple[str, str]]:
    """(C type, name) of each parameter of a signature."""
    if sig.strip() in ("", "void"):
        return []
    out = []
    for p in sig.split(","):
        p = p.strip()
        name = re.findall(r"\w+", p)[-1]
        out.append((p[: p.rindex(name)].strip(), name))
    return out


_COPY = "MEMCPY_HTOD MEMCPY_DTOH MEMCPY_DTOD MEMCPY_PEER CAPTURE_HTOD CAPTURE_DTOH"
_COPY2D = "MEMCPY2D_HTOD MEMCPY2D_DTOH MEMCPY2D_DTOD MEMCPY_PEER"
_DIMS = "fc_dim3 gridDim, fc_dim3 blockDim, void **args, size_t sharedMem, cudaStream_t stream"
# a node added to a graph built node by node, after the nodes it depends on
_NODE = "void **pGraphNode, void *graph, void *const *pDependencies, size_t numDependencies"
_NODE_ARGS = "pGraphNode, graph, pDependencies, numDependencies"
# what instantiating a built graph sends: its nodes captured on a stream of its own (their
# launches, copies, sets and event operations), the capture instantiated
_BUILT = "GRAPH_INSTANTIATE STREAM_CREATE CAPTURE_BEGIN CAPTURE_END GRAPH_DESTROY STREAM_DESTROY"

ROWS: tuple[Call, ...] = (
    # --- the compiler's entry points (registration before main, the <<<>>> configuration) ---
    _r("__cudaRegisterFatBinary", MANUAL, "void *fatCubin", returns="void **"),
    _r("__cudaRegisterFatBinaryEnd", MANUAL, "void **fatCubinHandle", returns="void"),
    _r("__cudaUnregisterFatBinary", MANUAL, "void **fatCubinHandle", returns="void"),
    _r("__cudaInitModule", MANUAL, "void **fatCubinHandle", returns="char"),
    _r("__cudaRegisterFunction", MANUAL,
       "void **fatCubinHandle, const char *hostFun, char *deviceFun, const char *deviceName, "
       "int thread_limit, void *tid, void *bid, void *bDim, void *gDim, int *wSize",
       returns="void"),
    _r("__cudaRegisterVar", MANUAL,
       "void **fatCubinHandle, char *hostVar, char *deviceAddress, const char *deviceName, "
       "int ext, size_t size, int constant, int global", returns="void"),
    _r("__cudaRegisterManagedVar", MANUAL,
       "void **fatCubinHandle, void **hostVarPtrAddress, char *deviceAddress, "
       "const char *deviceName, int ext, size_t size, int constant, int global",
       returns="void"),
    _r("__cudaRegisterHostVar", MANUAL,
       "void **fatCubinHandle, const char *deviceName, char *hostVar, size_t size",
       returns="void"),
    _r("__cudaPushCallConfiguration", MANUAL,
       "fc_dim3 gridDim, fc_dim3 blockDim, size_t sharedMem, void *stream", returns="unsigned"),
    _r("__cudaPopCallConfiguration", MANUAL,
       "fc_dim3 *gridDim, fc_dim3 *blockDim, size_t *sharedMem, void *stream"),
    _r("__cudaGetKernel", MANUAL, "void **handle, const void *hostFun"),
    _r("__cudaLaunchKernel", C, "void *handle, " + _DIMS, "LAUNCH",
       "fc_launch(handle, gridDim, blockDim, args, sharedMem, stream, ptds, 0)"),

    # --- errors and versions ---
    _r("cudaGetLastError", MANUAL, "void"),
    _r("cudaPeekAtLastError", MANUAL, "void"),
    _r("cudaGetErrorName", MANUAL, "cudaError_t error", returns="const char *"),
    _r("cudaGetErrorString", MANUAL, "cudaError_t error", returns="const char *"),
    _r("cudaRuntimeGetVersion", C, "int *runtimeVersion", impl="fc_runtime_version(runtimeVersion)",
       outs={"runtimeVersion": "sizeof(int)"}),
    _r("cudaDriverGetVersion", C, "int *driverVersion", "HELLO",
       "fc_driver_version(driverVersion)", outs={"driverVersion": "sizeof(int)"}),
    _r("cudaProfilerStart", C, "void", impl="cudaSuccess"),
    _r("cudaProfilerStop", C, "void", impl="cudaSuccess"),
    _r("cudaCreateChannelDesc", MANUAL, "int x, int y, int z, int w, int f",
       returns="struct cudaChannelFormatDesc"),

    # --- devices ---
    _r("cudaGetDeviceCount", C, "int *count", impl="fc_get_device_count(count)",
       outs={"count": "sizeof(int)"}),
    _r("cudaGetDevice", C, "int *device", impl="fc_get_device(device)",
       outs={"device": "sizeof(int)"}),
    _r("cudaSetDevice", C, "int device", "GPU_INFO DEVICE_OPEN", "fc_set_device(device)"),
    _r("cudaInitDevice", C, "int device, unsigned int deviceFlags, unsigned int flags",
       "GPU_INFO DEVICE_OPEN", "fc_init_device(device, deviceFlags, flags)"),
    _r("cudaDeviceSynchronize", C, "void", "DEVICE_SYNC", "fc_device_synchronize()"),
    _r("cudaDeviceGetAttribute", C, "int *value, int attr, int device", "GPU_INFO",
       "fc_device_attribute(value, attr, device)", outs={"value": "sizeof(int)"}),
    _r("cudaGetDeviceProperties", PY, "void *prop, int device", "GPU_INFO DEVICE_OPEN",
       outs={"prop": "FC_DEVICE_PROP_SIZE"}),
    _r("cudaDeviceGetLimit", STUB, "size_t *pValue, int limit", "GET_LIMIT",
       fields={"limit": "limit"}, reply={"pValue": "value"}),
    _r("cudaDeviceSetLimit", STUB, "int limit, size_t value", "SET_LIMIT",
       fields={"limit": "limit", "value": "value"}),
    _r("cudaMemGetInfo", C, "size_t *free, size_t *total", "MEM_GET_INFO",
       "fc_mem_get_info(free, total)"),
    _r("cudaSetDeviceFlags", PY, "unsigned int flags", "SET_FLAGS",
       fields={"flags": "flags"}),
    _r("cudaGetDeviceFlags", PY, "unsigned int *flags", outs={"flags": "sizeof(int)"}),
    _r("cudaDeviceReset", PY, "void", "DEVICE_RESET"),
    _r("cudaDeviceGetStreamPriorityRange", PY, "int *leastPriority, int *greatestPriority",
       "DEVICE_OPEN"),
    _r("cudaDeviceCanAccessPeer", PY, "int *canAccessPeer, int device, int peerDevice"),
    _r("cudaDeviceEnablePeerAccess", PY, "int peerDevice, unsigned int flags"),
    _r("cudaDeviceDisablePeerAccess", PY, "int peerDevice"),
    _r("cudaChooseDevice", PY, "int *device, const void *prop", "GPU_INFO"),
    _r("cudaDeviceGetPCIBusId", PY, "char *pciBusId, int len, int device", "GPU_INFO",
       outs={"pciBusId": "len"}),
    _r("cudaDeviceGetByPCIBusId", PY, "int *device, const char *pciBusId", "GPU_INFO"),
    _r("cudaDeviceSetCacheConfig", PY, "int cacheConfig", "SET_CACHE_CONFIG",
       fields={"config": "cacheConfig"}),
    _r("cudaDeviceGetCacheConfig", PY, "int *pCacheConfig"),
    _r("cudaDeviceGetP2PAttribute", PY, "int *value, int attr, int srcDevice, int dstDevice"),
    _r("cudaSetValidDevices", PY, "int *device_arr, int len", ins={"device_arr": "len * 4"}),

    # --- memory ---
    _r("cudaMalloc", C, "void **devPtr, size_t size", "MALLOC", "fc_malloc(devPtr, size)"),
    _r("cudaMallocPitch", C, "void **devPtr, size_t *pitch, size_t width, size_t height",
       "MALLOC_PITCH", "fc_malloc_pitch(devPtr, pitch, width, height)"),
    _r("cudaFree", C, "void *devPtr", "FREE", "fc_free(devPtr)"),
    _r("cudaMallocHost", C, "void **ptr, size_t size", impl="fc_host_alloc(ptr, size, 0)"),
    _r("cudaHostAlloc", C, "void **pHost, size_t size, unsigned int flags",
       impl="fc_host_alloc(pHost, size, flags)"),
    _r("cudaFreeHost", C, "void *ptr", impl="fc_free_host(ptr)"),
    _r("cudaHostRegister", C, "void *ptr, size_t size, unsigned int flags",
       impl="fc_host_register(ptr, size, flags)"),
    _r("cudaHostUnregister", C, "void *ptr", impl="fc_host_unregister(ptr)"),
    _r("cudaHostGetFlags", C, "unsigned int *pFlags, void *pHost",
       impl="fc_host_get_flags(pFlags, pHost)"),
    _r("cudaHostGetDevicePointer", C, "void **pDevice, void *pHost, unsigned int flags",
       impl="fc_host_get_device_pointer(pDevice, pHost, flags)"),
    _r("cudaPointerGetAttributes", PY, "void *attributes, const void *ptr",
       outs={"attributes": "FC_SIZEOF_cudaPointerAttributes"}),
    _r("cudaMemcpy", C, "void *dst, const void *src, size_t count, int kind", _COPY,
       "fc_memcpy_impl(dst, src, count, kind, NULL, 0, ptds)", sync=True,
       ins={"src": "count"}, outs={"dst": "count"}),
    _r("cudaMemcpyAsync", C,
       "void *dst, const void *src, size_t count, int kind, cudaStream_t stream",
       _COPY, "fc_memcpy_impl(dst, src, count, kind, stream, 1, ptds)", sync=False,
       ins={"src": "count"}, outs={"dst": "count"}),
    _r("cudaMemcpy2D", C, "void *dst, size_t dpitch, const void *src, size_t spitch, "
       "size_t width, size_t height, int kind", _COPY2D,
       "fc_memcpy2d_impl(dst, dpitch, src, spitch, width, height, kind, NULL, 0, ptds)",
       sync=True, ins={"src": "(height - 1) * spitch + width"},
       outs={"dst": "(height - 1) * dpitch + width"}),
    _r("cudaMemcpy2DAsync", C, "void *dst, size_t dpitch, const void *src, size_t spitch, "
       "size_t width, size_t height, int kind, cudaStream_t stream", _COPY2D,
       "fc_memcpy2d_impl(dst, dpitch, src, spitch, width, height, kind, stream, 1, ptds)",
       sync=False, ins={"src": "(height - 1) * spitch + width"},
       outs={"dst": "(height - 1) * dpitch + width"}),
    # 3D: linear memory only (a pitched pointer; x and width in bytes), slice by slice where
    # the slices do not lie back to back
    _r("cudaMemcpy3D", C, "const struct fc_memcpy3d_parms *p", _COPY2D,
       "fc_memcpy3d_impl(p, NULL, 0, ptds)", sync=True,
       ins={"p": "FC_SIZEOF_cudaMemcpy3DParms"}),
    _r("cudaMemcpy3DAsync", C, "const struct fc_memcpy3d_parms *p, cudaStream_t stream",
       _COPY2D, "fc_memcpy3d_impl(p, stream, 1, ptds)", sync=False,
       ins={"p": "FC_SIZEOF_cudaMemcpy3DParms"}),
    _r("cudaMalloc3D", C, "struct fc_pitched_ptr *pitchedDevPtr, struct fc_extent extent",
       "MALLOC_PITCH", "fc_malloc3d(pitchedDevPtr, extent)",
       outs={"pitchedDevPtr": "FC_SIZEOF_cudaPitchedPtr"}),
    _r("cudaMemset3D", C, "struct fc_pitched_ptr pitchedDevPtr, int value, "
       "struct fc_extent extent", "MEMSET2D",
       "fc_memset3d_impl(pitchedDevPtr, value, extent, NULL, ptds)"),
    _r("cudaMemset3DAsync", C, "struct fc_pitched_ptr pitchedDevPtr, int value, "
       "struct fc_extent extent, cudaStream_t stream", "MEMSET2D",
       "fc_memset3d_impl(pitchedDevPtr, value, extent, stream, ptds)"),
    _r("cudaMemset", C, "void *devPtr, int value, size_t count", "MEMSET",
       "fc_memset_impl(devPtr, value, count, NULL, 0, ptds)"),
    _r("cudaMemsetAsync", C, "void *devPtr, int value, size_t count, cudaStream_t stream",
       "MEMSET", "fc_memset_impl(devPtr, value, count, stream, 1, ptds)"),
    _r("cudaMemset2D", C, "void *devPtr, size_t pitch, int value, size_t width, size_t height",
       "MEMSET2D", "fc_memset2d_impl(devPtr, pitch, value, width, height, NULL, ptds)"),
    _r("cudaMemset2DAsync", C, "void *devPtr, size_t pitch, int value, size_t width, "
       "size_t height, cudaStream_t stream", "MEMSET2D",
       "fc_memset2d_impl(devPtr, pitch, value, width, height, stream, ptds)"),
    _r("cudaMemcpyPeer", C, "void *dst, int dstDevice, const void *src, int srcDevice, "
       "size_t count", "MEMCPY_PEER MEMCPY_DTOH MEMCPY_HTOD",
       "fc_memcpy_peer(dst, dstDevice, src, srcDevice, count, NULL, 0)", sync=True),
    _r("cudaMemcpyPeerAsync", C, "void *dst, int dstDevice, const void *src, int srcDevice, "
       "size_t count, cudaStream_t stream", "MEMCPY_PEER MEMCPY_DTOH MEMCPY_HTOD",
       "fc_memcpy_peer(dst, dstDevice, src, srcDevice, count, stream, 1)"),
    _r("cudaMemcpyToSymbol", C,
       "const void *symbol, const void *src, size_t count, size_t offset, int kind",
       "MEMCPY_HTOD MEMCPY_DTOD", "fc_to_symbol(symbol, src, count, offset, kind, NULL, 0, ptds)",
       sync=True, ins={"src": "count"}),
    _r("cudaMemcpyToSymbolAsync", C, "const void *symbol, const void *src, size_t count, "
       "size_t offset, int kind, cudaStream_t stream", "MEMCPY_HTOD MEMCPY_DTOD",
       "fc_to_symbol(symbol, src, count, offset, kind, stream, 1, ptds)", ins={"src": "count"}),
    _r("cudaMemcpyFromSymbol", C,
       "void *dst, const void *symbol, size_t count, size_t offset, int kind",
       "MEMCPY_DTOH MEMCPY_DTOD",
       "fc_from_symbol(dst, symbol, count, offset, kind, NULL, 0, ptds)", sync=True,
       outs={"dst": "count"}),
    _r("cudaMemcpyFromSymbolAsync", C, "void *dst, const void *symbol, size_t count, "
       "size_t offset, int kind, cudaStream_t stream", "MEMCPY_DTOH MEMCPY_DTOD",
       "fc_from_symbol(dst, symbol, count, offset, kind, stream, 1, ptds)",
       outs={"dst": "count"}),
    _r("cudaGetSymbolAddress", C, "void **devPtr, const void *symbol", "MODULE_LOAD",
       "fc_symbol_address(devPtr, symbol)"),
    _r("cudaGetSymbolSize", C, "size_t *size, const void *symbol",
       impl="fc_symbol_size(size, symbol)"),

    # --- stream-ordered allocation and pools ---
    _r("cudaMallocAsync", C, "void **devPtr, size_t size, cudaStream_t hStream", "MALLOC_ASYNC",
       "fc_malloc_async(devPtr, size, NULL, 0, hStream, ptds)"),
    _r("cudaMallocFromPoolAsync", C,
       "void **ptr, size_t size, void *memPool, cudaStream_t stream", "MALLOC_ASYNC",
       "fc_malloc_async(ptr, size, memPool, 1, stream, ptds)"),
    _r("cudaFreeAsync", C, "void *devPtr, cudaStream_t hStream", "FREE_ASYNC STREAM_SYNC",
       "fc_free_async(devPtr, hStream, ptds)"),
    _r("cudaDeviceGetDefaultMemPool", C, "void **memPool, int device",
       impl="fc_device_pool(memPool, device, 0)"),
    _r("cudaDeviceGetMemPool", C, "void **memPool, int device",
       impl="fc_device_pool(memPool, device, 1)"),
    _r("cudaDeviceSetMemPool", C, "int device, void *memPool",
       impl="fc_set_device_pool(device, memPool)"),
    _r("cudaMemGetDefaultMemPool", C,
       "void **memPool, struct fc_mem_location *location, int type",
       impl='fc_mem_get_pool(memPool, location, type, 0, "cudaMemGetDefaultMemPool")'),
    _r("cudaMemGetMemPool", C, "void **memPool, struct fc_mem_location *location, int type",
       impl='fc_mem_get_pool(memPool, location, type, 1, "cudaMemGetMemPool")'),
    _r("cudaMemSetMemPool", C, "struct fc_mem_location *location, int type, void *memPool",
       impl="fc_mem_set_pool(location, type, memPool)"),
    _r("cudaMemPoolCreate", C, "void **memPool, const struct fc_mem_pool_props *poolProps",
       impl="fc_pool_create(memPool, poolProps)"),
    _r("cudaMemPoolDestroy", C, "void *memPool", impl="fc_pool_destroy(memPool)"),
    _r("cudaMemPoolTrimTo", C, "void *memPool, size_t minBytesToKeep",
       impl="fc_pool_trim(memPool, minBytesToKeep)"),
    _r("cudaMemPoolSetAttribute", C, "void *memPool, int attr, void *value",
       impl="fc_pool_set_attr(memPool, attr, value)"),
    _r("cudaMemPoolGetAttribute", C, "void *memPool, int attr, void *value",
       impl="fc_pool_get_attr(memPool, attr, value)"),
    _r("cudaMemPoolSetAccess", C,
       "void *memPool, const struct fc_mem_access_desc *descList, size_t count",
       impl="fc_pool_set_access(memPool, descList, count)"),
    _r("cudaMemPoolGetAccess", C,
       "int *flags, void *memPool, struct fc_mem_location *location",
       impl="fc_pool_get_access(flags, memPool, location)"),

    # --- modules, kernels, launches ---
    _r("cudaLaunchKernel", C, "const void *func, " + _DIMS, "LAUNCH",
       "fc_launch_host_fun(func, gridDim, blockDim, args, sharedMem, stream, ptds, 0)"),
    _r("cudaLaunchCooperativeKernel", C, "const void *func, " + _DIMS, "LAUNCH",
       "fc_launch_host_fun(func, gridDim, blockDim, args, sharedMem, stream, ptds, "
       "FC_LAUNCH_COOPERATIVE)", sync=True),
    _r("cudaLaunchKernelExC", C, "const void *config, const void *func, void **args",
       "LAUNCH LAUNCH_EX", "fc_launch_ex(config, func, args, ptds)",
       ins={"config": "FC_SIZEOF_cudaLaunchConfig_t"}),
    _r("cudaFuncGetName", C, "const char **name, const void *func",
       impl="fc_func_get_name(name, func)"),
    _r("cudaFuncGetAttributes", PY, "void *attr, const void *func", "FUNC_ATTRS"),
    _r("cudaFuncSetAttribute", PY, "const void *func, int attr, int value", "FUNC_SET_ATTR",
       fields={"kernel": "kernel(func)", "attr": "attr", "value": "value"}),
    _r("cudaFuncSetCacheConfig", PY, "const void *func, int cacheConfig", "FUNC_SET_ATTR",
       fields={"kernel": "kernel(func)", "attr": "FC_FUNC_SET_ATTR_CACHE_CONFIG",
               "value": "cacheConfig"}),
    _r("cudaOccupancyMaxActiveBlocksPerMultiprocessor", PY,
       "int *numBlocks, const void *func, int blockSize, size_t dynamicSMemSize", "OCCUPANCY",
       fields={"kernel": "kernel(func)", "block": "blockSize", "shmem": "dynamicSMemSize"},
       reply={"numBlocks": "blocks"}),
    _r("cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags", PY,
       "int *numBlocks, const void *func, int blockSize, size_t dynamicSMemSize, "
       "unsigned int flags", "OCCUPANCY",
       fields={"kernel": "kernel(func)", "block": "blockSize", "shmem": "dynamicSMemSize",
               "flags": "flags"}, reply={"numBlocks": "blocks"}),
    _r("cudaOccupancyAvailableDynamicSMemPerBlock", STUB,
       "size_t *dynamicSmemSize, const void *func, int numBlocks, int blockSize",
       "OCCUPANCY_SMEM", fields={"kernel": "kernel(func)", "blocks": "numBlocks",
                                 "block": "blockSize"}, reply={"dynamicSmemSize": "bytes"}),
    _r("cudaOccupancyMaxActiveClusters", PY,
       "int *numClusters, const void *func, const void *launchConfig", "OCCUPANCY_CLUSTERS",
       reply={"numClusters": "value"}),
    _r("cudaOccupancyMaxPotentialClusterSize", PY,
       "int *clusterSize, const void *func, const void *launchConfig", "OCCUPANCY_CLUSTERS",
       reply={"clusterSize": "value"}),

    # --- streams ---
    _r("cudaStreamCreate", C, "cudaStream_t *pStream", "STREAM_CREATE",
       "fc_stream_create(pStream, 0, 0)"),
    _r("cudaStreamCreateWithFlags", C, "cudaStream_t *pStream, unsigned int flags",
       "STREAM_CREATE", "fc_stream_create(pStream, flags, 0)"),
    _r("cudaStreamCreateWithPriority", C,
       "cudaStream_t *pStream, unsigned int flags, int priority", "STREAM_CREATE",
       "fc_stream_create(pStream, flags, priority)"),
    _r("cudaStreamDestroy", C, "cudaStream_t stream", "STREAM_DESTROY",
       "fc_stream_destroy(stream)"),
    _r("cudaStreamSynchronize", C, "cudaStream_t stream", "STREAM_SYNC",
       "fc_stream_sync(stream, ptds, FC_OP_STREAM_SYNC)"),
    _r("cudaStreamQuery", C, "cudaStream_t stream", "STREAM_QUERY",
       "fc_stream_sync(stream, ptds, FC_OP_STREAM_QUERY)", errors="query"),
    _r("cudaStreamWaitEvent", C, "cudaStream_t stream, cudaEvent_t event, unsigned int flags",
       "STREAM_WAIT_EVENT EVENT_SYNC", "fc_stream_wait_event(stream, event, flags, ptds)"),
    _r("cudaStreamGetFlags", C, "cudaStream_t hStream, unsigned int *flags",
       impl="fc_stream_field(hStream, ptds, 0, flags)"),
    _r("cudaStreamGetPriority", C, "cudaStream_t hStream, int *priority",
       impl="fc_stream_field(hStream, ptds, 1, priority)"),
    _r("cudaStreamGetDevice", C, "cudaStream_t hStream, int *device",
       impl="fc_stream_field(hStream, ptds, 2, device)"),
    _r("cudaStreamGetId", C, "cudaStream_t hStream, unsigned long long *streamId",
       impl="fc_stream_field(hStream, ptds, 3, streamId)"),
    _r("cudaStreamGetAttribute", PY, "void *hStream, int attr, void *value_out",
       outs={"value_out": "FC_STREAM_ATTR_SIZE"}),
    _r("cudaStreamSetAttribute", PY, "void *hStream, int attr, const void *value",
       "STREAM_SET_ATTR", ins={"value": "FC_STREAM_ATTR_SIZE"}),
    _r("cudaLaunchHostFunc", C, "cudaStream_t stream, void (*fn)(void *), void *userData",
       "HOST_FUNC CALLBACK CALLBACK_DONE",
       "fc_add_callback(stream, ptds, 0, fn, NULL, userData)"),
    _r("cudaStreamAddCallback", C, "cudaStream_t stream, void (*callback)(cudaStream_t, int, "
       "void *), void *userData, unsigned int flags", "HOST_FUNC CALLBACK CALLBACK_DONE",
       "flags ? cudaErrorInvalidValue : fc_add_callback(stream, ptds, 1, NULL, callback, "
       "userData)"),

    # --- events ---
    _r("cudaEventCreate", C, "cudaEvent_t *event", "EVENT_CREATE", "fc_event_create(event, 0)"),
    _r("cudaEventCreateWithFlags", C, "cudaEvent_t *event, unsigned int flags", "EVENT_CREATE",
       "fc_event_create(event, flags)"),
    _r("cudaEventRecord", C, "cudaEvent_t event, cudaStream_t stream", "EVENT_RECORD",
       "fc_event_record(event, stream, 0, ptds)"),
    _r("cudaEventRecordWithFlags", C,
       "cudaEvent_t event, cudaStream_t stream, unsigned int flags", "EVENT_RECORD",
       "fc_event_record(event, stream, flags, ptds)"),
    _r("cudaEventSynchronize", C, "cudaEvent_t event", "EVENT_SYNC",
       "fc_event_call(event, FC_OP_EVENT_SYNC)"),
    _r("cudaEventQuery", C, "cudaEvent_t event", "EVENT_QUERY",
       "fc_event_call(event, FC_OP_EVENT_QUERY)", errors="query"),
    _r("cudaEventElapsedTime", C, "float *ms, cudaEvent_t start, cudaEvent_t end",
       "EVENT_ELAPSED", "fc_event_elapsed(ms, start, end)"),
    _r("cudaEventDestroy", C, "cudaEvent_t event", "EVENT_DESTROY", "fc_event_destroy(event)"),

    # --- stream capture and graphs ---
    _r("cudaStreamBeginCapture", C, "cudaStream_t stream, int mode", "CAPTURE_BEGIN",
       "fc_begin_capture(stream, mode, ptds)"),
    _r("cudaStreamEndCapture", C, "cudaStream_t stream, void **pGraph", "CAPTURE_END",
       "fc_end_capture(stream, pGraph, ptds)"),
    _r("cudaStreamIsCapturing", C, "cudaStream_t stream, int *pCaptureStatus",
       "CAPTURE_STATUS", "fc_capture_status(stream, pCaptureStatus, ptds)"),
    _r("cudaStreamGetCaptureInfo", C, "cudaStream_t stream, int *captureStatus_out, "
       "unsigned long long *id_out, void **graph_out, const void **dependencies_out, "
       "const void **edgeData_out, size_t *numDependencies_out", "CAPTURE_STATUS",
       "fc_capture_info(stream, captureStatus_out, id_out, graph_out, dependencies_out, "
       "edgeData_out, numDependencies_out, ptds)"),
    _r("cudaThreadExchangeStreamCaptureMode", C, "int *mode",
       impl="fc_exchange_capture_mode(mode)"),
    # a graph built node by node is instantiated by capturing its nodes on a private stream
    _r("cudaGraphInstantiate", C,
       "void **pGraphExec, void *graph, unsigned long long flags", _BUILT,
       "fc_graph_instantiate(pGraphExec, graph, flags)"),
    _r("cudaGraphInstantiateWithFlags", C,
       "void **pGraphExec, void *graph, unsigned long long flags", _BUILT,
       "fc_graph_instantiate(pGraphExec, graph, flags)"),
    _r("cudaGraphLaunch", C, "void *graphExec, cudaStream_t stream", "GRAPH_LAUNCH",
       "fc_graph_exec_op(graphExec, stream, ptds, FC_OP_GRAPH_LAUNCH)"),
    _r("cudaGraphUpload", C, "void *graphExec, cudaStream_t stream", "GRAPH_UPLOAD",
       "fc_graph_exec_op(graphExec, stream, ptds, FC_OP_GRAPH_UPLOAD)"),
    _r("cudaGraphDestroy", C, "void *graph", "GRAPH_DESTROY", "fc_graph_destroy(graph)"),
    _r("cudaGraphExecDestroy", C, "void *graphExec", "GRAPH_EXEC_DESTROY",
       "fc_graph_exec_destroy(graphExec)"),
    _r("cudaGraphGetNodes", C, "void *graph, void **nodes, size_t *numNodes",
       impl="fc_graph_nodes(graph, nodes, numNodes)"),
    _r("cudaGraphNodeGetType", C, "void *node, int *pType",
       impl="fc_graph_node_type(node, pType)"),
    # graphs built node by node (csrc/graphs.c): they live in the client until instantiated
    _r("cudaGraphCreate", C, "void **pGraph, unsigned int flags",
       impl="fc_graph_create(pGraph, flags)"),
    _r("cudaGraphAddKernelNode", C, _NODE + ", const struct fc_kernel_node_parms *pNodeParams",
       "MODULE_LOAD", "fc_graph_add_kernel(" + _NODE_ARGS + ", pNodeParams)"),
    _r("cudaGraphAddMemsetNode", C, _NODE + ", const struct fc_memset_parms *pMemsetParams",
       impl="fc_graph_add_memset(" + _NODE_ARGS + ", pMemsetParams)"),
    _r("cudaGraphAddMemcpyNode", C, _NODE + ", const struct fc_memcpy3d_parms *pCopyParams",
       impl="fc_graph_add_memcpy(" + _NODE_ARGS + ", pCopyParams)",
       ins={"pCopyParams": "FC_SIZEOF_cudaMemcpy3DParms"}),
    _r("cudaGraphAddMemcpyNode1D", C,
       _NODE + ", void *dst, const void *src, size_t count, int kind",
       impl="fc_graph_add_memcpy_1d(" + _NODE_ARGS + ", dst, src, count, kind)"),
    _r("cudaGraphAddEmptyNode", C, _NODE, impl="fc_graph_add_empty(" + _NODE_ARGS + ")"),
    _r("cudaGraphAddEventRecordNode", C, _NODE + ", cudaEvent_t event",
       impl="fc_graph_add_event(" + _NODE_ARGS + ", event, FC_NODE_EVENT_RECORD)"),
    _r("cudaGraphAddEventWaitNode", C, _NODE + ", cudaEvent_t event",
       impl="fc_graph_add_event(" + _NODE_ARGS + ", event, FC_NODE_WAIT_EVENT)"),
    _r("cudaGraphAddChildGraphNode", C, _NODE + ", void *childGraph",
       impl="fc_graph_add_child(" + _NODE_ARGS + ", childGraph)"),
    _r("cudaGraphAddNode", C, "void **pGraphNode, void *graph, void *const *pDependencies, "
       "const void *dependencyData, size_t numDependencies, "
       "struct fc_graph_node_parms *nodeParams", "MODULE_LOAD",
       "fc_graph_add_node(pGraphNode, graph, pDependencies, dependencyData, numDependencies, "
       "nodeParams)", ins={"nodeParams": "FC_SIZEOF_cudaGraphNodeParams"}),
    _r("cudaGraphAddDependencies", C, "void *graph, void *const *from, void *const *to, "
       "const void *edgeData, size_t numDependencies",
       impl="fc_graph_add_dependencies(graph, from, to, edgeData, numDependencies)"),
    _r("cudaGraphGetRootNodes", C, "void *graph, void **pRootNodes, size_t *pNumRootNodes",
       impl="fc_graph_root_nodes(graph, pRootNodes, pNumRootNodes)"),
    _r("cudaGraphNodeGetDependencies", C,
       "void *node, void **pDependencies, void *edgeData, size_t *pNumDependencies",
       impl="fc_graph_node_deps(node, pDependencies, edgeData, pNumDependencies)"),
    _r("cudaGraphKernelNodeGetParams", C,
       "void *node, struct fc_kernel_node_parms *pNodeParams",
       impl="fc_graph_kernel_get(node, pNodeParams)",
       outs={"pNodeParams": "FC_SIZEOF_cudaKernelNodeParams"}),
    _r("cudaGraphKernelNodeSetParams", C,
       "void *node, const struct fc_kernel_node_parms *pNodeParams", "MODULE_LOAD",
       "fc_graph_kernel_set(node, pNodeParams)"),
    _r("cudaGraphClone", C, "void **pGraphClone, void *originalGraph",
       impl="fc_graph_clone(pGraphClone, originalGraph)"),
    # an exec of a built graph keeps its own copy: a change instantiates it again
    _r("cudaGraphExecKernelNodeSetParams", C,
       "void *hGraphExec, void *node, const struct fc_kernel_node_parms *pNodeParams", _BUILT,
       "fc_graph_exec_kernel_set(hGraphExec, node, pNodeParams)"),
    _r("cudaGraphExecUpdate", C,
       "void *hGraphExec, void *hGraph, struct fc_graph_update_info *resultInfo", _BUILT,
       "fc_graph_exec_update(hGraphExec, hGraph, resultInfo)",
       outs={"resultInfo": "FC_SIZEOF_cudaGraphExecUpdateResultInfo"}),
)

# The Python entry points the C half calls besides the cold calls (interposer/runtime.py).
PY_INTERNAL: dict[str, str] = {
    "fcpy_init": "void",
    "fcpy_connect": "int server",
    "fcpy_device_describe": "int dev",
    "fcpy_device_open": "int dev",
    "fcpy_module_load": "int mod, int dev",
    "fcpy_report": "void",
    "fcpy_link_probe": "int dev",
    "fcpy_compress": "const void *src, size_t n, void *dst, size_t cap",
}

# Out of scope (MISSION.md): answered with cudaErrorNotSupported and a reason.
OUT_OF_SCOPE: dict[str, str] = {
    "cudaMallocManaged": "managed memory is not supported by farcuda",
    "cudaMemAdvise": "managed memory is not supported by farcuda",
    "cudaMemPrefetch": "managed memory is not supported by farcuda",
    "cudaMemRangeGet": "managed memory is not supported by farcuda",
    "cudaStreamAttachMemAsync": "managed memory is not supported by farcuda",
    "cudaIpc": "IPC handles are not supported by farcuda",
    "cudaMemPoolExport": "IPC handles are not supported by farcuda",
    "cudaMemPoolImport": "IPC handles are not supported by farcuda",
    "cudaGraphics": "graphics interop is not supported by farcuda",
    "cudaGL": "graphics interop is not supported by farcuda",
    "cudaEGL": "graphics interop is not supported by farcuda",
    "cudaVDPAU": "graphics interop is not supported by farcuda",
    "cudaCreateTextureObject": "textures are not supported by farcuda",
    "cudaCreateSurfaceObject": "surfaces are not supported by farcuda",
    "cudaMallocArray": "CUDA arrays are not supported by farcuda",
    "cudaMalloc3DArray": "CUDA arrays are not supported by farcuda",
    "cudaMallocMipmappedArray": "CUDA arrays are not supported by farcuda",
    "cudaImportExternal": "external memory is not supported by farcuda",
    "cudaDeviceGetTexture1DLinearMaxWidth": "textures are not supported by farcuda",
    "cudaGetDriverEntryPoint": "the driver API is not served through the runtime by farcuda: "
                               "call the runtime, or link the driver API itself",
}


# Families farcuda implements in part: what is left of them is answered with
# cudaErrorNotSupported and this reason.
IN_PART: dict[str, str] = {
    "cudaGraph": "this part of the graph API is not supported by farcuda (host, memory "
                 "allocation and free, external semaphore and conditional nodes; parameters "
                 "of nodes other than kernel nodes; node removal; exec changes other than "
                 "kernel nodes and cudaGraphExecUpdate)",
    "cudaStreamBeginCaptureToGraph": "capturing into an existing graph is not supported by "
                                     "farcuda",
    "cudaStreamUpdateCaptureDependencies": "editing a capture's dependencies is not supported "
                                           "by farcuda",
    "cudaUserObject": "user objects of graphs are not supported by farcuda",
}


def base_of(name: str) -> str:
    for suffix in TWINS:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


_BY_NAME: dict[str, Call] = {r.name: r for r in ROWS}
# every export with a row: its own, or its base call's for a _ptsz/_ptds twin
BY_EXPORT: dict[str, Call] = {n: _BY_NAME[n] if n in _BY_NAME else _BY_NAME[base_of(n)]
                              for n in EXPORTS if n in _BY_NAME or base_of(n) in _BY_NAME}


def kind(name: str) -> str:
    """Who implements an export, coarsely: C (by hand or generated), PY, UNSUPPORTED."""
    row = BY_EXPORT.get(name)
    if row is None:
        return UNSUPPORTED
    return PY if row.how == PY else C


def reason(name: str) -> str:
    base = base_of(name)
    for prefix, why in (*OUT_OF_SCOPE.items(), *IN_PART.items()):
        if base.startswith(prefix):
            return why
    return "not implemented by farcuda"


CALLS: dict[str, str] = {name: kind(name) for name in EXPORTS}
# exports whose symbol is written by hand in csrc/
C_CALLS: frozenset[str] = frozenset(n for n, r in BY_EXPORT.items() if r.how == MANUAL)
# Python cold calls: name -> C signature (the twins call their base call's)
PY_CALLS: dict[str, str] = {r.name: r.sig for r in ROWS if r.how == PY}

if len(_BY_NAME) != len(ROWS):
    raise AssertionError("a call with two rows")
_unknown = set(_BY_NAME) - set(EXPORTS)
if _unknown:
    raise AssertionError(f"rows for calls libcudart 13 does not export: {sorted(_unknown)}")
