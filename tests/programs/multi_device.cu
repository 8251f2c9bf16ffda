// multi_device: every device cudaGetDeviceCount reports. A reduction split over
// all devices, one host thread per device (std::thread, each calling
// cudaSetDevice), combined on the host; exact integer (and exact double) sums so
// the total is the same for 1..8 devices. cudaMemcpyPeer / cudaMemcpyPeerAsync
// between device 0 and every other device (device 0 with itself when there is
// only one), checked byte for byte. Nothing printed depends on the device count.
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
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

// In worker threads: remember the first failure instead of exiting.
#define TCHECK(call)                                                          \
  do {                                                                        \
    cudaError_t e_ = (call);                                                  \
    if (e_ != cudaSuccess) {                                                  \
      r.error = std::string(#call) + " -> " + cudaGetErrorName(e_);           \
      return;                                                                 \
    }                                                                         \
  } while (0)

static int g_failures = 0;
#define EXPECT(cond)                                                          \
  do {                                                                        \
    if (!(cond)) { printf("MISMATCH line %d: %s\n", __LINE__, #cond); ++g_failures; } \
  } while (0)

__global__ void reduce(const int* v, long long n, unsigned long long* isum, double* dsum,
                       unsigned long long* sqsum) {
  __shared__ unsigned long long s_i[256];
  __shared__ unsigned long long s_q[256];
  unsigned long long li = 0, lq = 0;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x) {
    li += (unsigned long long)v[i];
    lq += (unsigned long long)v[i] * (unsigned long long)v[i];
  }
  s_i[threadIdx.x] = li;
  s_q[threadIdx.x] = lq;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if ((int)threadIdx.x < w) {
      s_i[threadIdx.x] += s_i[threadIdx.x + w];
      s_q[threadIdx.x] += s_q[threadIdx.x + w];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    atomicAdd(isum, s_i[0]);
    atomicAdd(sqsum, s_q[0]);
    atomicAdd(dsum, (double)s_i[0]);  // integers < 2^53: exact in any order
  }
}

struct Result {
  unsigned long long isum = 0, sqsum = 0;
  double dsum = 0.0;
  int device_seen = -1;
  std::string error;
};

static void worker(int dev, const int* host, long long n, Result& r) {
  TCHECK(cudaSetDevice(dev));
  int cur = -1;
  TCHECK(cudaGetDevice(&cur));
  r.device_seen = cur;
  cudaStream_t s;
  TCHECK(cudaStreamCreate(&s));
  int* d = nullptr;
  unsigned long long* acc = nullptr;
  double* dacc = nullptr;
  TCHECK(cudaMalloc(&d, (n > 0 ? n : 1) * sizeof(int)));
  TCHECK(cudaMalloc(&acc, 2 * sizeof(unsigned long long)));
  TCHECK(cudaMalloc(&dacc, sizeof(double)));
  TCHECK(cudaMemsetAsync(acc, 0, 2 * sizeof(unsigned long long), s));
  TCHECK(cudaMemsetAsync(dacc, 0, sizeof(double), s));
  if (n > 0) {
    TCHECK(cudaMemcpyAsync(d, host, n * sizeof(int), cudaMemcpyHostToDevice, s));
    reduce<<<128, 256, 0, s>>>(d, n, acc, dacc, acc + 1);
    TCHECK(cudaGetLastError());
  }
  unsigned long long h[2] = {0, 0};
  TCHECK(cudaMemcpyAsync(h, acc, sizeof h, cudaMemcpyDeviceToHost, s));
  TCHECK(cudaMemcpyAsync(&r.dsum, dacc, sizeof(double), cudaMemcpyDeviceToHost, s));
  TCHECK(cudaStreamSynchronize(s));
  r.isum = h[0];
  r.sqsum = h[1];
  TCHECK(cudaFree(d));
  TCHECK(cudaFree(acc));
  TCHECK(cudaFree(dacc));
  TCHECK(cudaStreamDestroy(s));
}

int main() {
  printf("multi_device\n");
  int count = 0;
  CHECK(cudaGetDeviceCount(&count));
  if (count < 1) {
    printf("no devices\n");
    return 1;
  }

  // --- data: deterministic, independent of the device count ---------------------------------
  const long long n = 10000019;  // prime: shares are uneven for every count
  std::vector<int> data(n);
  uint64_t x = 0xC0DEC0DEC0DEC0DEULL;
  unsigned long long want_i = 0, want_q = 0;
  for (long long i = 0; i < n; ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    data[i] = (int)((x >> 33) % 100000u);
    want_i += (unsigned long long)data[i];
    want_q += (unsigned long long)data[i] * (unsigned long long)data[i];
  }

  // --- split over all devices, one thread each --------------------------------------------------
  std::vector<Result> res(count);
  std::vector<std::thread> threads;
  long long base = n / count, rem = n % count, off = 0;
  for (int d = 0; d < count; ++d) {
    long long len = base + (d < rem ? 1 : 0);
    threads.emplace_back(worker, d, data.data() + off, len, std::ref(res[d]));
    off += len;
  }
  for (auto& t : threads) t.join();
  unsigned long long tot_i = 0, tot_q = 0;
  double tot_d = 0.0;
  int errors = 0, wrong_dev = 0;
  for (int d = 0; d < count; ++d) {
    if (!res[d].error.empty()) {
      printf("device worker error: %s\n", res[d].error.c_str());
      ++errors;
    }
    wrong_dev += res[d].device_seen != d;
    tot_i += res[d].isum;
    tot_q += res[d].sqsum;
    tot_d += res[d].dsum;
  }
  printf("worker errors: %d, each thread saw its own device: %s\n", errors, wrong_dev ? "no" : "yes");
  printf("total sum = %llu, sum of squares = %llu, double sum = %.1f\n", tot_i, tot_q, tot_d);
  printf("matches host: %s\n", (tot_i == want_i && tot_q == want_q && tot_d == (double)want_i) ? "yes" : "no");
  EXPECT(errors == 0 && wrong_dev == 0);
  EXPECT(tot_i == want_i && tot_q == want_q && tot_d == (double)want_i);

  // --- peer copies between device 0 and every other device ------------------------------------------
  {
    const size_t bytes = (8 << 20) + 13;
    std::vector<unsigned char> src(bytes), back(bytes);
    uint64_t y = 0x1234;
    for (size_t i = 0; i < bytes; ++i) {
      y = y * 6364136223846793005ULL + 1442695040888963407ULL;
      src[i] = (unsigned char)(y >> 56);
    }
    int bad = 0;
    for (int k = (count > 1 ? 1 : 0); k < count; ++k) {
      unsigned char *a0, *a1, *bk;
      CHECK(cudaSetDevice(0));
      CHECK(cudaMalloc(&a0, bytes));
      CHECK(cudaMalloc(&bk, bytes));
      CHECK(cudaMemcpy(a0, src.data(), bytes, cudaMemcpyHostToDevice));
      CHECK(cudaSetDevice(k));
      CHECK(cudaMalloc(&a1, bytes));
      CHECK(cudaMemset(a1, 0, bytes));
      // 0 -> k (synchronous), then k -> 0 (async on a stream of device k), unaligned tail too.
      CHECK(cudaMemcpyPeer(a1, k, a0, 0, bytes));
      cudaStream_t s;
      CHECK(cudaStreamCreate(&s));
      CHECK(cudaMemcpyPeerAsync(bk, 0, a1, k, bytes - 3, s));
      CHECK(cudaMemcpyPeerAsync(bk + bytes - 3, 0, a1 + bytes - 3, k, 3, s));
      CHECK(cudaStreamSynchronize(s));
      CHECK(cudaStreamDestroy(s));
      CHECK(cudaSetDevice(0));
      std::fill(back.begin(), back.end(), 0);
      CHECK(cudaMemcpy(back.data(), bk, bytes, cudaMemcpyDeviceToHost));
      if (memcmp(back.data(), src.data(), bytes) != 0) {
        ++bad;
        printf("peer copy 0 <-> %d differs\n", k);
      }
      CHECK(cudaFree(a0));
      CHECK(cudaFree(bk));
      CHECK(cudaSetDevice(k));
      CHECK(cudaFree(a1));
    }
    CHECK(cudaSetDevice(0));
    printf("%s\n", bad ? "peer FAILED" : "peer ok");
    EXPECT(bad == 0);
  }

  printf("%s\n", g_failures ? "FAILED" : "PASSED");
  return g_failures ? 1 : 0;
}
