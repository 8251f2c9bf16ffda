// graph: CUDA graphs by stream capture. cudaStreamBeginCapture, an H2D copy from
// pinned memory, a memset, kernels on the capturing stream and on a forked
// second stream (event record / cudaStreamWaitEvent fork and join), a D2H copy,
// cudaStreamEndCapture, cudaStreamIsCapturing, cudaGraphGetNodes +
// cudaGraphNodeGetType, cudaGraphInstantiate, cudaGraphLaunch 10 times with
// fresh input each time (checked each time) and 10 times back to back
// (checked at the end), on two different streams, cudaGraphExecDestroy,
// cudaGraphDestroy.
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

static uint64_t g_lcg = 0x6A09E667F3BCC909ULL;
static inline uint32_t lcg32() {
  g_lcg = g_lcg * 6364136223846793005ULL + 1442695040888963407ULL;
  return (uint32_t)(g_lcg >> 33);
}

const int N = 100000;

__global__ void square_add(const int* in, int* tmp, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) tmp[i] += (in[i] * in[i]) % 1000;
}
__global__ void accumulate(const int* tmp, long long* acc, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) acc[i] += tmp[i];
}
__global__ void twice(const int* in, int* out2, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out2[i] = in[i] * 2;
}
__global__ void combine(const int* tmp, const int* out2, int* out, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = tmp[i] + out2[i];
}

static const char* node_type_name(cudaGraphNodeType t) {
  switch (t) {
    case cudaGraphNodeTypeKernel: return "kernel";
    case cudaGraphNodeTypeMemcpy: return "memcpy";
    case cudaGraphNodeTypeMemset: return "memset";
    case cudaGraphNodeTypeHost: return "host";
    case cudaGraphNodeTypeEmpty: return "empty";
    case cudaGraphNodeTypeWaitEvent: return "waitevent";
    case cudaGraphNodeTypeEventRecord: return "eventrecord";
    default: return "other";
  }
}

