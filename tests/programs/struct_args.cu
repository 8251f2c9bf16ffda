// struct_args: kernel parameters of many shapes. Structs with padding, an
// __align__(16) struct, a 3-byte struct, a struct holding double[8], a
// char/short/int/long long/float/double mix, a struct of pointers, a 32724-byte struct (near
// the 32764-byte parameter limit), a ~2 KB
// by-value struct (<<<>>> and cudaLaunchKernel), CUDA vector types, bool and an
// enum class, a kernel with 24 scalar arguments, template kernels (types,
// non-type parameters and a functor). Every value the kernels see is copied
// back and printed.
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

static uint64_t g_lcg = 0xA076BEEF12345ULL;
static inline uint32_t lcg32() {
  g_lcg = g_lcg * 6364136223846793005ULL + 1442695040888963407ULL;
  return (uint32_t)(g_lcg >> 33);
}

struct Mixed {  // padding after c, after uc
  char c;
  short s;
  int i;
  long long ll;
  float f;
  double d;
  unsigned char uc;
};
struct __align__(16) Aligned16 {
  float x;
  char tag;
};
struct Chars3 {
  char a, b, c;
};
struct WithArr {
  int n;
  double v[8];
  char end;
};
struct Ptrs {
  const int* in;
  int* out;
  int n;
};
struct Big {
  int count;
  float vals[500];
  double scale;
  char name[16];
};
// Near the 32764-byte limit of a kernel's parameters (CUDA 12.1 and later on Volta and later).
struct Huge {
  int n;
  int vals[8180];
};
enum class Color : unsigned char { Red = 1, Green = 2, Blue = 200 };
template <typename T, int N>
struct Vec {
  T x[N];
};
struct Affine {
  float a, b;
  __host__ __device__ float operator()(float x) const { return a * x + b; }
};

// Output slots: integers in oi[], floating point in od[].
__global__ void k_mixed(Mixed m, long long* oi, double* od) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  oi[0] = m.c;
  oi[1] = m.s;
  oi[2] = m.i;
  oi[3] = m.ll;
  oi[4] = m.uc;
  od[0] = m.f;
  od[1] = m.d;
}

__global__ void k_align(char a, Aligned16 v, Chars3 c3, short s, Chars3 c3b, double d, bool flag,
                        Color col, long long* oi, double* od) {
  if (threadIdx.x != 0) return;
  oi[0] = a;
  oi[1] = v.tag;
  oi[2] = c3.a;
  oi[3] = c3.b;
  oi[4] = c3.c;
  oi[5] = s;
  oi[6] = c3b.a;
  oi[7] = c3b.b;
  oi[8] = c3b.c;
  oi[9] = flag ? 1 : 0;
  oi[10] = (long long)col;
  od[0] = v.x;
  od[1] = d;
}

__global__ void k_arr(WithArr w, long long* oi, double* od) {
  int t = threadIdx.x;
  if (t < 8) od[t] = w.v[t] * (double)w.n;  // each thread its own element
  if (t == 0) {
    oi[0] = w.n;
    oi[1] = w.end;
  }
}

__global__ void k_ptrs(Ptrs p) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += gridDim.x * blockDim.x)
    p.out[i] = p.in[i] * 2 + 1;
}

__global__ void k_huge(Huge h, long long* oi) {
  if (threadIdx.x == 0) {
    long long s = 0, w = 0;
    for (int i = 0; i < 8180; ++i) {
      s += h.vals[i];
      w += (long long)h.vals[i] * (i % 97 + 1);
    }
    oi[0] = h.n;
    oi[1] = s;
    oi[2] = w;
    oi[3] = h.vals[8179];
  }
}

__global__ void k_big(Big b, float* vals_out, long long* oi, double* od) {
  int t = threadIdx.x;
  if (t < 500) vals_out[t] = b.vals[t] * (float)b.scale;
  if (t == 0) {
    double s = 0.0;
    for (int i = 0; i < 500; ++i) s += (double)b.vals[i];
    long long h = 0;
    for (int i = 0; i < 16; ++i) h = h * 131 + b.name[i];
    oi[0] = b.count;
    oi[1] = h;
    od[0] = s;
    od[1] = b.scale;
  }
}

