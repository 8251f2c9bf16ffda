// device_props: device management queries. cudaGetDeviceCount, every field of
// CUDA 13's cudaDeviceProp, cudaDeviceGetAttribute for every named attribute,
// cudaDriverGetVersion, cudaRuntimeGetVersion, cudaGetDevice/cudaSetDevice,
// cudaDeviceGetPCIBusId/cudaDeviceGetByPCIBusId, cudaChooseDevice,
// cudaGetDeviceFlags, cudaDeviceGetCacheConfig, cudaDeviceGetStreamPriorityRange,
// cudaDeviceGetLimit/SetLimit. Values are fixed for a given GPU and driver; no
// free-memory amounts are printed.
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <cuda_runtime.h>

#define CHECK(call)                                                           \
  do {                                                                        \
    cudaError_t e_ = (call);                                                  \
    if (e_ != cudaSuccess) {                                                  \
      printf("FAIL line %d: %s -> %s\n", __LINE__, #call, cudaGetErrorName(e_)); \
      fflush(stdout);                                                         \
      exit(1);                                                                \
    }                                                                         \
  } while (0)

static int g_failures = 0;
#define EXPECT(cond)                                                          \
  do {                                                                        \
    if (!(cond)) { printf("MISMATCH line %d: %s\n", __LINE__, #cond); ++g_failures; } \
  } while (0)

#define ATTRIBUTES \
  X(MaxThreadsPerBlock) \
  X(MaxBlockDimX) \
  X(MaxBlockDimY) \
  X(MaxBlockDimZ) \
  X(MaxGridDimX) \
  X(MaxGridDimY) \
  X(MaxGridDimZ) \
  X(MaxSharedMemoryPerBlock) \
  X(TotalConstantMemory) \
  X(WarpSize) \
  X(MaxPitch) \
  X(MaxRegistersPerBlock) \
  X(ClockRate) \
  X(TextureAlignment) \
  X(GpuOverlap) \
  X(MultiProcessorCount) \
  X(KernelExecTimeout) \
  X(Integrated) \
  X(CanMapHostMemory) \
  X(ComputeMode) \
  X(MaxTexture1DWidth) \
  X(MaxTexture2DWidth) \
  X(MaxTexture2DHeight) \
  X(MaxTexture3DWidth) \
  X(MaxTexture3DHeight) \
  X(MaxTexture3DDepth) \
  X(MaxTexture2DLayeredWidth) \
  X(MaxTexture2DLayeredHeight) \
  X(MaxTexture2DLayeredLayers) \
  X(SurfaceAlignment) \
  X(ConcurrentKernels) \
  X(EccEnabled) \
  X(PciBusId) \
  X(PciDeviceId) \
  X(TccDriver) \
  X(MemoryClockRate) \
  X(GlobalMemoryBusWidth) \
  X(L2CacheSize) \
  X(MaxThreadsPerMultiProcessor) \
  X(AsyncEngineCount) \
  X(UnifiedAddressing) \
  X(MaxTexture1DLayeredWidth) \
  X(MaxTexture1DLayeredLayers) \
  X(MaxTexture2DGatherWidth) \
  X(MaxTexture2DGatherHeight) \
  X(MaxTexture3DWidthAlt) \
  X(MaxTexture3DHeightAlt) \
  X(MaxTexture3DDepthAlt) \
  X(PciDomainId) \
  X(TexturePitchAlignment) \
  X(MaxTextureCubemapWidth) \
  X(MaxTextureCubemapLayeredWidth) \
  X(MaxTextureCubemapLayeredLayers) \
  X(MaxSurface1DWidth) \
  X(MaxSurface2DWidth) \
  X(MaxSurface2DHeight) \
  X(MaxSurface3DWidth) \
  X(MaxSurface3DHeight) \
  X(MaxSurface3DDepth) \
  X(MaxSurface1DLayeredWidth) \
  X(MaxSurface1DLayeredLayers) \
  X(MaxSurface2DLayeredWidth) \
  X(MaxSurface2DLayeredHeight) \
  X(MaxSurface2DLayeredLayers) \
  X(MaxSurfaceCubemapWidth) \
  X(MaxSurfaceCubemapLayeredWidth) \
  X(MaxSurfaceCubemapLayeredLayers) \
  X(MaxTexture1DLinearWidth) \
  X(MaxTexture2DLinearWidth) \
  X(MaxTexture2DLinearHeight) \
  X(MaxTexture2DLinearPitch) \
  X(MaxTexture2DMipmappedWidth) \
  X(MaxTexture2DMipmappedHeight) \
  X(ComputeCapabilityMajor) \
  X(ComputeCapabilityMinor) \
  X(MaxTexture1DMipmappedWidth) \
  X(StreamPrioritiesSupported) \
  X(GlobalL1CacheSupported) \
  X(LocalL1CacheSupported) \
  X(MaxSharedMemoryPerMultiprocessor) \
  X(MaxRegistersPerMultiprocessor) \
  X(ManagedMemory) \
  X(IsMultiGpuBoard) \
  X(MultiGpuBoardGroupID) \
  X(HostNativeAtomicSupported) \
  X(SingleToDoublePrecisionPerfRatio) \
  X(PageableMemoryAccess) \
  X(ConcurrentManagedAccess) \
  X(ComputePreemptionSupported) \
  X(CanUseHostPointerForRegisteredMem) \
  X(CooperativeLaunch) \
  X(MaxSharedMemoryPerBlockOptin) \
  X(CanFlushRemoteWrites) \
  X(HostRegisterSupported) \
  X(PageableMemoryAccessUsesHostPageTables) \
  X(DirectManagedMemAccessFromHost) \
  X(MaxBlocksPerMultiprocessor) \
  X(MaxPersistingL2CacheSize) \
  X(MaxAccessPolicyWindowSize) \
  X(SparseCudaArraySupported) \
  X(HostRegisterReadOnlySupported) \
  X(TimelineSemaphoreInteropSupported) \
  X(MemoryPoolsSupported) \
  X(GPUDirectRDMASupported) \
  X(GPUDirectRDMAFlushWritesOptions) \
  X(GPUDirectRDMAWritesOrdering) \
  X(MemoryPoolSupportedHandleTypes) \
  X(ClusterLaunch) \
  X(DeferredMappingCudaArraySupported) \
  X(IpcEventSupport) \
  X(MemSyncDomainCount) \
  X(NumaConfig) \
  X(NumaId) \
  X(MpsEnabled) \
  X(HostNumaId) \
  X(D3D12CigSupported) \
  X(VulkanCigSupported) \
  X(GpuPciDeviceId) \
  X(GpuPciSubsystemId) \
  X(HostNumaMemoryPoolsSupported) \
  X(HostNumaMultinodeIpcSupported) \
  X(HostMemoryPoolsSupported) \
  X(OnlyPartialHostNativeAtomicSupported) \

struct AttrName {
  cudaDeviceAttr attr;
  const char* name;
};
static const AttrName kAttrs[] = {
#define X(n) {cudaDevAttr##n, #n},
    ATTRIBUTES
#undef X
};

#define PI(f) printf("  %s = %d\n", #f, (int)p.f)
#define PU(f) printf("  %s = %u\n", #f, (unsigned)p.f)
#define PZ(f) printf("  %s = %zu\n", #f, (size_t)p.f)
#define PA2(f) printf("  %s = %d %d\n", #f, p.f[0], p.f[1])
#define PA3(f) printf("  %s = %d %d %d\n", #f, p.f[0], p.f[1], p.f[2])

static void print_props(int dev) {
  cudaDeviceProp p;
  memset(&p, 0, sizeof p);
  CHECK(cudaGetDeviceProperties(&p, dev));
  printf("device %d properties:\n", dev);
  printf("  name = %s\n", p.name);
  printf("  uuid =");
  for (int i = 0; i < 16; ++i) printf("%s%02x", (i == 4 || i == 6 || i == 8 || i == 10) ? "-" : (i ? "" : " "), (unsigned char)p.uuid.bytes[i]);
  printf("\n");
  printf("  luid =");
  for (int i = 0; i < 8; ++i) printf(" %02x", (unsigned char)p.luid[i]);
  printf("\n");
  PU(luidDeviceNodeMask);
  PZ(totalGlobalMem);
  PZ(sharedMemPerBlock);
  PI(regsPerBlock);
  PI(warpSize);
  PZ(memPitch);
  PI(maxThreadsPerBlock);
  PA3(maxThreadsDim);
  PA3(maxGridSize);
  PZ(totalConstMem);
  PI(major);
  PI(minor);
  PZ(textureAlignment);
  PZ(texturePitchAlignment);
  PI(multiProcessorCount);
  PI(integrated);
  PI(canMapHostMemory);
  PI(maxTexture1D);
  PI(maxTexture1DMipmap);
  PA2(maxTexture2D);
  PA2(maxTexture2DMipmap);
  PA3(maxTexture2DLinear);
  PA2(maxTexture2DGather);
  PA3(maxTexture3D);
  PA3(maxTexture3DAlt);
  PI(maxTextureCubemap);
  PA2(maxTexture1DLayered);
  PA3(maxTexture2DLayered);
  PA2(maxTextureCubemapLayered);
  PI(maxSurface1D);
  PA2(maxSurface2D);
  PA3(maxSurface3D);
  PA2(maxSurface1DLayered);
  PA3(maxSurface2DLayered);
  PI(maxSurfaceCubemap);
  PA2(maxSurfaceCubemapLayered);
  PZ(surfaceAlignment);
  PI(concurrentKernels);
  PI(ECCEnabled);
  PI(pciBusID);
  PI(pciDeviceID);
  PI(pciDomainID);
  PI(tccDriver);
  PI(asyncEngineCount);
  PI(unifiedAddressing);
  PI(memoryBusWidth);
  PI(l2CacheSize);
  PI(persistingL2CacheMaxSize);
  PI(maxThreadsPerMultiProcessor);
  PI(streamPrioritiesSupported);
  PI(globalL1CacheSupported);
  PI(localL1CacheSupported);
  PZ(sharedMemPerMultiprocessor);
  PI(regsPerMultiprocessor);
  PI(managedMemory);
  PI(isMultiGpuBoard);
  PI(multiGpuBoardGroupID);
  PI(hostNativeAtomicSupported);
  PI(pageableMemoryAccess);
  PI(concurrentManagedAccess);
  PI(computePreemptionSupported);
  PI(canUseHostPointerForRegisteredMem);
  PI(cooperativeLaunch);
  PZ(sharedMemPerBlockOptin);
  PI(pageableMemoryAccessUsesHostPageTables);
  PI(directManagedMemAccessFromHost);
  PI(maxBlocksPerMultiProcessor);
  PI(accessPolicyMaxWindowSize);
  PZ(reservedSharedMemPerBlock);
  PI(hostRegisterSupported);
  PI(sparseCudaArraySupported);
  PI(hostRegisterReadOnlySupported);
  PI(timelineSemaphoreInteropSupported);
  PI(memoryPoolsSupported);
  PI(gpuDirectRDMASupported);
  PU(gpuDirectRDMAFlushWritesOptions);
  PI(gpuDirectRDMAWritesOrdering);
  PU(memoryPoolSupportedHandleTypes);
  PI(deferredMappingCudaArraySupported);
  PI(ipcEventSupported);
  PI(clusterLaunch);
  PI(unifiedFunctionPointers);
  PI(deviceNumaConfig);
  PI(deviceNumaId);
  PI(mpsEnabled);
  PI(hostNumaId);
  PU(gpuPciDeviceID);
  PU(gpuPciSubsystemID);
  PI(hostNumaMultinodeIpcSupported);

  EXPECT(p.major >= 1 && p.warpSize == 32 && p.totalGlobalMem > 0 && p.multiProcessorCount > 0);

  // The attributes agree with the struct where both exist.
  int v = -1;
  CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev));
  EXPECT(v == p.multiProcessorCount);
  CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrComputeCapabilityMajor, dev));
  EXPECT(v == p.major);
  CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  EXPECT((size_t)v == p.sharedMemPerBlockOptin);
  CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrL2CacheSize, dev));
  EXPECT(v == p.l2CacheSize);
}

