"""cudaDeviceProp, filled on the client from a GPU's attributes as the daemon reports them.

The daemon sends the driver's device attributes (whose numbers are the runtime's cudaDevAttr
values), the name, UUID and memory size; this module lays them out as CUDA 13's
cudaDeviceProp (the layout in _abi.py, generated from the toolkit's headers). The mapping
from fields to attributes is checked against a native dump from an H100 in
tests/unit/test_devprops.py.
"""

from __future__ import annotations

import struct

from farcuda.wire.abi import DEVICE_PROP_FIELDS, DEVICE_PROP_SIZE, cudaDeviceAttr

__all__ = ["FIELD_ATTRS", "fill_device_prop", "attr_number"]

# cudaDeviceProp field -> the cudaDevAttr names of its elements (without the prefix)
FIELD_ATTRS: dict[str, tuple[str, ...]] = {
    "sharedMemPerBlock": ("MaxSharedMemoryPerBlock",),
    "regsPerBlock": ("MaxRegistersPerBlock",),
    "warpSize": ("WarpSize",),
    "memPitch": ("MaxPitch",),
    "maxThreadsPerBlock": ("MaxThreadsPerBlock",),
    "maxThreadsDim": ("MaxBlockDimX", "MaxBlockDimY", "MaxBlockDimZ"),
    "maxGridSize": ("MaxGridDimX", "MaxGridDimY", "MaxGridDimZ"),
    "totalConstMem": ("TotalConstantMemory",),
    "major": ("ComputeCapabilityMajor",),
    "minor": ("ComputeCapabilityMinor",),
    "textureAlignment": ("TextureAlignment",),
    "texturePitchAlignment": ("TexturePitchAlignment",),
    "multiProcessorCount": ("MultiProcessorCount",),
    "integrated": ("Integrated",),
    "canMapHostMemory": ("CanMapHostMemory",),
    "maxTexture1D": ("MaxTexture1DWidth",),
    "maxTexture1DMipmap": ("MaxTexture1DMipmappedWidth",),
    "maxTexture2D": ("MaxTexture2DWidth", "MaxTexture2DHeight"),
    "maxTexture2DMipmap": ("MaxTexture2DMipmappedWidth", "MaxTexture2DMipmappedHeight"),
    "maxTexture2DLinear": ("MaxTexture2DLinearWidth", "MaxTexture2DLinearHeight",
                           "MaxTexture2DLinearPitch"),
    "maxTexture2DGather": ("MaxTexture2DGatherWidth", "MaxTexture2DGatherHeight"),
    "maxTexture3D": ("MaxTexture3DWidth", "MaxTexture3DHeight", "MaxTexture3DDepth"),
    "maxTexture3DAlt": ("MaxTexture3DWidthAlt", "MaxTexture3DHeightAlt",
                        "MaxTexture3DDepthAlt"),
    "maxTextureCubemap": ("MaxTextureCubemapWidth",),
    "maxTexture1DLayered": ("MaxTexture1DLayeredWidth", "MaxTexture1DLayeredLayers"),
    "maxTexture2DLayered": ("MaxTexture2DLayeredWidth", "MaxTexture2DLayeredHeight",
                            "MaxTexture2DLayeredLayers"),
    "maxTextureCubemapLayered": ("MaxTextureCubemapLayeredWidth",
                                 "MaxTextureCubemapLayeredLayers"),
    "maxSurface1D": ("MaxSurface1DWidth",),
    "maxSurface2D": ("MaxSurface2DWidth", "MaxSurface2DHeight"),
    "maxSurface3D": ("MaxSurface3DWidth", "MaxSurface3DHeight", "MaxSurface3DDepth"),
    "maxSurface1DLayered": ("MaxSurface1DLayeredWidth", "MaxSurface1DLayeredLayers"),
    "maxSurface2DLayered": ("MaxSurface2DLayeredWidth", "MaxSurface2DLayeredHeight",
                            "MaxSurface2DLayeredLayers"),
    "maxSurfaceCubemap": ("MaxSurfaceCubemapWidth",),
    "maxSurfaceCubemapLayered": ("MaxSurfaceCubemapLayeredWidth",
                                 "MaxSurfaceCubemapLayeredLayers"),
    "surfaceAlignment": ("SurfaceAlignment",),
    "concurrentKernels": ("ConcurrentKernels",),
    "ECCEnabled": ("EccEnabled",),
    "pciBusID": ("PciBusId",),
    "pciDeviceID": ("PciDeviceId",),
    "pciDomainID": ("PciDomainId",),
    "tccDriver": ("TccDriver",),
    "asyncEngineCount": ("AsyncEngineCount",),
    "unifiedAddressing": ("UnifiedAddressing",),
    "memoryBusWidth": ("GlobalMemoryBusWidth",),
    "l2CacheSize": ("L2CacheSize",),
    "persistingL2CacheMaxSize": ("MaxPersistingL2CacheSize",),
    "maxThreadsPerMultiProcessor": ("MaxThreadsPerMultiProcessor",),
    "streamPrioritiesSupported": ("StreamPrioritiesSupported",),
    "globalL1CacheSupported": ("GlobalL1CacheSupported",),
    "localL1CacheSupported": ("LocalL1CacheSupported",),
    "sharedMemPerMultiprocessor": ("MaxSharedMemoryPerMultiprocessor",),
    "regsPerMultiprocessor": ("MaxRegistersPerMultiprocessor",),
    "managedMemory": ("ManagedMemory",),
    "isMultiGpuBoard": ("IsMultiGpuBoard",),
    "multiGpuBoardGroupID": ("MultiGpuBoardGroupID",),
    "hostNativeAtomicSupported": ("HostNativeAtomicSupported",),
    "pageableMemoryAccess": ("PageableMemoryAccess",),
    "concurrentManagedAccess": ("ConcurrentManagedAccess",),
    "computePreemptionSupported": ("ComputePreemptionSupported",),
    "canUseHostPointerForRegisteredMem": ("CanUseHostPointerForRegisteredMem",),
    "cooperativeLaunch": ("CooperativeLaunch",),
    "sharedMemPerBlockOptin": ("MaxSharedMemoryPerBlockOptin",),
    "pageableMemoryAccessUsesHostPageTables": ("PageableMemoryAccessUsesHostPageTables",),
    "directManagedMemAccessFromHost": ("DirectManagedMemAccessFromHost",),
    "maxBlocksPerMultiProcessor": ("MaxBlocksPerMultiprocessor",),
    "accessPolicyMaxWindowSize": ("MaxAccessPolicyWindowSize",),
    "reservedSharedMemPerBlock": ("ReservedSharedMemoryPerBlock",),
    "hostRegisterSupported": ("HostRegisterSupported",),
    "sparseCudaArraySupported": ("SparseCudaArraySupported",),
    "hostRegisterReadOnlySupported": ("HostRegisterReadOnlySupported",),
    "timelineSemaphoreInteropSupported": ("TimelineSemaphoreInteropSupported",),
    "memoryPoolsSupported": ("MemoryPoolsSupported",),
    "gpuDirectRDMASupported": ("GPUDirectRDMASupported",),
    "gpuDirectRDMAFlushWritesOptions": ("GPUDirectRDMAFlushWritesOptions",),
    "gpuDirectRDMAWritesOrdering": ("GPUDirectRDMAWritesOrdering",),
    "memoryPoolSupportedHandleTypes": ("MemoryPoolSupportedHandleTypes",),
    "deferredMappingCudaArraySupported": ("DeferredMappingCudaArraySupported",),
    "ipcEventSupported": ("IpcEventSupport",),
    "clusterLaunch": ("ClusterLaunch",),
    "deviceNumaConfig": ("NumaConfig",),
    "deviceNumaId": ("NumaId",),
    "mpsEnabled": ("MpsEnabled",),
    "hostNumaId": ("HostNumaId",),
    "gpuPciDeviceID": ("GpuPciDeviceId",),
    "gpuPciSubsystemID": ("GpuPciSubsystemId",),
    "hostNumaMultinodeIpcSupported": ("HostNumaMultinodeIpcSupported",),
}

