// copy_limits: copies at the sizes where a remoting layer changes its method, and one byte
// either side: 64 KiB (the daemon's small-copy path), 4 MiB (async copies into pinned memory
// that return at once, the staging slot), in both directions, synchronous and async, pageable
// and pinned, at odd offsets, and 2D copies of those sizes. Every byte is checked; per case
// the program prints the size, the direction and a checksum of what arrived.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <cuda_runtime.h>

#define CHECK(call)                                                                 \
  do {                                                                              \
    cudaError_t e_ = (call);                                                        \
    if (e_ != cudaSuccess) {                                                        \
      printf("FAIL line %d: %s -> %s\n", __LINE__, #call, cudaGetErrorName(e_));    \
      exit(1);                                                                      \
    }                                                                               \
  } while (0)

__global__ void bump(unsigned char* p, size_t n, unsigned char k) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    p[i] = (unsigned char)(p[i] + k);
}

static int bad = 0;

static unsigned long long sum(const unsigned char* p, size_t n) {
  unsigned long long s = 0;
  for (size_t i = 0; i < n; i++) s = s * 31 + p[i];
  return s;
}

static void check(const char* what, size_t n, int off, const unsigned char* got, const unsigned char* src, unsigned char k) {
  size_t wrong = 0;
  for (size_t i = 0; i < n; i++) wrong += got[i] != (unsigned char)(src[i] + k);
  printf("%-28s %9zu bytes offset %d: checksum %016llx wrong %zu\n", what, n, off, sum(got, n), wrong);
  bad += wrong != 0;
}

int main() {
  const size_t K64 = 64 << 10, M4 = 4 << 20;
  const size_t sizes[] = {K64 - 1, K64, K64 + 1, M4 - 1, M4, M4 + 1};
  size_t cap = M4 + 4096;
  unsigned char *dev, *pin_src, *pin_dst;
  CHECK(cudaMalloc(&dev, cap));
  CHECK(cudaMallocHost(&pin_src, cap));
  CHECK(cudaMallocHost(&pin_dst, cap));
  std::vector<unsigned char> src(cap), dst(cap);
  for (size_t i = 0; i < cap; i++) src[i] = (unsigned char)(i * 131 + (i >> 9));
  memcpy(pin_src, src.data(), cap);
  cudaStream_t s;
  CHECK(cudaStreamCreate(&s));
  unsigned char k = 1;
  for (size_t n : sizes) {
    for (int off : {0, 3}) {
      // pageable, synchronous
      memset(dst.data(), 0, cap);
      CHECK(cudaMemcpy(dev + off, src.data(), n, cudaMemcpyHostToDevice));
      bump<<<64, 256>>>(dev + off, n, k);
      CHECK(cudaMemcpy(dst.data(), dev + off, n, cudaMemcpyDeviceToHost));
      check("pageable sync", n, off, dst.data(), src.data(), k);
      k++;
      // pinned, async on a created stream, synchronized once
      memset(pin_dst, 0, cap);
      CHECK(cudaMemcpyAsync(dev + off, pin_src, n, cudaMemcpyHostToDevice, s));
      bump<<<64, 256, 0, s>>>(dev + off, n, k);
      CHECK(cudaMemcpyAsync(pin_dst, dev + off, n, cudaMemcpyDeviceToHost, s));
      CHECK(cudaStreamSynchronize(s));
      check("pinned async", n, off, pin_dst, src.data(), k);
      k++;
      // pageable async on the legacy stream, then a D2H into pinned memory read after an event
      cudaEvent_t ev;
      CHECK(cudaEventCreate(&ev));
      memset(pin_dst, 0, cap);
      CHECK(cudaMemcpyAsync(dev + off, src.data(), n, cudaMemcpyHostToDevice, 0));
      bump<<<64, 256>>>(dev + off, n, k);
      CHECK(cudaMemcpyAsync(pin_dst, dev + off, n, cudaMemcpyDeviceToHost, 0));
      CHECK(cudaEventRecord(ev, 0));
      CHECK(cudaEventSynchronize(ev));
      check("legacy async, event", n, off, pin_dst, src.data(), k);
      CHECK(cudaEventDestroy(ev));
      k++;
    }
  }
  // 2D copies whose total is one of the sizes (rows of 1024 bytes, pitch 1536 on the host)
  for (size_t rows : {(size_t)63, (size_t)64, (size_t)65, (size_t)4095, (size_t)4096}) {
    size_t w = 1024, hp = 1536, dp;
    unsigned char* d2;
    CHECK(cudaMallocPitch(&d2, &dp, w, rows));
    std::vector<unsigned char> h(hp * rows), back(hp * rows, 0);
    for (size_t i = 0; i < h.size(); i++) h[i] = (unsigned char)(i * 7 + rows);
    CHECK(cudaMemcpy2D(d2, dp, h.data(), hp, w, rows, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy2D(back.data(), hp, d2, dp, w, rows, cudaMemcpyDeviceToHost));
    size_t wrong = 0;
    for (size_t r = 0; r < rows; r++)
      for (size_t c = 0; c < w; c++) wrong += back[r * hp + c] != h[r * hp + c];
    printf("2D %5zu rows of %zu: checksum %016llx wrong %zu\n", rows, w, sum(back.data(), back.size()), wrong);
    bad += wrong != 0;
    CHECK(cudaFree(d2));
  }
  CHECK(cudaStreamDestroy(s));
  CHECK(cudaFreeHost(pin_src));
  CHECK(cudaFreeHost(pin_dst));
  CHECK(cudaFree(dev));
  printf("%s\n", bad ? "FAILED" : "PASSED");
  return bad ? 1 : 0;
}
