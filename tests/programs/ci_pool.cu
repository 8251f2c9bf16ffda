// ci_pool: stream-ordered allocation and memory pools through farcuda, NO kernels (runs
// against the CI fake GPU). Its transcript is farcuda's, not CUDA's: the pool statistics
// are the daemon's exact figures and farcuda refuses what it cannot do (host and IPC pools,
// allocation in a capturing stream, access from another GPU); stream_alloc.cu is the one
// compared with a native run.
//
// `ci_pool --pause` stops at two moments, prints "pause <what>" and waits for a line on
// stdin, so that a test can look at the daemon meanwhile: "pause pending-free" while a
// cudaFreeAsync waits behind a host function (8 MiB still held), "pause end" when
// everything was freed (0 bytes held).
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>
#include <cuda_runtime.h>

#define CHECK(call)                                                                   \
  do {                                                                                \
    cudaError_t e_ = (call);                                                          \
    if (e_ != cudaSuccess) {                                                          \
      printf("FAIL line %d: %s -> %s\n", __LINE__, #call, cudaGetErrorName(e_));      \
      fflush(stdout);                                                                 \
      exit(1);                                                                        \
    }                                                                                 \
  } while (0)

static int g_failures = 0;
#define EXPECT(cond)                                                                  \
  do {                                                                                \
    if (!(cond)) { printf("MISMATCH line %d: %s\n", __LINE__, #cond); ++g_failures; } \
  } while (0)

// The result of a call that may fail, by name; the error is cleared.
#define SAY(what, call)                                                               \
  do {                                                                                \
    cudaError_t e_ = (call);                                                          \
    printf("%s: %s\n", what, cudaGetErrorName(e_));                                   \
    cudaGetLastError();                                                               \
  } while (0)

static bool g_pause = false;
static void pause_here(const char* what) {
  printf("pause %s\n", what);
  fflush(stdout);
  if (g_pause) {
    std::string line;
    int c;
    while ((c = getchar()) != EOF && c != '\n') line += (char)c;
  }
}

static const size_t MiB = 1 << 20;

static unsigned long long attr64(cudaMemPool_t p, cudaMemPoolAttr a) {
  unsigned long long v = 0;
  CHECK(cudaMemPoolGetAttribute(p, a, &v));
  return v;
}
static void stats(const char* name, cudaMemPool_t p) {
  printf("%s: used=%llu reserved=%llu used_high=%llu reserved_high=%llu\n", name,
         attr64(p, cudaMemPoolAttrUsedMemCurrent), attr64(p, cudaMemPoolAttrReservedMemCurrent),
         attr64(p, cudaMemPoolAttrUsedMemHigh), attr64(p, cudaMemPoolAttrReservedMemHigh));
}

struct Gate {
  std::mutex m;
  std::condition_variable cv;
  bool freed = false;
};

// Holds the stream until main's cudaFreeAsync (queued behind it) has returned: if that call
// waited for the stream, the two would wait for each other until the timeout.
static void CUDART_CB hold_stream(void* arg) {
  Gate* g = (Gate*)arg;
  std::unique_lock<std::mutex> lk(g->m);
  bool ok = g->cv.wait_for(lk, std::chrono::seconds(20), [&] { return g->freed; });
  printf("cudaFreeAsync returned while its stream waited: %s\n", ok ? "yes" : "no");
  EXPECT(ok);
  pause_here("pending-free");
}

static void CUDART_CB sleep_200ms(void*) {
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
}

int main(int argc, char** argv) {
  g_pause = argc > 1 && strcmp(argv[1], "--pause") == 0;
  printf("ci_pool\n");
  int ndev = 0;
  CHECK(cudaGetDeviceCount(&ndev));
  printf("devices: %d\n", ndev);
  CHECK(cudaSetDevice(0));
  cudaStream_t s;
  CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));

  // --- the default pool ----------------------------------------------------------------
  cudaMemPool_t dflt = nullptr, cur = nullptr;
  CHECK(cudaDeviceGetDefaultMemPool(&dflt, 0));
  CHECK(cudaDeviceGetMemPool(&cur, 0));
  printf("current pool is the default one: %s\n", cur == dflt ? "yes" : "no");
  EXPECT(cur == dflt);
  {
    cudaMemLocation loc = {cudaMemLocationTypeDevice, 0};
    cudaMemPool_t viaLoc = nullptr;
    CHECK(cudaMemGetDefaultMemPool(&viaLoc, &loc, cudaMemAllocationTypePinned));
    printf("cudaMemGetDefaultMemPool gives it: %s\n", viaLoc == dflt ? "yes" : "no");
    CHECK(cudaMemGetMemPool(&viaLoc, &loc, cudaMemAllocationTypePinned));
    printf("cudaMemGetMemPool gives it: %s\n", viaLoc == dflt ? "yes" : "no");
  }
  int reuse[3];
  for (int i = 0; i < 3; i++)
    CHECK(cudaMemPoolGetAttribute(dflt, (cudaMemPoolAttr)(i + 1), &reuse[i]));
  printf("reuse flags: %d %d %d, release threshold: %llu\n", reuse[0], reuse[1], reuse[2],
         attr64(dflt, cudaMemPoolAttrReleaseThreshold));
  unsigned long long big = ~0ULL;
  CHECK(cudaMemPoolSetAttribute(dflt, cudaMemPoolAttrReleaseThreshold, &big));
  printf("release threshold set: %llu\n", attr64(dflt, cudaMemPoolAttrReleaseThreshold));
  int off = 0, on = 1;
  CHECK(cudaMemPoolSetAttribute(dflt, cudaMemPoolReuseAllowOpportunistic, &off));
  CHECK(cudaMemPoolGetAttribute(dflt, cudaMemPoolReuseAllowOpportunistic, &reuse[1]));
  printf("opportunistic reuse set to 0: %d\n", reuse[1]);
  CHECK(cudaMemPoolSetAttribute(dflt, cudaMemPoolReuseAllowOpportunistic, &on));
  stats("default", dflt);

  // --- allocations: sizes as the daemon counts them, copies, pointer attributes ----------
  std::vector<unsigned char> h(4 * MiB), back(4 * MiB);
  for (size_t i = 0; i < h.size(); i++) h[i] = (unsigned char)(i * 131 + 7);
  unsigned char *a = nullptr, *b = nullptr, *c = nullptr;
  CHECK(cudaMallocAsync((void**)&a, 4 * MiB, s));
  CHECK(cudaMallocAsync((void**)&b, 3 * MiB, s));
  CHECK(cudaMallocAsync((void**)&c, 1000, s));
  stats("default after 4 MiB + 3 MiB + 1000 B", dflt);
  CHECK(cudaMemcpyAsync(a, h.data(), 4 * MiB, cudaMemcpyHostToDevice, s));
  CHECK(cudaMemcpyAsync(b, a + 1000, 3 * MiB, cudaMemcpyDeviceToDevice, s));
  CHECK(cudaMemsetAsync(c, 0x5a, 1000, s));
  CHECK(cudaMemcpyAsync(back.data(), b, 3 * MiB, cudaMemcpyDeviceToHost, s));
  CHECK(cudaMemcpyAsync(back.data() + 3 * MiB, c, 1000, cudaMemcpyDeviceToHost, s));
  CHECK(cudaStreamSynchronize(s));
  bool same = memcmp(back.data(), h.data() + 1000, 3 * MiB) == 0;
  size_t bad = 0;
  for (int i = 0; i < 1000; i++) bad += back[3 * MiB + i] != 0x5a;
  printf("copies and memset through async memory: %s\n", same && !bad ? "equal" : "DIFFERENT");
  EXPECT(same && !bad);
  cudaPointerAttributes pa;
  CHECK(cudaPointerGetAttributes(&pa, b + 12345));
  printf("pointer attributes: type %d device %d\n", (int)pa.type, pa.device);
  EXPECT(pa.type == cudaMemoryTypeDevice && pa.device == 0);
  {
    void* z = (void*)&h;
    CHECK(cudaMallocAsync(&z, 0, s));
    printf("size 0: %s\n", z == nullptr ? "null" : "not null");
  }
  CHECK(cudaFreeAsync(a, s));
  CHECK(cudaFreeAsync(b, s));
  CHECK(cudaFreeAsync(c, s));
  CHECK(cudaStreamSynchronize(s));
  stats("default after the frees", dflt);

  // --- a stream-ordered free waits for the work queued before it --------------------------
  {
    unsigned char *p = nullptr, *q = nullptr;
    CHECK(cudaMallocAsync((void**)&p, 4 * MiB, s));
    CHECK(cudaMallocAsync((void**)&q, 4 * MiB, s));
    CHECK(cudaMemcpyAsync(p, h.data(), 4 * MiB, cudaMemcpyHostToDevice, s));
    Gate gate;
    CHECK(cudaLaunchHostFunc(s, hold_stream, &gate));
    CHECK(cudaMemcpyAsync(q, p, 4 * MiB, cudaMemcpyDeviceToDevice, s));  // behind the host function
    CHECK(cudaFreeAsync(p, s));                                            // behind the copy
    {
      std::lock_guard<std::mutex> lk(gate.m);
      gate.freed = true;
    }
    gate.cv.notify_all();
    CHECK(cudaStreamSynchronize(s));
    CHECK(cudaMemcpy(back.data(), q, 4 * MiB, cudaMemcpyDeviceToHost));
    printf("copy queued before the free saw the memory: %s\n",
           memcmp(back.data(), h.data(), 4 * MiB) == 0 ? "yes" : "no");
    EXPECT(memcmp(back.data(), h.data(), 4 * MiB) == 0);
    CHECK(cudaFreeAsync(q, s));
    CHECK(cudaStreamSynchronize(s));
  }

  // --- the memory of a pending free comes back to a later allocation ----------------------
  {
    // the same size in the same stream: the pending free's memory, at once
    void *p = nullptr, *again = nullptr;
    CHECK(cudaMallocAsync(&p, 40 * MiB, s));
    CHECK(cudaLaunchHostFunc(s, sleep_200ms, nullptr));
    CHECK(cudaFreeAsync(p, s));
    CHECK(cudaMallocAsync(&again, 40 * MiB, s));
    printf("same size, same stream: the pending free's memory: %s\n", again == p ? "yes" : "no");
    // another size: new memory (with a memory quota of 48 MiB it fits only once the first
    // allocation is freed: the daemon waits for that free rather than refusing)
    CHECK(cudaLaunchHostFunc(s, sleep_200ms, nullptr));
    CHECK(cudaFreeAsync(again, s));
    CHECK(cudaMallocAsync(&p, 44 * MiB, s));
    printf("allocation after a pending free: ok\n");
    CHECK(cudaFreeAsync(p, s));
    for (int i = 0; i < 200; i++) {
      CHECK(cudaMallocAsync(&p, (i % 7 + 1) * 100000, s));
      CHECK(cudaMemsetAsync(p, i & 0xff, 1000, s));
      CHECK(cudaFreeAsync(p, s));
    }
    CHECK(cudaStreamSynchronize(s));
    stats("default after 200 allocate/free rounds", dflt);
  }

  // --- pools of one's own ---------------------------------------------------------------
  {
    cudaMemPoolProps props;
    memset(&props, 0, sizeof props);
    props.allocType = cudaMemAllocationTypePinned;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = 0;
    cudaMemPool_t pool = nullptr;
    CHECK(cudaMemPoolCreate(&pool, &props));
    printf("pool created, not the default one: %s\n", pool != dflt ? "yes" : "no");
    void *x = nullptr, *y = nullptr, *z = nullptr;
    CHECK(cudaMallocFromPoolAsync(&x, 2 * MiB, pool, s));
    CHECK(cudaMallocFromPoolAsync(&y, 2 * MiB, pool, s));
    stats("pool", pool);
    stats("default", dflt);
    CHECK(cudaDeviceSetMemPool(0, pool));
    CHECK(cudaDeviceGetMemPool(&cur, 0));
    printf("current pool after cudaDeviceSetMemPool: %s\n",
           cur == pool ? "the new one" : "another");
    CHECK(cudaMallocAsync(&z, 1 * MiB, s));
    stats("pool after cudaMallocAsync", pool);
    unsigned long long zero = 0;
    CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &zero));
    CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReservedMemHigh, &zero));
    CHECK(cudaFreeAsync(y, s));
    CHECK(cudaStreamSynchronize(s));
    stats("pool after resetting the highs and a free", pool);
    CHECK(cudaMemPoolTrimTo(pool, 0));
    CHECK(cudaMemPoolDestroy(pool));
    CHECK(cudaDeviceGetMemPool(&cur, 0));
    printf("destroyed with 2 allocations out; current pool: %s\n",
           cur == dflt ? "the default" : "another");
    CHECK(cudaMemset(x, 1, 2 * MiB));  // still usable
    CHECK(cudaFreeAsync(x, s));
    CHECK(cudaFree(z));  // cudaFree of a stream-ordered allocation
    SAY("allocate from a destroyed pool", cudaMallocFromPoolAsync(&x, 64, pool, s));
    SAY("attribute of a destroyed pool",
        cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &zero));
    SAY("set a destroyed pool current", cudaDeviceSetMemPool(0, pool));
    SAY("destroy it again", cudaMemPoolDestroy(pool));
    int local = 0;
    SAY("made-up pool handle", cudaMemPoolTrimTo((cudaMemPool_t)&local, 0));
    SAY("null pool handle", cudaMemPoolGetAttribute(nullptr, cudaMemPoolAttrUsedMemCurrent, &zero));
  }

  // --- errors -----------------------------------------------------------------------------
  {
    void* p = nullptr;
    CHECK(cudaMallocAsync(&p, 1 * MiB, s));
    SAY("destroy the default pool", cudaMemPoolDestroy(dflt));
    SAY("free inside an allocation", cudaFreeAsync((char*)p + 16, s));
    std::vector<char> hostbuf(64);
    SAY("free host memory", cudaFreeAsync(hostbuf.data(), s));
    SAY("free null", cudaFreeAsync(nullptr, s));
    CHECK(cudaFreeAsync(p, s));
    SAY("free it twice", cudaFreeAsync(p, s));
    SAY("cudaFree after cudaFreeAsync", cudaFree(p));
    SAY("null result pointer", cudaMallocAsync(nullptr, 64, s));
    unsigned long long five = 5;
    SAY("set UsedMemHigh to 5", cudaMemPoolSetAttribute(dflt, cudaMemPoolAttrUsedMemHigh, &five));
    SAY("set UsedMemCurrent", cudaMemPoolSetAttribute(dflt, cudaMemPoolAttrUsedMemCurrent, &five));
    SAY("unknown attribute", cudaMemPoolGetAttribute(dflt, (cudaMemPoolAttr)99, &five));
    cudaMemPool_t none;
    SAY("default pool of device 999", cudaDeviceGetDefaultMemPool(&none, 999));
    SAY("set a pool for device 999", cudaDeviceSetMemPool(999, dflt));

    cudaMemPoolProps props;
    memset(&props, 0, sizeof props);
    props.allocType = cudaMemAllocationTypePinned;
    props.location.type = cudaMemLocationTypeHost;
    SAY("create a host pool", cudaMemPoolCreate(&none, &props));
    props.location.type = cudaMemLocationTypeDevice;
    props.handleTypes = cudaMemHandleTypePosixFileDescriptor;
    SAY("create an IPC pool", cudaMemPoolCreate(&none, &props));
    props.handleTypes = cudaMemHandleTypeNone;
    props.allocType = cudaMemAllocationTypeManaged;
    SAY("create a managed pool", cudaMemPoolCreate(&none, &props));
    props.allocType = cudaMemAllocationTypeInvalid;
    SAY("create a pool of no type", cudaMemPoolCreate(&none, &props));
    props.allocType = cudaMemAllocationTypePinned;
    props.location.id = 999;
    SAY("create a pool on device 999", cudaMemPoolCreate(&none, &props));
    props.location.id = 0;
    props.reserved[3] = 1;
    SAY("create a pool with reserved bytes set", cudaMemPoolCreate(&none, &props));
    props.reserved[3] = 0;
    props.maxSize = 3 * MiB;
    cudaMemPool_t small = nullptr;
    CHECK(cudaMemPoolCreate(&small, &props));
    CHECK(cudaMallocFromPoolAsync(&p, 2 * MiB, small, s));
    void* q = nullptr;
    SAY("past the pool's maxSize", cudaMallocFromPoolAsync(&q, 2 * MiB, small, s));
    CHECK(cudaFreeAsync(p, s));
    CHECK(cudaMemPoolDestroy(small));

    // stream capture: graph memory nodes are not supported
    CHECK(cudaMallocAsync(&p, 64, s));
    cudaStream_t cs;
    CHECK(cudaStreamCreate(&cs));
    CHECK(cudaStreamBeginCapture(cs, cudaStreamCaptureModeRelaxed));
    SAY("cudaMallocAsync in a capturing stream", cudaMallocAsync(&q, 64, cs));
    SAY("cudaFreeAsync in a capturing stream", cudaFreeAsync(p, cs));
    cudaGraph_t g;
    CHECK(cudaStreamEndCapture(cs, &g));
    CHECK(cudaGraphDestroy(g));
    CHECK(cudaFreeAsync(p, cs));  // not captured any more
    CHECK(cudaStreamDestroy(cs));

    // memory from cudaMalloc may be freed in stream order too
    CHECK(cudaMalloc(&p, 1 * MiB));
    CHECK(cudaMemsetAsync(p, 0, 1 * MiB, s));
    SAY("cudaFreeAsync of cudaMalloc'd memory", cudaFreeAsync(p, s));
  }

  // --- access and other devices -------------------------------------------------------------
  {
    cudaMemLocation loc = {cudaMemLocationTypeDevice, 0};
    cudaMemAccessFlags f = cudaMemAccessFlagsProtNone;
    CHECK(cudaMemPoolGetAccess(&f, dflt, &loc));
    printf("access of device 0 to its pool: %d\n", (int)f);
    cudaMemAccessDesc d = {{cudaMemLocationTypeDevice, 0}, cudaMemAccessFlagsProtReadWrite};
    SAY("grant device 0 read/write", cudaMemPoolSetAccess(dflt, &d, 1));
    d.flags = cudaMemAccessFlagsProtNone;
    SAY("take device 0's access away", cudaMemPoolSetAccess(dflt, &d, 1));
    d.location.id = 999;
    SAY("access for device 999", cudaMemPoolSetAccess(dflt, &d, 1));
    for (int dev = 1; dev < ndev; dev++) {
      loc.id = dev;
      d.location.id = dev;
      d.flags = cudaMemAccessFlagsProtReadWrite;
      cudaError_t e = cudaMemPoolSetAccess(dflt, &d, 1);
      cudaGetLastError();
      CHECK(cudaMemPoolGetAccess(&f, dflt, &loc));
      printf("device %d: grant read/write: %s, access now %d\n", dev, cudaGetErrorName(e), (int)f);
      // a pool of device dev, used in the order of a stream of device 0
      cudaMemPool_t other;
      CHECK(cudaDeviceGetDefaultMemPool(&other, dev));
      void *p = nullptr, *q = nullptr;
      CHECK(cudaMallocFromPoolAsync(&p, 2 * MiB, other, s));
      CHECK(cudaMallocAsync(&q, 2 * MiB, s));
      CHECK(cudaMemcpy(p, h.data(), 2 * MiB, cudaMemcpyHostToDevice));
      CHECK(cudaMemcpy(q, p, 2 * MiB, cudaMemcpyDefault));
      CHECK(cudaFreeAsync(p, s));
      CHECK(cudaMemcpyAsync(back.data(), q, 2 * MiB, cudaMemcpyDeviceToHost, s));
      CHECK(cudaFreeAsync(q, s));
      CHECK(cudaStreamSynchronize(s));
      printf("device %d: its pool on a stream of device 0: %s, used after the free %llu\n", dev,
             memcmp(back.data(), h.data(), 2 * MiB) == 0 ? "equal" : "DIFFERENT",
             attr64(other, cudaMemPoolAttrUsedMemCurrent));
    }
  }

  CHECK(cudaStreamSynchronize(s));
  CHECK(cudaDeviceSynchronize());
  stats("default at the end", dflt);
  EXPECT(attr64(dflt, cudaMemPoolAttrUsedMemCurrent) == 0);
  pause_here("end");
  CHECK(cudaStreamDestroy(s));
  printf("%s\n", g_failures ? "FAILED" : "PASSED");
  return g_failures ? 1 : 0;
}
