// graph_nodes: a CUDA graph built node by node with the runtime API. cudaGraphCreate, a
// memset node, two kernel nodes (the second after the memset and the first), a
// device-to-device memcpy node, an empty node, a child graph with a kernel node,
// cudaGraphAddDependencies, cudaGraphGetNodes / cudaGraphGetRootNodes, cudaGraphInstantiate,
// cudaGraphLaunch 5 times with fresh input each time (checked each time),
// cudaGraphExecKernelNodeSetParams (a new scale, checked), cudaGraphClone (launched, checked),
// cudaGraphExecDestroy, cudaGraphDestroy.
#include <cstdio>
#include <cstdlib>
#include <cstdint>
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

const int N = 1 << 16;

__global__ void square(const int* in, int* tmp, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) tmp[i] = in[i] * in[i];
}

__global__ void reduce(const int* tmp, unsigned long long* out, int n, int scale) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) atomicAdd(out, (unsigned long long)tmp[i] * (unsigned long long)scale);
}

__global__ void bump(unsigned long long* v) { *v += 1000000007ULL; }

static unsigned long long expect(const std::vector<int>& in, int scale) {
  unsigned long long s = 0;
  for (int x : in) s += (unsigned long long)(x * x) * (unsigned long long)scale;
  return s + 1000000007ULL;
}

int main() {
  int *d_in, *d_tmp;
  unsigned long long *d_sum, *d_copy;
  CHECK(cudaMalloc(&d_in, N * sizeof(int)));
  CHECK(cudaMalloc(&d_tmp, N * sizeof(int)));
  CHECK(cudaMalloc(&d_sum, sizeof(unsigned long long)));
  CHECK(cudaMalloc(&d_copy, sizeof(unsigned long long)));
  cudaStream_t s;
  CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));

  cudaGraph_t g, child;
  CHECK(cudaGraphCreate(&g, 0));
  cudaGraphNode_t zero, sq, red, copy, empty, sub;
  cudaMemsetParams mp = {};
  mp.dst = d_sum, mp.value = 0, mp.elementSize = 4, mp.width = 2, mp.height = 1;
  CHECK(cudaGraphAddMemsetNode(&zero, g, nullptr, 0, &mp));
  int n = N, scale = 3;
  void* sq_args[] = {&d_in, &d_tmp, &n};
  cudaKernelNodeParams kp = {};
  kp.func = (void*)square, kp.gridDim = dim3(N / 256), kp.blockDim = dim3(256);
  kp.kernelParams = sq_args;
  CHECK(cudaGraphAddKernelNode(&sq, g, nullptr, 0, &kp));
  void* red_args[] = {&d_tmp, &d_sum, &n, &scale};
  cudaKernelNodeParams rp = kp;
  rp.func = (void*)reduce, rp.kernelParams = red_args;
  cudaGraphNode_t before_red[] = {zero, sq};
  CHECK(cudaGraphAddKernelNode(&red, g, before_red, 2, &rp));
  CHECK(cudaGraphAddEmptyNode(&empty, g, &red, 1));
  CHECK(cudaGraphCreate(&child, 0));
  cudaGraphNode_t child_bump;
  void* bump_args[] = {&d_sum};
  cudaKernelNodeParams bp = {};
  bp.func = (void*)bump, bp.gridDim = dim3(1), bp.blockDim = dim3(1), bp.kernelParams = bump_args;
  CHECK(cudaGraphAddKernelNode(&child_bump, child, nullptr, 0, &bp));
  CHECK(cudaGraphAddChildGraphNode(&sub, g, nullptr, 0, child));
  CHECK(cudaGraphAddDependencies(g, &empty, &sub, nullptr, 1));
  CHECK(cudaGraphAddMemcpyNode1D(&copy, g, &sub, 1, d_copy, d_sum, sizeof(unsigned long long),
                                 cudaMemcpyDeviceToDevice));
  size_t nodes = 0, roots = 0;
  CHECK(cudaGraphGetNodes(g, nullptr, &nodes));
  CHECK(cudaGraphGetRootNodes(g, nullptr, &roots));
  printf("graph: %zu nodes, %zu roots\n", nodes, roots);

  cudaGraphExec_t x;
  CHECK(cudaGraphInstantiate(&x, g, 0));
  std::vector<int> in(N);
  uint32_t lcg = 12345;
  int checks = 0, bad = 0;
  for (int round = 0; round < 5; round++) {
    for (int& v : in) v = (int)((lcg = lcg * 1664525u + 1013904223u) >> 20);
    CHECK(cudaMemcpyAsync(d_in, in.data(), N * sizeof(int), cudaMemcpyHostToDevice, s));
    CHECK(cudaGraphLaunch(x, s));
    unsigned long long got = 0;
    CHECK(cudaMemcpyAsync(&got, d_copy, sizeof got, cudaMemcpyDeviceToHost, s));
    CHECK(cudaStreamSynchronize(s));
    checks++;
    bad += got != expect(in, 3);
    if (round == 0) printf("first sum %llu\n", got);
  }
  scale = 7;
  CHECK(cudaGraphExecKernelNodeSetParams(x, red, &rp));
  CHECK(cudaGraphLaunch(x, s));
  unsigned long long got = 0;
  CHECK(cudaMemcpyAsync(&got, d_copy, sizeof got, cudaMemcpyDeviceToHost, s));
  CHECK(cudaStreamSynchronize(s));
  checks++;
  bad += got != expect(in, 7);
  printf("scale 7: %llu\n", got);
  cudaGraph_t twin;
  cudaGraphExec_t tx;
  CHECK(cudaGraphClone(&twin, g));
  CHECK(cudaGraphInstantiate(&tx, twin, 0));
  CHECK(cudaGraphLaunch(tx, s));
  CHECK(cudaMemcpyAsync(&got, d_copy, sizeof got, cudaMemcpyDeviceToHost, s));
  CHECK(cudaStreamSynchronize(s));
  checks++;
  bad += got != expect(in, 3);
  printf("clone: %llu\n", got);
  CHECK(cudaGraphExecDestroy(x));
  CHECK(cudaGraphExecDestroy(tx));
  CHECK(cudaGraphDestroy(twin));
  CHECK(cudaGraphDestroy(child));
  CHECK(cudaGraphDestroy(g));
  CHECK(cudaStreamDestroy(s));
  printf("%d checks, %d wrong\n", checks, bad);
  printf(bad ? "FAILED\n" : "PASSED\n");
  return bad ? 1 : 0;
}
