// One kernel that runs for a long time (the first argument, in milliseconds), then a
// synchronization: a healthy but slow call must not be cut off by FARCUDA_LIVENESS_TIMEOUT.
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

__global__ void spin(long long cycles, int* out) {
  long long t0 = clock64();
  while (clock64() - t0 < cycles) {}
  if (threadIdx.x == 0) *out = 42;
}

int main(int argc, char** argv) {
  long long ms = argc > 1 ? atoll(argv[1]) : 1000;
  int clock_khz = 0, v = 0, *d;
  cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0);
  if (cudaMalloc(&d, sizeof(int)) != cudaSuccess) return 2;
  spin<<<1, 32>>>(ms * (long long)clock_khz, d);
  cudaError_t e = cudaDeviceSynchronize();
  cudaMemcpy(&v, d, sizeof v, cudaMemcpyDeviceToHost);
  printf("%s %d\n", cudaGetErrorName(e), v);
  return e == cudaSuccess && v == 42 ? 0 : 1;
}
