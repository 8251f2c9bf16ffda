// ci_launch: kernel launches with distinctive arguments, for checking how
// farcuda packs kernel parameters (CI runs it against an in-memory fake GPU that
// records launches but cannot execute them; it also runs on a real GPU). Launches
// via <<<>>> and via cudaLaunchKernel, with grid (3,2,1), block (64,2,1), 128 bytes
// of dynamic shared memory and a created stream (plus one plain <<<1,1>>> launch on
// the default stream), then cudaDeviceSynchronize. Results are NOT read back.
// ci_launch.expected.json lists every launch and its packed parameter bytes; keep
// the two in sync.
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

struct CiS {  // sizeof 32, align 8: c@0, d@8, i@16
  char c;
  double d;
  int i[3];
};
struct CiBig {  // sizeof 1024, align 4
  unsigned int w[256];
};

// Each kernel writes something harmless into p (a 1 MiB buffer; at most 4096
// ints from p on).
__device__ void touch(int* p, int v) {
  int t = threadIdx.x + blockDim.x * threadIdx.y;
  int b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  int nt = blockDim.x * blockDim.y * blockDim.z;
  int idx = b * nt + t;
  if (idx >= 4096) return;
  p[idx] = v + idx;
}

__global__ void ci_k_scalars(int a, double b, int* p, char c, long long d) {
  touch(p, a + (int)b + c + (int)d);
}
__global__ void ci_k_struct(CiS s, int tag, int* p) {
  touch(p, s.c + (int)s.d + s.i[0] + s.i[1] + s.i[2] + tag);
}
__global__ void ci_k_big(CiBig b, int* p) {
  touch(p, (int)(b.w[0] + b.w[255] + b.w[threadIdx.x % 256]));
}
__global__ void ci_k_mixed(char a, short b, char c, int d, char e, long long f, float g, double h,
                           unsigned char i, int* p) {
  touch(p, a + b + c + d + e + (int)f + (int)g + (int)h + i);
}

int main() {
  printf("ci_launch\n");
  CHECK(cudaSetDevice(0));
  int* buf = nullptr;
  CHECK(cudaMalloc(&buf, 1 << 20));  // allocation 0 of this program
  cudaStream_t s;
  CHECK(cudaStreamCreate(&s));
  const dim3 grid(3, 2, 1), block(64, 2, 1);
  const size_t shared = 128;
  int launched = 0;

  // 0: ci_k_scalars <<<>>>
  ci_k_scalars<<<grid, block, shared, s>>>(0x11223344, 3.25, buf, (char)0x5A, 0x0102030405060708LL);
  CHECK(cudaGetLastError());
  ++launched;

  // 1: ci_k_scalars cudaLaunchKernel
  {
    int a = 0x55667788;
    double b = -3.25;
    int* p = buf + 64;  // allocation 0 + 256 bytes
    char c = (char)0x7E;
    long long d = -2;
    void* args[] = {&a, &b, &p, &c, &d};
    CHECK(cudaLaunchKernel((const void*)ci_k_scalars, grid, block, args, shared, s));
    ++launched;
  }

  // 2: ci_k_struct <<<>>>
  {
    CiS st;
    memset(&st, 0, sizeof st);
    st.c = 0x41;
    st.d = 3.25;
    st.i[0] = 1; st.i[1] = 2; st.i[2] = 3;
    ci_k_struct<<<grid, block, shared, s>>>(st, 0x11223344, buf);
    CHECK(cudaGetLastError());
    ++launched;
  }

  // 3: ci_k_struct cudaLaunchKernel
  {
    CiS st;
    memset(&st, 0, sizeof st);
    st.c = 0x42;
    st.d = -1.5;
    st.i[0] = 0x10; st.i[1] = 0x20; st.i[2] = 0x30;
    int tag = 0x0BADF00D;
    int* p = buf;
    void* args[] = {&st, &tag, &p};
    CHECK(cudaLaunchKernel((const void*)ci_k_struct, grid, block, args, shared, s));
    ++launched;
  }

  // 4: ci_k_big <<<>>>  (w[i] = 0xC0DE0000 + i)
  {
    static CiBig big;
    for (int i = 0; i < 256; ++i) big.w[i] = 0xC0DE0000u + (unsigned)i;
    ci_k_big<<<grid, block, shared, s>>>(big, buf);
    CHECK(cudaGetLastError());
    ++launched;
  }

  // 5: ci_k_big cudaLaunchKernel  (w[i] = 0xBEEF0000 + 3*i)
  {
    static CiBig big;
    for (int i = 0; i < 256; ++i) big.w[i] = 0xBEEF0000u + 3u * (unsigned)i;
    int* p = buf;
    void* args[] = {&big, &p};
    CHECK(cudaLaunchKernel((const void*)ci_k_big, grid, block, args, shared, s));
    ++launched;
  }

  // 6: ci_k_mixed <<<>>>
  ci_k_mixed<<<grid, block, shared, s>>>((char)0x11, (short)0x2233, (char)0x44, 0x55667788, (char)0x99,
                                         0x0102030405060708LL, 3.25f, 3.25, (unsigned char)0xFE, buf);
  CHECK(cudaGetLastError());
  ++launched;

  // 7: ci_k_scalars <<<1, 1>>> on the default stream, no dynamic shared memory
  ci_k_scalars<<<1, 1>>>(-1, 0.5, buf + 1024, (char)0x01, 0x7FFFFFFFFFFFFFFFLL);
  CHECK(cudaGetLastError());
  ++launched;

  CHECK(cudaDeviceSynchronize());
  CHECK(cudaStreamDestroy(s));
  CHECK(cudaFree(buf));
  printf("launched %d\n", launched);
  return 0;
}
