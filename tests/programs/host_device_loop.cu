// host_device_loop: iterations that alternate host and device work, each depending on the
// last: the host edits the data, sends it, two kernels on the legacy stream and one on a
// created stream work on it, the host reads a small result (4 bytes) and a large one, and
// the next iteration's parameters (a float scale, an int count, a char mode) come from what
// the device computed. Host and device results are compared each iteration.
#include <cstdio>
#include <cstdlib>
#include <cmath>
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

__global__ void scale_add(int* v, int n, float scale, char mode, int add) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) v[i] = (int)((float)v[i] * scale) + (mode == 'a' ? add : -add);
}

__global__ void count_odd(const int* v, int n, int* out) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n && (v[i] & 1)) atomicAdd(out, 1);
}

__global__ void mix(int* v, int n, long long salt) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) v[i] = (int)(((long long)v[i] * 3 + salt) % 1000003);
}

int main() {
  const int n = 50000;
  std::vector<int> h(n), ref(n);
  for (int i = 0; i < n; i++) ref[i] = h[i] = (i * 37) % 1001;
  int *d, *d_cnt;
  CHECK(cudaMalloc(&d, n * sizeof(int)));
  CHECK(cudaMalloc(&d_cnt, sizeof(int)));
  cudaStream_t s;
  CHECK(cudaStreamCreate(&s));
  float scale = 1.5f;
  char mode = 'a';
  int add = 3, bad = 0;
  for (int it = 0; it < 12; it++) {
    for (int i = it; i < n; i += 97) ref[i] = h[i] = h[i] + it;  // host edits between rounds
    CHECK(cudaMemcpy(d, h.data(), n * sizeof(int), cudaMemcpyHostToDevice));
    CHECK(cudaMemset(d_cnt, 0, sizeof(int)));
    scale_add<<<(n + 255) / 256, 256>>>(d, n, scale, mode, add);
    count_odd<<<(n + 255) / 256, 256>>>(d, n, d_cnt);
    int cnt = -1;
    CHECK(cudaMemcpy(&cnt, d_cnt, sizeof(int), cudaMemcpyDeviceToHost));  // small result
    CHECK(cudaDeviceSynchronize());
    mix<<<(n + 255) / 256, 256, 0, s>>>(d, n, (long long)cnt * 7919);
    CHECK(cudaStreamSynchronize(s));
    CHECK(cudaMemcpy(h.data(), d, n * sizeof(int), cudaMemcpyDeviceToHost));  // large result
    int rc = 0;
    for (int i = 0; i < n; i++) {
      ref[i] = (int)((float)ref[i] * scale) + (mode == 'a' ? add : -add);
      rc += ref[i] & 1;
    }
    for (int i = 0; i < n; i++) ref[i] = (int)(((long long)ref[i] * 3 + (long long)rc * 7919) % 1000003);
    int wrong = cnt != rc;
    long long sum = 0;
    for (int i = 0; i < n; i++) { wrong += h[i] != ref[i]; sum += h[i]; }
    printf("iteration %2d: scale %.4f mode %c add %d odd %d sum %lld wrong %d\n", it, scale, mode, add, cnt, sum, wrong);
    bad += wrong;
    // the next round's parameters come from what the device computed
    scale = 0.5f + (float)(cnt % 7) / 8.0f;
    mode = (cnt & 1) ? 's' : 'a';
    add = (int)(sum % 11);
    for (int i = 0; i < n; i++) h[i] %= 10007, ref[i] = h[i];
  }
  CHECK(cudaStreamDestroy(s));
  CHECK(cudaFree(d));
  CHECK(cudaFree(d_cnt));
  printf("%s\n", bad ? "FAILED" : "PASSED");
  return bad ? 1 : 0;
}
