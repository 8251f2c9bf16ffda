// A -cudart shared program that calls the driver API too (as one that uses cuBLAS does):
// both layers of farcuda in one process share one session. Memory from cudaMalloc is copied
// and launched on through the driver API, memory from cuMemAlloc through the runtime API; a
// forked child makes a session of its own.
// Run with the runtime shim and the driver layer on LD_LIBRARY_PATH; argv[1]: kernels.cubin,
// argv[2]: "gpu" where kernels run (a real GPU), else their memory is left as it was (the
// in-memory daemon records launches only).
#include <cuda.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern "C" __global__ void scale(float *p, float f, unsigned n) {
  unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) p[i] *= f;
}

#define N 256
#define CK(x) do { int e_ = (int)(x); if (e_) { printf("%s: %d\n", #x, e_); return 1; } } while (0)

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  int gpu = argc > 2 && !strcmp(argv[2], "gpu");
  printf("pid %d\n", (int)getpid());
  static const unsigned table[4] = {11, 22, 33, 44};  // kernels.cu's
  unsigned in[N], out[N], want[N];
  float fin[N], fwant[N];
  for (int i = 0; i < N; i++) {
    in[i] = 0x01020304u * (unsigned)i;
    want[i] = gpu ? 5 + table[i % 4] : in[i];
    fin[i] = 0.5f * (float)i;
    fwant[i] = gpu ? (float)i : fin[i];
  }
  // runtime memory, used by the driver API
  unsigned *a = NULL;
  CK(cudaMalloc(&a, sizeof in));
  CK(cudaMemcpy(a, in, sizeof in, cudaMemcpyHostToDevice));
  CK(cuInit(0));
  CUdevice dev;
  CUcontext ctx, cur = NULL;
  CK(cuDeviceGet(&dev, 0));
  CK(cuDevicePrimaryCtxRetain(&ctx, dev));
  CK(cuCtxSetCurrent(ctx));
  CUmodule mod;
  CUfunction fill;
  CK(cuModuleLoad(&mod, argv[1]));
  CK(cuModuleGetFunction(&fill, mod, "fill"));
  CUdeviceptr pa = (CUdeviceptr)(uintptr_t)a;
  unsigned v = 5;
  unsigned long long n = N;
  void *params[] = {&pa, &v, &n};
  CK(cuLaunchKernel(fill, 1, 1, 1, N, 1, 1, 0, NULL, params, NULL));
  CK(cuCtxSynchronize());
  memset(out, 0, sizeof out);
  CK(cuMemcpyDtoH(out, pa, sizeof out));
  printf("cudaMalloc memory through the driver API: %s\n",
         memcmp(want, out, sizeof out) ? "differs" : "equal");
  CUdeviceptr pointer_dev = 0;
  CK(cuPointerGetAttribute(&pointer_dev, CU_POINTER_ATTRIBUTE_DEVICE_POINTER, pa));
  printf("its device pointer: %s\n", pointer_dev == pa ? "itself" : "another");
  // driver memory, used by the runtime API
  CUdeviceptr pb;
  CK(cuMemAlloc(&pb, sizeof in));
  CK(cuMemcpyHtoD(pb, fin, sizeof fin));
  float *b = (float *)(uintptr_t)pb;
  scale<<<1, N>>>(b, 2.0f, N);
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  memset(out, 0, sizeof out);
  CK(cudaMemcpy(out, b, sizeof out, cudaMemcpyDeviceToHost));
  printf("cuMemAlloc memory through the runtime API: %s\n",
         memcmp(fwant, out, sizeof out) ? "differs" : "equal");
  cudaPointerAttributes attr;
  CK(cudaPointerGetAttributes(&attr, b));
  printf("its type: %s, device %d\n", attr.type == cudaMemoryTypeDevice ? "device" : "other",
         attr.device);
  // a copy from one layer's memory to the other's, by each API
  CK(cudaMemset(a, 0, sizeof in));
  CK(cudaMemcpy(a, b, sizeof in, cudaMemcpyDeviceToDevice));
  CK(cuMemcpyDtoH(out, pa, sizeof out));
  printf("runtime copy between them: %s\n", memcmp(fwant, out, sizeof out) ? "differs" : "equal");
  CK(cuMemsetD32(pa, 0, N));
  CK(cuMemcpyDtoD(pa, pb, sizeof in));
  CK(cudaMemcpy(out, a, sizeof out, cudaMemcpyDeviceToHost));
  printf("driver copy between them: %s\n", memcmp(fwant, out, sizeof out) ? "differs" : "equal");
  CK(cuCtxGetCurrent(&cur));
  printf("the primary context is current: %s\n", cur == ctx ? "yes" : "no");
  // a child of the process is a session of its own, not its parent's
  fflush(stdout);
  pid_t child = fork();
  if (child == 0) {
    CUdeviceptr q;
    unsigned w = 0;
    int r1 = cuMemAlloc(&q, 64), r2 = cuMemsetD32(q, 9, 16), r3 = cuMemcpyDtoH(&w, q, 4);
    printf("child on the driver API: %d %d %d %u\n", r1, r2, r3, w);
    fflush(stdout);
    _exit(0);
  }
  int status = -1;
  waitpid(child, &status, 0);
  printf("child exit %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  CK(cuMemFree(pb));
  CK(cudaFree(a));
  CK(cuModuleUnload(mod));
  CK(cuDevicePrimaryCtxRelease(dev));
  printf("PASSED\n");
  return 0;
}
