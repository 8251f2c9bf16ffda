// memory: device and host memory management and copies. cudaMalloc/cudaFree,
// cudaMallocPitch + cudaMemcpy2D in all directions (and cudaMemcpy2DAsync),
// cudaMemset/cudaMemset2D/cudaMemsetAsync, cudaMemcpy with every kind including
// cudaMemcpyDefault in all four directions, device-to-device copies,
// cudaPointerGetAttributes (device, cudaMallocHost, cudaHostAlloc, registered,
// pageable), cudaMemGetInfo (only free<=total), a 256 MiB round trip, odd sizes
// and unaligned offsets, cudaMallocHost/cudaHostAlloc/cudaFreeHost,
// cudaHostRegister/cudaHostUnregister, cudaHostGetDevicePointer/Flags.
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

static uint64_t g_lcg = 0x1234567887654321ULL;
static inline uint32_t lcg32() {
  g_lcg = g_lcg * 6364136223846793005ULL + 1442695040888963407ULL;
  return (uint32_t)(g_lcg >> 33);
}
static void fill_random(void* p, size_t n) {
  unsigned char* b = (unsigned char*)p;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    uint32_t v = lcg32();
    memcpy(b + i, &v, 4);
  }
  for (; i < n; ++i) b[i] = (unsigned char)lcg32();
}
static uint64_t fnv1a(const void* p, size_t n) {
  const unsigned char* b = (const unsigned char*)p;
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; ++i) { h ^= b[i]; h *= 1099511628211ULL; }
  return h;
}
// Fast 64-bit checksum for big buffers (order dependent).
static uint64_t sum64(const void* p, size_t n) {
  const uint64_t* w = (const uint64_t*)p;
  uint64_t h = 0;
  for (size_t i = 0; i < n / 8; ++i) h = (h ^ w[i]) * 0x100000001B3ULL + (h >> 29);
  return h;
}

static const char* mem_type(cudaMemoryType t) {
  switch (t) {
    case cudaMemoryTypeUnregistered: return "unregistered";
    case cudaMemoryTypeHost: return "host";
    case cudaMemoryTypeDevice: return "device";
    case cudaMemoryTypeManaged: return "managed";
  }
  return "?";
}

static void show_attrs(const char* label, const void* ptr, bool show_devptr_eq) {
  cudaPointerAttributes a;
  memset(&a, 0, sizeof a);
  cudaError_t e = cudaPointerGetAttributes(&a, ptr);
  if (e != cudaSuccess) {
    printf("attributes %s -> %s\n", label, cudaGetErrorName(e));
    cudaGetLastError();
    return;
  }
  printf("attributes %s: type=%s device=%d", label, mem_type(a.type),
         a.type == cudaMemoryTypeUnregistered ? -1 : a.device);
  if (show_devptr_eq)
    printf(" devicePointer==ptr: %s hostPointer==null: %s", a.devicePointer == ptr ? "yes" : "no",
           a.hostPointer == nullptr ? "yes" : "no");
  else if (a.type == cudaMemoryTypeHost)
    printf(" hostPointer==ptr: %s", a.hostPointer == ptr ? "yes" : "no");
  printf("\n");
}

