// vector_add: the classic. c = a + b for n = 1<<20 floats and doubles, checked
// element by element on the host (exact: one IEEE add), plus checksums.
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <vector>
#include <cuda_runtime.h>

#define CHECK(call)                                                           \
  do {                                                                        \
    cudaError_t e_ = (call);                                                  \
    if (e_ != cudaSuccess) {                                                  \
      printf("FAIL line %d: %s -> %s\n", __LINE__, #call, cudaGetErrorName(e_)); \
      fflush(stdout);                                                         \
      exit(1);                                                                \
    }                                                                         \
  } while (0)

static uint64_t g_lcg = 0x2545F4914F6CDD1DULL;
static inline uint32_t lcg32() {
  g_lcg = g_lcg * 6364136223846793005ULL + 1442695040888963407ULL;
  return (uint32_t)(g_lcg >> 33);
}
// uniform in [-1, 1)
static inline double lcg_unit() { return (double)lcg32() / 2147483648.0 - 1.0; }

static uint64_t fnv1a(const void* p, size_t n) {
  const unsigned char* b = (const unsigned char*)p;
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; ++i) { h ^= b[i]; h *= 1099511628211ULL; }
  return h;
}

__global__ void vadd_f(const float* a, const float* b, float* c, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) c[i] = a[i] + b[i];
}

__global__ void vadd_d(const double* a, const double* b, double* c, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    c[i] = a[i] + b[i];
}

int main() {
  const int n = 1 << 20;
  int failures = 0;

  std::vector<float> fa(n), fb(n), fc(n);
  std::vector<double> da(n), db(n), dc(n);
  for (int i = 0; i < n; ++i) {
    fa[i] = (float)(lcg_unit() * 100.0);
    fb[i] = (float)(lcg_unit() * 100.0);
    da[i] = lcg_unit() * 1e6;
    db[i] = lcg_unit() * 1e-3 + (double)i;
  }

  float *dfa, *dfb, *dfc;
  double *dda, *ddb, *ddc;
  CHECK(cudaMalloc(&dfa, n * sizeof(float)));
  CHECK(cudaMalloc(&dfb, n * sizeof(float)));
  CHECK(cudaMalloc(&dfc, n * sizeof(float)));
  CHECK(cudaMalloc(&dda, n * sizeof(double)));
  CHECK(cudaMalloc(&ddb, n * sizeof(double)));
  CHECK(cudaMalloc(&ddc, n * sizeof(double)));
  CHECK(cudaMemcpy(dfa, fa.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dfb, fb.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dda, da.data(), n * sizeof(double), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(ddb, db.data(), n * sizeof(double), cudaMemcpyHostToDevice));
  CHECK(cudaMemset(dfc, 0xFF, n * sizeof(float)));
  CHECK(cudaMemset(ddc, 0xFF, n * sizeof(double)));

  const int threads = 256;
  vadd_f<<<(n + threads - 1) / threads, threads>>>(dfa, dfb, dfc, n);
  CHECK(cudaGetLastError());
  vadd_d<<<512, threads>>>(dda, ddb, ddc, n);  // grid-stride loop
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());

  CHECK(cudaMemcpy(fc.data(), dfc, n * sizeof(float), cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(dc.data(), ddc, n * sizeof(double), cudaMemcpyDeviceToHost));

  int bad_f = 0, bad_d = 0;
  double sum_f = 0.0, sum_d = 0.0;
  for (int i = 0; i < n; ++i) {
    float ef = fa[i] + fb[i];
    double ed = da[i] + db[i];
    if (memcmp(&ef, &fc[i], sizeof ef) != 0) {
      if (bad_f < 5) printf("float mismatch at %d: got %.9g want %.9g\n", i, fc[i], ef);
      ++bad_f;
    }
    if (memcmp(&ed, &dc[i], sizeof ed) != 0) {
      if (bad_d < 5) printf("double mismatch at %d: got %.17g want %.17g\n", i, dc[i], ed);
      ++bad_d;
    }
    sum_f += fc[i];
    sum_d += dc[i];
  }
  failures += bad_f + bad_d;

  printf("vector_add n=%d\n", n);
  printf("float:  mismatches=%d sum=%.6f fnv=%016llx\n", bad_f, sum_f,
         (unsigned long long)fnv1a(fc.data(), n * sizeof(float)));
  printf("double: mismatches=%d sum=%.6f fnv=%016llx\n", bad_d, sum_d,
         (unsigned long long)fnv1a(dc.data(), n * sizeof(double)));
  printf("sample: c[0]=%.9g c[12345]=%.9g c[n-1]=%.9g\n", fc[0], fc[12345], fc[n - 1]);
  printf("sample: d[0]=%.17g d[777777]=%.17g d[n-1]=%.17g\n", dc[0], dc[777777], dc[n - 1]);

  CHECK(cudaFree(dfa));
  CHECK(cudaFree(dfb));
  CHECK(cudaFree(dfc));
  CHECK(cudaFree(dda));
  CHECK(cudaFree(ddb));
  CHECK(cudaFree(ddc));
  printf("%s\n", failures ? "FAILED" : "PASSED");
  return failures ? 1 : 0;
}
