// cooperative: grid-wide synchronization and thread-block clusters.
// A cooperative kernel (cooperative_groups::this_grid().sync()) launched with
// cudaLaunchCooperativeKernel, its grid sized by
// cudaOccupancyMaxActiveBlocksPerMultiprocessor x SM count; the same kernel via
// cudaLaunchKernelExC with cudaLaunchAttributeCooperative; a cluster kernel
// (distributed shared memory between the blocks of a cluster) via
// cudaLaunchKernelExC with cudaLaunchAttributeClusterDimension, and one with
// compile-time __cluster_dims__ via <<<>>>; cudaOccupancyMaxActiveClusters.
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <vector>
#include <cuda_runtime.h>
#include <cooperative_groups.h>

namespace cg = cooperative_groups;

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

static uint64_t g_lcg = 0xBB67AE8584CAA73BULL;
static inline uint32_t lcg32() {
  g_lcg = g_lcg * 6364136223846793005ULL + 1442695040888963407ULL;
  return (uint32_t)(g_lcg >> 33);
}

const int MOD = 100003;

// `iters` rounds of a periodic 3-point integer stencil, a grid.sync() after each
// round (every element depends on neighbours written by other blocks), then a
// grid-wide sum.
__global__ void coop_stencil(int* a, int* b, int n, int iters, unsigned long long* sum) {
  cg::grid_group g = cg::this_grid();
  const unsigned long long stride = g.size();
  for (int it = 0; it < iters; ++it) {
    for (unsigned long long i = g.thread_rank(); i < (unsigned long long)n; i += stride) {
      int l = a[(i + n - 1) % n], c = a[i], r = a[(i + 1) % n];
      b[i] = (l + 2 * c + r + it) % MOD;
    }
    g.sync();
    int* t = a;
    a = b;
    b = t;
  }
  unsigned long long local = 0;
  for (unsigned long long i = g.thread_rank(); i < (unsigned long long)n; i += stride) local += a[i];
  atomicAdd(sum, local);
}

static void stencil_host(std::vector<int>& a, int iters) {
  const int n = (int)a.size();
  std::vector<int> b(n);
  for (int it = 0; it < iters; ++it) {
    for (int i = 0; i < n; ++i) b[i] = (a[(i + n - 1) % n] + 2 * a[i] + a[(i + 1) % n] + it) % MOD;
    a.swap(b);
  }
}

// Each block writes its id into shared memory, the cluster syncs, and each block
// reads the shared memory of the next block in its cluster (DSMEM).
__device__ void cluster_body(int* out, int* meta) {
  __shared__ int smem[256];
  cg::cluster_group cl = cg::this_cluster();
  unsigned rank = cl.block_rank();
  smem[threadIdx.x] = (int)blockIdx.x * 1000 + (int)threadIdx.x;
  cl.sync();
  unsigned other = (rank + 1) % cl.num_blocks();
  int* remote = cl.map_shared_rank(smem, other);
  int v = remote[threadIdx.x];
  cl.sync();  // keep every block's shared memory alive until all reads are done
  out[blockIdx.x * blockDim.x + threadIdx.x] = v;
  if (threadIdx.x == 0) meta[blockIdx.x] = (int)rank | ((int)cl.num_blocks() << 8);
}

__global__ void cluster_kernel(int* out, int* meta) { cluster_body(out, meta); }
__global__ void __cluster_dims__(4, 1, 1) cluster_kernel_static(int* out, int* meta) {
  cluster_body(out, meta);
}

