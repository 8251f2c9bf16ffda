// ci_hold: memory API only, NO kernel launches (runs against farcuda's in-memory fake GPU in
// CI). Allocates N device buffers of M MiB one after the other, fills each with an H2D copy and
// reads it back with a D2H copy (checked), then holds all of it while it sleeps S seconds,
// frees everything and exits. Every phase is printed and flushed at once ("alloc i",
// "copied i", "holding BYTES", "PASSED"), so that a test can kill it at a chosen moment: the
// client-death tests SIGKILL it mid-allocation, mid-transfer and while it holds its memory.
// Usage: ci_hold [N=16] [M=4] [S=30]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <vector>
#include <cuda_runtime.h>

#define CHECK(call)                                                                 \
  do {                                                                              \
    cudaError_t e_ = (call);                                                        \
    if (e_ != cudaSuccess) {                                                        \
      printf("FAIL line %d: %s -> %s\n", __LINE__, #call, cudaGetErrorName(e_));    \
      fflush(stdout);                                                               \
      exit(1);                                                                      \
    }                                                                               \
  } while (0)

static void say(const char* fmt, long a, long b = 0) {
  printf(fmt, a, b);
  fflush(stdout);
}

int main(int argc, char** argv) {
  int n = argc > 1 ? atoi(argv[1]) : 16;
  size_t bytes = (size_t)(argc > 2 ? atoi(argv[2]) : 4) << 20;
  double hold = argc > 3 ? atof(argv[3]) : 30.0;
  say("start %ld buffers of %ld bytes\n", n, (long)bytes);
  std::vector<void*> bufs(n, nullptr);
  std::vector<unsigned char> src(bytes), back(bytes);
  for (int i = 0; i < n; i++) {
    CHECK(cudaMalloc(&bufs[i], bytes));
    say("alloc %ld\n", i);
    for (size_t k = 0; k < bytes; k++) src[k] = (unsigned char)(k * 31 + i);
    CHECK(cudaMemcpy(bufs[i], src.data(), bytes, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(back.data(), bufs[i], bytes, cudaMemcpyDeviceToHost));
    if (memcmp(src.data(), back.data(), bytes) != 0) {
      say("MISMATCH in buffer %ld\n", i);
      return 1;
    }
    say("copied %ld\n", i);
  }
  say("holding %ld bytes\n", (long)(bytes * n));
  struct timespec ts;
  ts.tv_sec = (time_t)hold;
  ts.tv_nsec = (long)((hold - (double)ts.tv_sec) * 1e9);
  nanosleep(&ts, nullptr);
  for (int i = 0; i < n; i++) CHECK(cudaFree(bufs[i]));
  say("PASSED\n", 0);
  return 0;
}