static void print_attributes(int dev) {
  printf("device %d attributes:\n", dev);
  int n = 0;
  for (const AttrName& a : kAttrs) {
    int v = -12345;
    cudaError_t e = cudaDeviceGetAttribute(&v, a.attr, dev);
    if (e == cudaSuccess) {
      printf("  [%d] %s = %d\n", (int)a.attr, a.name, v);
    } else {
      printf("  [%d] %s -> %s\n", (int)a.attr, a.name, cudaGetErrorName(e));
      cudaGetLastError();
    }
    ++n;
  }
  printf("  (%d attributes)\n", n);
}

static void print_limit(const char* name, cudaLimit lim) {
  size_t v = 0;
  cudaError_t e = cudaDeviceGetLimit(&v, lim);
  if (e == cudaSuccess) {
    printf("  %s = %zu\n", name, v);
  } else {
    printf("  %s -> %s\n", name, cudaGetErrorName(e));
    cudaGetLastError();
  }
}

static void print_limits(const char* when) {
  printf("limits (%s):\n", when);
  print_limit("cudaLimitStackSize", cudaLimitStackSize);
  print_limit("cudaLimitPrintfFifoSize", cudaLimitPrintfFifoSize);
  print_limit("cudaLimitMallocHeapSize", cudaLimitMallocHeapSize);
  print_limit("cudaLimitDevRuntimeSyncDepth", cudaLimitDevRuntimeSyncDepth);
  print_limit("cudaLimitDevRuntimePendingLaunchCount", cudaLimitDevRuntimePendingLaunchCount);
  print_limit("cudaLimitMaxL2FetchGranularity", cudaLimitMaxL2FetchGranularity);
  print_limit("cudaLimitPersistingL2CacheSize", cudaLimitPersistingL2CacheSize);
}

