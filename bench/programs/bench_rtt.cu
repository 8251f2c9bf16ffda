// Synchronous calls, many times; median and p99 of each. MODE (argument 2):
//   d2h         a 4-byte cudaMemcpy device-to-host (the default)
//   h2d         an 8-byte cudaMemcpy host-to-device
//   d2h8        an 8-byte cudaMemcpy device-to-host
//   launchsync  an empty kernel launch followed by cudaDeviceSynchronize
//   query       cudaStreamQuery of an idle stream
//   mallocfree  cudaMalloc + cudaFree of SIZE bytes (argument 3, default 1 MiB)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <cuda_runtime.h>

#define CHECK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
  fprintf(stderr, "%s -> %s\n", #x, cudaGetErrorName(e_)); return 1; } } while (0)

__global__ void empty_kernel(unsigned* count) { if (count) atomicAdd(count, 1); }

int main(int argc, char** argv) {
  int n = argc > 1 ? atoi(argv[1]) : 20000;
  const char* mode = argc > 2 ? argv[2] : "d2h";
  size_t size = argc > 3 ? strtoull(argv[3], 0, 0) : (1u << 20);
  unsigned long long* d;
  unsigned* count;
  CHECK(cudaMalloc(&d, 8));
  CHECK(cudaMalloc(&count, 4));
  CHECK(cudaMemset(count, 0, 4));
  unsigned long long v = 0x1234567890abcdefull, got = 0;
  CHECK(cudaMemcpy(d, &v, 8, cudaMemcpyHostToDevice));
  cudaStream_t s;
  CHECK(cudaStreamCreate(&s));
  std::vector<double> t(n);
  for (int i = -200; i < n; i++) {
    auto a = std::chrono::steady_clock::now();
    if (!strcmp(mode, "d2h")) {
      unsigned g = 0;
      CHECK(cudaMemcpy(&g, d, 4, cudaMemcpyDeviceToHost));
      if (g != (unsigned)v) { fprintf(stderr, "wrong data\n"); return 2; }
    } else if (!strcmp(mode, "d2h8")) {
      CHECK(cudaMemcpy(&got, d, 8, cudaMemcpyDeviceToHost));
      if (got != v) { fprintf(stderr, "wrong data\n"); return 2; }
    } else if (!strcmp(mode, "h2d")) {
      unsigned long long w = v + (unsigned)i;
      CHECK(cudaMemcpy(d, &w, 8, cudaMemcpyHostToDevice));
    } else if (!strcmp(mode, "launchsync")) {
      empty_kernel<<<1, 1>>>(count);
      CHECK(cudaDeviceSynchronize());
    } else if (!strcmp(mode, "query")) {
      CHECK(cudaStreamQuery(s));
    } else if (!strcmp(mode, "mallocfree")) {
      void* p;
      CHECK(cudaMalloc(&p, size));
      CHECK(cudaFree(p));
    } else {
      fprintf(stderr, "unknown mode %s\n", mode);
      return 2;
    }
    auto b = std::chrono::steady_clock::now();
    if (i >= 0) t[i] = std::chrono::duration<double, std::micro>(b - a).count();
  }
  if (!strcmp(mode, "h2d")) {  // the last value written is there
    CHECK(cudaMemcpy(&got, d, 8, cudaMemcpyDeviceToHost));
    if (got != v + (unsigned)(n - 1)) { fprintf(stderr, "wrong data\n"); return 2; }
  }
  if (!strcmp(mode, "launchsync")) {  // every launch ran
    unsigned c = 0;
    CHECK(cudaMemcpy(&c, count, 4, cudaMemcpyDeviceToHost));
    if (c != (unsigned)(n + 200)) { fprintf(stderr, "%u launches, not %d\n", c, n + 200); return 2; }
  }
  std::sort(t.begin(), t.end());
  printf("rtt mode=%s n=%d median_us=%.2f p99_us=%.2f\n", mode, n, t[n / 2], t[(size_t)(n * 0.99)]);
  return 0;
}
