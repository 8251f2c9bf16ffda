// printf_assert: device printf reaches stdout in a deterministic order (one
// printing thread per launch, a synchronization after each launch; host printf
// in between, fflush(stdout) before every launch and sync), many format
// specifiers, a single thread printing many lines, printf from every block
// serialized by launches; then LAST a failing device assert(): the
// synchronization returns cudaErrorAssert (the assert message itself goes to
// stderr natively and is not part of the transcript).
#undef NDEBUG
#include <cassert>
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

// Only block `which`, thread 0 prints.
__global__ void hello(int which, int launch, const int* data) {
  if (blockIdx.x == which && threadIdx.x == 0)
    printf("device: launch %d block %d of %d, blockDim %d, data[%d]=%d\n", launch, blockIdx.x,
           gridDim.x, blockDim.x, which, data[which]);
}

__global__ void formats(double d, float f, long long ll, unsigned long long ull, const char* s) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  printf("int %d neg %d unsigned %u hex %x HEX %X octal %o\n", 42, -42, 4000000000u, 0xbeef, 0xBEEF, 8);
  printf("long long %lld unsigned long long %llu hex %llx\n", ll, ull, ull);
  printf("double %f %.3f %e %.10e %g %G\n", d, d, d, d, d, 1e-20);
  printf("float-as-double %f %.9g\n", f, f);
  printf("width [%8d] [%-8d] [%08d] [%+d] [%8.3f] [%-10.2e]\n", 123, 123, 123, 7, 3.14159, 2.5e-7);
  printf("char %c%c%c string [%s] [%10s] [%-10s] [%.3s] percent %%\n", 'x', 'y', 'z', s, "right", "left", "truncate");
  printf("short %hd unsigned short %hu signed char %hhd\n", (short)-1234, (unsigned short)54321, (signed char)-5);
  printf("special %f %f %f\n", 1.0 / 0.0, -1.0 / 0.0, 0.0 / 0.0);
  printf("no arguments at all\n");
  printf("many args: %d %d %d %d %d %d %d %d %d %d %d %d\n", 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12);
}

// One thread prints many lines (order within a thread is preserved).
__global__ void many_lines(int n) {
  if (threadIdx.x == 0 && blockIdx.x == 0)
    for (int i = 0; i < n; ++i) printf("line %03d: %d squared is %d\n", i, i, i * i);
}

__global__ void check_positive(const int* v, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) assert(v[i] > 0);
}

int main() {
  printf("printf_assert\n");
  CHECK(cudaSetDevice(0));
  const int blocks = 6;
  int h[blocks];
  for (int i = 0; i < blocks; ++i) h[i] = 1000 + 37 * i;
  int* d;
  CHECK(cudaMalloc(&d, sizeof h));
  CHECK(cudaMemcpy(d, h, sizeof h, cudaMemcpyHostToDevice));

  // Blocks in a fixed order, one launch each, synchronized each time.
  int order[blocks] = {3, 0, 5, 1, 4, 2};
  for (int k = 0; k < blocks; ++k) {
    printf("host: before launch %d (block %d)\n", k, order[k]);
    fflush(stdout);
    hello<<<blocks, 64>>>(order[k], k, d);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    printf("host: after sync %d\n", k);
  }

  // Format specifiers.
  const char* s = "farcuda";
  char* ds;
  CHECK(cudaMalloc(&ds, strlen(s) + 1));
  CHECK(cudaMemcpy(ds, s, strlen(s) + 1, cudaMemcpyHostToDevice));
  printf("host: formats\n");
  fflush(stdout);
  formats<<<1, 32>>>(-1234.5678901234, 0.1f, -9007199254740993LL, 18446744073709551615ULL, ds);
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());

  // A long run of lines from one thread, then output flushed by a stream sync.
  cudaStream_t st;
  CHECK(cudaStreamCreate(&st));
  printf("host: 150 lines\n");
  fflush(stdout);
  many_lines<<<1, 32, 0, st>>>(150);
  CHECK(cudaGetLastError());
  CHECK(cudaStreamSynchronize(st));
  // Device printf output is flushed at synchronization points; use the device-wide one too.
  CHECK(cudaDeviceSynchronize());
  printf("host: after 150 lines\n");
  fflush(stdout);

  // Two launches back to back on one stream, one sync: output in launch order.
  hello<<<2, 32, 0, st>>>(0, 100, d);
  hello<<<2, 32, 0, st>>>(1, 101, d);
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());
  printf("host: after two launches\n");
  fflush(stdout);

  // A passing assert kernel.
  check_positive<<<1, blocks>>>(d, blocks);
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());
  printf("host: passing assert ok\n");

  // LAST: a failing assert.
  int bad_vals[blocks] = {5, 4, 3, -2, 1, 0};
  CHECK(cudaMemcpy(d, bad_vals, sizeof bad_vals, cudaMemcpyHostToDevice));
  printf("host: launching failing assert\n");
  fflush(stdout);
  check_positive<<<1, blocks>>>(d, blocks);
  cudaError_t launch = cudaGetLastError();
  printf("launch -> %s\n", cudaGetErrorName(launch));
  cudaError_t e = cudaDeviceSynchronize();
  printf("cudaDeviceSynchronize -> %s (%s)\n", cudaGetErrorName(e), cudaGetErrorString(e));
  printf("cudaGetLastError -> %s\n", cudaGetErrorName(cudaGetLastError()));
  EXPECT(launch == cudaSuccess && e == cudaErrorAssert);
  printf("%s\n", g_failures ? "FAILED" : "PASSED");
  fflush(stdout);
  return g_failures ? 1 : 0;
}
