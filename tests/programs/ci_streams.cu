// ci_streams: stream order, host callbacks, events and async device-to-host copies, NO kernel
// launches (runs against farcuda's in-memory fake GPU in CI as well as on a real GPU).
//
// A host function that sleeps holds its stream, as a slow kernel would. Checked:
// - cudaMemcpyAsync device-to-host into pinned memory returns while the copy still waits in
//   its stream (CUDA does not wait there), and the data is in place when cudaStreamSynchronize,
//   cudaEventSynchronize, cudaDeviceSynchronize or a successful cudaStreamQuery/cudaEventQuery
//   return, and when a later host function in the same stream runs;
// - synchronizing one stream is not held up by another stream that is still blocked;
// - more async copies in flight than fit at once (the client bounds them): all arrive, in order;
// - cudaFreeHost of a buffer with a copy still on its way waits for it;
// - a pageable destination makes the copy synchronous (CUDA's rule);
// - stream-ordered memsets and copies behind a pending host function run after it.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
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

static int g_failures = 0;
#define EXPECT(cond)                                                          \
  do {                                                                        \
    if (!(cond)) { printf("MISMATCH line %d: %s\n", __LINE__, #cond); ++g_failures; } \
  } while (0)

static uint64_t fnv1a(const void* p, size_t n) {
  const unsigned char* b = (const unsigned char*)p;
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; ++i) { h ^= b[i]; h *= 1099511628211ULL; }
  return h;
}

static void fill(unsigned char* p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; ++i) p[i] = (unsigned char)(seed * 131 + i * 7 + (i >> 8));
}

// A host function that holds its stream for ms milliseconds, then raises its flag.
struct Gate {
  int ms;
  std::atomic<int> done{0};
};
static void CUDART_CB hold(void* arg) {
  Gate* g = (Gate*)arg;
  std::this_thread::sleep_for(std::chrono::milliseconds(g->ms));
  g->done.store(1);
}

// A host function that checksums a host buffer when its stream reaches it.
struct Probe {
  const unsigned char* buf;
  size_t n;
  uint64_t seen = 0;
};
static void CUDART_CB probe(void* arg) {
  Probe* p = (Probe*)arg;
  p->seen = fnv1a(p->buf, p->n);
}

