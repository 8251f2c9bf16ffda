// Which SMs a device's kernels run on: each block records %smid. With an SM budget
// (FARCUDA_DEVICES=host/0@sm=N) the device must report and use at most its budget, and two
// budgeted devices must use disjoint SMs. Prints, per device: the reported
// multiProcessorCount, the distinct SMs used; then whether devices' SM sets are disjoint.
#include <cstdio>
#include <set>
#include <vector>
#include <cuda_runtime.h>

#define CHECK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
  printf("FAIL line %d: %s -> %s\n", __LINE__, #x, cudaGetErrorName(e_)); return 1; } } while (0)

__global__ void where(unsigned* out, long long spin) {
  unsigned sm;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
  long long t0 = clock64();
  while (clock64() - t0 < spin) {}
  if (threadIdx.x == 0) out[blockIdx.x] = sm;
}

int main() {
  int n = 0;
  CHECK(cudaGetDeviceCount(&n));
  const int blocks = 4096;
  std::vector<std::set<unsigned>> used(n);
  std::vector<unsigned*> d(n);
  for (int i = 0; i < n; i++) {  // launch on all devices first, so they run at once
    CHECK(cudaSetDevice(i));
    CHECK(cudaMalloc(&d[i], blocks * sizeof(unsigned)));
    where<<<blocks, 128>>>(d[i], 200000);
    CHECK(cudaGetLastError());
  }
  std::vector<unsigned> h(blocks);
  for (int i = 0; i < n; i++) {
    CHECK(cudaSetDevice(i));
    CHECK(cudaMemcpy(h.data(), d[i], blocks * sizeof(unsigned), cudaMemcpyDeviceToHost));
    used[i].insert(h.begin(), h.end());
    cudaDeviceProp p;
    CHECK(cudaGetDeviceProperties(&p, i));
    int attr = 0;
    CHECK(cudaDeviceGetAttribute(&attr, cudaDevAttrMultiProcessorCount, i));
    printf("device %d: multiProcessorCount=%d attribute=%d sms_used=%zu\n", i,
           p.multiProcessorCount, attr, used[i].size());
  }
  bool disjoint = true;
  for (int i = 0; i < n; i++)
    for (int j = i + 1; j < n; j++)
      for (unsigned s : used[i]) disjoint &= !used[j].count(s);
  printf("disjoint=%s\n", disjoint ? "yes" : "no");
  return 0;
}
