// stream_alloc: stream-ordered allocation (cudaMallocAsync, cudaFreeAsync,
// cudaMallocFromPoolAsync) and memory pools, with kernels working on the memory.
// Default pool and a created pool, pool attributes (reuse flags, release threshold, used
// and reserved memory with their high watermarks), cudaDeviceSetMemPool/GetMemPool, a pool
// destroyed with allocations out, access, an allocate/compute/free loop, memory handed
// from one stream to another through an event, cudaFree of stream-ordered memory, errors.
// Pool figures are printed where they are the same natively and through farcuda: used
// memory after known allocations of multiples of 2 MiB (after a synchronization); reserved
// memory only as relations (reserved >= used), since the driver reserves in its own chunks.
#include <cstdint>
#include <cstdio>
#include <cstring>
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

#define SAY(what, call)                                                               \
  do {                                                                                \
    cudaError_t e_ = (call);                                                          \
    printf("%s: %s\n", what, cudaGetErrorName(e_));                                   \
    cudaGetLastError();                                                               \
  } while (0)

static const size_t MiB = 1 << 20;

__host__ __device__ static inline unsigned mix(unsigned x, unsigned seed) {
  x ^= seed * 0x9E3779B9u;
  x *= 0x85EBCA6Bu;
  x ^= x >> 13;
  x *= 0xC2B2AE35u;
  return x ^ (x >> 16);
}

#define GRID_STRIDE(i, n) \
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); \
       i += (size_t)gridDim.x * blockDim.x)

__global__ void fill(unsigned* p, size_t n, unsigned seed) {
  GRID_STRIDE(i, n) p[i] = mix((unsigned)i, seed);
}

__global__ void axpy(unsigned* dst, const unsigned* src, size_t n, unsigned k) {
  GRID_STRIDE(i, n) dst[i] = dst[i] * k + src[i];
}

__global__ void sum_into(unsigned long long* acc, const unsigned* src, size_t n) {
  unsigned long long part = 0;
  GRID_STRIDE(i, n) part += src[i];
  atomicAdd(acc, part);
}

static uint64_t fnv1a(const void* p, size_t n) {
  const unsigned char* b = (const unsigned char*)p;
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; ++i) { h ^= b[i]; h *= 1099511628211ULL; }
  return h;
}

static unsigned long long attr64(cudaMemPool_t p, cudaMemPoolAttr a) {
  unsigned long long v = 0;
  CHECK(cudaMemPoolGetAttribute(p, a, &v));
  return v;
}

// What is the same natively and through farcuda: used bytes exactly, reserved as relations.
// The used high watermark is printed only where no stream-ordered free was still pending when
// the program allocated more (when a pending free stops counting as used is the driver's
// business).
static void usage(const char* what, cudaMemPool_t p, bool show_high = true) {
  unsigned long long used = attr64(p, cudaMemPoolAttrUsedMemCurrent);
  unsigned long long reserved = attr64(p, cudaMemPoolAttrReservedMemCurrent);
  unsigned long long used_high = attr64(p, cudaMemPoolAttrUsedMemHigh);
  unsigned long long reserved_high = attr64(p, cudaMemPoolAttrReservedMemHigh);
  printf("%s: used %llu, ", what, used);
  if (show_high) printf("used high %llu, ", used_high);
  printf("reserved >= used: %s, reserved high >= reserved: %s\n", reserved >= used ? "yes" : "no",
         reserved_high >= reserved ? "yes" : "no");
  EXPECT(reserved >= used && reserved_high >= reserved && used_high >= used);
}

