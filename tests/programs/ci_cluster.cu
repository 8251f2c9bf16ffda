// ci_cluster: what a scheduled job was given (CI, no kernel execution needed). Opens every
// device it sees, with 1 MiB of memory each (copied in and read back, checked), prints the
// count and each device's SM count, then holds all of it until RELEASE_FILE exists (or
// TIMEOUT_S seconds pass), so that a test can look at the servers while jobs run side by side.
// Every line is flushed at once. Usage: ci_cluster [RELEASE_FILE] [TIMEOUT_S=60]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <unistd.h>
#include <vector>
#include <cuda_runtime.h>

#define CHECK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
  printf("FAIL line %d: %s -> %s\n", __LINE__, #x, cudaGetErrorName(e_)); fflush(stdout); \
  return 1; } } while (0)

int main(int argc, char** argv) {
  const char* release = argc > 1 ? argv[1] : nullptr;
  double timeout = argc > 2 ? atof(argv[2]) : 60.0;
  int n = 0;
  CHECK(cudaGetDeviceCount(&n));
  printf("devices %d\n", n);
  fflush(stdout);
  const size_t bytes = 1 << 20;
  std::vector<void*> d(n, nullptr);
  std::vector<unsigned char> h(bytes), back(bytes);
  int bad = 0;
  for (int i = 0; i < n; i++) {
    CHECK(cudaSetDevice(i));
    int sms = 0;
    CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, i));
    CHECK(cudaMalloc(&d[i], bytes));
    for (size_t k = 0; k < bytes; k++) h[k] = (unsigned char)(k * 13 + i);
    CHECK(cudaMemcpy(d[i], h.data(), bytes, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(back.data(), d[i], bytes, cudaMemcpyDeviceToHost));
    bad += memcmp(h.data(), back.data(), bytes) != 0;
    printf("device %d sms %d\n", i, sms);
    fflush(stdout);
  }
  printf("holding\n");
  fflush(stdout);
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  while (release) {
    if (access(release, F_OK) == 0) break;
    clock_gettime(CLOCK_MONOTONIC, &t);
    if ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) * 1e-9 > timeout) break;
    usleep(50000);
  }
  for (int i = 0; i < n; i++) {
    CHECK(cudaSetDevice(i));
    CHECK(cudaFree(d[i]));
  }
  printf("mismatches %d\n%s\n", bad, bad ? "FAILED" : "PASSED");
  return bad ? 1 : 0;
}
