// symbols: __device__ and __constant__ variables (scalars, arrays, a struct, a
// namespaced and a file-static one). cudaMemcpyToSymbol/FromSymbol (with
// offsets, sync and async, host and device sides), cudaGetSymbolAddress,
// cudaGetSymbolSize, kernels reading constants and writing device globals.
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
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

static uint64_t g_lcg = 0x0DDB1A5E5BAD5EEDULL;
static inline uint32_t lcg32() {
  g_lcg = g_lcg * 6364136223846793005ULL + 1442695040888963407ULL;
  return (uint32_t)(g_lcg >> 33);
}

struct Params {
  int n;
  float scale;
  double offset;
  int idx[4];
  char tag[8];
};

__constant__ float c_coef[64];
__constant__ Params c_params;
__constant__ int c_scalar;
__constant__ unsigned long long c_big[100];

__device__ int d_counter;
__device__ float d_out[256];
__device__ double d_table[32];
__device__ Params d_params_copy;
__device__ unsigned short d_shorts[7];
namespace ns {
__device__ long long d_ns_value;
}
static __device__ unsigned int d_static_u;

__global__ void use_constants() {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < 256) {
    float prod = c_coef[i % 64] * c_params.scale;
    d_out[i] = (float)((double)prod + c_params.offset + (double)c_scalar);
    atomicAdd(&d_counter, 1);
  }
  if (i == 0) {
    Params p = c_params;
    p.n += 1;
    for (int k = 0; k < 4; ++k) p.idx[k] = c_params.idx[3 - k] * 10;
    p.tag[0] = 'X';
    d_params_copy = p;
  }
}

__global__ void table_kernel(double* table, int n) {
  int i = threadIdx.x;
  if (i < n) table[i] = table[i] * 2.0 + (double)c_big[i];
  if (i == 0) {
    ns::d_ns_value += 0x100000001LL;
    d_static_u = 0xC0FFEEu;
  }
  if (i < 7) d_shorts[i] = (unsigned short)(d_shorts[i] + 1000 * i);
}