__global__ void k_vec(float4 a, int3 b, double2 c, char2 d, ushort3 e, long long* oi, double* od) {
  if (threadIdx.x != 0) return;
  od[0] = a.x; od[1] = a.y; od[2] = a.z; od[3] = a.w;
  od[4] = c.x; od[5] = c.y;
  oi[0] = b.x; oi[1] = b.y; oi[2] = b.z;
  oi[3] = d.x; oi[4] = d.y;
  oi[5] = e.x; oi[6] = e.y; oi[7] = e.z;
}

__global__ void k_many(char a0, short a1, int a2, long long a3, float a4, double a5,
                       unsigned a6, unsigned long long a7, char a8, double a9, int a10,
                       float a11, short a12, long long a13, char a14, int a15, double a16,
                       float a17, int a18, unsigned char a19, long long a20, double a21,
                       unsigned short a22, signed char a23, long long* oi, double* od) {
  if (threadIdx.x != 0) return;
  oi[0] = a0; oi[1] = a1; oi[2] = a2; oi[3] = a3; oi[4] = a6; oi[5] = (long long)a7;
  oi[6] = a8; oi[7] = a10; oi[8] = a12; oi[9] = a13; oi[10] = a14; oi[11] = a15;
  oi[12] = a18; oi[13] = a19; oi[14] = a20; oi[15] = a22; oi[16] = a23;
  od[0] = a4; od[1] = a5; od[2] = a9; od[3] = a11; od[4] = a16; od[5] = a17; od[6] = a21;
}

template <typename T, int N>
__global__ void k_tmpl(Vec<T, N> v, T bias, T* out) {
  int t = threadIdx.x;
  if (t < N) out[t] = (T)(v.x[t] + bias);
}

template <typename F>
__global__ void k_apply(F f, const float* x, float* y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = f(x[i]);
}

static long long* d_oi;
static double* d_od;
static long long h_oi[32];
static double h_od[32];

static void reset_out() {
  CHECK(cudaMemset(d_oi, 0xEE, 32 * sizeof(long long)));
  CHECK(cudaMemset(d_od, 0xEE, 32 * sizeof(double)));
}
static void fetch_out() {
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());
  CHECK(cudaMemcpy(h_oi, d_oi, sizeof h_oi, cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(h_od, d_od, sizeof h_od, cudaMemcpyDeviceToHost));
}

template <typename T, int N>
static void run_tmpl(const char* label, T base, T step, T bias) {
  Vec<T, N> v;
  for (int i = 0; i < N; ++i) v.x[i] = (T)(base + step * (T)i);
  T* d;
  T h[N];
  CHECK(cudaMalloc(&d, sizeof h));
  CHECK(cudaMemset(d, 0, sizeof h));
  k_tmpl<T, N><<<1, 32>>>(v, bias, d);
  CHECK(cudaGetLastError());
  CHECK(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost));
  printf("k_tmpl<%s,%d> sizeof(Vec)=%zu:", label, N, sizeof(Vec<T, N>));
  for (int i = 0; i < N; ++i) {
    printf(" %.17g", (double)h[i]);
    EXPECT(h[i] == (T)(v.x[i] + bias));
  }
  printf("\n");
  CHECK(cudaFree(d));
}

