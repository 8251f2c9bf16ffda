// Entry points for the pytest-benchmark microbenchmarks (bench/test_micro.py): a shared
// library built with -cudart shared, loaded into the benchmark's process after farcuda's
// shim (or the real runtime, for the native baseline).
#include <cstdlib>
#include <cstring>
#include <cuda_runtime.h>

__global__ void tick(unsigned long long* c) { if (threadIdx.x == 0) atomicAdd(c, 1ULL); }

static unsigned long long* d_count;
static unsigned* d_word;
static unsigned char *d_buf, *h_buf;
static size_t cap;

extern "C" int mb_init(size_t bytes) {
  cap = bytes;
  if (cudaMalloc(&d_count, 8) || cudaMalloc(&d_word, 4) || cudaMalloc(&d_buf, bytes)) return 1;
  h_buf = (unsigned char*)malloc(bytes);
  for (size_t i = 0; i < bytes; i++) h_buf[i] = (unsigned char)(i * 31 + 7);
  return cudaMemset(d_count, 0, 8) || cudaDeviceSynchronize();
}

extern "C" int mb_rtt(void) {  // one 4-byte device-to-host copy
  unsigned v;
  return cudaMemcpy(&v, d_word, 4, cudaMemcpyDeviceToHost);
}

extern "C" int mb_launches(int n) {  // n async launches, then one synchronization
  for (int i = 0; i < n; i++) tick<<<1, 32>>>(d_count);
  return cudaDeviceSynchronize();
}

extern "C" unsigned long long mb_count(void) {
  unsigned long long c = 0;
  cudaMemcpy(&c, d_count, 8, cudaMemcpyDeviceToHost);
  return c;
}

extern "C" int mb_h2d(size_t n) { return n > cap ? 1 : cudaMemcpy(d_buf, h_buf, n, cudaMemcpyHostToDevice); }
extern "C" int mb_d2h(size_t n) { return n > cap ? 1 : cudaMemcpy(h_buf, d_buf, n, cudaMemcpyDeviceToHost); }
