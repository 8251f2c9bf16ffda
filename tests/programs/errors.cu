// errors: CUDA error-handling semantics. cudaGetErrorName/String (the whole
// table, plus an unknown code), cudaGetLastError/cudaPeekAtLastError after
// invalid launch configurations (cudaErrorInvalidValue in CUDA 13), errors returned by API calls (invalid free,
// invalid memcpy kind, invalid device, impossible allocation, launch of a
// non-kernel), non-sticky errors cleared by cudaGetLastError, and LAST a
// sticky illegal-address fault. Prints every error name; exits 0 when the
// calls that must fail fail and the ones that must succeed succeed.
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
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

static int g_failures = 0;
#define EXPECT(cond)                                                          \
  do {                                                                        \
    if (!(cond)) { printf("MISMATCH line %d: %s\n", __LINE__, #cond); ++g_failures; } \
  } while (0)

// Print "<label> -> <name>" and return the code.
static cudaError_t show(const char* label, cudaError_t e) {
  printf("%s -> %s\n", label, cudaGetErrorName(e));
  return e;
}

__global__ void fill(int* p, int v, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) p[i] = v + i;
}

__global__ void empty_kernel() {}

__global__ void bad_write(int* p) {
  if (threadIdx.x == 0 && blockIdx.x == 0) *p = 0x1234;
}

static void not_a_kernel() {}

// A working kernel and copy: proves that the context is usable.
static int healthy(const char* when) {
  int* d = nullptr;
  int h[64];
  CHECK(cudaMalloc(&d, sizeof h));
  fill<<<1, 64>>>(d, 100, 64);
  CHECK(cudaGetLastError());
  CHECK(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost));
  CHECK(cudaFree(d));
  int ok = 1;
  for (int i = 0; i < 64; ++i) ok &= (h[i] == 100 + i);
  printf("healthy %s: %s\n", when, ok ? "yes" : "no");
  EXPECT(ok);
  return ok;
}