static int check_cluster(const char* label, const int* d_out, const int* d_meta, int grid, int block,
                         int csize) {
  std::vector<int> out(grid * block), meta(grid);
  CHECK(cudaMemcpy(out.data(), d_out, out.size() * sizeof(int), cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(meta.data(), d_meta, meta.size() * sizeof(int), cudaMemcpyDeviceToHost));
  int bad = 0;
  for (int b = 0; b < grid; ++b) {
    int rank = b % csize, first = b - rank;
    int other = first + (rank + 1) % csize;
    if (meta[b] != (rank | (csize << 8))) ++bad;
    for (int t = 0; t < block; ++t) bad += out[b * block + t] != other * 1000 + t;
  }
  printf("%s: cluster size %d, grid %d: mismatches=%d\n", label, csize, grid, bad);
  EXPECT(bad == 0);
  return bad;
}

int main() {
  printf("cooperative\n");
  CHECK(cudaSetDevice(0));
  int coop = 0, sms = 0, cluster_ok = 0;
  CHECK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, 0));
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  CHECK(cudaDeviceGetAttribute(&cluster_ok, cudaDevAttrClusterLaunch, 0));
  printf("cooperative launch supported: %s, cluster launch supported: %s\n", coop ? "yes" : "no",
         cluster_ok ? "yes" : "no");
  EXPECT(coop && cluster_ok);

  // --- cooperative kernel ---------------------------------------------------------------------------
  const int n = 1 << 20, iters = 20, block = 256;
  int per_sm = 0;
  CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, coop_stencil, block, 0));
  const int grid = per_sm * sms;
  printf("grid sized by occupancy: %s\n", (per_sm > 0 && grid >= sms) ? "yes" : "no");
  EXPECT(per_sm > 0);

  std::vector<int> h(n);
  for (int i = 0; i < n; ++i) h[i] = (int)(lcg32() % MOD);
  int *da, *db;
  unsigned long long* dsum;
  CHECK(cudaMalloc(&da, n * sizeof(int)));
  CHECK(cudaMalloc(&db, n * sizeof(int)));
  CHECK(cudaMalloc(&dsum, sizeof(unsigned long long)));

  for (int path = 0; path < 3; ++path) {
    std::vector<int> ref = h;
    for (int i = 0; i < n; i += 4099) ref[i] = (ref[i] + path * 7) % MOD;  // distinct input per path
    CHECK(cudaMemcpy(da, ref.data(), n * sizeof(int), cudaMemcpyHostToDevice));
    CHECK(cudaMemset(db, 0, n * sizeof(int)));
    CHECK(cudaMemset(dsum, 0, sizeof(unsigned long long)));
    int nn = n, it = iters;
    void* args[] = {&da, &db, &nn, &it, &dsum};
    const char* label;
    if (path == 0) {
      label = "cudaLaunchCooperativeKernel";
      CHECK(cudaLaunchCooperativeKernel((const void*)coop_stencil, dim3(grid), dim3(block), args, 0, 0));
    } else {
      cudaStream_t s = 0;
      if (path == 2) CHECK(cudaStreamCreate(&s));
      cudaLaunchAttribute attr[1] = {};
      attr[0].id = cudaLaunchAttributeCooperative;
      attr[0].val.cooperative = 1;
      cudaLaunchConfig_t cfg = {};
      // A smaller grid works too (grid-stride loops); path 2 uses one block per SM.
      cfg.gridDim = dim3(path == 1 ? grid : sms);
      cfg.blockDim = dim3(block);
      cfg.dynamicSmemBytes = 0;
      cfg.stream = s;
      cfg.attrs = attr;
      cfg.numAttrs = 1;
      label = path == 1 ? "cudaLaunchKernelExC(cooperative)" : "cudaLaunchKernelExC(cooperative, 1 block/SM, stream)";
      CHECK(cudaLaunchKernelExC(&cfg, (const void*)coop_stencil, args));
      if (s) {
        CHECK(cudaStreamSynchronize(s));
        CHECK(cudaStreamDestroy(s));
      }
    }
    CHECK(cudaDeviceSynchronize());
    stencil_host(ref, iters);
    std::vector<int> got(n);
    CHECK(cudaMemcpy(got.data(), iters % 2 ? db : da, n * sizeof(int), cudaMemcpyDeviceToHost));
    unsigned long long sum = 0, want = 0;
    CHECK(cudaMemcpy(&sum, dsum, sizeof sum, cudaMemcpyDeviceToHost));
    int bad = 0;
    for (int i = 0; i < n; ++i) {
      bad += got[i] != ref[i];
      want += (unsigned)ref[i];
    }
    printf("%s: %d rounds with grid.sync: mismatches=%d sum=%llu (%s)\n", label, iters, bad, sum,
           sum == want ? "ok" : "WRONG");
    EXPECT(bad == 0 && sum == want);
  }

  // A cooperative launch larger than the device can hold at once must be refused.
  {
    int nn = n, it = 1;
    void* args[] = {&da, &db, &nn, &it, &dsum};
    cudaError_t e = cudaLaunchCooperativeKernel((const void*)coop_stencil, dim3(grid * 4), dim3(block),
                                                args, 0, 0);
    printf("cooperative launch with 4x the co-resident grid -> %s\n", cudaGetErrorName(e));
    EXPECT(e != cudaSuccess);
    cudaGetLastError();
  }

  // --- clusters ----------------------------------------------------------------------------------------
  {
    const int cgrid = 16, cblock = 128;
    int *dout, *dmeta;
    CHECK(cudaMalloc(&dout, cgrid * 256 * sizeof(int)));
    CHECK(cudaMalloc(&dmeta, cgrid * sizeof(int)));
    cudaLaunchAttribute attr[1] = {};
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = 2;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(cgrid);
    cfg.blockDim = dim3(cblock);
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    int nclusters = 0;
    CHECK(cudaOccupancyMaxActiveClusters(&nclusters, (const void*)cluster_kernel, &cfg));
    printf("max active clusters of 2 x %d threads > 0: %s\n", cblock, nclusters > 0 ? "yes" : "no");
    EXPECT(nclusters > 0);
    CHECK(cudaMemset(dout, 0xFF, cgrid * 256 * sizeof(int)));
    void* args[] = {&dout, &dmeta};
    CHECK(cudaLaunchKernelExC(&cfg, (const void*)cluster_kernel, args));
    CHECK(cudaDeviceSynchronize());
    check_cluster("cudaLaunchKernelExC(clusterDim 2)", dout, dmeta, cgrid, cblock, 2);

    attr[0].val.clusterDim.x = 8;
    cfg.blockDim = dim3(256);
    CHECK(cudaMemset(dout, 0xFF, cgrid * 256 * sizeof(int)));
    CHECK(cudaLaunchKernelExC(&cfg, (const void*)cluster_kernel, args));
    CHECK(cudaDeviceSynchronize());
    check_cluster("cudaLaunchKernelExC(clusterDim 8)", dout, dmeta, cgrid, 256, 8);

    cudaFuncAttributes fa;
    CHECK(cudaFuncGetAttributes(&fa, (const void*)cluster_kernel_static));
    printf("cluster_kernel_static: requiredCluster=%d,%d,%d\n", fa.requiredClusterWidth,
           fa.requiredClusterHeight, fa.requiredClusterDepth);
    CHECK(cudaMemset(dout, 0xFF, cgrid * 256 * sizeof(int)));
    cluster_kernel_static<<<cgrid, 64>>>(dout, dmeta);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    check_cluster("<<<>>> with __cluster_dims__(4,1,1)", dout, dmeta, cgrid, 64, 4);

    // A grid that is not a multiple of the cluster size is refused.
    attr[0].val.clusterDim.x = 2;
    cfg.gridDim = dim3(15);
    cfg.blockDim = dim3(64);
    cudaError_t e = cudaLaunchKernelExC(&cfg, (const void*)cluster_kernel, args);
    printf("cluster launch with grid 15, cluster 2 -> %s\n", cudaGetErrorName(e));
    EXPECT(e != cudaSuccess);
    cudaGetLastError();
    CHECK(cudaDeviceSynchronize());
    CHECK(cudaFree(dout));
    CHECK(cudaFree(dmeta));
  }

  CHECK(cudaFree(da));
  CHECK(cudaFree(db));
  CHECK(cudaFree(dsum));
  printf("%s\n", g_failures ? "FAILED" : "PASSED");
  return g_failures ? 1 : 0;
}