_CODES = {"u32": "I", "i32": "i", "u64": "Q"}


def attr_number(name: str) -> int:
    return cudaDeviceAttr["cudaDevAttr" + name]


# Fields the runtime derives rather than reads from an attribute.
_RESERVED_OFFSET = dict((f, o) for f, o, _, _ in DEVICE_PROP_FIELDS)["reserved"]


def fill_device_prop(name: str, uuid: bytes, total_mem: int, attrs: dict[int, int]) -> bytes:
    """The bytes of a cudaDeviceProp for a GPU with these attributes, up to (not including)
    its ``reserved`` tail, which the CUDA runtime leaves as the caller's memory had it."""
    buf = bytearray(DEVICE_PROP_SIZE)
    for field, offset, ctype, count in DEVICE_PROP_FIELDS:
        if field == "name":
            raw = name.encode()[: count - 1]
            buf[offset:offset + len(raw)] = raw
        elif field == "uuid":
            buf[offset:offset + 16] = uuid[:16].ljust(16, b"\0")
        elif field == "totalGlobalMem":
            struct.pack_into("<Q", buf, offset, total_mem)
        elif field in FIELD_ATTRS:
            code = _CODES[ctype]
            step = struct.calcsize(code)
            for i, attr in enumerate(FIELD_ATTRS[field]):
                value = attrs.get(attr_number(attr), 0)
                if code in "IQ":
                    value &= (1 << (8 * step)) - 1
                struct.pack_into("<" + code, buf, offset + i * step, value)
        elif field == "unifiedFunctionPointers":
            # no attribute: the runtime reports it for compute capability 9.0 and later
            major = attrs.get(attr_number("ComputeCapabilityMajor"), 0)
            struct.pack_into("<i", buf, offset, 1 if major >= 9 else 0)
    return bytes(buf[:_RESERVED_OFFSET])
