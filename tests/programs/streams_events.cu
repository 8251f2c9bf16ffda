// streams_events: several streams overlapping H2D copies from pinned memory,
// kernels and D2H copies (cudaMemcpyAsync); events for timing (only
// "elapsed>0" is printed); cudaStreamWaitEvent between streams (a consumer on a
// non-blocking stream waits for a slow producer); cudaStreamQuery/cudaEventQuery
// after synchronization; cudaStreamCreateWithFlags(cudaStreamNonBlocking),
// cudaStreamGetFlags; cudaDeviceGetStreamPriorityRange,
// cudaStreamCreateWithPriority, cudaStreamGetPriority; cudaEventCreateWithFlags
// (disable timing, blocking sync); cudaEventSynchronize; results checked.
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

static int g_failures = 0;
#define EXPECT(cond)                                                          \
  do {                                                                        \
    if (!(cond)) { printf("MISMATCH line %d: %s\n", __LINE__, #cond); ++g_failures; } \
  } while (0)

static uint64_t g_lcg = 0x5EED5EED5EED5EEDULL;
static inline uint32_t lcg32() {
  g_lcg = g_lcg * 6364136223846793005ULL + 1442695040888963407ULL;
  return (uint32_t)(g_lcg >> 33);
}

// y = (x * 3 + s) with a few dependent rounds of integer mixing (some work per element).
__global__ void transform(const unsigned* in, unsigned* out, int n, unsigned s) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    unsigned v = in[i];
    for (int r = 0; r < 16; ++r) v = v * 2654435761u + s + (unsigned)r;
    out[i] = v;
  }
}
static unsigned transform_host(unsigned v, unsigned s) {
  for (int r = 0; r < 16; ++r) v = v * 2654435761u + s + (unsigned)r;
  return v;
}

// Spin for ~cycles, then write value into buf[0..n).
__global__ void slow_write(int* buf, int n, int value, long long cycles) {
  if (threadIdx.x == 0) {
    long long t0 = clock64();
    while (clock64() - t0 < cycles) {
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) buf[i] = value + i;
}

__global__ void copy_plus(const int* src, int* dst, int n, int add) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) dst[i] = src[i] + add;
}

