// fault: a kernel that writes far outside any allocation. Natively the context is then
// unusable: the synchronization that sees the fault returns cudaErrorIllegalAddress and every
// later call that needs the device returns it too. The program prints what each call returns
// and exits 3 ("FAULTED"). With an argument S it waits S seconds after the fault (for tests
// that look at the server's view of the session meanwhile).
// Through farcuda, stdout and the exit status are the same, and stderr says once which kernel
// broke the device.
#include <cstdio>
#include <cstdlib>
#include <unistd.h>
#include <cuda_runtime.h>

__global__ void fine(int* p, int v) { p[threadIdx.x] = v + threadIdx.x; }
__global__ void wild_write(int* p, long long off) { p[off + threadIdx.x] = 1; }

int main(int argc, char** argv) {
  int* p;
  int h[4] = {0};
  printf("malloc: %s\n", cudaGetErrorName(cudaMalloc(&p, 1 << 20)));
  fine<<<1, 4>>>(p, 40);
  printf("fine: %s\n", cudaGetErrorName(cudaDeviceSynchronize()));
  printf("copy: %s %d %d\n", cudaGetErrorName(cudaMemcpy(h, p, sizeof h, cudaMemcpyDeviceToHost)), h[0], h[3]);
  fine<<<1, 4>>>(p, 50);
  printf("fine again: %s\n", cudaGetErrorName(cudaStreamSynchronize(0)));
  wild_write<<<1, 32>>>(p, 1LL << 38);  // 1 TiB past the allocation
  cudaError_t e = cudaDeviceSynchronize();
  printf("after wild_write: %s\n", cudaGetErrorName(e));
  printf("get last error: %s\n", cudaGetErrorName(cudaGetLastError()));
  int* q = nullptr;
  printf("malloc after: %s\n", cudaGetErrorName(cudaMalloc(&q, 4096)));
  printf("copy after: %s\n", cudaGetErrorName(cudaMemcpy(h, p, sizeof h, cudaMemcpyDeviceToHost)));
  fine<<<1, 4>>>(p, 60);
  printf("launch after: %s\n", cudaGetErrorName(cudaGetLastError()));
  printf("sync after: %s\n", cudaGetErrorName(cudaDeviceSynchronize()));
  fflush(stdout);
  if (argc > 1) {
    printf("holding\n");
    fflush(stdout);
    sleep(atoi(argv[1]));
  }
  printf("%s\n", e == cudaSuccess ? "NO FAULT" : "FAULTED");
  return e == cudaSuccess ? 0 : 3;
}