int main() {
  printf("stream_alloc\n");
  int ndev = 0;
  CHECK(cudaGetDeviceCount(&ndev));
  printf("devices >= 1: %s\n", ndev >= 1 ? "yes" : "no");
  CHECK(cudaSetDevice(0));
  int supported = 0;
  CHECK(cudaDeviceGetAttribute(&supported, cudaDevAttrMemoryPoolsSupported, 0));
  printf("memory pools supported: %d\n", supported);
  cudaStream_t s, s2;
  CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  CHECK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));

  // --- the default pool and its attributes ------------------------------------------------
  cudaMemPool_t dflt = nullptr, cur = nullptr;
  CHECK(cudaDeviceGetDefaultMemPool(&dflt, 0));
  CHECK(cudaDeviceGetMemPool(&cur, 0));
  printf("current pool is the default one: %s\n", cur == dflt ? "yes" : "no");
  EXPECT(cur == dflt);
  int flags[3];
  for (int i = 0; i < 3; i++)
    CHECK(cudaMemPoolGetAttribute(dflt, (cudaMemPoolAttr)(i + 1), &flags[i]));
  printf("reuse follow-events %d, opportunistic %d, internal-dependencies %d\n", flags[0],
         flags[1], flags[2]);
  printf("release threshold: %llu\n", attr64(dflt, cudaMemPoolAttrReleaseThreshold));
  unsigned long long keep_all = ~0ULL;
  CHECK(cudaMemPoolSetAttribute(dflt, cudaMemPoolAttrReleaseThreshold, &keep_all));
  printf("release threshold set to all: %llu\n", attr64(dflt, cudaMemPoolAttrReleaseThreshold));
  int off = 0, on = 1;
  for (int i = 0; i < 3; i++) CHECK(cudaMemPoolSetAttribute(dflt, (cudaMemPoolAttr)(i + 1), &off));
  for (int i = 0; i < 3; i++)
    CHECK(cudaMemPoolGetAttribute(dflt, (cudaMemPoolAttr)(i + 1), &flags[i]));
  printf("reuse flags set off: %d %d %d\n", flags[0], flags[1], flags[2]);
  for (int i = 0; i < 3; i++) CHECK(cudaMemPoolSetAttribute(dflt, (cudaMemPoolAttr)(i + 1), &on));
  usage("default pool before any allocation", dflt);

  // --- allocations used by kernels --------------------------------------------------------
  const size_t na = 4 * MiB / 4, nb = 8 * MiB / 4, nc = 2 * MiB;
  unsigned *a = nullptr, *b = nullptr;
  unsigned char* c = nullptr;
  CHECK(cudaMallocAsync((void**)&a, na * 4, s));
  CHECK(cudaMallocAsync((void**)&b, nb * 4, s));
  CHECK(cudaMallocAsync((void**)&c, nc, s));
  fill<<<256, 256, 0, s>>>(a, na, 1);
  fill<<<256, 256, 0, s>>>(b, nb, 2);
  axpy<<<256, 256, 0, s>>>(b, a, na, 3);
  CHECK(cudaGetLastError());
  CHECK(cudaMemsetAsync(c, 0x11, nc, s));
  std::vector<unsigned> hb(nb);
  std::vector<unsigned char> hc(nc);
  CHECK(cudaMemcpyAsync(hb.data(), b, nb * 4, cudaMemcpyDeviceToHost, s));
  CHECK(cudaMemcpyAsync(hc.data(), c, nc, cudaMemcpyDeviceToHost, s));
  CHECK(cudaStreamSynchronize(s));
  {
    size_t bad = 0;
    for (size_t i = 0; i < nb; i++) {
      unsigned want = mix((unsigned)i, 2);
      if (i < na) want = want * 3 + mix((unsigned)i, 1);
      bad += hb[i] != want;
    }
    for (size_t i = 0; i < nc; i++) bad += hc[i] != 0x11;
    printf("kernels on async memory: fnv %016llx, wrong %zu\n",
           (unsigned long long)fnv1a(hb.data(), nb * 4), bad);
    EXPECT(bad == 0);
  }
  cudaPointerAttributes pa;
  CHECK(cudaPointerGetAttributes(&pa, b + 100));
  printf("pointer attributes: type %d, device %d, device pointer is the pointer: %s\n",
         (int)pa.type, pa.device, pa.devicePointer == (void*)(b + 100) ? "yes" : "no");
  usage("default pool with 4 + 8 + 2 MiB", dflt);
  CHECK(cudaFreeAsync(a, s));
  CHECK(cudaFreeAsync(b, s));
  CHECK(cudaStreamSynchronize(s));
  usage("default pool after freeing 4 + 8 MiB", dflt);

  // The used high watermark is reset (zero is the only value allowed) and follows the
  // allocations after that. The reserved one is left alone: whether CUDA's restarts from zero
  // or from what is reserved now decides "reserved high >= reserved" until the pool grows.
  unsigned long long zero = 0, five = 5;
  SAY("reset used high", cudaMemPoolSetAttribute(dflt, cudaMemPoolAttrUsedMemHigh, &zero));
  SAY("set used high to 5", cudaMemPoolSetAttribute(dflt, cudaMemPoolAttrUsedMemHigh, &five));
  unsigned* d = nullptr;
  CHECK(cudaMallocAsync((void**)&d, 6 * MiB, s));
  CHECK(cudaMemsetAsync(d, 0, 6 * MiB, s));
  CHECK(cudaStreamSynchronize(s));
  printf("after a reset and 6 MiB more: used %llu, used high is used: %s\n",
         attr64(dflt, cudaMemPoolAttrUsedMemCurrent),
         attr64(dflt, cudaMemPoolAttrUsedMemHigh) == attr64(dflt, cudaMemPoolAttrUsedMemCurrent)
             ? "yes" : "no");

  // --- a pool of one's own -----------------------------------------------------------------
  {
    cudaMemPoolProps props;
    memset(&props, 0, sizeof props);
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = 0;
    cudaMemPool_t pool = nullptr;
    CHECK(cudaMemPoolCreate(&pool, &props));
    printf("created pool differs from the default: %s\n", pool != dflt ? "yes" : "no");
    const size_t nx = 4 * MiB / 4;
    unsigned *x = nullptr, *y = nullptr, *z = nullptr;
    CHECK(cudaMallocFromPoolAsync((void**)&x, nx * 4, pool, s2));
    CHECK(cudaMallocFromPoolAsync((void**)&y, nx * 4, pool, s2));
    fill<<<128, 256, 0, s2>>>(x, nx, 7);
    fill<<<128, 256, 0, s2>>>(y, nx, 8);
    axpy<<<128, 256, 0, s2>>>(y, x, nx, 5);
    CHECK(cudaGetLastError());
    std::vector<unsigned> hy(nx);
    CHECK(cudaMemcpyAsync(hy.data(), y, nx * 4, cudaMemcpyDeviceToHost, s2));
    CHECK(cudaStreamSynchronize(s2));
    size_t bad = 0;
    for (size_t i = 0; i < nx; i++) bad += hy[i] != mix((unsigned)i, 8) * 5 + mix((unsigned)i, 7);
    printf("kernels on the created pool's memory: fnv %016llx, wrong %zu\n",
           (unsigned long long)fnv1a(hy.data(), nx * 4), bad);
    EXPECT(bad == 0);
    usage("created pool with 4 + 4 MiB", pool);
    usage("default pool meanwhile", dflt);
    CHECK(cudaDeviceSetMemPool(0, pool));
    CHECK(cudaDeviceGetMemPool(&cur, 0));
    printf("current pool after cudaDeviceSetMemPool: %s\n",
           cur == pool ? "the created one" : "another");
    CHECK(cudaMallocAsync((void**)&z, 2 * MiB, s));  // from the current pool: the created one
    CHECK(cudaMemsetAsync(z, 0x22, 2 * MiB, s));
    CHECK(cudaFreeAsync(y, s2));
    CHECK(cudaStreamSynchronize(s));
    CHECK(cudaStreamSynchronize(s2));
    usage("created pool with x and z", pool);
    usage("default pool unchanged", dflt);
    SAY("destroy the created pool with allocations out", cudaMemPoolDestroy(pool));
    CHECK(cudaDeviceGetMemPool(&cur, 0));
    printf("current pool after destroying it: %s\n", cur == dflt ? "the default" : "another");
    // its allocations stay valid until freed
    axpy<<<128, 256, 0, s>>>(x, z, 2 * MiB / 4, 2);
    CHECK(cudaGetLastError());
    std::vector<unsigned> hx(nx);
    CHECK(cudaMemcpyAsync(hx.data(), x, nx * 4, cudaMemcpyDeviceToHost, s));
    CHECK(cudaStreamSynchronize(s));
    bad = 0;
    for (size_t i = 0; i < nx; i++) {
      unsigned want = mix((unsigned)i, 7);
      if (i < 2 * MiB / 4) want = want * 2 + 0x22222222u;
      bad += hx[i] != want;
    }
    printf("allocations of the destroyed pool still work: wrong %zu\n", bad);
    EXPECT(bad == 0);
    CHECK(cudaFreeAsync(x, s));
    CHECK(cudaStreamSynchronize(s));
    SAY("cudaFree of stream-ordered memory", cudaFree(z));
  }

  SAY("trim the default pool", cudaMemPoolTrimTo(dflt, 0));
  {
    cudaMemLocation loc = {cudaMemLocationTypeDevice, 0};
    cudaMemAccessFlags f = cudaMemAccessFlagsProtNone;
    CHECK(cudaMemPoolGetAccess(&f, dflt, &loc));
    printf("access of device 0 to its default pool: %d\n", (int)f);
    cudaMemAccessDesc desc = {{cudaMemLocationTypeDevice, 0}, cudaMemAccessFlagsProtReadWrite};
    SAY("grant device 0 read/write", cudaMemPoolSetAccess(dflt, &desc, 1));
  }

  // --- an allocate / compute / free loop in one stream -------------------------------------
  // (sizes that change every round, then one size for every round: memory whose free is still
  // pending in the stream may serve the next allocation at once)
  {
    unsigned long long* acc = nullptr;
    CHECK(cudaMalloc((void**)&acc, sizeof *acc));
    CHECK(cudaMemsetAsync(acc, 0, sizeof *acc, s));
    unsigned long long want = 0;
    for (unsigned i = 0; i < 64; i++) {
      size_t n = (i < 32 ? 1 * MiB + i * 4096 : 2 * MiB) / 4;
      unsigned* t = nullptr;
      CHECK(cudaMallocAsync((void**)&t, n * 4, s));
      fill<<<64, 256, 0, s>>>(t, n, 100 + i);
      sum_into<<<64, 256, 0, s>>>(acc, t, n);
      CHECK(cudaFreeAsync(t, s));
      for (size_t k = 0; k < n; k++) want += mix((unsigned)k, 100 + i);
    }
    CHECK(cudaGetLastError());
    unsigned long long got = 0;
    CHECK(cudaMemcpyAsync(&got, acc, sizeof got, cudaMemcpyDeviceToHost, s));
    CHECK(cudaStreamSynchronize(s));
    printf("64 allocate/compute/free rounds: sum %llu, matches the host: %s\n", got,
           got == want ? "yes" : "no");
    EXPECT(got == want);
    CHECK(cudaFree(acc));
    usage("default pool after the rounds", dflt, false);
  }

  // --- memory allocated in one stream, used and freed in another ---------------------------
  {
    const size_t n = 2 * MiB / 4;
    unsigned *src = nullptr, *dst = nullptr;
    CHECK(cudaMallocAsync((void**)&src, n * 4, s));
    CHECK(cudaMallocAsync((void**)&dst, n * 4, s));
    fill<<<64, 256, 0, s>>>(src, n, 42);
    CHECK(cudaMemsetAsync(dst, 0, n * 4, s));
    cudaEvent_t ev;
    CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    CHECK(cudaEventRecord(ev, s));
    CHECK(cudaStreamWaitEvent(s2, ev, 0));
    axpy<<<64, 256, 0, s2>>>(dst, src, n, 1);
    CHECK(cudaFreeAsync(src, s2));
    std::vector<unsigned> h(n);
    CHECK(cudaMemcpyAsync(h.data(), dst, n * 4, cudaMemcpyDeviceToHost, s2));
    CHECK(cudaFreeAsync(dst, s2));
    CHECK(cudaStreamSynchronize(s2));
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += h[i] != mix((unsigned)i, 42);
    printf("handed from one stream to another: fnv %016llx, wrong %zu\n",
           (unsigned long long)fnv1a(h.data(), n * 4), bad);
    EXPECT(bad == 0);
    CHECK(cudaEventDestroy(ev));
  }

  // --- errors ------------------------------------------------------------------------------
  {
    void* p = nullptr;
    SAY("allocate 0 bytes", cudaMallocAsync(&p, 0, s));
    printf("size 0 leaves a null pointer: %s\n", p == nullptr ? "yes" : "no");
    SAY("null result pointer", cudaMallocAsync(nullptr, 64, s));
    SAY("destroy the default pool", cudaMemPoolDestroy(dflt));
    cudaMemPool_t none;
    SAY("default pool of device 999", cudaDeviceGetDefaultMemPool(&none, 999));
  }

  CHECK(cudaFreeAsync(c, s));
  CHECK(cudaFreeAsync(d, s));
  CHECK(cudaStreamSynchronize(s));
  usage("default pool at the end", dflt, false);
  CHECK(cudaStreamDestroy(s));
  CHECK(cudaStreamDestroy(s2));
  printf("%s\n", g_failures ? "FAILED" : "PASSED");
  return g_failures ? 1 : 0;
}