int main() {
  printf("device_props\n");
  int count = 0;
  CHECK(cudaGetDeviceCount(&count));
  printf("device count = %d\n", count);
  EXPECT(count >= 1);
  int drv = 0, rt = 0;
  CHECK(cudaDriverGetVersion(&drv));
  CHECK(cudaRuntimeGetVersion(&rt));
  printf("driver version = %d\n", drv);
  printf("runtime version = %d\n", rt);
  EXPECT(rt >= 13000 && drv >= rt);

  int dev = -1;
  CHECK(cudaGetDevice(&dev));
  printf("current device = %d\n", dev);
  CHECK(cudaSetDevice(0));

  print_props(0);
  print_attributes(0);

  char bus[64];
  CHECK(cudaDeviceGetPCIBusId(bus, (int)sizeof bus, 0));
  printf("pci bus id = %s\n", bus);
  int by_bus = -1;
  CHECK(cudaDeviceGetByPCIBusId(&by_bus, bus));
  printf("device by pci bus id = %d\n", by_bus);
  EXPECT(by_bus == 0);

  cudaDeviceProp want;
  memset(&want, 0, sizeof want);
  want.major = 9;
  want.minor = 0;
  int chosen = -1;
  CHECK(cudaChooseDevice(&chosen, &want));
  printf("cudaChooseDevice(9.0) = %d\n", chosen);

  unsigned flags = 0;
  CHECK(cudaGetDeviceFlags(&flags));
  printf("device flags = 0x%x\n", flags);
  cudaFuncCache cc;
  CHECK(cudaDeviceGetCacheConfig(&cc));
  printf("cache config = %d\n", (int)cc);
  int lo = 0, hi = 0;
  CHECK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
  printf("stream priority range = least %d greatest %d\n", lo, hi);

  print_limits("defaults");
  CHECK(cudaDeviceSetLimit(cudaLimitStackSize, 4096));
  CHECK(cudaDeviceSetLimit(cudaLimitPrintfFifoSize, 4 << 20));
  CHECK(cudaDeviceSetLimit(cudaLimitMallocHeapSize, 32 << 20));
  print_limits("after set: stack 4096, printf fifo 4 MiB, heap 32 MiB");
  size_t v = 0;
  CHECK(cudaDeviceGetLimit(&v, cudaLimitStackSize));
  EXPECT(v >= 4096);
  CHECK(cudaDeviceGetLimit(&v, cudaLimitMallocHeapSize));
  EXPECT(v >= (32u << 20));
  cudaError_t e = cudaDeviceSetLimit((cudaLimit)77, 1);
  printf("cudaDeviceSetLimit(bad limit) -> %s\n", cudaGetErrorName(e));
  EXPECT(e != cudaSuccess);
  cudaGetLastError();

  // Properties of every device (the same struct path as device 0) but print only
  // what is count-independent: that each query succeeds.
  int all_ok = 1;
  for (int d = 0; d < count; ++d) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, d) != cudaSuccess || p.major < 1) all_ok = 0;
  }
  printf("all devices answer cudaGetDeviceProperties: %s\n", all_ok ? "yes" : "no");
  EXPECT(all_ok);

  CHECK(cudaDeviceSynchronize());
  printf("%s\n", g_failures ? "FAILED" : "PASSED");
  return g_failures ? 1 : 0;
}
