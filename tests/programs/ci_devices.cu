// Several virtual devices (CI, no kernel execution needed): each device gets its own memory,
// pointers resolve to the device that owns them, copies between devices are byte-exact, and
// one launch per device carries the device's index (the daemons record where each went).
#include <cstdio>
#include <cstring>
#include <vector>
#include <cuda_runtime.h>

#define CHECK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
  printf("FAIL line %d: %s -> %s\n", __LINE__, #x, cudaGetErrorName(e_)); return 1; } } while (0)

__global__ void tag(int device, int* p) { if (threadIdx.x == 0) p[0] = device; }

int main() {
  int n = 0;
  CHECK(cudaGetDeviceCount(&n));
  printf("devices %d\n", n);
  const size_t bytes = 1 << 20;
  std::vector<unsigned char*> d(n);
  std::vector<unsigned char> h(bytes), back(bytes);
  int bad = 0;
  for (int i = 0; i < n; i++) {
    CHECK(cudaSetDevice(i));
    int cur = -1;
    CHECK(cudaGetDevice(&cur));
    bad += cur != i;
    CHECK(cudaMalloc(&d[i], bytes));
    for (size_t k = 0; k < bytes; k++) h[k] = (unsigned char)(k * 7 + i * 31);
    CHECK(cudaMemcpy(d[i], h.data(), bytes, cudaMemcpyHostToDevice));
    tag<<<1, 32>>>(i, (int*)d[i]);
    CHECK(cudaGetLastError());
  }
  for (int i = 0; i < n; i++) {
    cudaPointerAttributes a;
    CHECK(cudaPointerGetAttributes(&a, d[i] + 100));
    bad += a.device != i || a.type != cudaMemoryTypeDevice;
  }
  // copies between devices: peer and default, checked on the host
  for (int i = 1; i < n; i++) {
    CHECK(cudaMemcpyPeer(d[0], 0, d[i], i, bytes));
    CHECK(cudaSetDevice(0));
    CHECK(cudaMemcpy(back.data(), d[0], bytes, cudaMemcpyDeviceToHost));
    for (size_t k = 4; k < bytes; k++) bad += back[k] != (unsigned char)(k * 7 + i * 31);
    CHECK(cudaMemcpy(d[i], d[0], bytes / 2, cudaMemcpyDefault));
    CHECK(cudaSetDevice(i));
    CHECK(cudaMemcpy(back.data(), d[i], bytes, cudaMemcpyDeviceToHost));
    for (size_t k = 4; k < bytes / 2; k++) bad += back[k] != (unsigned char)(k * 7 + i * 31);
  }
  for (int i = 0; i < n; i++) {
    CHECK(cudaSetDevice(i));
    CHECK(cudaDeviceSynchronize());
    CHECK(cudaFree(d[i]));
  }
  printf("mismatches %d\n%s\n", bad, bad ? "FAILED" : "PASSED");
  return bad ? 1 : 0;
}
