// launch_api: kernel launch paths and function queries. <<<>>> (1D/2D/3D, big
// grids), cudaLaunchKernel with an args array, dynamic shared memory, a
// non-default stream from cudaStreamCreate, cudaFuncGetAttributes (registers,
// static shared/const/local sizes, binary/PTX versions...), cudaFuncSetAttribute
// (cudaFuncAttributeMaxDynamicSharedMemorySize, PreferredSharedMemoryCarveout) and a
// launch with > 48 KB dynamic shared memory, cudaFuncSetCacheConfig,
// cudaOccupancyMaxActiveBlocksPerMultiprocessor, cudaOccupancyMaxPotentialBlockSize,
// cudaOccupancyAvailableDynamicSMemPerBlock.
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

static uint64_t g_lcg = 0xFEEDFACECAFEBEEFULL;
static inline uint32_t lcg32() {
  g_lcg = g_lcg * 6364136223846793005ULL + 1442695040888963407ULL;
  return (uint32_t)(g_lcg >> 33);
}

__global__ void saxpy(float a, const float* x, float* y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}

// Writes a linear id for every thread of a 3D grid of 3D blocks.
__global__ void ids3d(unsigned* out) {
  unsigned bx = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  unsigned tx = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  unsigned nthreads = blockDim.x * blockDim.y * blockDim.z;
  out[bx * nthreads + tx] = bx * 1000u + tx;
}

// Reverse each block's chunk through dynamic shared memory.
__global__ void reverse_dyn(int* data) {
  extern __shared__ int s[];
  int t = threadIdx.x, n = blockDim.x;
  int base = blockIdx.x * n;
  s[t] = data[base + t];
  __syncthreads();
  data[base + t] = s[n - 1 - t];
}

// Uses all of its (large) dynamic shared memory: out[b] = sum of the buffer.
__global__ void big_smem(const unsigned* in, unsigned long long* out, int words) {
  extern __shared__ unsigned sbig[];
  for (int i = threadIdx.x; i < words; i += blockDim.x) sbig[i] = in[i] + blockIdx.x;
  __syncthreads();
  // Reverse order read to force real use of shared memory.
  unsigned long long acc = 0;
  for (int i = threadIdx.x; i < words; i += blockDim.x) acc += sbig[words - 1 - i];
  atomicAdd(&out[blockIdx.x], acc);
}

// Static shared memory, launch bounds, and local memory (indexed array).
__global__ void __launch_bounds__(256) static_smem(const int* in, int* out, int sel) {
  __shared__ int tile[256];
  __shared__ double dtile[64];
  int loc[40];
  int t = threadIdx.x;
  for (int k = 0; k < 40; ++k) loc[k] = in[blockIdx.x * 256 + t] * (k + 1);
  tile[t] = loc[(t + sel) % 40];
  if (t < 64) dtile[t] = (double)t;
  __syncthreads();
  out[blockIdx.x * 256 + t] = tile[255 - t] + (int)dtile[t % 64];
}

__constant__ int c_lut[1024];

__global__ void use_const(int* out) {
  int t = blockIdx.x * blockDim.x + threadIdx.x;
  out[t] = c_lut[t % 1024] * 3;
}

struct SmemPerBlock {  // dynamic shared memory as a function of the block size
  __host__ __device__ size_t operator()(int b) const { return (size_t)b * sizeof(int); }
};

static void print_func_attrs(const char* name, const void* f) {
  cudaFuncAttributes a;
  memset(&a, 0, sizeof a);
  CHECK(cudaFuncGetAttributes(&a, f));
  printf("%s: numRegs=%d maxThreadsPerBlock=%d sharedSizeBytes=%zu constSizeBytes=%zu "
         "localSizeBytes=%zu binaryVersion=%d ptxVersion=%d cacheModeCA=%d "
         "maxDynamicSharedSizeBytes=%d preferredShmemCarveout=%d clusterDimMustBeSet=%d "
         "requiredCluster=%d,%d,%d clusterSchedulingPolicyPreference=%d "
         "nonPortableClusterSizeAllowed=%d\n",
         name, a.numRegs, a.maxThreadsPerBlock, a.sharedSizeBytes, a.constSizeBytes,
         a.localSizeBytes, a.binaryVersion, a.ptxVersion, a.cacheModeCA,
         a.maxDynamicSharedSizeBytes, a.preferredShmemCarveout, a.clusterDimMustBeSet,
         a.requiredClusterWidth, a.requiredClusterHeight, a.requiredClusterDepth,
         a.clusterSchedulingPolicyPreference, a.nonPortableClusterSizeAllowed);
}

