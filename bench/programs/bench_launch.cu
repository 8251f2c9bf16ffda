// Async launch throughput: N empty-ish kernel launches, then one synchronization.
// Every launch increments a device counter with an atomic; all N must be counted.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

__global__ void tick(unsigned long long* counter) {
  if (threadIdx.x == 0) atomicAdd(counter, 1ULL);
}

#define CHECK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
  fprintf(stderr, "%s -> %s\n", #x, cudaGetErrorName(e_)); return 1; } } while (0)

int main(int argc, char** argv) {
  long n = argc > 1 ? atol(argv[1]) : 100000;
  unsigned long long* d;
  CHECK(cudaMalloc(&d, sizeof *d));
  CHECK(cudaMemset(d, 0, sizeof *d));
  for (int i = 0; i < 1000; i++) tick<<<1, 32>>>(d);  // warm-up: module load, queues
  CHECK(cudaDeviceSynchronize());
  CHECK(cudaMemset(d, 0, sizeof *d));
  CHECK(cudaDeviceSynchronize());
  auto t0 = std::chrono::steady_clock::now();
  for (long i = 0; i < n; i++) tick<<<1, 32>>>(d);
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());
  auto t1 = std::chrono::steady_clock::now();
  unsigned long long count = 0;
  CHECK(cudaMemcpy(&count, d, sizeof count, cudaMemcpyDeviceToHost));
  double us = std::chrono::duration<double, std::micro>(t1 - t0).count() / n;
  printf("launch n=%ld counted=%llu us_per_launch=%.3f launches_per_s=%.0f\n", n, count, us,
         1e6 / us);
  return count == (unsigned long long)n ? 0 : 2;
}
