"""The driver stand-in's symbol table: every name driver 580's libcuda.so.1 exports, and who
implements it.

The names come from a real driver (tests/data/libcuda-580-exports.txt, ``nm -D
--defined-only``); the ones listed in ``C_CALLS`` are written by hand in csrc/driver/, every
other one is a generated entry point that returns CUDA_ERROR_NOT_SUPPORTED and names itself
once on stderr with the reason below. tools/gen_driver.py turns this table into
csrc/driver/gen/exports.c (and cuGetProcAddress's table of versions);
tests/unit/test_driver_table.py checks that the generated file is current, that the built
library exports exactly driver 580's names, and that every ``C_CALLS`` name is defined by
hand.
"""

from __future__ import annotations

import re

__all__ = ["C_CALLS", "reason"]

C_CALLS: frozenset[str] = frozenset("""
cuCtxCreate cuCtxCreate_v2 cuCtxCreate_v3 cuCtxCreate_v4 cuCtxDestroy cuCtxDestroy_v2
cuCtxDisablePeerAccess cuCtxEnablePeerAccess cuCtxGetApiVersion cuCtxGetCacheConfig
cuCtxGetCurrent cuCtxGetDevice cuCtxGetDevice_v2 cuCtxGetFlags cuCtxGetId cuCtxGetLimit
cuCtxGetSharedMemConfig cuCtxGetStreamPriorityRange cuCtxPopCurrent cuCtxPopCurrent_v2
cuCtxPushCurrent cuCtxPushCurrent_v2 cuCtxSetCacheConfig cuCtxSetCurrent cuCtxSetFlags
cuCtxSetLimit cuCtxSetSharedMemConfig cuCtxSynchronize cuCtxSynchronize_v2 cuDeviceCanAccessPeer
cuDeviceComputeCapability cuDeviceGet cuDeviceGetAttribute cuDeviceGetByPCIBusId
cuDeviceGetCount cuDeviceGetDefaultMemPool cuDeviceGetMemPool cuDeviceGetName
cuDeviceGetP2PAttribute cuDeviceGetPCIBusId cuDeviceGetProperties cuDeviceGetUuid
cuDeviceGetUuid_v2 cuDevicePrimaryCtxGetState cuDevicePrimaryCtxRelease
cuDevicePrimaryCtxRelease_v2 cuDevicePrimaryCtxReset cuDevicePrimaryCtxReset_v2
cuDevicePrimaryCtxRetain cuDevicePrimaryCtxSetFlags cuDevicePrimaryCtxSetFlags_v2
cuDeviceSetMemPool cuDeviceTotalMem cuDeviceTotalMem_v2 cuDriverGetVersion cuEventCreate
cuEventDestroy cuEventDestroy_v2 cuEventElapsedTime cuEventElapsedTime_v2 cuEventQuery
cuEventRecord cuEventRecordWithFlags cuEventRecordWithFlags_ptsz cuEventRecord_ptsz
cuEventSynchronize cuFuncGetAttribute cuFuncGetModule cuFuncGetName cuFuncGetParamInfo
cuFuncIsLoaded cuFuncLoad cuFuncSetAttribute cuFuncSetCacheConfig cuGetErrorName
cuGetErrorString cuGetExportTable cuGetProcAddress cuGetProcAddress_v2 cuGraphAddChildGraphNode
cuGraphAddDependencies cuGraphAddDependencies_v2 cuGraphAddEmptyNode cuGraphAddEventRecordNode
cuGraphAddEventWaitNode cuGraphAddKernelNode cuGraphAddKernelNode_v2 cuGraphAddMemcpyNode
cuGraphAddMemsetNode cuGraphAddNode cuGraphAddNode_v2 cuGraphClone cuGraphCreate cuGraphDestroy
cuGraphExecDestroy
cuGraphExecKernelNodeSetParams cuGraphExecKernelNodeSetParams_v2 cuGraphExecUpdate
cuGraphExecUpdate_v2 cuGraphGetNodes cuGraphGetRootNodes cuGraphInstantiate
cuGraphInstantiateWithFlags cuGraphInstantiateWithParams cuGraphInstantiateWithParams_ptsz
cuGraphInstantiate_v2 cuGraphKernelNodeGetParams cuGraphKernelNodeGetParams_v2
cuGraphKernelNodeSetParams cuGraphKernelNodeSetParams_v2 cuGraphLaunch cuGraphLaunch_ptsz
cuGraphNodeGetDependencies cuGraphNodeGetDependencies_v2 cuGraphNodeGetType cuGraphUpload
cuGraphUpload_ptsz cuInit cuKernelGetAttribute cuKernelGetFunction cuKernelGetName
cuKernelGetParamInfo cuKernelSetAttribute cuKernelSetCacheConfig cuLaunchCooperativeKernel
cuLaunchCooperativeKernel_ptsz cuLaunchHostFunc cuLaunchHostFunc_ptsz cuLaunchKernel
cuLaunchKernelEx cuLaunchKernelEx_ptsz cuLaunchKernel_ptsz cuLibraryEnumerateKernels
cuLibraryGetGlobal cuLibraryGetKernel cuLibraryGetKernelCount cuLibraryGetModule
cuLibraryLoadData cuLibraryLoadFromFile cuLibraryUnload cuMemAllocAsync cuMemAllocAsync_ptsz
cuMemAllocFromPoolAsync cuMemAllocFromPoolAsync_ptsz cuMemAllocHost_v2 cuMemAllocPitch_v2
cuMemAlloc_v2 cuMemFreeAsync cuMemFreeAsync_ptsz cuMemFreeHost cuMemFree_v2
cuMemGetAddressRange_v2 cuMemGetDefaultMemPool cuMemGetInfo_v2 cuMemGetMemPool cuMemHostAlloc
cuMemHostGetDevicePointer_v2 cuMemHostGetFlags cuMemHostRegister_v2 cuMemHostUnregister
cuMemPoolCreate cuMemPoolDestroy cuMemPoolGetAccess cuMemPoolGetAttribute cuMemPoolSetAccess
cuMemPoolSetAttribute cuMemPoolTrimTo cuMemSetMemPool cuMemcpy cuMemcpy2DAsync_v2
cuMemcpy2DAsync_v2_ptsz cuMemcpy2DUnaligned_v2 cuMemcpy2DUnaligned_v2_ptds cuMemcpy2D_v2
cuMemcpy2D_v2_ptds cuMemcpy3DAsync_v2 cuMemcpy3DAsync_v2_ptsz cuMemcpy3D_v2 cuMemcpy3D_v2_ptds
cuMemcpyAsync cuMemcpyAsync_ptsz cuMemcpyDtoDAsync_v2 cuMemcpyDtoDAsync_v2_ptsz cuMemcpyDtoD_v2
cuMemcpyDtoD_v2_ptds cuMemcpyDtoHAsync_v2 cuMemcpyDtoHAsync_v2_ptsz cuMemcpyDtoH_v2
cuMemcpyDtoH_v2_ptds cuMemcpyHtoDAsync_v2 cuMemcpyHtoDAsync_v2_ptsz cuMemcpyHtoD_v2
cuMemcpyHtoD_v2_ptds cuMemcpyPeer cuMemcpyPeerAsync cuMemcpyPeerAsync_ptsz cuMemcpyPeer_ptds
cuMemcpy_ptds cuMemsetD16Async cuMemsetD16Async_ptsz cuMemsetD16_v2 cuMemsetD16_v2_ptds
cuMemsetD2D16Async cuMemsetD2D16Async_ptsz cuMemsetD2D16_v2 cuMemsetD2D16_v2_ptds
cuMemsetD2D32Async cuMemsetD2D32Async_ptsz cuMemsetD2D32_v2 cuMemsetD2D32_v2_ptds
cuMemsetD2D8Async cuMemsetD2D8Async_ptsz cuMemsetD2D8_v2 cuMemsetD2D8_v2_ptds cuMemsetD32Async
cuMemsetD32Async_ptsz cuMemsetD32_v2 cuMemsetD32_v2_ptds cuMemsetD8Async cuMemsetD8Async_ptsz
cuMemsetD8_v2 cuMemsetD8_v2_ptds cuModuleEnumerateFunctions cuModuleGetFunction
cuModuleGetFunctionCount cuModuleGetGlobal_v2 cuModuleGetLoadingMode cuModuleLoad
cuModuleLoadData cuModuleLoadDataEx cuModuleLoadFatBinary cuModuleUnload
cuOccupancyAvailableDynamicSMemPerBlock cuOccupancyMaxActiveBlocksPerMultiprocessor
cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags cuOccupancyMaxActiveClusters
cuOccupancyMaxPotentialBlockSize cuOccupancyMaxPotentialBlockSizeWithFlags
cuOccupancyMaxPotentialClusterSize cuPointerGetAttribute cuPointerGetAttributes cuProfilerStart
cuProfilerStop cuStreamAddCallback cuStreamAddCallback_ptsz cuStreamBeginCapture
cuStreamBeginCapture_ptsz cuStreamBeginCapture_v2 cuStreamBeginCapture_v2_ptsz cuStreamCreate
cuStreamCreateWithPriority cuStreamDestroy cuStreamDestroy_v2 cuStreamEndCapture
cuStreamEndCapture_ptsz cuStreamGetCaptureInfo cuStreamGetCaptureInfo_ptsz
cuStreamGetCaptureInfo_v2 cuStreamGetCaptureInfo_v2_ptsz cuStreamGetCaptureInfo_v3
cuStreamGetCaptureInfo_v3_ptsz cuStreamGetCtx cuStreamGetCtx_ptsz cuStreamGetDevice
cuStreamGetDevice_ptsz cuStreamGetFlags cuStreamGetFlags_ptsz cuStreamGetId cuStreamGetId_ptsz
cuStreamGetPriority cuStreamGetPriority_ptsz cuStreamIsCapturing cuStreamIsCapturing_ptsz
cuStreamQuery cuStreamQuery_ptsz cuStreamSynchronize cuStreamSynchronize_ptsz cuStreamWaitEvent
cuStreamWaitEvent_ptsz cuTensorMapEncodeIm2col cuTensorMapEncodeTiled cuTensorMapReplaceAddress
cuThreadExchangeStreamCaptureMode
""".split())