int main() {
  int count = 0;
  CHECK(cudaGetDeviceCount(&count));
  CHECK(cudaSetDevice(0));
  const size_t N = 1 << 20;
  std::vector<unsigned char> ref(N);
  fill(ref.data(), N, 1);
  const uint64_t want = fnv1a(ref.data(), N);
  unsigned char* d = nullptr;
  CHECK(cudaMalloc(&d, N));
  CHECK(cudaMemcpy(d, ref.data(), N, cudaMemcpyHostToDevice));
  unsigned char* h = nullptr;
  CHECK(cudaMallocHost(&h, N));
  cudaStream_t a, b;
  CHECK(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking));
  CHECK(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking));

  // 1. an async copy into pinned memory returns while its stream is still held
  {
    Gate g{400};
    memset(h, 0, N);
    CHECK(cudaLaunchHostFunc(a, hold, &g));
    CHECK(cudaMemcpyAsync(h, d, N, cudaMemcpyDeviceToHost, a));
    int returned_early = g.done.load() == 0;
    CHECK(cudaStreamSynchronize(a));
    printf("async copy returned before its stream reached it: %s\n", returned_early ? "yes" : "no");
    printf("after cudaStreamSynchronize: gate %d, data %s\n", g.done.load(),
           fnv1a(h, N) == want ? "ok" : "WRONG");
    EXPECT(returned_early && g.done.load() == 1 && fnv1a(h, N) == want);
  }

  // 2. a host function after the copy in the same stream sees its data
  {
    Gate g{200};
    Probe p{h, N};
    memset(h, 0, N);
    CHECK(cudaLaunchHostFunc(a, hold, &g));
    CHECK(cudaMemcpyAsync(h, d, N, cudaMemcpyDeviceToHost, a));
    CHECK(cudaLaunchHostFunc(a, probe, &p));
    CHECK(cudaStreamSynchronize(a));
    printf("host function after the copy saw its data: %s\n", p.seen == want ? "yes" : "no");
    EXPECT(p.seen == want);
  }

  // 3. events: recorded after the copy, synchronized and queried
  {
    Gate g{300};
    cudaEvent_t e;
    CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    memset(h, 0, N);
    CHECK(cudaLaunchHostFunc(a, hold, &g));
    CHECK(cudaMemcpyAsync(h, d, N / 2, cudaMemcpyDeviceToHost, a));
    CHECK(cudaEventRecord(e, a));
    cudaError_t q = cudaEventQuery(e);
    printf("event query while held: %s\n", cudaGetErrorName(q));
    EXPECT(q == cudaErrorNotReady);
    CHECK(cudaEventSynchronize(e));
    printf("after cudaEventSynchronize: half %s\n",
           fnv1a(h, N / 2) == fnv1a(ref.data(), N / 2) ? "ok" : "WRONG");
    EXPECT(fnv1a(h, N / 2) == fnv1a(ref.data(), N / 2));
    // the same through a successful query instead of a synchronization
    Gate g2{200};
    memset(h, 0, N);
    CHECK(cudaLaunchHostFunc(a, hold, &g2));
    CHECK(cudaMemcpyAsync(h + N / 2, d + N / 2, N / 2, cudaMemcpyDeviceToHost, a));
    CHECK(cudaEventRecord(e, a));
    int polls = 0;
    while ((q = cudaEventQuery(e)) == cudaErrorNotReady) {
      ++polls;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    CHECK(q);
    printf("after a successful cudaEventQuery (polled: %s): half %s\n", polls ? "yes" : "no",
           memcmp(h + N / 2, ref.data() + N / 2, N / 2) == 0 ? "ok" : "WRONG");
    EXPECT(polls > 0 && memcmp(h + N / 2, ref.data() + N / 2, N / 2) == 0);
    // and a stream query
    Gate g3{200};
    memset(h, 0, N);
    CHECK(cudaLaunchHostFunc(a, hold, &g3));
    CHECK(cudaMemcpyAsync(h, d, 4096, cudaMemcpyDeviceToHost, a));
    while ((q = cudaStreamQuery(a)) == cudaErrorNotReady)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    CHECK(q);
    printf("after a successful cudaStreamQuery: %s\n",
           memcmp(h, ref.data(), 4096) == 0 ? "ok" : "WRONG");
    EXPECT(memcmp(h, ref.data(), 4096) == 0);
    CHECK(cudaEventDestroy(e));
  }

  // 4. one stream's synchronization is not held up by another, still blocked, stream
  {
    Gate g{800};
    unsigned char* h2 = nullptr;
    CHECK(cudaMallocHost(&h2, N));
    memset(h, 0, N);
    memset(h2, 0, N);
    CHECK(cudaLaunchHostFunc(a, hold, &g));
    CHECK(cudaMemcpyAsync(h, d, N, cudaMemcpyDeviceToHost, a));
    CHECK(cudaMemcpyAsync(h2, d, N, cudaMemcpyDeviceToHost, b));
    CHECK(cudaStreamSynchronize(b));
    int a_still_held = g.done.load() == 0;
    printf("stream b synchronized while a is held: %s, b's data %s\n",
           a_still_held ? "yes" : "no", fnv1a(h2, N) == want ? "ok" : "WRONG");
    EXPECT(a_still_held && fnv1a(h2, N) == want);
    CHECK(cudaDeviceSynchronize());
    printf("after cudaDeviceSynchronize: a's data %s\n", fnv1a(h, N) == want ? "ok" : "WRONG");
    EXPECT(fnv1a(h, N) == want);
    CHECK(cudaFreeHost(h2));
  }

  // 5. many copies in flight behind a held stream: more than the client lets out at once
  {
    const int K = 600;
    const size_t piece = 1024;
    Gate g{300};
    memset(h, 0, N);
    CHECK(cudaLaunchHostFunc(a, hold, &g));
    for (int i = 0; i < K; ++i)
      CHECK(cudaMemcpyAsync(h + i * piece, d + (size_t)((i * 37) % K) * piece, piece,
                            cudaMemcpyDeviceToHost, a));
    CHECK(cudaStreamSynchronize(a));
    int bad = 0;
    for (int i = 0; i < K; ++i)
      bad += memcmp(h + i * piece, ref.data() + (size_t)((i * 37) % K) * piece, piece) != 0;
    printf("%d copies in flight at once: %d wrong\n", K, bad);
    EXPECT(bad == 0);
  }

  // 6. stream order: a memset and a device-to-device copy queued behind a held stream, then
  //    read back; a pageable destination makes the copy synchronous
  {
    Gate g{200};
    unsigned char* d2 = nullptr;
    CHECK(cudaMalloc(&d2, N));
    CHECK(cudaLaunchHostFunc(a, hold, &g));
    CHECK(cudaMemsetAsync(d2, 0x5A, N, a));
    CHECK(cudaMemcpyAsync(d2 + 4096, d, 4096, cudaMemcpyDeviceToDevice, a));
    std::vector<unsigned char> page(N);
    CHECK(cudaMemcpyAsync(page.data(), d2, N, cudaMemcpyDeviceToHost, a));
    int ordered = g.done.load() == 1;
    int ok = page[0] == 0x5A && page[N - 1] == 0x5A && memcmp(page.data() + 4096, ref.data(), 4096) == 0;
    printf("pageable destination: returned after the held stream %s, data %s\n",
           ordered ? "yes" : "no", ok ? "ok" : "WRONG");
    EXPECT(ordered && ok);
    CHECK(cudaFree(d2));
  }

  // 7. cudaFreeHost of a buffer with a copy on its way waits for it (no write after free)
  {
    Gate g{300};
    unsigned char* h3 = nullptr;
    CHECK(cudaMallocHost(&h3, N));
    CHECK(cudaLaunchHostFunc(a, hold, &g));
    CHECK(cudaMemcpyAsync(h3, d, N, cudaMemcpyDeviceToHost, a));
    CHECK(cudaFreeHost(h3));
    printf("cudaFreeHost returned after the copy's stream went on: %s\n",
           g.done.load() ? "yes" : "no");
    EXPECT(g.done.load() == 1);
    CHECK(cudaStreamSynchronize(a));
  }

  CHECK(cudaStreamDestroy(a));
  CHECK(cudaStreamDestroy(b));
  CHECK(cudaFreeHost(h));
  CHECK(cudaFree(d));
  // the queries above answered cudaErrorNotReady: an answer, not an error to remember
  printf("last error: %s\n", cudaGetErrorName(cudaGetLastError()));
  printf("%s\n", g_failures ? "FAILED" : "PASSED");
  return g_failures ? 1 : 0;
}
