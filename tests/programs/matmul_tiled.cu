// matmul_tiled: shared-memory tiled GEMM, C = A * B, in float (SGEMM) and double
// (DGEMM), for 512x384 * 384x256 and for an odd shape (partial tiles). Checked
// against a host reference in double; prints the error class and checksums.
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <cmath>
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

static uint64_t g_lcg = 0x9E3779B97F4A7C15ULL;
static inline uint32_t lcg32() {
  g_lcg = g_lcg * 6364136223846793005ULL + 1442695040888963407ULL;
  return (uint32_t)(g_lcg >> 33);
}
static inline double lcg_unit() { return (double)lcg32() / 2147483648.0 - 1.0; }

static uint64_t fnv1a(const void* p, size_t n) {
  const unsigned char* b = (const unsigned char*)p;
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; ++i) { h ^= b[i]; h *= 1099511628211ULL; }
  return h;
}

// C[M x N] = A[M x K] * B[K x N], row-major, any sizes (bounds checked).
template <typename T, int TILE>
__global__ void gemm_tiled(const T* __restrict__ A, const T* __restrict__ B, T* __restrict__ C,
                           int M, int N, int K) {
  __shared__ T As[TILE][TILE];
  __shared__ T Bs[TILE][TILE + 1];
  int row = blockIdx.y * TILE + threadIdx.y;
  int col = blockIdx.x * TILE + threadIdx.x;
  T acc = 0;
  for (int k0 = 0; k0 < K; k0 += TILE) {
    int ak = k0 + threadIdx.x;
    int bk = k0 + threadIdx.y;
    As[threadIdx.y][threadIdx.x] = (row < M && ak < K) ? A[(size_t)row * K + ak] : T(0);
    Bs[threadIdx.y][threadIdx.x] = (bk < K && col < N) ? B[(size_t)bk * N + col] : T(0);
    __syncthreads();
#pragma unroll
    for (int k = 0; k < TILE; ++k) acc += As[threadIdx.y][k] * Bs[k][threadIdx.x];
    __syncthreads();
  }
  if (row < M && col < N) C[(size_t)row * N + col] = acc;
}

static const char* err_class(double e) {
  static const double th[] = {1e-15, 1e-14, 1e-13, 1e-12, 1e-11, 1e-10, 1e-9, 1e-8,
                              1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1};
  static const char* nm[] = {"<1e-15", "<1e-14", "<1e-13", "<1e-12", "<1e-11", "<1e-10",
                             "<1e-9", "<1e-8", "<1e-7", "<1e-6", "<1e-5", "<1e-4",
                             "<1e-3", "<1e-2", "<1e-1"};
  for (int i = 0; i < (int)(sizeof th / sizeof th[0]); ++i)
    if (e < th[i]) return nm[i];
  return ">=1e-1";
}

template <typename T, int TILE>
static int run_case(const char* label, int M, int N, int K, double tol) {
  std::vector<T> A((size_t)M * K), B((size_t)K * N), C((size_t)M * N);
  for (auto& v : A) v = (T)lcg_unit();
  for (auto& v : B) v = (T)lcg_unit();

  T *dA, *dB, *dC;
  CHECK(cudaMalloc(&dA, A.size() * sizeof(T)));
  CHECK(cudaMalloc(&dB, B.size() * sizeof(T)));
  CHECK(cudaMalloc(&dC, C.size() * sizeof(T)));
  CHECK(cudaMemcpy(dA, A.data(), A.size() * sizeof(T), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dB, B.data(), B.size() * sizeof(T), cudaMemcpyHostToDevice));
  CHECK(cudaMemset(dC, 0, C.size() * sizeof(T)));

  dim3 block(TILE, TILE);
  dim3 grid((N + TILE - 1) / TILE, (M + TILE - 1) / TILE);
  gemm_tiled<T, TILE><<<grid, block>>>(dA, dB, dC, M, N, K);
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());
  CHECK(cudaMemcpy(C.data(), dC, C.size() * sizeof(T), cudaMemcpyDeviceToHost));

  // Host reference in double; error relative to sum_k |a_ik * b_kj|.
  double max_rel = 0.0, checksum = 0.0;
  std::vector<double> ref(N), mag(N);
  for (int i = 0; i < M; ++i) {
    for (int j = 0; j < N; ++j) { ref[j] = 0.0; mag[j] = 0.0; }
    for (int k = 0; k < K; ++k) {
      double a = (double)A[(size_t)i * K + k];
      const T* brow = &B[(size_t)k * N];
      for (int j = 0; j < N; ++j) {
        double p = a * (double)brow[j];
        ref[j] += p;
        mag[j] += std::fabs(p);
      }
    }
    for (int j = 0; j < N; ++j) {
      double got = (double)C[(size_t)i * N + j];
      double rel = std::fabs(got - ref[j]) / (mag[j] > 0 ? mag[j] : 1.0);
      if (!(rel <= max_rel)) max_rel = rel;  // also catches NaN
      checksum += got;
    }
  }
  int ok = max_rel < tol;
  printf("%s %dx%d * %dx%d tile=%d: max rel err %s, checksum=%.10e, fnv=%016llx, C[0]=%.8e C[last]=%.8e : %s\n",
         label, M, K, K, N, TILE, err_class(max_rel), checksum,
         (unsigned long long)fnv1a(C.data(), C.size() * sizeof(T)),
         (double)C[0], (double)C[C.size() - 1], ok ? "ok" : "TOO LARGE");
  CHECK(cudaFree(dA));
  CHECK(cudaFree(dB));
  CHECK(cudaFree(dC));
  return ok ? 0 : 1;
}

int main() {
  int failures = 0;
  failures += run_case<float, 16>("sgemm", 512, 256, 384, 1e-4);
  failures += run_case<double, 16>("dgemm", 512, 256, 384, 1e-12);
  failures += run_case<float, 32>("sgemm", 512, 256, 384, 1e-4);
  failures += run_case<double, 32>("dgemm", 512, 256, 384, 1e-12);
  failures += run_case<float, 16>("sgemm", 100, 50, 70, 1e-4);   // partial tiles
  failures += run_case<double, 16>("dgemm", 37, 129, 65, 1e-12);  // partial tiles
  printf("%s\n", failures ? "FAILED" : "PASSED");
  return failures ? 1 : 0;
}
