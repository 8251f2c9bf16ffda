// A scriptable CUDA client for the daemon-as-a-service tests (no kernels: runs on the CI fake
// GPU). It reads one command per line on stdin and answers one line on stdout ("ok ..." or
// "err <cudaError name>"), flushed, so a test can hold several clients connected at once and
// interleave what they do. Addresses are printed and taken in hex.
//
//   malloc N          cudaMalloc                      -> ok 0xADDR
//   free P            cudaFree
//   fill P N B        cudaMemcpy host->device of N bytes of value B
//   memset P N B      cudaMemset, then cudaDeviceSynchronize (errors surface there)
//   read P N          cudaMemcpy device->host          -> ok <first byte> <sum of bytes>
//   copy D S N        cudaMemcpy device->device, then cudaDeviceSynchronize
//   meminfo           cudaMemGetInfo                   -> ok <free> <total>
//   count             cudaGetDeviceCount               -> ok <n>
//   hold MS           a host function that sleeps MS ms on the default stream, then
//                     cudaStreamSynchronize (a call in flight on the server meanwhile)
//   sync              cudaDeviceSynchronize
//   exit              return 0 (FARCUDA_REPORT's line is printed at exit)
#include <cuda_runtime.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

static void answer(cudaError_t e, const char *more = "") {
  if (e == cudaSuccess)
    printf("ok%s%s\n", more[0] ? " " : "", more);
  else
    printf("err %s\n", cudaGetErrorName(e));
  fflush(stdout);
}

static void CUDART_CB sleeper(void *arg) {
  std::this_thread::sleep_for(std::chrono::milliseconds((long)(size_t)arg));
}

int main() {
  char line[512], cmd[64], more[128];
  while (fgets(line, sizeof line, stdin)) {
    unsigned long long a = 0, b = 0, c = 0;
    if (sscanf(line, "%63s %llx %llx %llx", cmd, &a, &b, &c) < 1) continue;
    more[0] = 0;
    if (!strcmp(cmd, "malloc")) {
      void *p = nullptr;
      sscanf(line, "%*s %llu", &a);
      cudaError_t e = cudaMalloc(&p, (size_t)a);
      snprintf(more, sizeof more, "0x%llx", (unsigned long long)(size_t)p);
      answer(e, more);
    } else if (!strcmp(cmd, "free")) {
      answer(cudaFree((void *)(size_t)a));
    } else if (!strcmp(cmd, "fill")) {
      sscanf(line, "%*s %llx %llu %llu", &a, &b, &c);
      std::vector<unsigned char> h((size_t)b, (unsigned char)c);
      answer(cudaMemcpy((void *)(size_t)a, h.data(), h.size(), cudaMemcpyHostToDevice));
    } else if (!strcmp(cmd, "memset")) {
      sscanf(line, "%*s %llx %llu %llu", &a, &b, &c);
      cudaError_t e = cudaMemset((void *)(size_t)a, (int)c, (size_t)b);
      cudaError_t s = cudaDeviceSynchronize();
      answer(e != cudaSuccess ? e : s);
    } else if (!strcmp(cmd, "read")) {
      sscanf(line, "%*s %llx %llu", &a, &b);
      std::vector<unsigned char> h((size_t)b ? (size_t)b : 1, 0xEE);
      cudaError_t e = cudaMemcpy(h.data(), (void *)(size_t)a, (size_t)b, cudaMemcpyDeviceToHost);
      unsigned long long sum = 0;
      for (size_t i = 0; i < (size_t)b; i++) sum += h[i];
      snprintf(more, sizeof more, "%u %llu", h[0], sum);
      answer(e, more);
    } else if (!strcmp(cmd, "copy")) {
      sscanf(line, "%*s %llx %llx %llu", &a, &b, &c);
      cudaError_t e = cudaMemcpy((void *)(size_t)a, (void *)(size_t)b, (size_t)c,
                                 cudaMemcpyDeviceToDevice);
      cudaError_t s = cudaDeviceSynchronize();
      answer(e != cudaSuccess ? e : s);
    } else if (!strcmp(cmd, "meminfo")) {
      size_t f = 0, t = 0;
      cudaError_t e = cudaMemGetInfo(&f, &t);
      snprintf(more, sizeof more, "%zu %zu", f, t);
      answer(e, more);
    } else if (!strcmp(cmd, "count")) {
      int n = 0;
      cudaError_t e = cudaGetDeviceCount(&n);
      snprintf(more, sizeof more, "%d", n);
      answer(e, more);
    } else if (!strcmp(cmd, "hold")) {
      sscanf(line, "%*s %llu", &a);
      cudaError_t e = cudaLaunchHostFunc(0, sleeper, (void *)(size_t)a);
      cudaError_t s = cudaStreamSynchronize(0);
      answer(e != cudaSuccess ? e : s);
    } else if (!strcmp(cmd, "sync")) {
      answer(cudaDeviceSynchronize());
    } else if (!strcmp(cmd, "exit")) {
      return 0;
    } else {
      printf("? %s", line);
      fflush(stdout);
    }
  }
  return 0;
}
