// Synchronous round trip: a 4-byte cudaMemcpy device-to-host, many times; median and p99.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <cuda_runtime.h>

#define CHECK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
  fprintf(stderr, "%s -> %s\n", #x, cudaGetErrorName(e_)); return 1; } } while (0)

int main(int argc, char** argv) {
  int n = argc > 1 ? atoi(argv[1]) : 20000;
  unsigned* d;
  CHECK(cudaMalloc(&d, 4));
  unsigned v = 0x12345678u, got = 0;
  CHECK(cudaMemcpy(d, &v, 4, cudaMemcpyHostToDevice));
  std::vector<double> t(n);
  for (int i = 0; i < 200; i++) CHECK(cudaMemcpy(&got, d, 4, cudaMemcpyDeviceToHost));
  for (int i = 0; i < n; i++) {
    auto a = std::chrono::steady_clock::now();
    CHECK(cudaMemcpy(&got, d, 4, cudaMemcpyDeviceToHost));
    auto b = std::chrono::steady_clock::now();
    t[i] = std::chrono::duration<double, std::micro>(b - a).count();
    if (got != v) { fprintf(stderr, "wrong data\n"); return 2; }
  }
  std::sort(t.begin(), t.end());
  printf("rtt n=%d median_us=%.2f p99_us=%.2f\n", n, t[n / 2], t[(size_t)(n * 0.99)]);
  return 0;
}
