// Zero-copy: a kernel reads and writes pinned host memory mapped into the device's address
// space (cudaHostAllocMapped + cudaHostGetDevicePointer). Natively this works; farcuda
// refuses it with cudaErrorNotSupported and one line on stderr (a remote GPU cannot access
// the client's memory coherently), which the program reports through its own error path.
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

__global__ void inc(int* p, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) p[i] += i;
}

int main() {
  printf("mapped\n");
  const int n = 1024;
  int* h = nullptr;
  cudaError_t e = cudaHostAlloc((void**)&h, n * sizeof(int), cudaHostAllocMapped);
  if (e != cudaSuccess) { printf("cudaHostAlloc -> %s\n", cudaGetErrorName(e)); return 1; }
  for (int i = 0; i < n; i++) h[i] = 1;
  int* d = nullptr;
  e = cudaHostGetDevicePointer((void**)&d, h, 0);
  if (e != cudaSuccess) { printf("cudaHostGetDevicePointer -> %s\n", cudaGetErrorName(e)); return 2; }
  inc<<<(n + 255) / 256, 256>>>(d, n);
  e = cudaDeviceSynchronize();
  if (e != cudaSuccess) { printf("kernel -> %s\n", cudaGetErrorName(e)); return 3; }
  long long s = 0;
  for (int i = 0; i < n; i++) s += h[i];
  printf("sum=%lld %s\n", s, s == n + (long long)n * (n - 1) / 2 ? "PASSED" : "FAILED");
  cudaFreeHost(h);
  return 0;
}
