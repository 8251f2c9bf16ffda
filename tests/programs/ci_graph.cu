// A captured graph without kernels (CI: the in-memory backend runs no kernels): host to
// device from pinned memory, a memset, a device to device copy, device to host into pinned
// memory. Each replay must read the host input as it is then, and write the output back.
#include <cstdio>
#include <cstring>
#include <cuda_runtime.h>

#define CHECK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
  printf("FAIL line %d: %s -> %s\n", __LINE__, #x, cudaGetErrorName(e_)); return 1; } } while (0)

int main() {
  const size_t n = 3 << 20;
  unsigned char *in, *out, *a, *b;
  CHECK(cudaMallocHost((void**)&in, n));
  CHECK(cudaMallocHost((void**)&out, n));
  CHECK(cudaMalloc(&a, n));
  CHECK(cudaMalloc(&b, n));
  cudaStream_t s;
  CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaGraph_t g;
  CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  CHECK(cudaMemcpyAsync(a, in, n, cudaMemcpyHostToDevice, s));
  CHECK(cudaMemsetAsync(b, 0x5a, n, s));
  CHECK(cudaMemcpyAsync(b, a, n / 2, cudaMemcpyDeviceToDevice, s));
  CHECK(cudaMemcpyAsync(out, b, n, cudaMemcpyDeviceToHost, s));
  CHECK(cudaStreamEndCapture(s, &g));
  size_t nodes = 0;
  CHECK(cudaGraphGetNodes(g, nullptr, &nodes));
  cudaGraphNode_t list[8];
  size_t k = 8;
  CHECK(cudaGraphGetNodes(g, list, &k));
  int memcpys = 0, memsets = 0;
  for (size_t i = 0; i < k; i++) {
    cudaGraphNodeType t;
    CHECK(cudaGraphNodeGetType(list[i], &t));
    memcpys += t == cudaGraphNodeTypeMemcpy;
    memsets += t == cudaGraphNodeTypeMemset;
  }
  printf("graph nodes: %zu (memcpy %d, memset %d)\n", nodes, memcpys, memsets);
  cudaGraphExec_t x;
  CHECK(cudaGraphInstantiate(&x, g, 0));
  int bad = 0;
  for (int r = 0; r < 3; r++) {
    for (size_t i = 0; i < n; i++) in[i] = (unsigned char)(i * 13 + r * 101);
    memset(out, 0, n);
    CHECK(cudaGraphLaunch(x, s));
    CHECK(cudaStreamSynchronize(s));
    for (size_t i = 0; i < n; i++)
      bad += out[i] != (i < n / 2 ? (unsigned char)(i * 13 + r * 101) : 0x5a);
  }
  printf("replays 3, mismatches %d\n%s\n", bad, bad ? "FAILED" : "PASSED");
  CHECK(cudaGraphExecDestroy(x));
  CHECK(cudaGraphDestroy(g));
  return bad ? 1 : 0;
}
