// device_malloc: the device heap. cudaDeviceSetLimit(cudaLimitMallocHeapSize,
// 64 MiB) + cudaDeviceGetLimit; kernels using device-side malloc/free and
// new/delete (arrays, objects with constructors, a linked list); allocations
// that outlive a kernel (allocated in one launch, used and freed in later ones);
// an impossible allocation returning NULL. Results checked on the host.
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <new>
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

static uint64_t g_lcg = 0x3C6EF372FE94F82BULL;
static inline uint32_t lcg32() {
  g_lcg = g_lcg * 6364136223846793005ULL + 1442695040888963407ULL;
  return (uint32_t)(g_lcg >> 33);
}

// Each thread allocates (seed % 17 + 1) ints, fills them, sums them, frees them.
__global__ void malloc_sum(const unsigned* seeds, long long* out, int* fails, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  unsigned s = seeds[i];
  int cnt = (int)(s % 17u) + 1;
  int* p = (int*)malloc(cnt * sizeof(int));
  if (!p) {
    atomicAdd(fails, 1);
    out[i] = -1;
    return;
  }
  for (int k = 0; k < cnt; ++k) p[k] = (int)((s >> 4) % 1000u) + k;
  long long sum = 0;
  for (int k = 0; k < cnt; ++k) sum += p[k];
  free(p);
  out[i] = sum;
}

struct Node {
  int value;
  Node* next;
  __device__ Node(int v, Node* n) : value(v), next(n) {}
};

struct Counter {
  int a;
  double b;
  __device__ Counter() : a(7), b(0.5) {}
};

// Thread 0 of each block builds a linked list with new, walks it, deletes it.
// Every thread also does new[]/delete[] of objects with a constructor.
__global__ void new_delete(int len, long long* list_sums, double* obj_sums, int* fails) {
  if (threadIdx.x == 0) {
    Node* head = nullptr;
    for (int k = 0; k < len; ++k) {
      Node* nd = new Node(k * (int)(blockIdx.x + 1), head);
      if (!nd) { atomicAdd(fails, 1); break; }
      head = nd;
    }
    long long s = 0;
    while (head) {
      s += head->value;
      Node* nx = head->next;
      delete head;
      head = nx;
    }
    list_sums[blockIdx.x] = s;
  }
  int m = (int)(threadIdx.x % 5) + 1;
  Counter* arr = new Counter[m];
  double t = 0.0;
  if (!arr) {
    atomicAdd(fails, 1);
  } else {
    for (int k = 0; k < m; ++k) t += arr[k].a + arr[k].b * k;
    delete[] arr;
  }
  obj_sums[blockIdx.x * blockDim.x + threadIdx.x] = t;
}

// Allocations that persist across launches.
__global__ void persist_alloc(int** slots, int n, int* fails) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  int* p = new int[8];
  if (!p) { atomicAdd(fails, 1); slots[i] = nullptr; return; }
  for (int k = 0; k < 8; ++k) p[k] = i * 8 + k;
  slots[i] = p;
}
__global__ void persist_use(int** slots, int n, long long* out) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  // read the allocation of another thread (another block, even)
  int* p = slots[(i + 777) % n];
  long long s = 0;
  if (p)
    for (int k = 0; k < 8; ++k) s += p[k];
  out[i] = s;
}
__global__ void persist_free(int** slots, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  delete[] slots[i];
  slots[i] = nullptr;
}

__global__ void huge_malloc(int* result) {
  void* p = malloc((size_t)1 << 40);
  result[0] = p == nullptr ? 1 : 0;
  if (p) free(p);
  void* q = malloc(0);
  result[1] = 1;  // malloc(0) may return anything; freeing it must be fine
  free(q);
}