int main() {
  printf("launch_api\n");
  CHECK(cudaSetDevice(0));

  // --- function attributes ----------------------------------------------------------------
  print_func_attrs("saxpy", (const void*)saxpy);
  print_func_attrs("ids3d", (const void*)ids3d);
  print_func_attrs("reverse_dyn", (const void*)reverse_dyn);
  print_func_attrs("big_smem", (const void*)big_smem);
  print_func_attrs("static_smem", (const void*)static_smem);
  print_func_attrs("use_const", (const void*)use_const);
  {
    cudaFuncAttributes a;
    CHECK(cudaFuncGetAttributes(&a, (const void*)static_smem));
    EXPECT(a.maxThreadsPerBlock <= 256 && a.sharedSizeBytes >= 256 * 4 + 64 * 8);
  }

  // --- saxpy via <<<>>> then via cudaLaunchKernel, on a created stream ---------------------
  {
    const int n = 100003;
    std::vector<float> x(n), y(n), out(n);
    for (int i = 0; i < n; ++i) {
      x[i] = (float)((int)(lcg32() % 2001) - 1000) / 8.0f;
      y[i] = (float)((int)(lcg32() % 2001) - 1000) / 16.0f;
    }
    float *dx, *dy;
    CHECK(cudaMalloc(&dx, n * sizeof(float)));
    CHECK(cudaMalloc(&dy, n * sizeof(float)));
    CHECK(cudaMemcpy(dx, x.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dy, y.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    saxpy<<<(n + 255) / 256, 256, 0, s>>>(2.0f, dx, dy, n);
    CHECK(cudaGetLastError());
    float a = -0.5f;
    int nn = n;
    void* args[] = {&a, &dx, &dy, &nn};
    CHECK(cudaLaunchKernel((const void*)saxpy, dim3((n + 127) / 128), dim3(128), args, 0, s));
    CHECK(cudaMemcpyAsync(out.data(), dy, n * sizeof(float), cudaMemcpyDeviceToHost, s));
    CHECK(cudaStreamSynchronize(s));
    CHECK(cudaStreamDestroy(s));
    int bad = 0;
    double sum = 0.0;
    for (int i = 0; i < n; ++i) {
      float want = -0.5f * x[i] + (2.0f * x[i] + y[i]);  // exact in float for these values
      if (out[i] != want) ++bad;
      sum += out[i];
    }
    printf("saxpy <<<>>> + cudaLaunchKernel on stream: mismatches=%d sum=%.4f\n", bad, sum);
    EXPECT(bad == 0);
    CHECK(cudaFree(dx));
    CHECK(cudaFree(dy));
  }

  // --- 3D grids and blocks, via both paths; a big 1D grid --------------------------------------
  {
    dim3 grid(5, 3, 2), block(8, 4, 3);
    const int total = 5 * 3 * 2 * 8 * 4 * 3;
    std::vector<unsigned> h(total);
    unsigned* d;
    CHECK(cudaMalloc(&d, total * sizeof(unsigned)));
    for (int path = 0; path < 2; ++path) {
      CHECK(cudaMemset(d, 0xFF, total * sizeof(unsigned)));
      if (path == 0) {
        ids3d<<<grid, block>>>(d);
      } else {
        void* args[] = {&d};
        CHECK(cudaLaunchKernel((const void*)ids3d, grid, block, args, 0, 0));
      }
      CHECK(cudaGetLastError());
      CHECK(cudaMemcpy(h.data(), d, total * sizeof(unsigned), cudaMemcpyDeviceToHost));
      int bad = 0;
      for (int b = 0; b < 30; ++b)
        for (int t = 0; t < 96; ++t) bad += h[b * 96 + t] != (unsigned)(b * 1000 + t);
      printf("ids3d grid(5,3,2) block(8,4,3) %s: mismatches=%d\n",
             path == 0 ? "<<<>>>" : "cudaLaunchKernel", bad);
      EXPECT(bad == 0);
    }
    CHECK(cudaFree(d));

    const int nb = 70000;  // > 65535 blocks in x
    unsigned* dbig;
    CHECK(cudaMalloc(&dbig, (size_t)nb * 32 * sizeof(unsigned)));
    ids3d<<<nb, 32>>>(dbig);
    CHECK(cudaGetLastError());
    std::vector<unsigned> hb((size_t)nb * 32);
    CHECK(cudaMemcpy(hb.data(), dbig, hb.size() * sizeof(unsigned), cudaMemcpyDeviceToHost));
    int bad = 0;
    for (int b = 0; b < nb; ++b)
      for (int t = 0; t < 32; ++t) bad += hb[(size_t)b * 32 + t] != (unsigned)b * 1000u + (unsigned)t;
    printf("ids3d grid 70000 x 32: mismatches=%d\n", bad);
    EXPECT(bad == 0);
    CHECK(cudaFree(dbig));
  }

  // --- dynamic shared memory (small) -----------------------------------------------------------
  {
    const int bs = 200, nb = 37, n = bs * nb;
    std::vector<int> h(n), r(n);
    for (int i = 0; i < n; ++i) h[i] = (int)lcg32();
    int* d;
    CHECK(cudaMalloc(&d, n * sizeof(int)));
    CHECK(cudaMemcpy(d, h.data(), n * sizeof(int), cudaMemcpyHostToDevice));
    reverse_dyn<<<nb, bs, bs * sizeof(int)>>>(d);
    CHECK(cudaGetLastError());
    void* args[] = {&d};
    CHECK(cudaLaunchKernel((const void*)reverse_dyn, dim3(nb), dim3(bs), args, bs * sizeof(int), 0));
    reverse_dyn<<<nb, bs, bs * sizeof(int)>>>(d);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(r.data(), d, n * sizeof(int), cudaMemcpyDeviceToHost));
    int bad = 0;
    for (int b = 0; b < nb; ++b)
      for (int t = 0; t < bs; ++t) bad += r[b * bs + t] != h[b * bs + bs - 1 - t];
    printf("reverse_dyn x3 (dynamic shared %d B): mismatches=%d\n", (int)(bs * sizeof(int)), bad);
    EXPECT(bad == 0);
    CHECK(cudaFree(d));
  }

  // --- > 48 KB dynamic shared memory --------------------------------------------------------------
  {
    const int bytes = 160 * 1024, words = bytes / 4, nb = 4;
    std::vector<unsigned> h(words);
    for (int i = 0; i < words; ++i) h[i] = lcg32() & 0xFFFFF;
    unsigned* din;
    unsigned long long* dout;
    CHECK(cudaMalloc(&din, bytes));
    CHECK(cudaMalloc(&dout, nb * sizeof(unsigned long long)));
    CHECK(cudaMemcpy(din, h.data(), bytes, cudaMemcpyHostToDevice));
    CHECK(cudaMemset(dout, 0, nb * sizeof(unsigned long long)));

    size_t avail = 0;
    CHECK(cudaOccupancyAvailableDynamicSMemPerBlock(&avail, (const void*)big_smem, 1, 256));
    printf("available dynamic smem per block (1 block/SM, 256 thr) before attribute: %zu\n", avail);

    big_smem<<<nb, 256, bytes>>>(din, dout, words);
    cudaError_t e = cudaGetLastError();
    printf("launch with %d B dynamic shared before cudaFuncSetAttribute -> %s\n", bytes,
           cudaGetErrorName(e));
    EXPECT(e != cudaSuccess);

    CHECK(cudaFuncSetAttribute((const void*)big_smem, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    CHECK(cudaFuncSetAttribute((const void*)big_smem, cudaFuncAttributePreferredSharedMemoryCarveout, 100));
    print_func_attrs("big_smem after set", (const void*)big_smem);
    big_smem<<<nb, 256, bytes>>>(din, dout, words);
    CHECK(cudaGetLastError());
    std::vector<unsigned long long> out(nb);
    CHECK(cudaMemcpy(out.data(), dout, nb * sizeof(unsigned long long), cudaMemcpyDeviceToHost));
    unsigned long long base = 0;
    for (int i = 0; i < words; ++i) base += h[i];
    int bad = 0;
    for (int b = 0; b < nb; ++b) bad += out[b] != base + (unsigned long long)b * words;
    printf("big_smem %d B: sums=%llu,%llu,%llu,%llu mismatches=%d\n", bytes, out[0], out[1], out[2],
           out[3], bad);
    EXPECT(bad == 0);
    CHECK(cudaFree(din));
    CHECK(cudaFree(dout));
  }

  // --- static shared + local memory, cache config -------------------------------------------------
  {
    const int nb = 8, n = nb * 256;
    std::vector<int> h(n), r(n);
    for (int i = 0; i < n; ++i) h[i] = (int)(lcg32() % 1000);
    int *din, *dout;
    CHECK(cudaMalloc(&din, n * sizeof(int)));
    CHECK(cudaMalloc(&dout, n * sizeof(int)));
    CHECK(cudaMemcpy(din, h.data(), n * sizeof(int), cudaMemcpyHostToDevice));
    CHECK(cudaFuncSetCacheConfig((const void*)static_smem, cudaFuncCachePreferShared));
    const int sel = 13;
    static_smem<<<nb, 256>>>(din, dout, sel);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(r.data(), dout, n * sizeof(int), cudaMemcpyDeviceToHost));
    int bad = 0;
    for (int b = 0; b < nb; ++b)
      for (int t = 0; t < 256; ++t) {
        int src = 255 - t;
        int want = h[b * 256 + src] * (((src + sel) % 40) + 1) + (t % 64);
        bad += r[b * 256 + t] != want;
      }
    printf("static_smem: mismatches=%d\n", bad);
    EXPECT(bad == 0);
    CHECK(cudaFree(din));
    CHECK(cudaFree(dout));
  }

  // --- constant memory used by a kernel -------------------------------------------------------------
  {
    int lut[1024];
    for (int i = 0; i < 1024; ++i) lut[i] = i * i - 500;
    CHECK(cudaMemcpyToSymbol(c_lut, lut, sizeof lut));
    int* d;
    CHECK(cudaMalloc(&d, 4096 * sizeof(int)));
    use_const<<<16, 256>>>(d);
    CHECK(cudaGetLastError());
    std::vector<int> r(4096);
    CHECK(cudaMemcpy(r.data(), d, 4096 * sizeof(int), cudaMemcpyDeviceToHost));
    int bad = 0;
    for (int i = 0; i < 4096; ++i) bad += r[i] != lut[i % 1024] * 3;
    printf("use_const: mismatches=%d\n", bad);
    EXPECT(bad == 0);
    CHECK(cudaFree(d));
  }

  // --- occupancy -------------------------------------------------------------------------------------
  {
    int blocks = 0;
    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, saxpy, 256, 0));
    printf("occupancy saxpy 256 thr: %d blocks/SM\n", blocks);
    EXPECT(blocks > 0);
    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, reverse_dyn, 128, 16384));
    printf("occupancy reverse_dyn 128 thr 16 KiB: %d blocks/SM\n", blocks);
    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, big_smem, 256, 160 * 1024));
    printf("occupancy big_smem 256 thr 160 KiB: %d blocks/SM\n", blocks);
    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(&blocks, static_smem, 256, 0,
                                                                 cudaOccupancyDisableCachingOverride));
    printf("occupancy static_smem 256 thr (flags): %d blocks/SM\n", blocks);
    int min_grid = 0, block = 0;
    CHECK(cudaOccupancyMaxPotentialBlockSize(&min_grid, &block, saxpy, 0, 0));
    printf("max potential block size saxpy: block=%d minGrid=%d\n", block, min_grid);
    EXPECT(block > 0 && min_grid > 0);
    CHECK(cudaOccupancyMaxPotentialBlockSize(&min_grid, &block, static_smem, 0, 0));
    printf("max potential block size static_smem: block=%d minGrid=%d\n", block, min_grid);
    EXPECT(block <= 256);
    CHECK(cudaOccupancyMaxPotentialBlockSizeVariableSMem(
        &min_grid, &block, reverse_dyn, SmemPerBlock(), 0));
    printf("max potential block size reverse_dyn (smem = 4*block): block=%d minGrid=%d\n", block,
           min_grid);
  }

  CHECK(cudaDeviceSynchronize());
  printf("%s\n", g_failures ? "FAILED" : "PASSED");
  return g_failures ? 1 : 0;
}
