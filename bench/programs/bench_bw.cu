// Bulk transfer: cudaMemcpy of SIZE bytes host to device and device to host, pageable
// memory, random data, checked with a checksum after the round trip.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cuda_runtime.h>

#define CHECK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
  fprintf(stderr, "%s -> %s\n", #x, cudaGetErrorName(e_)); return 1; } } while (0)

static uint64_t fnv(const unsigned char* p, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i += 64) { h ^= p[i]; h *= 1099511628211ULL; }
  return h;
}

int main(int argc, char** argv) {
  size_t n = argc > 1 ? strtoull(argv[1], 0, 0) : (1ULL << 30);
  int reps = argc > 2 ? atoi(argv[2]) : 3;
  unsigned char* a = (unsigned char*)malloc(n);
  unsigned char* b = (unsigned char*)malloc(n);
  uint64_t x = 88172645463325252ULL;
  // KIND (argument 3): random (the default), zeros, or sparse (a ReLU output: about half
  // zeros, in runs, the rest random floats)
  const char* kind = argc > 3 ? argv[3] : "random";
  for (size_t i = 0; i + 8 <= n; i += 8) {
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    if (!strcmp(kind, "zeros")) memset(a + i, 0, 8);
    else if (!strcmp(kind, "sparse")) {
      float f[2] = {(float)(int32_t)(x >> 32) / 2147483648.0f, (float)(int32_t)x / 2147483648.0f};
      for (int k = 0; k < 2; k++) if (f[k] < 0 || ((i >> 12) & 1)) f[k] = 0;  // ReLU, and runs
      memcpy(a + i, f, 8);
    } else memcpy(a + i, &x, 8);
  }
  memset(b, 0, n);
  void* d;
  CHECK(cudaMalloc(&d, n));
  CHECK(cudaMemcpy(d, a, n, cudaMemcpyHostToDevice));  // warm-up
  double best_h2d = 1e30, best_d2h = 1e30;
  for (int r = 0; r < reps; r++) {
    auto t0 = std::chrono::steady_clock::now();
    CHECK(cudaMemcpy(d, a, n, cudaMemcpyHostToDevice));
    CHECK(cudaDeviceSynchronize());
    auto t1 = std::chrono::steady_clock::now();
    CHECK(cudaMemcpy(b, d, n, cudaMemcpyDeviceToHost));
    auto t2 = std::chrono::steady_clock::now();
    best_h2d = std::min(best_h2d, std::chrono::duration<double>(t1 - t0).count());
    best_d2h = std::min(best_d2h, std::chrono::duration<double>(t2 - t1).count());
  }
  bool ok = fnv(a, n) == fnv(b, n) && memcmp(a, b, n) == 0;
  printf("bw kind=%s bytes=%zu h2d_GBps=%.3f d2h_GBps=%.3f checksum=%s\n", kind, n,
         n / best_h2d / 1e9, n / best_d2h / 1e9, ok ? "ok" : "BAD");
  return ok ? 0 : 2;
}
