"""The shim's symbol table: every function libcudart.so.13 exports, and who implements it.

Each export is one of:
- ``C``: written by hand in csrc/ (the hot path, and everything that touches shared state);
- ``PY``: a generated C entry point that calls the embedded Python runtime (cold calls); the
  signature is given here and drives both the C stub and the cffi declaration;
- ``UNSUPPORTED``: a generated entry point that returns cudaErrorNotSupported and names itself
  once on stderr. ``OUT_OF_SCOPE`` is the same, with a reason the message gives.

tools/gen_calls.py turns this table and the wire table into csrc/gen/*; tests/unit/test_table.py
checks that every export is covered, that the generated files are current, and that the built
library defines every ``C`` function.
"""

from __future__ import annotations

from .abi import EXPORTS

C = "c"
PY = "py"
UNSUPPORTED = "unsupported"

# Implemented in csrc/ (each also for its _ptsz/_ptds twin where the real library has one).
C_CALLS: frozenset[str] = frozenset("""
__cudaRegisterFatBinary __cudaRegisterFatBinaryEnd __cudaUnregisterFatBinary
__cudaRegisterFunction __cudaRegisterVar __cudaRegisterManagedVar __cudaRegisterHostVar
__cudaInitModule __cudaPushCallConfiguration __cudaPopCallConfiguration __cudaGetKernel
__cudaLaunchKernel __cudaLaunchKernel_ptsz
cudaGetLastError cudaPeekAtLastError cudaGetErrorName cudaGetErrorString
cudaGetDeviceCount cudaGetDevice cudaSetDevice cudaInitDevice cudaDeviceSynchronize
cudaRuntimeGetVersion cudaDriverGetVersion cudaDeviceGetAttribute
cudaMalloc cudaFree cudaMallocPitch cudaMallocHost cudaHostAlloc cudaFreeHost
cudaHostRegister cudaHostUnregister cudaHostGetDevicePointer cudaHostGetFlags
cudaMemcpy cudaMemcpy_ptds cudaMemcpyAsync cudaMemcpyAsync_ptsz
cudaMemcpy2D cudaMemcpy2D_ptds cudaMemcpy2DAsync cudaMemcpy2DAsync_ptsz
cudaMemset cudaMemset_ptds cudaMemsetAsync cudaMemsetAsync_ptsz
cudaMemset2D cudaMemset2D_ptds cudaMemset2DAsync cudaMemset2DAsync_ptsz
cudaMemcpyPeer cudaMemcpyPeerAsync
cudaMemcpyToSymbol cudaMemcpyToSymbol_ptds cudaMemcpyFromSymbol cudaMemcpyFromSymbol_ptds
cudaMemcpyToSymbolAsync cudaMemcpyToSymbolAsync_ptsz
cudaMemcpyFromSymbolAsync cudaMemcpyFromSymbolAsync_ptsz
cudaGetSymbolAddress cudaGetSymbolSize
cudaLaunchKernel cudaLaunchKernel_ptsz cudaLaunchCooperativeKernel
cudaLaunchCooperativeKernel_ptsz cudaLaunchKernelExC cudaLaunchKernelExC_ptsz
cudaLaunchHostFunc cudaLaunchHostFunc_ptsz cudaStreamAddCallback cudaStreamAddCallback_ptsz
cudaFuncGetName
cudaStreamCreate cudaStreamCreateWithFlags cudaStreamCreateWithPriority cudaStreamDestroy
cudaStreamSynchronize cudaStreamSynchronize_ptsz cudaStreamQuery cudaStreamQuery_ptsz
cudaStreamWaitEvent cudaStreamWaitEvent_ptsz cudaStreamGetFlags cudaStreamGetFlags_ptsz
cudaStreamGetPriority cudaStreamGetPriority_ptsz cudaStreamGetDevice cudaStreamGetDevice_ptsz
cudaStreamGetId cudaStreamGetId_ptsz
cudaEventCreate cudaEventCreateWithFlags cudaEventRecord cudaEventRecord_ptsz
cudaEventRecordWithFlags cudaEventRecordWithFlags_ptsz cudaEventSynchronize cudaEventQuery
cudaEventElapsedTime cudaEventDestroy
cudaStreamBeginCapture cudaStreamBeginCapture_ptsz cudaStreamEndCapture
cudaStreamEndCapture_ptsz cudaStreamIsCapturing cudaStreamIsCapturing_ptsz
cudaStreamGetCaptureInfo cudaStreamGetCaptureInfo_ptsz cudaThreadExchangeStreamCaptureMode
cudaGraphInstantiate cudaGraphInstantiateWithFlags cudaGraphLaunch cudaGraphLaunch_ptsz
cudaGraphUpload cudaGraphUpload_ptsz cudaGraphDestroy cudaGraphExecDestroy
cudaGraphGetNodes cudaGraphNodeGetType
cudaMallocAsync cudaMallocAsync_ptsz cudaFreeAsync cudaFreeAsync_ptsz
cudaMallocFromPoolAsync cudaMallocFromPoolAsync_ptsz
cudaDeviceGetDefaultMemPool cudaDeviceGetMemPool cudaDeviceSetMemPool
cudaMemGetDefaultMemPool cudaMemGetMemPool cudaMemSetMemPool
cudaMemPoolCreate cudaMemPoolDestroy cudaMemPoolTrimTo
cudaMemPoolSetAttribute cudaMemPoolGetAttribute cudaMemPoolSetAccess cudaMemPoolGetAccess
cudaProfilerStart cudaProfilerStop
cudaCreateChannelDesc
""".split())