int main() {
  printf("memory\n");
  CHECK(cudaSetDevice(0));

  // --- cudaMemGetInfo --------------------------------------------------------------------
  {
    size_t fr = 0, tot = 0;
    CHECK(cudaMemGetInfo(&fr, &tot));
    printf("cudaMemGetInfo: total>0: %s free<=total: %s\n", tot > 0 ? "yes" : "no",
           fr <= tot ? "yes" : "no");
    EXPECT(tot > 0 && fr <= tot);
  }

  // --- cudaMalloc(0) ------------------------------------------------------------------------
  {
    void* z = (void*)0x1;
    cudaError_t e = cudaMalloc(&z, 0);
    printf("cudaMalloc(0) -> %s, pointer null: %s\n", cudaGetErrorName(e), z == nullptr ? "yes" : "no");
    if (e == cudaSuccess) CHECK(cudaFree(z));
    cudaGetLastError();
  }

  // --- pitched 2D memory, all directions --------------------------------------------------
  {
    const size_t wbytes = 333 * sizeof(float), h = 77;
    float *d1, *d2;
    size_t pitch1 = 0, pitch2 = 0;
    CHECK(cudaMallocPitch((void**)&d1, &pitch1, wbytes, h));
    CHECK(cudaMallocPitch((void**)&d2, &pitch2, wbytes, h));
    printf("cudaMallocPitch(%zu x %zu): pitch=%zu pitch>=width: %s same pitch: %s\n", wbytes, h,
           pitch1, pitch1 >= wbytes ? "yes" : "no", pitch1 == pitch2 ? "yes" : "no");
    EXPECT(pitch1 >= wbytes);
    // Host source with its own pitch (row of 400 floats), destination tight.
    const size_t hpitch = 400 * sizeof(float);
    std::vector<unsigned char> hsrc(hpitch * h), hdst(wbytes * h), hdst2(hpitch * h, 0x5A);
    fill_random(hsrc.data(), hsrc.size());
    CHECK(cudaMemset2D(d1, pitch1, 0x11, wbytes, h));
    CHECK(cudaMemset2D(d2, pitch2, 0x22, wbytes, h));
    CHECK(cudaMemcpy2D(d1, pitch1, hsrc.data(), hpitch, wbytes, h, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy2D(d2, pitch2, d1, pitch1, wbytes, h, cudaMemcpyDeviceToDevice));
    CHECK(cudaMemcpy2D(hdst.data(), wbytes, d2, pitch2, wbytes, h, cudaMemcpyDeviceToHost));
    int bad = 0;
    for (size_t r = 0; r < h; ++r)
      if (memcmp(&hdst[r * wbytes], &hsrc[r * hpitch], wbytes) != 0) ++bad;
    printf("memcpy2D H2D/D2D/D2H: bad rows=%d fnv=%016llx\n", bad,
           (unsigned long long)fnv1a(hdst.data(), hdst.size()));
    EXPECT(bad == 0);
    // Host to host 2D, and cudaMemcpyDefault 2D.
    CHECK(cudaMemcpy2D(hdst2.data(), hpitch, hdst.data(), wbytes, wbytes, h, cudaMemcpyHostToHost));
    bad = 0;
    for (size_t r = 0; r < h; ++r) {
      if (memcmp(&hdst2[r * hpitch], &hsrc[r * hpitch], wbytes) != 0) ++bad;
      for (size_t c = wbytes; c < hpitch; ++c) bad += hdst2[r * hpitch + c] != 0x5A;  // untouched
    }
    printf("memcpy2D H2H: bad=%d\n", bad);
    EXPECT(bad == 0);
    // A sub-rectangle with cudaMemcpyDefault: rows 10..29, bytes 8..(8+100*4) of d1 -> host.
    std::vector<unsigned char> sub(100 * 4 * 20);
    CHECK(cudaMemcpy2D(sub.data(), 400, (char*)d1 + 10 * pitch1 + 8, pitch1, 400, 20, cudaMemcpyDefault));
    bad = 0;
    for (int r = 0; r < 20; ++r)
      if (memcmp(&sub[r * 400], &hsrc[(10 + r) * hpitch + 8], 400) != 0) ++bad;
    printf("memcpy2D Default sub-rectangle: bad rows=%d\n", bad);
    EXPECT(bad == 0);
    // cudaMemset2D on part of it, then 2D async read-back on a stream.
    CHECK(cudaMemset2D((char*)d2 + 4 * pitch2 + 16, pitch2, 0xC3, 64, 5));
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    CHECK(cudaMemcpy2DAsync(hdst.data(), wbytes, d2, pitch2, wbytes, h, cudaMemcpyDeviceToHost, s));
    CHECK(cudaStreamSynchronize(s));
    CHECK(cudaStreamDestroy(s));
    bad = 0;
    for (size_t r = 0; r < h; ++r)
      for (size_t c = 0; c < wbytes; ++c) {
        unsigned char want = (r >= 4 && r < 9 && c >= 16 && c < 80) ? 0xC3 : hsrc[r * hpitch + c];
        bad += hdst[r * wbytes + c] != want;
      }
    printf("memset2D + memcpy2DAsync: bad bytes=%d\n", bad);
    EXPECT(bad == 0);
    CHECK(cudaFree(d1));
    CHECK(cudaFree(d2));
  }

  // --- memset and cudaMemcpyDefault in all four directions ----------------------------------
  {
    const size_t n = 1 << 20;
    std::vector<unsigned char> a(n), b(n), c(n);
    fill_random(a.data(), n);
    unsigned char *d1, *d2;
    CHECK(cudaMalloc(&d1, n));
    CHECK(cudaMalloc(&d2, n));
    CHECK(cudaMemset(d1, 0xAB, n));
    CHECK(cudaMemcpy(b.data(), d1, n, cudaMemcpyDeviceToHost));
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) bad += b[i] != 0xAB;
    printf("memset 0xAB 1 MiB: bad=%zu\n", bad);
    EXPECT(bad == 0);
    CHECK(cudaMemsetAsync(d1 + 1000, 0x00, 24, 0));
    CHECK(cudaMemcpy(b.data(), d1, 2048, cudaMemcpyDefault));
    bad = 0;
    for (size_t i = 0; i < 2048; ++i) bad += b[i] != ((i >= 1000 && i < 1024) ? 0 : 0xAB);
    printf("memsetAsync partial: bad=%zu\n", bad);
    EXPECT(bad == 0);

    CHECK(cudaMemcpy(d1, a.data(), n, cudaMemcpyDefault));   // H2D
    CHECK(cudaMemcpy(d2, d1, n, cudaMemcpyDefault));         // D2D
    CHECK(cudaMemcpy(b.data(), d2, n, cudaMemcpyDefault));   // D2H
    CHECK(cudaMemcpy(c.data(), b.data(), n, cudaMemcpyDefault));  // H2H
    printf("cudaMemcpyDefault H2D/D2D/D2H/H2H: equal: %s fnv=%016llx\n",
           memcmp(a.data(), c.data(), n) == 0 ? "yes" : "no",
           (unsigned long long)fnv1a(c.data(), n));
    EXPECT(memcmp(a.data(), c.data(), n) == 0);
    // Explicit kinds, including HostToHost and an in-device overlapping-free move.
    CHECK(cudaMemcpy(d2 + 4096, d1, n - 4096, cudaMemcpyDeviceToDevice));
    CHECK(cudaMemcpy(b.data(), d2, n, cudaMemcpyDeviceToHost));
    EXPECT(memcmp(b.data(), a.data(), 4096) == 0 && memcmp(b.data() + 4096, a.data(), n - 4096) == 0);
    CHECK(cudaMemcpy(c.data(), a.data() + 7, 1000, cudaMemcpyHostToHost));
    EXPECT(memcmp(c.data(), a.data() + 7, 1000) == 0);
    printf("explicit kinds D2D(offset)/H2H: ok\n");

    show_attrs("device", d1, true);
    show_attrs("device+12345", d1 + 12345, false);
    show_attrs("pageable (std::vector)", a.data(), false);
    CHECK(cudaFree(d1));
    CHECK(cudaFree(d2));
  }

  // --- pinned memory: cudaMallocHost, cudaHostAlloc, cudaHostRegister ---------------------------
  {
    const size_t n = 3 << 20;
    unsigned char *p1, *p2, *p3;
    CHECK(cudaMallocHost((void**)&p1, n));
    CHECK(cudaHostAlloc((void**)&p2, n, cudaHostAllocDefault));
    CHECK(cudaHostAlloc((void**)&p3, 4096, cudaHostAllocMapped | cudaHostAllocPortable));
    unsigned int fl = 0;
    CHECK(cudaHostGetFlags(&fl, p3));
    printf("cudaHostGetFlags(mapped|portable) = 0x%x\n", fl);
    // Zero-copy use of mapped memory (cudaHostGetDevicePointer) is in mapped.cu.
    show_attrs("cudaMallocHost", p1, false);
    show_attrs("cudaHostAlloc", p2, false);
    show_attrs("cudaHostAlloc+100", p2 + 100, false);

    unsigned char* d;
    CHECK(cudaMalloc(&d, n));
    fill_random(p1, n);
    CHECK(cudaMemcpy(d, p1, n, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(p2, d, n, cudaMemcpyDeviceToHost));
    EXPECT(memcmp(p1, p2, n) == 0);
    memset(p2, 0, n);
    CHECK(cudaMemcpyAsync(d + 1, p1 + 3, n - 5, cudaMemcpyHostToDevice, 0));
    CHECK(cudaMemcpyAsync(p2 + 5, d + 1, n - 5, cudaMemcpyDeviceToHost, 0));
    CHECK(cudaStreamSynchronize(0));
    EXPECT(memcmp(p1 + 3, p2 + 5, n - 5) == 0);
    printf("pinned round trips (sync + async, unaligned): ok fnv=%016llx\n",
           (unsigned long long)fnv1a(p2, n));

    // cudaHostRegister of a malloc'd (pageable) buffer.
    const size_t rn = 1 << 20;
    unsigned char* reg = (unsigned char*)malloc(rn);
    fill_random(reg, rn);
    show_attrs("malloc'd before register", reg, false);
    CHECK(cudaHostRegister(reg, rn, cudaHostRegisterDefault));
    show_attrs("malloc'd registered", reg, false);
    CHECK(cudaMemcpyAsync(d, reg, rn, cudaMemcpyHostToDevice, 0));
    memset(p1, 0, rn);
    CHECK(cudaMemcpyAsync(p1, d, rn, cudaMemcpyDeviceToHost, 0));
    CHECK(cudaDeviceSynchronize());
    EXPECT(memcmp(p1, reg, rn) == 0);
    CHECK(cudaHostUnregister(reg));
    show_attrs("malloc'd after unregister", reg, false);
    printf("cudaHostRegister round trip: ok fnv=%016llx\n", (unsigned long long)fnv1a(p1, rn));
    free(reg);

    CHECK(cudaFree(d));
    CHECK(cudaFreeHost(p1));
    CHECK(cudaFreeHost(p2));
    CHECK(cudaFreeHost(p3));
  }

  // --- odd sizes and unaligned offsets -------------------------------------------------------------
  {
    const size_t sizes[] = {1, 2, 3, 5, 7, 8, 63, 64, 65, 4095, 4096, 4097, 65537, 1000003};
    const size_t offs[] = {0, 1, 3, 7};
    unsigned char* d;
    CHECK(cudaMalloc(&d, 2 << 20));
    std::vector<unsigned char> src(2 << 20), dst(2 << 20);
    int bad = 0, cases = 0;
    uint64_t h = 1469598103934665603ULL;
    for (size_t sz : sizes)
      for (size_t off : offs) {
        fill_random(src.data(), sz + 16);
        memset(dst.data(), 0xEE, sz + 32);
        CHECK(cudaMemset(d, 0x77, sz + 32));
        CHECK(cudaMemcpy(d + off, src.data() + (off ^ 1), sz, cudaMemcpyHostToDevice));
        CHECK(cudaMemcpy(dst.data() + 3, d + off, sz, cudaMemcpyDeviceToHost));
        ++cases;
        if (memcmp(dst.data() + 3, src.data() + (off ^ 1), sz) != 0 || dst[0] != 0xEE ||
            dst[2] != 0xEE || dst[3 + sz] != 0xEE)
          ++bad;
        // Bytes around the copied range on the device are untouched.
        unsigned char around[2];
        if (off > 0) {
          CHECK(cudaMemcpy(around, d + off - 1, 1, cudaMemcpyDeviceToHost));
          bad += around[0] != 0x77;
        }
        CHECK(cudaMemcpy(around + 1, d + off + sz, 1, cudaMemcpyDeviceToHost));
        bad += around[1] != 0x77;
        h = (h ^ fnv1a(dst.data() + 3, sz)) * 1099511628211ULL;
      }
    printf("odd sizes/offsets: cases=%d bad=%d fnv=%016llx\n", cases, bad, (unsigned long long)h);
    EXPECT(bad == 0);
    CHECK(cudaFree(d));
  }

  // --- 256 MiB round trip ---------------------------------------------------------------------------
  {
    const size_t n = (size_t)256 << 20;
    unsigned char* src = (unsigned char*)malloc(n);
    unsigned char* dst = (unsigned char*)malloc(n);
    if (!src || !dst) { printf("host malloc failed\n"); return 1; }
    uint64_t* w = (uint64_t*)src;
    uint64_t x = 0x0123456789ABCDEFULL;
    for (size_t i = 0; i < n / 8; ++i) {
      x = x * 6364136223846793005ULL + 1442695040888963407ULL;
      w[i] = x ^ (x >> 31);
    }
    memset(dst, 0, n);
    unsigned char *d1, *d2;
    CHECK(cudaMalloc(&d1, n));
    CHECK(cudaMalloc(&d2, n));
    CHECK(cudaMemcpy(d1, src, n, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(d2, d1, n, cudaMemcpyDeviceToDevice));
    CHECK(cudaMemcpy(dst, d2, n, cudaMemcpyDeviceToHost));
    uint64_t cs = sum64(dst, n);
    int eq = memcmp(src, dst, n) == 0;
    printf("256 MiB H2D/D2D/D2H: equal: %s checksum=%016llx\n", eq ? "yes" : "no", (unsigned long long)cs);
    EXPECT(eq && cs == sum64(src, n));
    CHECK(cudaFree(d1));
    CHECK(cudaFree(d2));
    free(src);
    free(dst);
  }

  {
    size_t fr = 0, tot = 0;
    CHECK(cudaMemGetInfo(&fr, &tot));
    EXPECT(fr <= tot);
  }
  printf("%s\n", g_failures ? "FAILED" : "PASSED");
  return g_failures ? 1 : 0;
}