int main() {
  printf("device_malloc\n");
  CHECK(cudaSetDevice(0));
  const size_t heap = (size_t)64 << 20;
  CHECK(cudaDeviceSetLimit(cudaLimitMallocHeapSize, heap));
  size_t got = 0;
  CHECK(cudaDeviceGetLimit(&got, cudaLimitMallocHeapSize));
  printf("malloc heap limit >= 64 MiB: %s\n", got >= heap ? "yes" : "no");
  EXPECT(got >= heap);

  int* dfails;
  CHECK(cudaMalloc(&dfails, sizeof(int)));
  CHECK(cudaMemset(dfails, 0, sizeof(int)));

  // --- malloc/free per thread ---------------------------------------------------------------------
  {
    const int n = 32768;
    std::vector<unsigned> seeds(n);
    for (auto& s : seeds) s = lcg32();
    unsigned* dseeds;
    long long* dout;
    CHECK(cudaMalloc(&dseeds, n * sizeof(unsigned)));
    CHECK(cudaMalloc(&dout, n * sizeof(long long)));
    CHECK(cudaMemcpy(dseeds, seeds.data(), n * sizeof(unsigned), cudaMemcpyHostToDevice));
    for (int rep = 0; rep < 3; ++rep) {
      malloc_sum<<<n / 256, 256>>>(dseeds, dout, dfails, n);
      CHECK(cudaGetLastError());
    }
    std::vector<long long> out(n);
    CHECK(cudaMemcpy(out.data(), dout, n * sizeof(long long), cudaMemcpyDeviceToHost));
    int bad = 0;
    long long total = 0;
    for (int i = 0; i < n; ++i) {
      unsigned s = seeds[i];
      int cnt = (int)(s % 17u) + 1;
      long long want = 0;
      for (int k = 0; k < cnt; ++k) want += (int)((s >> 4) % 1000u) + k;
      bad += out[i] != want;
      total += out[i];
    }
    printf("malloc/free in %d threads x3: mismatches=%d total=%lld\n", n, bad, total);
    EXPECT(bad == 0);
    CHECK(cudaFree(dseeds));
    CHECK(cudaFree(dout));
  }

  // --- new/delete ------------------------------------------------------------------------------------
  {
    const int blocks = 64, threads = 128, len = 200;
    long long* dls;
    double* dos;
    CHECK(cudaMalloc(&dls, blocks * sizeof(long long)));
    CHECK(cudaMalloc(&dos, blocks * threads * sizeof(double)));
    new_delete<<<blocks, threads>>>(len, dls, dos, dfails);
    CHECK(cudaGetLastError());
    std::vector<long long> ls(blocks);
    std::vector<double> os(blocks * threads);
    CHECK(cudaMemcpy(ls.data(), dls, blocks * sizeof(long long), cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(os.data(), dos, os.size() * sizeof(double), cudaMemcpyDeviceToHost));
    int bad = 0;
    double osum = 0.0;
    for (int b = 0; b < blocks; ++b) {
      long long want = (long long)(b + 1) * len * (len - 1) / 2;
      bad += ls[b] != want;
      for (int t = 0; t < threads; ++t) {
        int m = t % 5 + 1;
        double w = 0.0;
        for (int k = 0; k < m; ++k) w += 7 + 0.5 * k;
        bad += os[b * threads + t] != w;
        osum += os[b * threads + t];
      }
    }
    printf("new/delete (linked lists of %d, Counter[1..5]): mismatches=%d list[0]=%lld list[63]=%lld objsum=%.1f\n",
           len, bad, ls[0], ls[blocks - 1], osum);
    EXPECT(bad == 0);
    CHECK(cudaFree(dls));
    CHECK(cudaFree(dos));
  }

  // --- allocations across launches --------------------------------------------------------------------
  {
    const int n = 4096;
    int** slots;
    long long* dout;
    CHECK(cudaMalloc(&slots, n * sizeof(int*)));
    CHECK(cudaMalloc(&dout, n * sizeof(long long)));
    persist_alloc<<<n / 128, 128>>>(slots, n, dfails);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    persist_use<<<n / 128, 128>>>(slots, n, dout);
    CHECK(cudaGetLastError());
    persist_free<<<n / 128, 128>>>(slots, n);
    CHECK(cudaGetLastError());
    std::vector<long long> out(n);
    std::vector<int*> hs(n);
    CHECK(cudaMemcpy(out.data(), dout, n * sizeof(long long), cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(hs.data(), slots, n * sizeof(int*), cudaMemcpyDeviceToHost));
    int bad = 0, nulls = 0;
    for (int i = 0; i < n; ++i) {
      long long j = (i + 777) % n;
      bad += out[i] != 64 * j + 28;
      nulls += hs[i] == nullptr;
    }
    printf("allocations across launches: mismatches=%d freed slots=%d\n", bad, nulls);
    EXPECT(bad == 0 && nulls == n);
    CHECK(cudaFree(slots));
    CHECK(cudaFree(dout));
  }

  // --- impossible allocation -------------------------------------------------------------------------
  {
    int* dres;
    int res[2] = {-1, -1};
    CHECK(cudaMalloc(&dres, sizeof res));
    huge_malloc<<<1, 1>>>(dres);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(res, dres, sizeof res, cudaMemcpyDeviceToHost));
    printf("malloc(1 TiB) on the device returned NULL: %s\n", res[0] == 1 ? "yes" : "no");
    EXPECT(res[0] == 1 && res[1] == 1);
    CHECK(cudaFree(dres));
  }

  int fails = -1;
  CHECK(cudaMemcpy(&fails, dfails, sizeof fails, cudaMemcpyDeviceToHost));
  printf("device allocation failures: %d\n", fails);
  EXPECT(fails == 0);
  CHECK(cudaFree(dfails));
  CHECK(cudaDeviceSynchronize());
  printf("%s\n", g_failures ? "FAILED" : "PASSED");
  return g_failures ? 1 : 0;
}
