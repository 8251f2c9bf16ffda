// uninit_reads: kernels that read memory nothing wrote, on purpose, as real codes do (a
// reduction over a padded buffer whose padding is masked, a freshly allocated scratch buffer
// read before it is written, memory freed and allocated again). What such reads return is not
// defined, so the program uses only what does not depend on it; the reads themselves must
// succeed, and everything written and read properly must be right.
#include <cstdio>
#include <cstdlib>
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

// sums v[0..n) of a buffer padded to a multiple of 1024: the padding is read and masked out
__global__ void padded_sum(const int* v, int n, int padded, unsigned long long* out) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= padded) return;
  volatile const int* q = v;
  int x = q[i];                       // uninitialised past n
  int keep = i < n ? x : 0;
  atomicAdd(out, (unsigned long long)(long long)keep);
}

// reads a scratch buffer before writing it: the read is folded away by arithmetic that does
// not depend on its value (x ^ x == 0), then the buffer gets its real contents
__global__ void scratch(int* s, int n, int base) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  volatile int* q = s;
  int x = q[i];
  q[i] = base + i + (x ^ x);
}

int main() {
  const int n = 100000, padded = (n + 1023) / 1024 * 1024;
  int* v;
  unsigned long long* d_sum;
  CHECK(cudaMalloc(&v, padded * sizeof(int)));
  CHECK(cudaMalloc(&d_sum, sizeof *d_sum));
  std::vector<int> h(n);
  long long want = 0;
  for (int i = 0; i < n; i++) want += h[i] = (i * 7) % 1000 - 300;
  CHECK(cudaMemcpy(v, h.data(), n * sizeof(int), cudaMemcpyHostToDevice));  // padding unwritten
  CHECK(cudaMemset(d_sum, 0, sizeof *d_sum));
  padded_sum<<<padded / 256, 256>>>(v, n, padded, d_sum);
  unsigned long long got;
  CHECK(cudaMemcpy(&got, d_sum, sizeof got, cudaMemcpyDeviceToHost));
  printf("padded sum %lld (want %lld)\n", (long long)got, want);
  int bad = (long long)got != want;
  // scratch memory, fresh and then freed and allocated again (natively often the same memory,
  // holding the old contents): read before written
  for (int round = 0; round < 3; round++) {
    int* s;
    const int m = 1 << (16 + round);
    CHECK(cudaMalloc(&s, m * sizeof(int)));
    scratch<<<(m + 255) / 256, 256>>>(s, m, round * 1000);
    std::vector<int> back(m);
    CHECK(cudaMemcpy(back.data(), s, m * sizeof(int), cudaMemcpyDeviceToHost));
    int wrong = 0;
    for (int i = 0; i < m; i++) wrong += back[i] != round * 1000 + i;
    printf("scratch round %d: %d ints, wrong %d\n", round, m, wrong);
    bad += wrong;
    CHECK(cudaFree(s));
  }
  CHECK(cudaFree(v));
  CHECK(cudaFree(d_sum));
  printf("%s\n", bad ? "FAILED" : "PASSED");
  return bad ? 1 : 0;
}