int main() {
  printf("symbols\n");

  // --- sizes -------------------------------------------------------------
  size_t sz;
  CHECK(cudaGetSymbolSize(&sz, c_coef));        printf("size c_coef = %zu\n", sz);        EXPECT(sz == sizeof(float) * 64);
  CHECK(cudaGetSymbolSize(&sz, c_params));      printf("size c_params = %zu\n", sz);      EXPECT(sz == sizeof(Params));
  CHECK(cudaGetSymbolSize(&sz, c_scalar));      printf("size c_scalar = %zu\n", sz);      EXPECT(sz == sizeof(int));
  CHECK(cudaGetSymbolSize(&sz, c_big));         printf("size c_big = %zu\n", sz);         EXPECT(sz == 800);
  CHECK(cudaGetSymbolSize(&sz, d_counter));     printf("size d_counter = %zu\n", sz);     EXPECT(sz == sizeof(int));
  CHECK(cudaGetSymbolSize(&sz, d_out));         printf("size d_out = %zu\n", sz);         EXPECT(sz == 1024);
  CHECK(cudaGetSymbolSize(&sz, d_table));       printf("size d_table = %zu\n", sz);       EXPECT(sz == 256);
  CHECK(cudaGetSymbolSize(&sz, d_params_copy)); printf("size d_params_copy = %zu\n", sz); EXPECT(sz == sizeof(Params));
  CHECK(cudaGetSymbolSize(&sz, d_shorts));      printf("size d_shorts = %zu\n", sz);      EXPECT(sz == 14);
  CHECK(cudaGetSymbolSize(&sz, ns::d_ns_value)); printf("size ns::d_ns_value = %zu\n", sz); EXPECT(sz == 8);
  CHECK(cudaGetSymbolSize(&sz, d_static_u));    printf("size d_static_u = %zu\n", sz);    EXPECT(sz == 4);

  // --- constant arrays with offsets ------------------------------------------
  float coef[64], coef2[16], back[64];
  for (int i = 0; i < 64; ++i) coef[i] = (float)(lcg32() % 20001) / 1000.0f - 10.0f;
  for (int i = 0; i < 16; ++i) coef2[i] = (float)(i * i) + 0.5f;
  CHECK(cudaMemcpyToSymbol(c_coef, coef, sizeof coef));
  CHECK(cudaMemcpyToSymbol(c_coef, coef2, sizeof coef2, 16 * sizeof(float)));  // elements 16..31
  for (int i = 0; i < 16; ++i) coef[16 + i] = coef2[i];
  memset(back, 0, sizeof back);
  CHECK(cudaMemcpyFromSymbol(back, c_coef, sizeof back));
  EXPECT(memcmp(back, coef, sizeof coef) == 0);
  float part[8];
  CHECK(cudaMemcpyFromSymbol(part, c_coef, sizeof part, 20 * sizeof(float)));  // elements 20..27
  EXPECT(memcmp(part, coef + 20, sizeof part) == 0);
  printf("c_coef[20..27] =");
  for (int i = 0; i < 8; ++i) printf(" %.3f", part[i]);
  printf("\n");

  unsigned long long big[100];
  for (int i = 0; i < 100; ++i) big[i] = ((unsigned long long)lcg32() << 32 | lcg32()) % 1000003ULL;
  CHECK(cudaMemcpyToSymbol(c_big, big, sizeof big));

  // --- struct and scalar constants ---------------------------------------------
  Params p;
  memset(&p, 0, sizeof p);
  p.n = 41;
  p.scale = 1.5f;
  p.offset = 0.25;
  for (int k = 0; k < 4; ++k) p.idx[k] = k + 1;
  strcpy(p.tag, "params");
  CHECK(cudaMemcpyToSymbol(c_params, &p, sizeof p));
  int scalar = 7;
  CHECK(cudaMemcpyToSymbol(c_scalar, &scalar, sizeof scalar));
  int zero = 0;
  CHECK(cudaMemcpyToSymbol(d_counter, &zero, sizeof zero));

  // --- device arrays via cudaGetSymbolAddress ----------------------------------------
  double* table_ptr = nullptr;
  CHECK(cudaGetSymbolAddress((void**)&table_ptr, d_table));
  printf("d_table address non-null: %s\n", table_ptr ? "yes" : "no");
  double table[32];
  for (int i = 0; i < 32; ++i) table[i] = (double)(lcg32() % 1000) / 8.0;
  CHECK(cudaMemcpy(table_ptr, table, sizeof table, cudaMemcpyHostToDevice));
  long long nsv = 5;
  CHECK(cudaMemcpyToSymbol(ns::d_ns_value, &nsv, sizeof nsv));
  unsigned short shorts[7] = {1, 2, 3, 4, 5, 6, 7};
  CHECK(cudaMemcpyToSymbol(d_shorts, shorts, sizeof shorts));
  // Overwrite d_shorts[3..4] through an offset copy from device memory.
  unsigned short* dev_sh;
  unsigned short two[2] = {300, 400};
  CHECK(cudaMalloc(&dev_sh, sizeof two));
  CHECK(cudaMemcpy(dev_sh, two, sizeof two, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpyToSymbol(d_shorts, dev_sh, sizeof two, 3 * sizeof(unsigned short),
                           cudaMemcpyDeviceToDevice));
  shorts[3] = 300;
  shorts[4] = 400;

  // --- kernels ---------------------------------------------------------------------------
  use_constants<<<2, 128>>>();
  CHECK(cudaGetLastError());
  table_kernel<<<1, 64>>>(table_ptr, 32);
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());

  int counter = -1;
  CHECK(cudaMemcpyFromSymbol(&counter, d_counter, sizeof counter));
  printf("d_counter = %d\n", counter);
  EXPECT(counter == 256);

  float out[256];
  CHECK(cudaMemcpyFromSymbol(out, d_out, sizeof out));
  double sum = 0.0;
  int bad = 0;
  for (int i = 0; i < 256; ++i) {
    float prod = coef[i % 64] * p.scale;
    float want = (float)((double)prod + p.offset + (double)scalar);
    if (out[i] != want) ++bad;
    sum += out[i];
  }
  printf("d_out: mismatches=%d sum=%.6f out[0]=%.6f out[17]=%.6f out[255]=%.6f\n", bad, sum,
         out[0], out[17], out[255]);
  EXPECT(bad == 0);

  Params q;
  CHECK(cudaMemcpyFromSymbol(&q, d_params_copy, sizeof q));
  printf("d_params_copy: n=%d scale=%.3f offset=%.3f idx=%d,%d,%d,%d tag=%s\n", q.n, q.scale,
         q.offset, q.idx[0], q.idx[1], q.idx[2], q.idx[3], q.tag);
  EXPECT(q.n == 42 && q.idx[0] == 40 && q.idx[3] == 10 && strcmp(q.tag, "Xarams") == 0);

  // d_table: the second half through FromSymbol with an offset, the first half via the address.
  double tb[32];
  CHECK(cudaMemcpyFromSymbol(tb + 16, d_table, 16 * sizeof(double), 16 * sizeof(double)));
  CHECK(cudaMemcpy(tb, table_ptr, 16 * sizeof(double), cudaMemcpyDeviceToHost));
  bad = 0;
  double tsum = 0.0;
  for (int i = 0; i < 32; ++i) {
    if (tb[i] != table[i] * 2.0 + (double)big[i]) ++bad;
    tsum += tb[i];
  }
  printf("d_table: mismatches=%d sum=%.3f\n", bad, tsum);
  EXPECT(bad == 0);

  CHECK(cudaMemcpyFromSymbol(&nsv, ns::d_ns_value, sizeof nsv));
  unsigned int su = 0;
  CHECK(cudaMemcpyFromSymbol(&su, d_static_u, sizeof su));
  printf("ns::d_ns_value = %lld, d_static_u = 0x%X\n", nsv, su);
  EXPECT(nsv == 5 + 0x100000001LL && su == 0xC0FFEEu);

  // d_shorts back into device memory (FromSymbol DeviceToDevice, with offset), then to host.
  unsigned short* dev_sh7;
  CHECK(cudaMalloc(&dev_sh7, 7 * sizeof(unsigned short)));
  CHECK(cudaMemset(dev_sh7, 0, 7 * sizeof(unsigned short)));
  CHECK(cudaMemcpyFromSymbol(dev_sh7 + 1, d_shorts, 6 * sizeof(unsigned short),
                             1 * sizeof(unsigned short), cudaMemcpyDeviceToDevice));
  unsigned short sh[7];
  CHECK(cudaMemcpy(sh, dev_sh7, sizeof sh, cudaMemcpyDeviceToHost));
  printf("d_shorts[1..6] =");
  for (int i = 1; i < 7; ++i) {
    printf(" %u", sh[i]);
    EXPECT(sh[i] == (unsigned short)(shorts[i] + 1000 * i));
  }
  printf("\n");

  // --- async symbol copies on a stream, and through the constant's address ------------
  cudaStream_t s;
  CHECK(cudaStreamCreate(&s));
  int newscalar = -12345, got_scalar = 0;
  CHECK(cudaMemcpyToSymbolAsync(c_scalar, &newscalar, sizeof(int), 0, cudaMemcpyHostToDevice, s));
  CHECK(cudaMemcpyFromSymbolAsync(&got_scalar, c_scalar, sizeof(int), 0, cudaMemcpyDeviceToHost, s));
  CHECK(cudaStreamSynchronize(s));
  printf("c_scalar after async round trip = %d\n", got_scalar);
  EXPECT(got_scalar == newscalar);
  void* cparams_addr = nullptr;
  CHECK(cudaGetSymbolAddress(&cparams_addr, c_params));
  Params r;
  CHECK(cudaMemcpy(&r, cparams_addr, sizeof r, cudaMemcpyDeviceToHost));
  printf("c_params via address: n=%d tag=%s\n", r.n, r.tag);
  EXPECT(r.n == 41 && strcmp(r.tag, "params") == 0);
  CHECK(cudaStreamDestroy(s));

  // --- an out-of-range symbol copy is an error (not sticky) --------------------------------
  cudaError_t e = cudaMemcpyToSymbol(c_coef, coef, sizeof coef, 4);  // 4 bytes past the end
  printf("oversized cudaMemcpyToSymbol -> %s\n", cudaGetErrorName(e));
  EXPECT(e != cudaSuccess);
  e = cudaGetLastError();
  printf("cudaGetLastError -> %s\n", cudaGetErrorName(e));
  e = cudaGetLastError();
  printf("cudaGetLastError again -> %s\n", cudaGetErrorName(e));
  EXPECT(e == cudaSuccess);

  CHECK(cudaFree(dev_sh));
  CHECK(cudaFree(dev_sh7));
  printf("%s\n", g_failures ? "FAILED" : "PASSED");
  return g_failures ? 1 : 0;
}