# Cold calls implemented in Python: name -> C signature (return type is cudaError_t).
PY_CALLS: dict[str, str] = {
    "cudaGetDeviceProperties": "void *prop, int device",
    "cudaDeviceGetLimit": "size_t *pValue, int limit",
    "cudaDeviceSetLimit": "int limit, size_t value",
    "cudaMemGetInfo": "size_t *free, size_t *total",
    "cudaSetDeviceFlags": "unsigned int flags",
    "cudaGetDeviceFlags": "unsigned int *flags",
    "cudaDeviceReset": "void",
    "cudaFuncGetAttributes": "void *attr, const void *func",
    "cudaFuncSetAttribute": "const void *func, int attr, int value",
    "cudaFuncSetCacheConfig": "const void *func, int cacheConfig",
    "cudaOccupancyMaxActiveBlocksPerMultiprocessor":
        "int *numBlocks, const void *func, int blockSize, size_t dynamicSMemSize",
    "cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags":
        "int *numBlocks, const void *func, int blockSize, size_t dynamicSMemSize, "
        "unsigned int flags",
    "cudaOccupancyMaxActiveClusters":
        "int *numClusters, const void *func, const void *launchConfig",
    "cudaOccupancyMaxPotentialClusterSize":
        "int *clusterSize, const void *func, const void *launchConfig",
    "cudaOccupancyAvailableDynamicSMemPerBlock":
        "size_t *dynamicSmemSize, const void *func, int numBlocks, int blockSize",
    "cudaPointerGetAttributes": "void *attributes, const void *ptr",
    "cudaDeviceGetStreamPriorityRange": "int *leastPriority, int *greatestPriority",
    "cudaDeviceCanAccessPeer": "int *canAccessPeer, int device, int peerDevice",
    "cudaDeviceEnablePeerAccess": "int peerDevice, unsigned int flags",
    "cudaDeviceDisablePeerAccess": "int peerDevice",
    "cudaChooseDevice": "int *device, const void *prop",
    "cudaDeviceGetPCIBusId": "char *pciBusId, int len, int device",
    "cudaDeviceGetByPCIBusId": "int *device, const char *pciBusId",
    "cudaDeviceSetCacheConfig": "int cacheConfig",
    "cudaDeviceGetCacheConfig": "int *pCacheConfig",
    "cudaDeviceGetP2PAttribute": "int *value, int attr, int srcDevice, int dstDevice",
    "cudaStreamGetAttribute": "void *hStream, int attr, void *value_out",
    "cudaStreamGetAttribute_ptsz": "void *hStream, int attr, void *value_out",
    "cudaStreamSetAttribute": "void *hStream, int attr, const void *value",
    "cudaStreamSetAttribute_ptsz": "void *hStream, int attr, const void *value",
    "cudaSetValidDevices": "int *device_arr, int len",
}

# Out of scope (MISSION.md): answered with cudaErrorNotSupported and a reason.
OUT_OF_SCOPE_PREFIXES: dict[str, str] = {
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
}


def _base(name: str) -> str:
    for suffix in ("_ptsz", "_ptds"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def kind(name: str) -> str:
    if name in C_CALLS:
        return C
    if name in PY_CALLS:
        return PY
    return UNSUPPORTED


def reason(name: str) -> str:
    base = _base(name)
    for prefix, why in OUT_OF_SCOPE_PREFIXES.items():
        if base.startswith(prefix):
            return why
    return "not implemented by farcuda"


# Exports whose C return type is not cudaError_t (all implemented in csrc/).
SPECIAL_RETURNS: dict[str, str] = {
    "cudaGetErrorName": "const char *",
    "cudaGetErrorString": "const char *",
    "cudaCreateChannelDesc": "struct cudaChannelFormatDesc",
    "__cudaRegisterFatBinary": "void **",
    "__cudaRegisterFatBinaryEnd": "void",
    "__cudaUnregisterFatBinary": "void",
    "__cudaRegisterFunction": "void",
    "__cudaRegisterVar": "void",
    "__cudaRegisterManagedVar": "void",
    "__cudaRegisterHostVar": "void",
    "__cudaInitModule": "char",
    "__cudaPushCallConfiguration": "unsigned",
}

CALLS: dict[str, str] = {name: kind(name) for name in EXPORTS}

_unknown = (C_CALLS | set(PY_CALLS)) - set(EXPORTS)
if _unknown:
    raise AssertionError(f"calls implemented but not exported by libcudart 13: {sorted(_unknown)}")