int main() {
  printf("graph\n");
  CHECK(cudaSetDevice(0));
  const int nb = (N + 255) / 256;
  int *h_in, *h_out;
  CHECK(cudaMallocHost((void**)&h_in, N * sizeof(int)));
  CHECK(cudaMallocHost((void**)&h_out, N * sizeof(int)));
  int *d_in, *d_tmp, *d_out2, *d_out;
  long long* d_acc;
  CHECK(cudaMalloc(&d_in, N * sizeof(int)));
  CHECK(cudaMalloc(&d_tmp, N * sizeof(int)));
  CHECK(cudaMalloc(&d_out2, N * sizeof(int)));
  CHECK(cudaMalloc(&d_out, N * sizeof(int)));
  CHECK(cudaMalloc(&d_acc, N * sizeof(long long)));
  CHECK(cudaMemset(d_acc, 0, N * sizeof(long long)));
  CHECK(cudaMemset(d_tmp, 0x7F, N * sizeof(int)));  // the graph's memset must clear this
  CHECK(cudaDeviceSynchronize());

  cudaStream_t s, s2, other;
  CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  CHECK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
  CHECK(cudaStreamCreateWithFlags(&other, cudaStreamNonBlocking));
  cudaEvent_t fork, join;
  CHECK(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
  CHECK(cudaEventCreateWithFlags(&join, cudaEventDisableTiming));

  cudaStreamCaptureStatus st;
  CHECK(cudaStreamIsCapturing(s, &st));
  printf("capturing before begin: %d\n", (int)st);

  // --- capture ---------------------------------------------------------------------------------
  CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  CHECK(cudaStreamIsCapturing(s, &st));
  printf("capturing after begin: %d (active=%d)\n", (int)st, (int)cudaStreamCaptureStatusActive);
  EXPECT(st == cudaStreamCaptureStatusActive);
  CHECK(cudaMemcpyAsync(d_in, h_in, N * sizeof(int), cudaMemcpyHostToDevice, s));
  CHECK(cudaMemsetAsync(d_tmp, 0, N * sizeof(int), s));
  square_add<<<nb, 256, 0, s>>>(d_in, d_tmp, N);
  CHECK(cudaGetLastError());
  CHECK(cudaEventRecord(fork, s));
  CHECK(cudaStreamWaitEvent(s2, fork, 0));  // s2 joins the capture
  CHECK(cudaStreamIsCapturing(s2, &st));
  printf("forked stream capturing: %d\n", (int)st);
  twice<<<nb, 256, 0, s2>>>(d_in, d_out2, N);
  CHECK(cudaGetLastError());
  CHECK(cudaEventRecord(join, s2));
  accumulate<<<nb, 256, 0, s>>>(d_tmp, d_acc, N);
  CHECK(cudaGetLastError());
  CHECK(cudaStreamWaitEvent(s, join, 0));
  combine<<<nb, 256, 0, s>>>(d_tmp, d_out2, d_out, N);
  CHECK(cudaGetLastError());
  CHECK(cudaMemcpyAsync(h_out, d_out, N * sizeof(int), cudaMemcpyDeviceToHost, s));
  cudaGraph_t graph;
  CHECK(cudaStreamEndCapture(s, &graph));
  CHECK(cudaStreamIsCapturing(s, &st));
  printf("capturing after end: %d\n", (int)st);
  EXPECT(st == cudaStreamCaptureStatusNone);

  // --- inspect ---------------------------------------------------------------------------------
  size_t nnodes = 0;
  CHECK(cudaGraphGetNodes(graph, nullptr, &nnodes));
  std::vector<cudaGraphNode_t> nodes(nnodes);
  CHECK(cudaGraphGetNodes(graph, nodes.data(), &nnodes));
  int counts[4] = {0, 0, 0, 0};  // kernel, memcpy, memset, other
  for (size_t i = 0; i < nnodes; ++i) {
    cudaGraphNodeType t;
    CHECK(cudaGraphNodeGetType(nodes[i], &t));
    const char* nm = node_type_name(t);
    if (!strcmp(nm, "kernel")) ++counts[0];
    else if (!strcmp(nm, "memcpy")) ++counts[1];
    else if (!strcmp(nm, "memset")) ++counts[2];
    else ++counts[3];
  }
  printf("graph nodes: %zu (kernel %d, memcpy %d, memset %d, other %d)\n", nnodes, counts[0],
         counts[1], counts[2], counts[3]);
  EXPECT(nnodes == 7 && counts[0] == 4 && counts[1] == 2 && counts[2] == 1);

  cudaGraphExec_t exec;
  CHECK(cudaGraphInstantiate(&exec, graph, 0));

  // Nothing ran during capture.
  {
    std::vector<long long> acc(N);
    CHECK(cudaMemcpy(acc.data(), d_acc, N * sizeof(long long), cudaMemcpyDeviceToHost));
    int nonzero = 0;
    for (int i = 0; i < N; ++i) nonzero += acc[i] != 0;
    printf("accumulator untouched by capture: %s\n", nonzero == 0 ? "yes" : "no");
    EXPECT(nonzero == 0);
  }

  // --- 10 launches, each with fresh input and checked -----------------------------------------------
  std::vector<long long> acc_host(N, 0);
  long long total = 0;
  int bad_launches = 0;
  for (int it = 0; it < 10; ++it) {
    for (int i = 0; i < N; ++i) h_in[i] = (int)(lcg32() % 20001) - 10000;
    CHECK(cudaGraphLaunch(exec, s));
    CHECK(cudaStreamSynchronize(s));
    int bad = 0;
    for (int i = 0; i < N; ++i) {
      int tmp = (h_in[i] * h_in[i]) % 1000;
      acc_host[i] += tmp;
      bad += h_out[i] != tmp + 2 * h_in[i];
      total += h_out[i];
    }
    if (bad) {
      printf("launch %d: %d mismatches\n", it, bad);
      ++bad_launches;
    }
  }
  printf("10 checked launches: bad launches=%d output total=%lld\n", bad_launches, total);
  EXPECT(bad_launches == 0);

  // --- 10 back-to-back launches on another stream, then one sync -------------------------------------
  for (int it = 0; it < 10; ++it) CHECK(cudaGraphLaunch(exec, other));
  CHECK(cudaStreamSynchronize(other));
  for (int i = 0; i < N; ++i) acc_host[i] += 10 * ((h_in[i] * h_in[i]) % 1000);
  std::vector<long long> acc(N);
  CHECK(cudaMemcpy(acc.data(), d_acc, N * sizeof(long long), cudaMemcpyDeviceToHost));
  int bad = 0;
  long long acc_sum = 0;
  for (int i = 0; i < N; ++i) {
    bad += acc[i] != acc_host[i];
    acc_sum += acc[i];
  }
  printf("accumulator after 20 launches: mismatches=%d sum=%lld\n", bad, acc_sum);
  EXPECT(bad == 0);

  CHECK(cudaGraphExecDestroy(exec));
  CHECK(cudaGraphDestroy(graph));
  CHECK(cudaEventDestroy(fork));
  CHECK(cudaEventDestroy(join));
  CHECK(cudaStreamDestroy(s));
  CHECK(cudaStreamDestroy(s2));
  CHECK(cudaStreamDestroy(other));
  CHECK(cudaFree(d_in));
  CHECK(cudaFree(d_tmp));
  CHECK(cudaFree(d_out2));
  CHECK(cudaFree(d_out));
  CHECK(cudaFree(d_acc));
  CHECK(cudaFreeHost(h_in));
  CHECK(cudaFreeHost(h_out));
  printf("%s\n", g_failures ? "FAILED" : "PASSED");
  return g_failures ? 1 : 0;
}