# Families refused on purpose, with the words the stderr line gives (first match wins).
_REASONS: tuple[tuple[str, str], ...] = (
    (r"^cudbg", "the debugger interface is not available through farcuda"),
    (r"GL|EGL|VDPAU|^cuGraphics", "graphics interop is out of scope for farcuda"),
    (r"^cuIpc", "IPC is out of scope for farcuda"),
    (r"Managed|Advise|Prefetch|AttachMem|MemRangeGetAttribute|Discard",
     "managed memory is out of scope for farcuda"),
    (r"External|NvSci", "external memory and semaphores are out of scope for farcuda"),
    (r"TexRef|SurfRef|TexObject|SurfObject|Array|Mipmapped|AtoA|AtoD|DtoA|HtoA|AtoH|3D",
     "CUDA arrays, textures and surfaces are not supported by farcuda"),
    (r"Checkpoint|Coredump|^cuLogs", "not available through farcuda"),
    (r"Green|DevResource|DevSm|ExecAffinity|Multicast",
     "green contexts, device resources and multicast are not supported by farcuda's "
     "driver layer"),
    (r"^cuLaunch$|^cuLaunchGrid|^cuParamSet|^cuFuncSetBlockShape|^cuFuncSetSharedSize",
     "the launch API of CUDA 3 and older is not supported by farcuda"),
    (r"^cuGraph|CaptureToGraph|UserObject|CaptureDependencies",
     "this part of the graph API (host, memory, batch and conditional nodes, edits of "
     "captured graphs and of execs beyond kernel nodes) is not supported by farcuda's driver "
     "layer"),
)

