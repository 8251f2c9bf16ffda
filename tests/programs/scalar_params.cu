// scalar_params: kernels whose scalar parameters follow pointers in every layout that needs
// padding: char, short, float, double, long long, bool, a struct {char; double}, a struct of
// three chars, a float2, and mixes of them, in both orders. Each kernel writes every
// parameter back through the pointer it got, so a wrong offset shows as a wrong value.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cuda_runtime.h>

#define CHECK(call)                                                                 \
  do {                                                                              \
    cudaError_t e_ = (call);                                                        \
    if (e_ != cudaSuccess) {                                                        \
      printf("FAIL line %d: %s -> %s\n", __LINE__, #call, cudaGetErrorName(e_));    \
      exit(1);                                                                      \
    }                                                                               \
  } while (0)

struct CD { char c; double d; };
struct C3 { char a, b, c; };

__global__ void k_char_double(double* out, char c, double d) { out[0] = c; out[1] = d; }
__global__ void k_ptr_char_ptr(double* out, char c, double* out2, short s) { out[0] = c; out2[1] = s; }
__global__ void k_float_ptr(float f, double* out, float g) { out[0] = f; out[1] = g; }
__global__ void k_mixed(double* out, bool b, char c, short s, int i, long long l, float f, double d) {
  out[0] = b; out[1] = c; out[2] = s; out[3] = i; out[4] = (double)l; out[5] = f; out[6] = d;
}
__global__ void k_structs(double* out, CD cd, C3 c3, float2 f2, char tail) {
  out[0] = cd.c; out[1] = cd.d; out[2] = c3.a; out[3] = c3.b; out[4] = c3.c; out[5] = f2.x; out[6] = f2.y; out[7] = tail;
}
__global__ void k_double_first(double d, char c, double* out) { out[0] = d; out[1] = c; }
__global__ void k_many_ptrs(double* a, char c1, double* b, char c2, double* cc, double last) {
  a[0] = c1; b[1] = c2; cc[2] = last;
}

static void show(const char* name, double* d, int n) {
  double h[8];
  CHECK(cudaDeviceSynchronize());
  CHECK(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost));
  printf("%-16s", name);
  for (int i = 0; i < n; i++) printf(" %.17g", h[i]);
  printf("\n");
  CHECK(cudaMemset(d, 0, sizeof h));
}

int main() {
  double* d;
  CHECK(cudaMalloc(&d, 8 * sizeof(double)));
  CHECK(cudaMemset(d, 0, 8 * sizeof(double)));
  k_char_double<<<1, 1>>>(d, (char)-7, 3.141592653589793);
  show("char,double", d, 2);
  k_ptr_char_ptr<<<1, 1>>>(d, 'x', d, (short)-31000);
  show("ptr,char,ptr,sh", d, 2);
  k_float_ptr<<<1, 1>>>(1.25f, d, -0.1f);
  show("float,ptr,float", d, 2);
  k_mixed<<<1, 1>>>(d, true, 'Q', (short)12345, -2000000000, -9000000000123LL, 6.5e-3f, -1.0 / 3.0);
  show("mixed", d, 7);
  CD cd = {'z', 2.718281828459045};
  C3 c3 = {1, 2, 3};
  k_structs<<<1, 1>>>(d, cd, c3, make_float2(0.5f, -4.25f), (char)99);
  show("structs", d, 8);
  k_double_first<<<1, 1>>>(1e300, (char)5, d);
  show("double first", d, 2);
  k_many_ptrs<<<1, 1>>>(d, (char)11, d, (char)22, d, 123456.789);
  show("many ptrs", d, 3);
  void* args[] = {&d, &cd, &c3, nullptr, nullptr};
  float2 f2 = make_float2(8.0f, 9.0f);
  char tail = 'T';
  args[3] = &f2;
  args[4] = &tail;
  CHECK(cudaLaunchKernel((const void*)k_structs, dim3(1), dim3(1), args, 0, 0));
  show("structs (api)", d, 8);
  CHECK(cudaFree(d));
  printf("PASSED\n");
  return 0;
}