int main() {
  printf("errors\n");

  // --- the error table ------------------------------------------------------------------
  const char* unknown_name = cudaGetErrorName((cudaError_t)9999);
  const char* unknown_str = cudaGetErrorString((cudaError_t)9999);
  printf("code 9999: name=\"%s\" string=\"%s\"\n", unknown_name, unknown_str);
  printf("code -1: name=\"%s\" string=\"%s\"\n", cudaGetErrorName((cudaError_t)-1),
         cudaGetErrorString((cudaError_t)-1));
  int known = 0;
  for (int c = 0; c <= 1000; ++c) {
    const char* nm = cudaGetErrorName((cudaError_t)c);
    if (strcmp(nm, unknown_name) == 0) continue;
    printf("code %d: %s: %s\n", c, nm, cudaGetErrorString((cudaError_t)c));
    ++known;
  }
  printf("known codes in 0..1000: %d\n", known);
  EXPECT(strcmp(cudaGetErrorName(cudaSuccess), "cudaSuccess") == 0);
  EXPECT(strcmp(cudaGetErrorName(cudaErrorIllegalAddress), "cudaErrorIllegalAddress") == 0);

  // --- nothing pending at start --------------------------------------------------------------
  show("initial cudaGetLastError", cudaGetLastError());
  CHECK(cudaFree(0));  // initialise the context
  healthy("at start");

  // --- invalid launch configuration: blockDim 2048 ----------------------------------------------
  empty_kernel<<<1, 2048>>>();
  cudaError_t e1 = show("peek after <<<1,2048>>>", cudaPeekAtLastError());
  cudaError_t e2 = show("peek again", cudaPeekAtLastError());
  cudaError_t e3 = show("get", cudaGetLastError());
  cudaError_t e4 = show("get again", cudaGetLastError());
  printf("string: %s\n", cudaGetErrorString(e3));
  // CUDA 13 reports cudaErrorInvalidValue here (older releases: cudaErrorInvalidConfiguration).
  EXPECT(e1 != cudaSuccess && e2 == e1 && e3 == e1 && e4 == cudaSuccess);

  // Other invalid configurations.
  empty_kernel<<<dim3(1, 65536, 1), 1>>>();
  EXPECT(show("get after grid.y=65536", cudaGetLastError()) != cudaSuccess);
  empty_kernel<<<1, dim3(32, 32, 2)>>>();
  EXPECT(show("get after block 32x32x2", cudaGetLastError()) != cudaSuccess);
  empty_kernel<<<1, 32, 1 << 20>>>();
  EXPECT(show("get after 1 MiB dynamic shared", cudaGetLastError()) != cudaSuccess);
  {
    void* args[1] = {nullptr};
    cudaError_t e = show("cudaLaunchKernel(host function)",
                         cudaLaunchKernel((const void*)not_a_kernel, dim3(1), dim3(1), args, 0, 0));
    EXPECT(e != cudaSuccess);
    EXPECT(show("  then get", cudaGetLastError()) == e);
  }
  // A later error overwrites an earlier one; only the last is reported.
  empty_kernel<<<1, 2048>>>();
  cudaSetDevice(999);
  show("get after bad launch then cudaSetDevice(999)", cudaGetLastError());
  show("get again", cudaGetLastError());
  // A successful call does not clear the pending error.
  empty_kernel<<<1, 2048>>>();
  {
    int dev = -1;
    CHECK(cudaGetDevice(&dev));
  }
  EXPECT(show("get after bad launch then a successful call", cudaGetLastError()) == e1);
  healthy("after launch errors");

  // --- API calls returning errors ------------------------------------------------------------------
  {
    int* d = nullptr;
    CHECK(cudaMalloc(&d, 4096));
    void* host = malloc(256);
    EXPECT(show("cudaFree(nullptr)", cudaFree(nullptr)) == cudaSuccess);
    EXPECT(show("cudaFree(malloc'd host pointer)", cudaFree(host)) != cudaSuccess);
    EXPECT(show("  then get", cudaGetLastError()) != cudaSuccess);
    EXPECT(show("  then get again", cudaGetLastError()) == cudaSuccess);
    EXPECT(show("cudaFree(interior device pointer)", cudaFree(d + 16)) != cudaSuccess);
    show("  then get", cudaGetLastError());
    EXPECT(show("cudaFreeHost(malloc'd host pointer)", cudaFreeHost(host)) != cudaSuccess);
    show("  then get", cudaGetLastError());

    int h[16] = {0};
    EXPECT(show("cudaMemcpy(kind=7)", cudaMemcpy(d, h, sizeof h, (cudaMemcpyKind)7)) ==
           cudaErrorInvalidMemcpyDirection);
    EXPECT(show("  then get", cudaGetLastError()) == cudaErrorInvalidMemcpyDirection);
    EXPECT(show("cudaMemcpy(kind=-1)", cudaMemcpy(d, h, sizeof h, (cudaMemcpyKind)-1)) != cudaSuccess);
    show("  then get", cudaGetLastError());
    EXPECT(show("cudaMemcpyAsync(kind=42)",
                cudaMemcpyAsync(h, d, sizeof h, (cudaMemcpyKind)42, 0)) != cudaSuccess);
    show("  then get", cudaGetLastError());
    EXPECT(show("cudaMemset(nullptr)", cudaMemset(nullptr, 0, 16)) != cudaSuccess);
    show("  then get", cudaGetLastError());

    EXPECT(show("cudaSetDevice(999)", cudaSetDevice(999)) == cudaErrorInvalidDevice);
    EXPECT(show("  then get", cudaGetLastError()) == cudaErrorInvalidDevice);
    EXPECT(show("cudaSetDevice(-1)", cudaSetDevice(-1)) == cudaErrorInvalidDevice);
    show("  then get", cudaGetLastError());
    int dev = -1;
    CHECK(cudaGetDevice(&dev));
    printf("current device still %d\n", dev);
    EXPECT(dev == 0);
    cudaDeviceProp prop;
    EXPECT(show("cudaGetDeviceProperties(999)", cudaGetDeviceProperties(&prop, 999)) ==
           cudaErrorInvalidDevice);
    show("  then get", cudaGetLastError());
    int v = 0;
    EXPECT(show("cudaDeviceGetAttribute(bad attr)",
                cudaDeviceGetAttribute(&v, (cudaDeviceAttr)100000, 0)) != cudaSuccess);
    show("  then get", cudaGetLastError());

    void* huge = nullptr;
    EXPECT(show("cudaMalloc(1 PiB)", cudaMalloc(&huge, (size_t)1 << 50)) ==
           cudaErrorMemoryAllocation);
    EXPECT(show("  then peek", cudaPeekAtLastError()) == cudaErrorMemoryAllocation);
    EXPECT(show("  then get", cudaGetLastError()) == cudaErrorMemoryAllocation);
    EXPECT(show("  then get again", cudaGetLastError()) == cudaSuccess);
    EXPECT(show("cudaMallocHost(1 PiB)", cudaMallocHost(&huge, (size_t)1 << 50)) != cudaSuccess);
    show("  then get", cudaGetLastError());

    cudaEvent_t ev;
    CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    float ms = 0.f;
    EXPECT(show("cudaEventElapsedTime(disable-timing events)", cudaEventElapsedTime(&ms, ev, ev)) !=
           cudaSuccess);
    show("  then get", cudaGetLastError());
    CHECK(cudaEventDestroy(ev));

    CHECK(cudaFree(d));
    free(host);
  }
  EXPECT(show("get after all non-sticky errors", cudaGetLastError()) == cudaSuccess);
  healthy("after API errors");

  // --- LAST: sticky error from a kernel fault ----------------------------------------------------------
  fflush(stdout);
  bad_write<<<1, 1>>>((int*)0x10);
  cudaError_t s1 = show("cudaDeviceSynchronize", cudaDeviceSynchronize());
  printf("string: %s\n", cudaGetErrorString(s1));
  show("cudaGetLastError", cudaGetLastError());
  show("cudaGetLastError again", cudaGetLastError());
  show("cudaPeekAtLastError", cudaPeekAtLastError());
  void* after = nullptr;
  show("cudaMalloc", cudaMalloc(&after, 1024));
  show("cudaDeviceSynchronize again", cudaDeviceSynchronize());
  show("cudaGetLastError", cudaGetLastError());
  // The fault must surface; what follows is printed (sticky error), not judged.
  EXPECT(s1 != cudaSuccess);

  printf("%s\n", g_failures ? "FAILED" : "PASSED");
  return g_failures ? 1 : 0;
}