int main() {
  printf("struct_args\n");
  printf("sizeof Mixed=%zu Aligned16=%zu Chars3=%zu WithArr=%zu Ptrs=%zu Big=%zu\n",
         sizeof(Mixed), sizeof(Aligned16), sizeof(Chars3), sizeof(WithArr), sizeof(Ptrs),
         sizeof(Big));
  CHECK(cudaMalloc(&d_oi, 32 * sizeof(long long)));
  CHECK(cudaMalloc(&d_od, 32 * sizeof(double)));

  // --- Mixed ------------------------------------------------------------------------
  {
    Mixed m;
    memset(&m, 0, sizeof m);
    m.c = -7; m.s = -12345; m.i = 0x7BCDEF01; m.ll = -0x123456789ABCDEFLL;
    m.f = 3.14159274f; m.d = -2.718281828459045; m.uc = 250;
    reset_out();
    k_mixed<<<1, 32>>>(m, d_oi, d_od);
    fetch_out();
    printf("k_mixed: c=%lld s=%lld i=%lld ll=%lld uc=%lld f=%.9g d=%.17g\n", h_oi[0], h_oi[1],
           h_oi[2], h_oi[3], h_oi[4], h_od[0], h_od[1]);
    EXPECT(h_oi[0] == m.c && h_oi[1] == m.s && h_oi[2] == m.i && h_oi[3] == m.ll &&
           h_oi[4] == m.uc && h_od[0] == (double)m.f && h_od[1] == m.d);

    // Same kernel through cudaLaunchKernel.
    m.c = 99; m.d = 1e300; m.ll = 0x7FFFFFFFFFFFFFFFLL;
    void* args[] = {&m, &d_oi, &d_od};
    reset_out();
    CHECK(cudaLaunchKernel((const void*)k_mixed, dim3(1), dim3(32), args, 0, 0));
    fetch_out();
    printf("k_mixed (cudaLaunchKernel): c=%lld s=%lld i=%lld ll=%lld uc=%lld f=%.9g d=%.17g\n",
           h_oi[0], h_oi[1], h_oi[2], h_oi[3], h_oi[4], h_od[0], h_od[1]);
    EXPECT(h_oi[0] == 99 && h_oi[3] == m.ll && h_od[1] == 1e300);
  }

  // --- alignment: char, 16-aligned struct, 3-byte structs, short, double, bool, enum ----
  {
    Aligned16 v;
    memset(&v, 0, sizeof v);
    v.x = -0.125f; v.tag = 'Q';
    Chars3 c3 = {'a', 'b', 'c'}, c3b = {-1, 0, 127};
    reset_out();
    k_align<<<1, 32>>>('Z', v, c3, (short)-300, c3b, 6.0221e23, true, Color::Blue, d_oi, d_od);
    fetch_out();
    printf("k_align: a=%lld tag=%lld c3=%lld,%lld,%lld s=%lld c3b=%lld,%lld,%lld flag=%lld col=%lld x=%.9g d=%.17g\n",
           h_oi[0], h_oi[1], h_oi[2], h_oi[3], h_oi[4], h_oi[5], h_oi[6], h_oi[7], h_oi[8],
           h_oi[9], h_oi[10], h_od[0], h_od[1]);
    EXPECT(h_oi[0] == 'Z' && h_oi[1] == 'Q' && h_oi[2] == 'a' && h_oi[4] == 'c' &&
           h_oi[5] == -300 && h_oi[6] == -1 && h_oi[8] == 127 && h_oi[9] == 1 &&
           h_oi[10] == 200 && h_od[0] == -0.125 && h_od[1] == 6.0221e23);
  }

  // --- struct with double[8] ---------------------------------------------------------------
  {
    WithArr w;
    memset(&w, 0, sizeof w);
    w.n = 3;
    for (int i = 0; i < 8; ++i) w.v[i] = (double)(lcg32() % 100000) / 64.0;
    w.end = '!';
    reset_out();
    k_arr<<<1, 32>>>(w, d_oi, d_od);
    fetch_out();
    printf("k_arr: n=%lld end=%lld v*n =", h_oi[0], h_oi[1]);
    for (int i = 0; i < 8; ++i) {
      printf(" %.17g", h_od[i]);
      EXPECT(h_od[i] == w.v[i] * 3.0);
    }
    printf("\n");
    EXPECT(h_oi[0] == 3 && h_oi[1] == '!');
  }

  // --- struct of pointers --------------------------------------------------------------------
  {
    const int n = 1000;
    int hin[n], hout[n];
    for (int i = 0; i < n; ++i) hin[i] = (int)(lcg32() % 2000001) - 1000000;
    int *din, *dout;
    CHECK(cudaMalloc(&din, sizeof hin));
    CHECK(cudaMalloc(&dout, sizeof hout));
    CHECK(cudaMemcpy(din, hin, sizeof hin, cudaMemcpyHostToDevice));
    CHECK(cudaMemset(dout, 0, sizeof hout));
    Ptrs p = {din, dout, n};
    k_ptrs<<<3, 128>>>(p);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(hout, dout, sizeof hout, cudaMemcpyDeviceToHost));
    long long s = 0;
    int bad = 0;
    for (int i = 0; i < n; ++i) {
      s += hout[i];
      if (hout[i] != hin[i] * 2 + 1) ++bad;
    }
    printf("k_ptrs: mismatches=%d sum=%lld\n", bad, s);
    EXPECT(bad == 0);
    CHECK(cudaFree(din));
    CHECK(cudaFree(dout));
  }

  // --- ~2 KB by-value struct, both launch paths ------------------------------------------
  {
    static Big b;
    memset(&b, 0, sizeof b);
    b.count = 500;
    for (int i = 0; i < 500; ++i) b.vals[i] = (float)((int)(lcg32() % 20001) - 10000) / 256.0f;
    b.scale = 0.5;
    strcpy(b.name, "big-struct-2KB");
    float* dvals;
    float hvals[500];
    CHECK(cudaMalloc(&dvals, sizeof hvals));
    for (int path = 0; path < 2; ++path) {
      CHECK(cudaMemset(dvals, 0, sizeof hvals));
      reset_out();
      if (path == 0) {
        k_big<<<1, 512>>>(b, dvals, d_oi, d_od);
      } else {
        b.scale = -4.0;
        b.name[0] = 'B';
        void* args[] = {&b, &dvals, &d_oi, &d_od};
        CHECK(cudaLaunchKernel((const void*)k_big, dim3(1), dim3(512), args, 0, 0));
      }
      fetch_out();
      CHECK(cudaMemcpy(hvals, dvals, sizeof hvals, cudaMemcpyDeviceToHost));
      double s = 0.0;
      long long h = 0;
      int bad = 0;
      for (int i = 0; i < 500; ++i) {
        s += (double)b.vals[i];
        if (hvals[i] != b.vals[i] * (float)b.scale) ++bad;
      }
      for (int i = 0; i < 16; ++i) h = h * 131 + b.name[i];
      printf("k_big (%s): count=%lld namehash=%lld sum=%.17g scale=%.17g vals mismatches=%d v[0]=%.9g v[499]=%.9g\n",
             path == 0 ? "<<<>>>" : "cudaLaunchKernel", h_oi[0], h_oi[1], h_od[0], h_od[1], bad,
             hvals[0], hvals[499]);
      EXPECT(h_oi[0] == 500 && h_oi[1] == h && h_od[0] == s && h_od[1] == b.scale && bad == 0);
    }
    CHECK(cudaFree(dvals));
  }

  // --- a by-value struct of 32724 bytes: parameters near CUDA's 32764-byte limit -----------
  {
    static Huge hg;
    printf("sizeof Huge=%zu\n", sizeof(Huge));
    for (int path = 0; path < 2; ++path) {
      hg.n = 8180 + path;
      long long s = 0, w = 0;
      for (int i = 0; i < 8180; ++i) {
        hg.vals[i] = (int)(lcg32() % 2000001) - 1000000;
        s += hg.vals[i];
        w += (long long)hg.vals[i] * (i % 97 + 1);
      }
      reset_out();
      if (path == 0) {
        k_huge<<<1, 32>>>(hg, d_oi);
      } else {
        void* args[] = {&hg, &d_oi};
        CHECK(cudaLaunchKernel((const void*)k_huge, dim3(1), dim3(32), args, 0, 0));
      }
      CHECK(cudaGetLastError());
      fetch_out();
      printf("k_huge (%s): n=%lld sum=%lld weighted=%lld last=%lld\n",
             path == 0 ? "<<<>>>" : "cudaLaunchKernel", h_oi[0], h_oi[1], h_oi[2], h_oi[3]);
      EXPECT(h_oi[0] == hg.n && h_oi[1] == s && h_oi[2] == w && h_oi[3] == hg.vals[8179]);
    }
  }

  // --- vector types ---------------------------------------------------------------------------
  {
    reset_out();
    k_vec<<<1, 32>>>(make_float4(1.5f, -2.5f, 1e-3f, 65504.0f), make_int3(-1, 0x40000000, 77),
                     make_double2(1.0 / 3.0, -1e-300), make_char2(-128, 127),
                     make_ushort3(1, 65535, 4242), d_oi, d_od);
    fetch_out();
    printf("k_vec: a=%.9g,%.9g,%.9g,%.9g b=%lld,%lld,%lld c=%.17g,%.17g d=%lld,%lld e=%lld,%lld,%lld\n",
           h_od[0], h_od[1], h_od[2], h_od[3], h_oi[0], h_oi[1], h_oi[2], h_od[4], h_od[5],
           h_oi[3], h_oi[4], h_oi[5], h_oi[6], h_oi[7]);
    EXPECT(h_od[0] == 1.5 && h_od[3] == 65504.0 && h_oi[1] == 0x40000000 && h_od[4] == 1.0 / 3.0 &&
           h_od[5] == -1e-300 && h_oi[3] == -128 && h_oi[6] == 65535 && h_oi[7] == 4242);
  }

  // --- 24 scalar arguments (+2 pointers), both launch paths ------------------------------------
  for (int path = 0; path < 2; ++path) {
    char a0 = 'A'; short a1 = -2; int a2 = 3; long long a3 = -4000000000004LL; float a4 = 5.5f;
    double a5 = -6.25; unsigned a6 = 0xFFFFFFF7u; unsigned long long a7 = 0xFEDCBA9876543210ULL;
    char a8 = 9; double a9 = 10.125; int a10 = -11; float a11 = 12.75f; short a12 = 13;
    long long a13 = 14; char a14 = -15; int a15 = 16; double a16 = 17.0625; float a17 = -18.5f;
    int a18 = 19; unsigned char a19 = 220; long long a20 = -21; double a21 = 22.5;
    unsigned short a22 = 60000; signed char a23 = -24;
    reset_out();
    if (path == 0) {
      k_many<<<1, 32>>>(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16,
                        a17, a18, a19, a20, a21, a22, a23, d_oi, d_od);
    } else {
      a2 = 333; a21 = -0.0078125;
      void* args[] = {&a0, &a1, &a2, &a3, &a4, &a5, &a6, &a7, &a8, &a9, &a10, &a11, &a12,
                      &a13, &a14, &a15, &a16, &a17, &a18, &a19, &a20, &a21, &a22, &a23,
                      &d_oi, &d_od};
      CHECK(cudaLaunchKernel((const void*)k_many, dim3(1), dim3(32), args, 0, 0));
    }
    fetch_out();
    printf("k_many (%s): ints", path == 0 ? "<<<>>>" : "cudaLaunchKernel");
    for (int i = 0; i < 17; ++i) printf(" %lld", h_oi[i]);
    printf(" fp");
    for (int i = 0; i < 7; ++i) printf(" %.17g", h_od[i]);
    printf("\n");
    long long wi[17] = {a0, a1, a2, a3, a6, (long long)a7, a8, a10, a12, a13, a14, a15, a18,
                        a19, a20, a22, a23};
    double wd[7] = {a4, a5, a9, a11, a16, a17, a21};
    EXPECT(memcmp(wi, h_oi, sizeof wi) == 0 && memcmp(wd, h_od, sizeof wd) == 0);
  }

  // --- templates -------------------------------------------------------------------------------
  run_tmpl<float, 3>("float", 1.25f, 0.5f, -100.0f);
  run_tmpl<double, 5>("double", -1e10, 3.0e9, 0.125);
  run_tmpl<int, 7>("int", -1000, 333, 7);
  run_tmpl<short, 9>("short", -30000, 7000, -3);
  run_tmpl<char, 13>("char", 'a', 1, 2);
  run_tmpl<long long, 2>("long long", -(1LL << 62), 1LL << 61, 1);
  {
    const int n = 777;
    float hx[n], hy[n];
    for (int i = 0; i < n; ++i) hx[i] = (float)(i - 300) * 0.25f;
    float *dx, *dy;
    CHECK(cudaMalloc(&dx, sizeof hx));
    CHECK(cudaMalloc(&dy, sizeof hy));
    CHECK(cudaMemcpy(dx, hx, sizeof hx, cudaMemcpyHostToDevice));
    Affine f = {2.0f, -1.0f};
    k_apply<<<(n + 127) / 128, 128>>>(f, dx, dy, n);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(hy, dy, sizeof hy, cudaMemcpyDeviceToHost));
    double s = 0.0;
    int bad = 0;
    for (int i = 0; i < n; ++i) {
      s += hy[i];
      if (hy[i] != f(hx[i])) ++bad;  // exact: 2x and -1 of quarter-integers
    }
    printf("k_apply<Affine>: mismatches=%d sum=%.6f\n", bad, s);
    EXPECT(bad == 0);
    CHECK(cudaFree(dx));
    CHECK(cudaFree(dy));
  }

  CHECK(cudaFree(d_oi));
  CHECK(cudaFree(d_od));
  printf("%s\n", g_failures ? "FAILED" : "PASSED");
  return g_failures ? 1 : 0;
}
