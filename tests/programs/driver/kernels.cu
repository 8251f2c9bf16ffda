// Kernels for ci_driver_api.c, built into a cubin and a fat binary at test time.
extern "C" __device__ unsigned table[4] = {11, 22, 33, 44};

extern "C" __global__ void fill(unsigned *p, unsigned v, unsigned long long n) {
  unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
  if (i < n) p[i] = v + table[i % 4];
}
