// Zero-copy: a kernel reads and writes pinned host memory mapped into the device's address
// space, through the pointer cudaHostGetDevicePointer gives and, with unified addressing,
// through the host pointer itself. Natively both work; farcuda refuses both with
// cudaErrorNotSupported and one line on stderr each (a remote GPU cannot access the
// client's memory coherently), which the program reports through its own error path.
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

__global__ void inc(int* p, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) p[i] += i;
}

static int check_sum(const int* h, int n, int rounds) {
  long long s = 0;
  for (int i = 0; i < n; i++) s += h[i];
  long long want = n + rounds * ((long long)n * (n - 1) / 2);
  printf("sum=%lld %s\n", s, s == want ? "ok" : "WRONG");
  return s == want;
}

int main() {
  printf("mapped\n");
  const int n = 1024;
  int* h = nullptr;
  cudaError_t e = cudaHostAlloc((void**)&h, n * sizeof(int), cudaHostAllocMapped);
  if (e != cudaSuccess) { printf("cudaHostAlloc -> %s\n", cudaGetErrorName(e)); return 1; }
  for (int i = 0; i < n; i++) h[i] = 1;
  int failed = 0;
  // 1. the device pointer of the mapping
  int* d = nullptr;
  e = cudaHostGetDevicePointer((void**)&d, h, 0);
  if (e != cudaSuccess) {
    printf("cudaHostGetDevicePointer -> %s\n", cudaGetErrorName(e));
    failed = 1;
  } else {
    inc<<<(n + 255) / 256, 256>>>(d, n);
    e = cudaDeviceSynchronize();
    if (e != cudaSuccess) { printf("kernel -> %s\n", cudaGetErrorName(e)); return 3; }
    if (!check_sum(h, n, 1)) return 4;
  }
  // 2. the host pointer itself (unified addressing)
  int rounds = failed ? 1 : 2;
  inc<<<(n + 255) / 256, 256>>>(h, n);
  e = cudaGetLastError();
  if (e != cudaSuccess) {
    printf("launch with the host pointer -> %s\n", cudaGetErrorName(e));
    failed = 1;
  } else {
    e = cudaDeviceSynchronize();
    if (e != cudaSuccess) { printf("kernel -> %s\n", cudaGetErrorName(e)); return 3; }
    if (!check_sum(h, n, rounds)) return 4;
  }
  cudaFreeHost(h);
  printf("%s\n", failed ? "REFUSED" : "PASSED");
  return failed ? 2 : 0;
}