# The first ABI of an entry point whose later version changed it (32-bit sizes and device
# pointers, CUDA 3.1 and older): what the ``_v2`` twin exists for.
_V1_ABI = frozenset("""
cuMemAlloc cuMemFree cuMemAllocPitch cuMemGetInfo cuMemGetAddressRange cuMemAllocHost
cuMemHostGetDevicePointer cuMemHostRegister cuMemcpyHtoD cuMemcpyDtoH cuMemcpyDtoD
cuMemcpyHtoDAsync cuMemcpyDtoHAsync cuMemcpyDtoDAsync cuMemcpy2D cuMemcpy2DAsync
cuMemcpy2DUnaligned cuMemcpy3D cuMemcpy3DAsync cuMemsetD8 cuMemsetD16 cuMemsetD32 cuMemsetD2D8
cuMemsetD2D16 cuMemsetD2D32 cuModuleGetGlobal
""".split())


def reason(name: str) -> str:
    """Why an export is not implemented, for its once-only line on stderr."""
    if name in C_CALLS:
        return "implemented"
    if name in _V1_ABI:
        return "the CUDA 3.1 ABI (32-bit sizes and device pointers) is not supported"
    for pattern, words in _REASONS:
        if re.search(pattern, name):
            return words
    return "not implemented by farcuda's driver layer"
