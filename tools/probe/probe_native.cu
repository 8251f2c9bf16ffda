// Dumps facts about the native CUDA runtime on a GPU machine (used to check farcuda's
// client-side cudaDeviceProp fill and pitch rules offline).
#include <cuda_runtime.h>
#include <cstdio>
#include <cstring>
__global__ void k_empty() {}
int main() {
  int n = 0; cudaError_t e = cudaGetDeviceCount(&n);
  printf("count %d err %d\n", n, (int)e);
  cudaDeviceProp p; memset(&p, 0xAB, sizeof p);
  e = cudaGetDeviceProperties(&p, 0);
  printf("propsize %zu err %d\nprop ", sizeof p, (int)e);
  const unsigned char *b = (const unsigned char *)&p;
  for (size_t i = 0; i < sizeof p; i++) printf("%02x", b[i]);
  printf("\n");
  for (int a = 0; a < 300; a++) {
    int v = 0; cudaError_t r = cudaDeviceGetAttribute(&v, (cudaDeviceAttr)a, 0);
    if (r == cudaSuccess) printf("attr %d %d\n", a, v); else cudaGetLastError();
  }
  size_t widths[] = {1, 4, 100, 512, 513, 1000, 4096, 5000};
  for (size_t w : widths) { void *d; size_t pitch; e = cudaMallocPitch(&d, &pitch, w, 3); printf("pitch %zu %zu %d\n", w, pitch, (int)e); cudaFree(d); }
  void *ptrs[4]; for (int i = 0; i < 4; i++) { cudaMalloc(&ptrs[i], 1 << (4 + 8 * i)); printf("malloc %p\n", ptrs[i]); }
  int dv, rv; cudaDriverGetVersion(&dv); cudaRuntimeGetVersion(&rv); printf("versions %d %d\n", dv, rv);
  size_t lim; for (int l = 0; l < 8; l++) { if (cudaDeviceGetLimit(&lim, (cudaLimit)l) == cudaSuccess) printf("limit %d %zu\n", l, lim); else cudaGetLastError(); }
  int lo, hi; cudaDeviceGetStreamPriorityRange(&lo, &hi); printf("prio %d %d\n", lo, hi);
  cudaFuncAttributes fa; cudaFuncGetAttributes(&fa, k_empty); printf("funcattr regs %d maxthr %d ptx %d bin %d\n", fa.numRegs, fa.maxThreadsPerBlock, fa.ptxVersion, fa.binaryVersion);
  // launch rate
  cudaEvent_t a0, a1; cudaEventCreate(&a0); cudaEventCreate(&a1);
  for (int i = 0; i < 1000; i++) k_empty<<<1, 1>>>();
  cudaDeviceSynchronize();
  cudaEventRecord(a0);
  for (int i = 0; i < 100000; i++) k_empty<<<1, 1>>>();
  cudaEventRecord(a1); cudaEventSynchronize(a1);
  float ms; cudaEventElapsedTime(&ms, a0, a1); printf("launch100k_ms %.3f\n", ms);
  k_empty<<<1, 2048>>>(); e = cudaGetLastError(); printf("badlaunch %d %s\n", (int)e, cudaGetErrorName(e));
  e = cudaFree((void *)0x1234); printf("badfree %d %s\n", (int)e, cudaGetErrorName(e)); e = cudaGetLastError(); printf("after %d\n", (int)e);
  return 0;
}
