// threads: 8 host threads (std::thread), each with its own stream, run
// cudaMalloc / cudaMemcpyAsync H2D / kernel / cudaMemcpyAsync D2H /
// cudaStreamSynchronize / cudaFree loops concurrently (pageable and pinned host
// buffers), results checked; the CUDA error state is per thread (one thread
// provokes an error, the others must not see it). Prints a per-thread summary in
// thread order after joining.
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <atomic>
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

#define TCHECK(call)                                                          \
  do {                                                                        \
    cudaError_t e_ = (call);                                                  \
    if (e_ != cudaSuccess) {                                                  \
      r.error = std::string(#call) + " -> " + cudaGetErrorName(e_);           \
      return;                                                                 \
    }                                                                         \
  } while (0)

const int NTHREADS = 8, ITERS = 25;

__global__ void affine(const int* in, int* out, int n, int mul, int add) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    out[i] = in[i] * mul + add;
}
__global__ void nothing() {}

struct Result {
  int iterations = 0;
  int mismatches = 0;
  unsigned long long checksum = 0;
  std::string own_error;    // what this thread's cudaGetLastError showed after its bad launch
  std::string final_error;  // cudaGetLastError at the end of the thread
  std::string error;
};

static std::atomic<int> g_ready{0};

static void worker(int t, Result& r) {
  cudaError_t set_err = cudaSetDevice(0);  // checked after the barrier (no thread may leave before it)
  if (t == 3) {
    nothing<<<1, 4096>>>();  // invalid configuration, in this thread only
    r.own_error = cudaGetErrorName(cudaPeekAtLastError());
  }
  // Let every thread pass this point before anyone checks its error state.
  g_ready.fetch_add(1);
  while (g_ready.load() < NTHREADS) std::this_thread::yield();
  if (t == 3) r.own_error += std::string("/") + cudaGetErrorName(cudaGetLastError());
  else r.own_error = cudaGetErrorName(cudaGetLastError());
  TCHECK(set_err);
  cudaStream_t s;
  TCHECK(cudaStreamCreateWithFlags(&s, t % 2 ? cudaStreamNonBlocking : cudaStreamDefault));

  int* pinned = nullptr;
  TCHECK(cudaMallocHost((void**)&pinned, (1 << 17) * sizeof(int) + 4096));
  uint64_t x = 0x9E3779B97F4A7C15ULL * (uint64_t)(t + 1);
  for (int it = 0; it < ITERS; ++it) {
    const int n = (1 << 16) + it * 1000 + t * 7;
    std::vector<int> in(n), out(n);
    for (int i = 0; i < n; ++i) {
      x = x * 6364136223846793005ULL + 1442695040888963407ULL;
      in[i] = (int)((x >> 33) % 200001) - 100000;
    }
    int *din, *dout;
    TCHECK(cudaMalloc(&din, n * sizeof(int)));
    TCHECK(cudaMalloc(&dout, n * sizeof(int)));
    const int mul = 3 + t, add = it - 12;
    if (it % 2) {  // pinned staging on odd iterations
      memcpy(pinned, in.data(), n * sizeof(int));
      TCHECK(cudaMemcpyAsync(din, pinned, n * sizeof(int), cudaMemcpyHostToDevice, s));
    } else {
      TCHECK(cudaMemcpyAsync(din, in.data(), n * sizeof(int), cudaMemcpyHostToDevice, s));
    }
    affine<<<64, 256, 0, s>>>(din, dout, n, mul, add);
    TCHECK(cudaGetLastError());
    if (it % 2) {
      TCHECK(cudaMemcpyAsync(pinned, dout, n * sizeof(int), cudaMemcpyDeviceToHost, s));
      TCHECK(cudaStreamSynchronize(s));
      memcpy(out.data(), pinned, n * sizeof(int));
    } else {
      TCHECK(cudaMemcpyAsync(out.data(), dout, n * sizeof(int), cudaMemcpyDeviceToHost, s));
      TCHECK(cudaStreamSynchronize(s));
    }
    for (int i = 0; i < n; ++i) {
      int want = in[i] * mul + add;
      r.mismatches += out[i] != want;
      r.checksum = r.checksum * 1099511628211ULL + (unsigned)out[i];
    }
    TCHECK(cudaFree(din));
    TCHECK(cudaFree(dout));
    ++r.iterations;
  }
  TCHECK(cudaFreeHost(pinned));
  TCHECK(cudaStreamDestroy(s));
  r.final_error = cudaGetErrorName(cudaGetLastError());
}

int main() {
  printf("threads\n");
  CHECK(cudaSetDevice(0));
  CHECK(cudaFree(0));
  std::vector<Result> res(NTHREADS);
  std::vector<std::thread> th;
  for (int t = 0; t < NTHREADS; ++t) th.emplace_back(worker, t, std::ref(res[t]));
  for (auto& t : th) t.join();
  int failures = 0;
  for (int t = 0; t < NTHREADS; ++t) {
    const Result& r = res[t];
    printf("thread %d: iterations=%d mismatches=%d checksum=%016llx last error seen=%s at end=%s%s%s\n", t,
           r.iterations, r.mismatches, r.checksum, r.own_error.c_str(), r.final_error.c_str(),
           r.error.empty() ? "" : " ERROR ", r.error.c_str());
    failures += !r.error.empty() || r.mismatches != 0 || r.iterations != ITERS;
    if (t == 3) {  // the same error twice (peek, then get), not cudaSuccess
      size_t slash = r.own_error.find('/');
      failures += slash == std::string::npos || r.own_error.substr(0, slash) != r.own_error.substr(slash + 1) ||
                  r.own_error.substr(0, slash) == "cudaSuccess";
    }
    else {
      failures += r.own_error != "cudaSuccess";
    }
    failures += r.final_error != "cudaSuccess";
  }
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());
  printf("%s\n", failures ? "FAILED" : "PASSED");
  return failures ? 1 : 0;
}
