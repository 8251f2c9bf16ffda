// ci_memory: memory API only, NO kernel launches (runs against farcuda's
// in-memory fake GPU in CI as well as on a real GPU). cudaGetDeviceCount,
// cudaSetDevice(0), cudaMalloc/cudaFree, cudaMemcpy H2D/D2H/D2D/Default,
// cudaMemset, cudaMallocPitch + cudaMemcpy2D, symbol round trips
// (cudaMemcpyToSymbol/FromSymbol with offsets, cudaGetSymbolSize) of __device__
// and __constant__ variables, pinned host memory (cudaMallocHost, cudaHostAlloc,
// cudaFreeHost), odd sizes and offsets, a 64 MiB transfer with checksum.
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

static uint64_t g_lcg = 0x51ED270B27D2B5A1ULL;
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

struct Rec {
  int id;
  double weight;
  char label[12];
};

__device__ int d_values[1000];
__device__ Rec d_rec;
__device__ unsigned long long d_word;
__constant__ float c_table[256];
__constant__ Rec c_rec;

int main() {
  printf("ci_memory\n");
  int count = 0;
  CHECK(cudaGetDeviceCount(&count));
  printf("device count >= 1: %s\n", count >= 1 ? "yes" : "no");
  EXPECT(count >= 1);
  CHECK(cudaSetDevice(0));

  // --- basic copies in every direction ----------------------------------------------------------
  {
    const size_t n = 1 << 20;
    std::vector<unsigned char> a(n), b(n, 0), c(n, 0);
    fill_random(a.data(), n);
    unsigned char *d1, *d2;
    CHECK(cudaMalloc(&d1, n));
    CHECK(cudaMalloc(&d2, n));
    CHECK(cudaMemcpy(d1, a.data(), n, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(d2, d1, n, cudaMemcpyDeviceToDevice));
    CHECK(cudaMemcpy(b.data(), d2, n, cudaMemcpyDeviceToHost));
    printf("H2D/D2D/D2H 1 MiB: equal: %s fnv=%016llx\n", memcmp(a.data(), b.data(), n) == 0 ? "yes" : "no",
           (unsigned long long)fnv1a(b.data(), n));
    EXPECT(memcmp(a.data(), b.data(), n) == 0);
    // cudaMemcpyDefault in all four directions, at offsets.
    CHECK(cudaMemcpy(d1 + 100, a.data() + 5, 50000, cudaMemcpyDefault));
    CHECK(cudaMemcpy(d2 + 7, d1 + 100, 50000, cudaMemcpyDefault));
    CHECK(cudaMemcpy(b.data() + 1, d2 + 7, 50000, cudaMemcpyDefault));
    CHECK(cudaMemcpy(c.data(), b.data() + 1, 50000, cudaMemcpyDefault));
    printf("cudaMemcpyDefault H2D/D2D/D2H/H2H: equal: %s\n",
           memcmp(c.data(), a.data() + 5, 50000) == 0 ? "yes" : "no");
    EXPECT(memcmp(c.data(), a.data() + 5, 50000) == 0);
    // memset, whole and partial.
    CHECK(cudaMemset(d1, 0x5C, n));
    CHECK(cudaMemset(d1 + 1001, 0xA7, 3333));
    CHECK(cudaMemcpy(b.data(), d1, n, cudaMemcpyDeviceToHost));
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) bad += b[i] != ((i >= 1001 && i < 4334) ? 0xA7 : 0x5C);
    printf("memset whole + partial: bad=%zu\n", bad);
    EXPECT(bad == 0);
    CHECK(cudaFree(d1));
    CHECK(cudaFree(d2));
  }

  // --- pitched 2D ---------------------------------------------------------------------------------
  {
    const size_t w = 1000, h = 50, hp = 1024;  // bytes per row, rows, host pitch
    unsigned char *d1, *d2;
    size_t p1 = 0, p2 = 0;
    CHECK(cudaMallocPitch((void**)&d1, &p1, w, h));
    CHECK(cudaMallocPitch((void**)&d2, &p2, w, h));
    printf("pitch >= width: %s\n", (p1 >= w && p2 >= w) ? "yes" : "no");
    EXPECT(p1 >= w && p2 >= w);
    std::vector<unsigned char> src(hp * h), dst(w * h, 0);
    fill_random(src.data(), src.size());
    CHECK(cudaMemcpy2D(d1, p1, src.data(), hp, w, h, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy2D(d2, p2, d1, p1, w, h, cudaMemcpyDeviceToDevice));
    CHECK(cudaMemcpy2D(dst.data(), w, d2, p2, w, h, cudaMemcpyDeviceToHost));
    int badrows = 0;
    for (size_t r = 0; r < h; ++r) badrows += memcmp(&dst[r * w], &src[r * hp], w) != 0;
    // A sub-rectangle with cudaMemcpyDefault.
    std::vector<unsigned char> sub(37 * 9, 0);
    CHECK(cudaMemcpy2D(sub.data(), 37, d2 + 3 * p2 + 11, p2, 37, 9, cudaMemcpyDefault));
    for (size_t r = 0; r < 9; ++r) badrows += memcmp(&sub[r * 37], &src[(3 + r) * hp + 11], 37) != 0;
    printf("memcpy2D H2D/D2D/D2H + sub-rectangle: bad rows=%d fnv=%016llx\n", badrows,
           (unsigned long long)fnv1a(dst.data(), dst.size()));
    EXPECT(badrows == 0);
    CHECK(cudaFree(d1));
    CHECK(cudaFree(d2));
  }

  // --- symbols ---------------------------------------------------------------------------------------
  {
    size_t sz = 0;
    CHECK(cudaGetSymbolSize(&sz, d_values));  printf("size d_values = %zu\n", sz);  EXPECT(sz == 4000);
    CHECK(cudaGetSymbolSize(&sz, d_rec));     printf("size d_rec = %zu\n", sz);     EXPECT(sz == sizeof(Rec));
    CHECK(cudaGetSymbolSize(&sz, d_word));    printf("size d_word = %zu\n", sz);    EXPECT(sz == 8);
    CHECK(cudaGetSymbolSize(&sz, c_table));   printf("size c_table = %zu\n", sz);   EXPECT(sz == 1024);
    CHECK(cudaGetSymbolSize(&sz, c_rec));     printf("size c_rec = %zu\n", sz);     EXPECT(sz == sizeof(Rec));

    int vals[1000], back[1000];
    for (int i = 0; i < 1000; ++i) vals[i] = (int)lcg32();
    CHECK(cudaMemcpyToSymbol(d_values, vals, sizeof vals));
    int patch[10];
    for (int i = 0; i < 10; ++i) patch[i] = -1000 - i;
    CHECK(cudaMemcpyToSymbol(d_values, patch, sizeof patch, 500 * sizeof(int)));
    memcpy(vals + 500, patch, sizeof patch);
    CHECK(cudaMemcpyFromSymbol(back, d_values, sizeof back));
    int part[20];
    CHECK(cudaMemcpyFromSymbol(part, d_values, sizeof part, 495 * sizeof(int)));
    printf("d_values round trip: equal: %s, [500..502] = %d %d %d\n",
           memcmp(back, vals, sizeof vals) == 0 ? "yes" : "no", part[5], part[6], part[7]);
    EXPECT(memcmp(back, vals, sizeof vals) == 0 && memcmp(part, vals + 495, sizeof part) == 0);

    Rec r;
    memset(&r, 0, sizeof r);
    r.id = 31337;
    r.weight = -0.0625;
    strcpy(r.label, "record");
    CHECK(cudaMemcpyToSymbol(d_rec, &r, sizeof r));
    CHECK(cudaMemcpyToSymbol(c_rec, &r, sizeof r));
    Rec r1, r2;
    memset(&r1, 0, sizeof r1);
    memset(&r2, 0, sizeof r2);
    CHECK(cudaMemcpyFromSymbol(&r1, d_rec, sizeof r1));
    CHECK(cudaMemcpyFromSymbol(&r2, c_rec, sizeof r2));
    printf("d_rec: id=%d weight=%.4f label=%s; c_rec: id=%d label=%s\n", r1.id, r1.weight, r1.label,
           r2.id, r2.label);
    EXPECT(memcmp(&r1, &r, sizeof r) == 0 && memcmp(&r2, &r, sizeof r) == 0);

    unsigned long long wv = 0x0123456789ABCDEFULL, wb = 0;
    CHECK(cudaMemcpyToSymbol(d_word, &wv, sizeof wv));
    CHECK(cudaMemcpyFromSymbol(&wb, d_word, sizeof wb));
    printf("d_word = %016llx\n", wb);
    EXPECT(wb == wv);

    float tab[256], tb[256];
    for (int i = 0; i < 256; ++i) tab[i] = (float)i * 0.25f - 7.0f;
    CHECK(cudaMemcpyToSymbol(c_table, tab, 128 * sizeof(float)));
    CHECK(cudaMemcpyToSymbol(c_table, tab + 128, 128 * sizeof(float), 128 * sizeof(float)));
    CHECK(cudaMemcpyFromSymbol(tb, c_table, sizeof tb));
    printf("c_table round trip (two halves): equal: %s, [255] = %.2f\n",
           memcmp(tb, tab, sizeof tab) == 0 ? "yes" : "no", tb[255]);
    EXPECT(memcmp(tb, tab, sizeof tab) == 0);

    // Symbol <-> device memory.
    int* dv;
    CHECK(cudaMalloc(&dv, 1000 * sizeof(int)));
    CHECK(cudaMemcpyFromSymbol(dv, d_values, 1000 * sizeof(int), 0, cudaMemcpyDeviceToDevice));
    CHECK(cudaMemset(dv, 0, 4 * sizeof(int)));
    CHECK(cudaMemcpyToSymbol(d_values, dv, 10 * sizeof(int), 0, cudaMemcpyDeviceToDevice));
    CHECK(cudaMemcpyFromSymbol(back, d_values, sizeof back));
    memset(vals, 0, 4 * sizeof(int));
    printf("symbol <-> device memory: equal: %s\n", memcmp(back, vals, sizeof vals) == 0 ? "yes" : "no");
    EXPECT(memcmp(back, vals, sizeof vals) == 0);
    CHECK(cudaFree(dv));
  }

  // --- pinned host memory ----------------------------------------------------------------------------
  {
    const size_t n = (2 << 20) + 5;
    unsigned char *p1, *p2, *d;
    CHECK(cudaMallocHost((void**)&p1, n));
    CHECK(cudaHostAlloc((void**)&p2, n, cudaHostAllocDefault));
    CHECK(cudaMalloc(&d, n));
    fill_random(p1, n);
    memset(p2, 0, n);
    CHECK(cudaMemcpy(d, p1, n, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(p2, d, n, cudaMemcpyDeviceToHost));
    printf("pinned round trip: equal: %s fnv=%016llx\n", memcmp(p1, p2, n) == 0 ? "yes" : "no",
           (unsigned long long)fnv1a(p2, n));
    EXPECT(memcmp(p1, p2, n) == 0);
    CHECK(cudaFree(d));
    CHECK(cudaFreeHost(p1));
    CHECK(cudaFreeHost(p2));
  }

  // --- odd sizes and offsets ---------------------------------------------------------------------------
  {
    const size_t sizes[] = {1, 3, 4, 5, 17, 255, 4095, 4096, 4097, 65535, 65537, 1048573};
    unsigned char* d;
    CHECK(cudaMalloc(&d, 2 << 20));
    std::vector<unsigned char> src((2 << 20) + 64), dst((2 << 20) + 64);
    int bad = 0, cases = 0;
    uint64_t hsh = 1469598103934665603ULL;
    for (size_t sz : sizes)
      for (size_t off = 0; off < 4; ++off) {
        fill_random(src.data(), sz + 8);
        memset(dst.data(), 0xEE, sz + 16);
        CHECK(cudaMemset(d, 0x42, sz + 16));
        CHECK(cudaMemcpy(d + off, src.data() + 1, sz, cudaMemcpyHostToDevice));
        CHECK(cudaMemcpy(dst.data() + 2, d, sz + 8, cudaMemcpyDeviceToHost));
        ++cases;
        for (size_t i = 0; i < off; ++i) bad += dst[2 + i] != 0x42;
        bad += memcmp(dst.data() + 2 + off, src.data() + 1, sz) != 0;
        for (size_t i = off + sz; i < sz + 8; ++i) bad += dst[2 + i] != 0x42;
        bad += dst[0] != 0xEE || dst[1] != 0xEE || dst[sz + 10] != 0xEE;
        hsh = (hsh ^ fnv1a(dst.data() + 2 + off, sz)) * 1099511628211ULL;
      }
    printf("odd sizes/offsets: cases=%d bad=%d fnv=%016llx\n", cases, bad, (unsigned long long)hsh);
    EXPECT(bad == 0);
    CHECK(cudaFree(d));
  }

  // --- 64 MiB transfer with checksum --------------------------------------------------------------------
  {
    const size_t n = (size_t)64 << 20;
    std::vector<uint64_t> src(n / 8), dst(n / 8, 0);
    uint64_t x = 0xFACEB00C12345678ULL;
    for (auto& w : src) {
      x = x * 6364136223846793005ULL + 1442695040888963407ULL;
      w = x ^ (x >> 29);
    }
    unsigned char* d;
    CHECK(cudaMalloc(&d, n));
    CHECK(cudaMemcpy(d, src.data(), n, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dst.data(), d, n, cudaMemcpyDeviceToHost));
    uint64_t cs = 0;
    for (size_t i = 0; i < dst.size(); ++i) cs = (cs ^ dst[i]) * 0x100000001B3ULL + (cs >> 29);
    int eq = memcmp(src.data(), dst.data(), n) == 0;
    printf("64 MiB round trip: equal: %s checksum=%016llx\n", eq ? "yes" : "no", (unsigned long long)cs);
    EXPECT(eq);
    CHECK(cudaFree(d));
  }

  CHECK(cudaDeviceSynchronize());
  printf("%s\n", g_failures ? "FAILED" : "PASSED");
  return g_failures ? 1 : 0;
}
