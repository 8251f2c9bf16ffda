// Kernels of several devices at once. `vdev_overlap [N] [ITERS]` runs a one-block kernel of a
// fixed amount of arithmetic (a dependent chain of ITERS multiply-adds, doubled until it
// takes 150 ms alone) on device 0 alone, then on each of the first N devices (default: all),
// all launched before any is waited for, and prints
//   devices N iters I alone_ms A together_ms T ratio T/A
// then PASSED (the results checked). NO transcript (timings): the GPU test asks that kernels
// of virtual devices that share one GPU run side by side (ratio near 1, not N).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <cuda_runtime.h>

#define CHECK(x)                                                                 \
  do {                                                                           \
    cudaError_t e_ = (x);                                                        \
    if (e_ != cudaSuccess) {                                                     \
      printf("%s failed: %s\n", #x, cudaGetErrorName(e_));                       \
      return 1;                                                                  \
    }                                                                            \
  } while (0)

__global__ void chain(long long iters, float* out) {
  float x = threadIdx.x;
  for (long long i = 0; i < iters; i++) x = x * 0.999999f + 0.5f;
  out[threadIdx.x] = x;
}

static double now_ms() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

static int run(int n, long long iters, const std::vector<float*>& out, double* ms) {
  double t0 = now_ms();
  for (int d = 0; d < n; d++) {
    CHECK(cudaSetDevice(d));
    chain<<<1, 32>>>(iters, out[d]);
    CHECK(cudaGetLastError());
  }
  for (int d = 0; d < n; d++) {
    CHECK(cudaSetDevice(d));
    CHECK(cudaDeviceSynchronize());
  }
  *ms = now_ms() - t0;
  return 0;
}

int main(int argc, char** argv) {
  int count = 0;
  CHECK(cudaGetDeviceCount(&count));
  int n = argc > 1 ? atoi(argv[1]) : count;
  long long iters = argc > 2 ? atoll(argv[2]) : (1LL << 22);
  if (n < 1 || n > count) {
    printf("%d devices asked, %d visible\n", n, count);
    return 2;
  }
  std::vector<float*> out(n);
  for (int d = 0; d < n; d++) {
    CHECK(cudaSetDevice(d));
    CHECK(cudaMalloc(&out[d], 32 * sizeof(float)));
  }
  double alone = 0, together = 0;
  if (run(n, 1, out, &together)) return 1;  // every module loaded, every device warm
  for (;;) {
    if (run(1, iters, out, &alone)) return 1;
    if (alone >= 150 || iters >= (1LL << 40)) break;
    iters *= 2;
  }
  if (run(1, iters, out, &alone)) return 1;  // (the calibrated length, measured again)
  if (run(n, iters, out, &together)) return 1;
  int bad = 0;
  float first = 0;
  for (int d = 0; d < n; d++) {  // every device ran the whole chain: the same finite value
    float h[32];
    CHECK(cudaSetDevice(d));
    CHECK(cudaMemcpy(h, out[d], sizeof h, cudaMemcpyDeviceToHost));
    if (d == 0) first = h[0];
    if (!(h[0] == first && first > 1.0f && first < 1e7f)) bad++;
    CHECK(cudaFree(out[d]));
  }
  printf("devices %d iters %lld alone_ms %.1f together_ms %.1f ratio %.2f\n", n, iters, alone,
         together, together / alone);
  printf(bad ? "FAILED\n" : "PASSED\n");
  return bad ? 1 : 0;
}