int main() {
  printf("streams_events\n");
  CHECK(cudaSetDevice(0));

  // --- priorities and flags ------------------------------------------------------------------
  int least = 0, greatest = 0;
  CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  printf("priority range: least=%d greatest=%d\n", least, greatest);
  cudaStream_t hi, lo, nb;
  CHECK(cudaStreamCreateWithPriority(&hi, cudaStreamNonBlocking, greatest));
  CHECK(cudaStreamCreateWithPriority(&lo, cudaStreamDefault, least));
  CHECK(cudaStreamCreateWithFlags(&nb, cudaStreamNonBlocking));
  int prio = 12345;
  unsigned flags = 12345;
  CHECK(cudaStreamGetPriority(hi, &prio));
  CHECK(cudaStreamGetFlags(hi, &flags));
  printf("hi stream: priority=%d flags=%u\n", prio, flags);
  EXPECT(prio == greatest && flags == cudaStreamNonBlocking);
  CHECK(cudaStreamGetPriority(lo, &prio));
  CHECK(cudaStreamGetFlags(lo, &flags));
  printf("lo stream: priority=%d flags=%u\n", prio, flags);
  EXPECT(prio == least && flags == cudaStreamDefault);
  CHECK(cudaStreamGetFlags(nb, &flags));
  CHECK(cudaStreamGetPriority(nb, &prio));
  printf("non-blocking stream: priority=%d flags=%u\n", prio, flags);
  EXPECT(flags == cudaStreamNonBlocking);

  // --- 4 streams, chunked H2D / kernel / D2H pipeline from pinned memory ---------------------------
  {
    const int nstreams = 4, n = 1 << 22, chunk = n / nstreams;
    unsigned *hin, *hout;
    CHECK(cudaMallocHost((void**)&hin, n * sizeof(unsigned)));
    CHECK(cudaHostAlloc((void**)&hout, n * sizeof(unsigned), cudaHostAllocDefault));
    for (int i = 0; i < n; ++i) hin[i] = lcg32();
    memset(hout, 0, n * sizeof(unsigned));
    unsigned *din, *dout;
    CHECK(cudaMalloc(&din, n * sizeof(unsigned)));
    CHECK(cudaMalloc(&dout, n * sizeof(unsigned)));
    cudaStream_t st[nstreams];
    cudaEvent_t done[nstreams];
    for (int k = 0; k < nstreams; ++k) {
      CHECK(cudaStreamCreate(&st[k]));
      CHECK(cudaEventCreateWithFlags(&done[k], cudaEventDisableTiming));
    }
    cudaEvent_t start, stop;
    CHECK(cudaEventCreate(&start));
    CHECK(cudaEventCreateWithFlags(&stop, cudaEventBlockingSync));
    CHECK(cudaEventRecord(start, st[0]));
    for (int k = 1; k < nstreams; ++k) CHECK(cudaStreamWaitEvent(st[k], start, 0));
    for (int rep = 0; rep < 2; ++rep)  // two sub-chunks per stream, interleaved
      for (int k = 0; k < nstreams; ++k) {
        size_t off = (size_t)k * chunk + (size_t)rep * (chunk / 2);
        size_t cnt = chunk / 2;
        CHECK(cudaMemcpyAsync(din + off, hin + off, cnt * sizeof(unsigned), cudaMemcpyHostToDevice, st[k]));
        transform<<<64, 256, 0, st[k]>>>(din + off, dout + off, (int)cnt, (unsigned)k);
        CHECK(cudaGetLastError());
        CHECK(cudaMemcpyAsync(hout + off, dout + off, cnt * sizeof(unsigned), cudaMemcpyDeviceToHost, st[k]));
      }
    for (int k = 0; k < nstreams; ++k) CHECK(cudaEventRecord(done[k], st[k]));
    for (int k = 1; k < nstreams; ++k) CHECK(cudaStreamWaitEvent(st[0], done[k], 0));
    CHECK(cudaEventRecord(stop, st[0]));
    CHECK(cudaEventSynchronize(stop));
    float ms = -1.f;
    CHECK(cudaEventElapsedTime(&ms, start, stop));
    printf("pipeline over %d streams: elapsed>0: %s\n", nstreams, ms > 0.f ? "yes" : "no");
    EXPECT(ms > 0.f);
    // Everything covered by stop is complete.
    for (int k = 0; k < nstreams; ++k) {
      cudaError_t qs = cudaStreamQuery(st[k]);
      cudaError_t qe = cudaEventQuery(done[k]);
      printf("stream %d query: %s, done event query: %s\n", k, cudaGetErrorName(qs), cudaGetErrorName(qe));
      EXPECT(qs == cudaSuccess && qe == cudaSuccess);
    }
    int bad = 0;
    unsigned long long sum = 0;
    for (int i = 0; i < n; ++i) {
      unsigned want = transform_host(hin[i], (unsigned)(i / chunk));
      bad += hout[i] != want;
      sum += hout[i];
    }
    printf("pipeline results: mismatches=%d sum=%llu\n", bad, sum);
    EXPECT(bad == 0);

    // Disable-timing events cannot be timed.
    cudaError_t e = cudaEventElapsedTime(&ms, done[0], done[1]);
    printf("cudaEventElapsedTime on disable-timing events -> %s\n", cudaGetErrorName(e));
    EXPECT(e != cudaSuccess);
    cudaGetLastError();

    for (int k = 0; k < nstreams; ++k) {
      CHECK(cudaStreamDestroy(st[k]));
      CHECK(cudaEventDestroy(done[k]));
    }
    CHECK(cudaEventDestroy(start));
    CHECK(cudaEventDestroy(stop));
    CHECK(cudaFree(din));
    CHECK(cudaFree(dout));
    CHECK(cudaFreeHost(hin));
    CHECK(cudaFreeHost(hout));
  }

  // --- cudaStreamWaitEvent: consumer waits for a slow producer on another stream -------------------
  {
    const int n = 4096;
    int *buf, *res;
    CHECK(cudaMalloc(&buf, n * sizeof(int)));
    CHECK(cudaMalloc(&res, n * sizeof(int)));
    CHECK(cudaMemset(buf, 0, n * sizeof(int)));
    CHECK(cudaMemset(res, 0, n * sizeof(int)));
    CHECK(cudaDeviceSynchronize());
    cudaEvent_t produced;
    CHECK(cudaEventCreateWithFlags(&produced, cudaEventDisableTiming));
    slow_write<<<1, 256, 0, lo>>>(buf, n, 1000, 20000000LL);  // ~10 ms spin
    CHECK(cudaGetLastError());
    CHECK(cudaEventRecord(produced, lo));
    CHECK(cudaStreamWaitEvent(nb, produced, 0));
    copy_plus<<<1, 256, 0, nb>>>(buf, res, n, 7);
    CHECK(cudaGetLastError());
    std::vector<int> h(n);
    CHECK(cudaMemcpyAsync(h.data(), res, n * sizeof(int), cudaMemcpyDeviceToHost, nb));
    CHECK(cudaStreamSynchronize(nb));
    int bad = 0;
    for (int i = 0; i < n; ++i) bad += h[i] != 1000 + i + 7;
    printf("cudaStreamWaitEvent ordering (non-blocking consumer): mismatches=%d\n", bad);
    EXPECT(bad == 0);
    printf("event query after consumer sync: %s\n", cudaGetErrorName(cudaEventQuery(produced)));
    CHECK(cudaStreamSynchronize(lo));
    printf("producer stream query after its sync: %s\n", cudaGetErrorName(cudaStreamQuery(lo)));

    // High-priority stream: a chain of dependent kernels, timed with events on that stream.
    cudaEvent_t t0, t1;
    CHECK(cudaEventCreate(&t0));
    CHECK(cudaEventCreate(&t1));
    CHECK(cudaEventRecord(t0, hi));
    for (int r = 0; r < 10; ++r) {
      copy_plus<<<1, 256, 0, hi>>>(res, buf, n, 1);
      copy_plus<<<1, 256, 0, hi>>>(buf, res, n, 1);
    }
    CHECK(cudaGetLastError());
    CHECK(cudaEventRecord(t1, hi));
    CHECK(cudaMemcpyAsync(h.data(), res, n * sizeof(int), cudaMemcpyDeviceToHost, hi));
    CHECK(cudaStreamSynchronize(hi));
    float ms = -1.f;
    CHECK(cudaEventElapsedTime(&ms, t0, t1));
    bad = 0;
    for (int i = 0; i < n; ++i) bad += h[i] != 1000 + i + 7 + 20;
    printf("high-priority chain: mismatches=%d elapsed>0: %s\n", bad, ms > 0.f ? "yes" : "no");
    EXPECT(bad == 0 && ms > 0.f);
    printf("stream query after sync: %s, event query: %s\n", cudaGetErrorName(cudaStreamQuery(hi)),
           cudaGetErrorName(cudaEventQuery(t1)));
    CHECK(cudaEventDestroy(t0));
    CHECK(cudaEventDestroy(t1));
    CHECK(cudaEventDestroy(produced));
    CHECK(cudaFree(buf));
    CHECK(cudaFree(res));
  }

  // --- legacy default stream orders against blocking streams ----------------------------------------
  {
    const int n = 1024;
    int *a, *b;
    CHECK(cudaMalloc(&a, n * sizeof(int)));
    CHECK(cudaMalloc(&b, n * sizeof(int)));
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));  // blocking w.r.t. the legacy default stream
    slow_write<<<1, 256, 0, s>>>(a, n, 5, 10000000LL);
    copy_plus<<<1, 256>>>(a, b, n, 1);  // default stream: waits for s
    CHECK(cudaGetLastError());
    std::vector<int> h(n);
    CHECK(cudaMemcpy(h.data(), b, n * sizeof(int), cudaMemcpyDeviceToHost));
    int bad = 0;
    for (int i = 0; i < n; ++i) bad += h[i] != 5 + i + 1;
    printf("legacy default stream waits for blocking stream: mismatches=%d\n", bad);
    EXPECT(bad == 0);
    CHECK(cudaStreamDestroy(s));
    CHECK(cudaFree(a));
    CHECK(cudaFree(b));
  }

  CHECK(cudaStreamDestroy(hi));
  CHECK(cudaStreamDestroy(lo));
  CHECK(cudaStreamDestroy(nb));
  CHECK(cudaDeviceSynchronize());
  printf("%s\n", g_failures ? "FAILED" : "PASSED");
  return g_failures ? 1 : 0;
}
