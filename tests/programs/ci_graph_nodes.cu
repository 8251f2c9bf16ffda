// A graph built node by node whose results need no kernel (CI: the in-memory backend runs
// none): copies from and to pinned host memory, memsets of 1-, 2- and 4-byte elements
// (1D and pitched), device-to-device copies (1D, and a pitched box), copies back into
// host memory (1D, and a 3D parameter block whose rows lie back to back), an event
// record node, a child graph, an empty node, a kernel node (its effect is not read: its
// launches are checked at the daemon), cudaGraphAddNode, cudaGraphAddDependencies; asked
// about (nodes, roots, dependencies, types, kernel parameters), launched three times with
// fresh host input (every byte checked), a kernel node changed in the graph and in the exec,
// cloned, cudaGraphExecUpdate (same shape, another shape); an event wait node that holds a
// copy until another stream records; a captured graph's exec updated from a second capture.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unistd.h>
#include <vector>
#include <cuda_runtime.h>

#define CHECK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
  printf("FAIL line %d: %s -> %s\n", __LINE__, #x, cudaGetErrorName(e_)); return 1; } } while (0)

__global__ void mark(int *p, int v) { p[threadIdx.x] = v; }

static void CUDART_CB slow(void *) { usleep(150 * 1000); }

const size_t N = 1 << 20, W = 256, H = 64, Q = N / 4;

int main() {
  unsigned char *in, *out, *pin, *out2, *hc = (unsigned char *)malloc(W * H);
  CHECK(cudaMallocHost((void **)&in, N));
  CHECK(cudaHostAlloc((void **)&out, N, cudaHostAllocDefault));
  CHECK(cudaMallocHost((void **)&pin, Q));
  CHECK(cudaMallocHost((void **)&out2, Q));
  unsigned char *a, *b, *c, *d;
  int *scratch;
  size_t cp;
  CHECK(cudaMalloc(&a, N));
  CHECK(cudaMalloc(&b, N));
  CHECK(cudaMalloc(&d, Q));
  CHECK(cudaMallocPitch((void **)&c, &cp, W, H));
  CHECK(cudaMalloc(&scratch, 64 * sizeof(int)));
  cudaStream_t s, s2;
  CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  CHECK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
  cudaEvent_t ev0, ev;
  CHECK(cudaEventCreate(&ev0));
  CHECK(cudaEventCreate(&ev));

  cudaGraph_t g, child;
  CHECK(cudaGraphCreate(&g, 0));
  cudaGraphNode_t h2d, h2d_pin, set32, set16, d2d, box, rec, sub, d2h, d2h_pin, kern, none;
  CHECK(cudaGraphAddMemcpyNode1D(&h2d, g, nullptr, 0, a, in, N, cudaMemcpyHostToDevice));
  CHECK(cudaGraphAddMemcpyNode1D(&h2d_pin, g, nullptr, 0, d, pin, Q, cudaMemcpyDefault));
  cudaMemsetParams ms = {};
  ms.dst = b, ms.value = 0x11223344u, ms.elementSize = 4, ms.width = N / 4, ms.height = 1;
  CHECK(cudaGraphAddMemsetNode(&set32, g, nullptr, 0, &ms));
  cudaMemsetParams ms16 = {};
  ms16.dst = c, ms16.pitch = cp, ms16.value = 0xbeef, ms16.elementSize = 2;
  ms16.width = W / 2, ms16.height = H;
  CHECK(cudaGraphAddMemsetNode(&set16, g, nullptr, 0, &ms16));
  cudaGraphNode_t before_d2d[] = {h2d, set32};
  CHECK(cudaGraphAddMemcpyNode1D(&d2d, g, before_d2d, 2, b, a, N / 2, cudaMemcpyDeviceToDevice));
  cudaMemcpy3DParms bp = {};  // a box of a (rows of W bytes) into the pitched c
  bp.srcPtr = make_cudaPitchedPtr(a, W, W, N / W);
  bp.srcPos = make_cudaPos(16, 2, 0);
  bp.dstPtr = make_cudaPitchedPtr(c, cp, W, H);
  bp.dstPos = make_cudaPos(32, 4, 0);
  bp.extent = make_cudaExtent(64, 20, 1);
  bp.kind = cudaMemcpyDeviceToDevice;
  cudaGraphNode_t before_box[] = {h2d, set16};
  CHECK(cudaGraphAddMemcpyNode(&box, g, before_box, 2, &bp));
  CHECK(cudaGraphAddEventRecordNode(&rec, g, &d2d, 1, ev));
  CHECK(cudaGraphCreate(&child, 0));
  cudaGraphNode_t child_set, child_empty;
  cudaMemsetParams ms8 = {};
  ms8.dst = b, ms8.value = 0x55, ms8.elementSize = 1, ms8.width = 16, ms8.height = 1;
  CHECK(cudaGraphAddMemsetNode(&child_set, child, nullptr, 0, &ms8));
  CHECK(cudaGraphAddEmptyNode(&child_empty, child, &child_set, 1));
  CHECK(cudaGraphAddChildGraphNode(&sub, g, &rec, 1, child));
  cudaMemcpy3DParms op = {};  // b back as N / 1024 rows of 1024 bytes, back to back
  op.srcPtr = make_cudaPitchedPtr(b, 1024, 1024, N / 1024);
  op.dstPtr = make_cudaPitchedPtr(out, 1024, 1024, N / 1024);
  op.extent = make_cudaExtent(1024, N / 1024, 1);
  op.kind = cudaMemcpyDefault;
  CHECK(cudaGraphAddMemcpyNode(&d2h, g, &sub, 1, &op));
  CHECK(cudaGraphAddMemcpyNode1D(&d2h_pin, g, &h2d_pin, 1, out2, d, Q, cudaMemcpyDeviceToHost));
  int v = 5;
  void *kargs[] = {&scratch, &v};
  cudaKernelNodeParams kp = {};
  kp.func = (void *)mark, kp.gridDim = dim3(1), kp.blockDim = dim3(64), kp.kernelParams = kargs;
  CHECK(cudaGraphAddKernelNode(&kern, g, nullptr, 0, &kp));
  v = 77;  // the node keeps the value it was given
  cudaGraphNodeParams np = {};
  np.type = cudaGraphNodeTypeEmpty;
  CHECK(cudaGraphAddNode(&none, g, &d2h_pin, nullptr, 1, &np));
  CHECK(cudaGraphAddDependencies(g, &kern, &d2h, nullptr, 1));

  size_t nodes = 0, roots = 0, ndeps = 4;
  CHECK(cudaGraphGetNodes(g, nullptr, &nodes));
  CHECK(cudaGraphGetRootNodes(g, nullptr, &roots));
  cudaGraphNode_t deps[4];
  cudaGraphEdgeData edges[4];
  CHECK(cudaGraphNodeGetDependencies(d2h, deps, edges, &ndeps));
  cudaGraphNodeType t_sub, t_rec, t_box, t_none;
  CHECK(cudaGraphNodeGetType(sub, &t_sub));
  CHECK(cudaGraphNodeGetType(rec, &t_rec));
  CHECK(cudaGraphNodeGetType(box, &t_box));
  CHECK(cudaGraphNodeGetType(none, &t_none));
  cudaKernelNodeParams back = {};
  CHECK(cudaGraphKernelNodeGetParams(kern, &back));
  printf("graph: %zu nodes, %zu roots; the copy back after %zu (%s), types %d %d %d %d\n", nodes,
         roots, ndeps,
         ndeps == 2 && ((deps[0] == sub && deps[1] == kern) || (deps[0] == kern && deps[1] == sub))
             ? "child, kernel" : "?",
         (int)t_sub, (int)t_rec, (int)t_box, (int)t_none);
  printf("kernel node: value %d, block %u, func %s\n", *(int *)back.kernelParams[1],
         back.blockDim.x, back.func == (void *)mark ? "mark" : "?");

  cudaGraphExec_t x;
  CHECK(cudaGraphInstantiate(&x, g, 0));
  std::vector<unsigned char> cm(cp * H);
  int bad = 0;
  unsigned seed = 7;
  for (int r = 0; r < 3; r++) {
    for (size_t i = 0; i < N; i++)
      in[i] = (unsigned char)((seed = seed * 1103515245u + 12345u) >> 16);
    for (size_t i = 0; i < Q; i++) pin[i] = (unsigned char)(i * 7 + r);
    memset(out, 0, N);
    memset(out2, 0, Q);
    CHECK(cudaEventRecord(ev0, s));
    CHECK(cudaGraphLaunch(x, s));
    CHECK(cudaStreamSynchronize(s));
    for (size_t i = 0; i < N; i++) {
      static const unsigned char pat[4] = {0x44, 0x33, 0x22, 0x11};
      unsigned char want = i < 16 ? 0x55 : i < N / 2 ? in[i] : pat[i % 4];
      bad += out[i] != want;
    }
    bad += memcmp(out2, pin, Q) != 0;
    CHECK(cudaMemcpy2D(hc, W, c, cp, W, H, cudaMemcpyDeviceToHost));
    for (size_t y = 0; y < H; y++)
      for (size_t i = 0; i < W; i++) {
        unsigned char want = i % 2 ? 0xbe : 0xef;
        if (y >= 4 && y < 24 && i >= 32 && i < 96) want = in[(y - 4 + 2) * W + 16 + (i - 32)];
        bad += hc[y * W + i] != want;
      }
  }
  float ms_elapsed = -1;
  cudaError_t te = cudaEventElapsedTime(&ms_elapsed, ev0, ev);
  printf("3 launches, %d wrong; the graph recorded its event: %s\n", bad,
         te == cudaSuccess && ms_elapsed >= 0 ? "yes" : cudaGetErrorName(te));

  v = 7;
  CHECK(cudaGraphExecKernelNodeSetParams(x, kern, &kp));  // the exec's node: 7
  CHECK(cudaGraphLaunch(x, s));
  v = 9;
  CHECK(cudaGraphKernelNodeSetParams(kern, &kp));  // the graph's node: 9, the exec keeps 7
  cudaGraph_t twin;
  cudaGraphExec_t tx;
  CHECK(cudaGraphClone(&twin, g));
  CHECK(cudaGraphInstantiate(&tx, twin, 0));
  memset(out, 0, N);
  CHECK(cudaGraphLaunch(tx, s));
  CHECK(cudaStreamSynchronize(s));
  int twin_bad = 0;
  for (size_t i = 16; i < N / 2; i++) twin_bad += out[i] != in[i];
  size_t twin_nodes = 0;
  CHECK(cudaGraphGetNodes(twin, nullptr, &twin_nodes));
  printf("clone: %zu nodes, %d wrong\n", twin_nodes, twin_bad);
  cudaGraphExecUpdateResultInfo info = {};
  cudaError_t ue = cudaGraphExecUpdate(x, twin, &info);
  printf("update from the clone: %s, result %d\n", cudaGetErrorName(ue), (int)info.result);
  CHECK(cudaGraphLaunch(x, s));  // the clone's kernel node: 9
  CHECK(cudaStreamSynchronize(s));
  cudaGraph_t other;
  cudaGraphNode_t lone;
  CHECK(cudaGraphCreate(&other, 0));
  CHECK(cudaGraphAddEmptyNode(&lone, other, nullptr, 0));
  ue = cudaGraphExecUpdate(x, other, &info);
  printf("update to another shape: %s, result %d\n", cudaGetErrorName(ue), (int)info.result);

  // an event wait node: the copy waits for s2, held by a slow host function, to record
  cudaGraph_t gw;
  cudaGraphExec_t xw;
  cudaEvent_t ready;
  CHECK(cudaEventCreate(&ready));
  CHECK(cudaGraphCreate(&gw, 0));
  cudaGraphNode_t wait, after;
  CHECK(cudaGraphAddEventWaitNode(&wait, gw, nullptr, 0, ready));
  CHECK(cudaGraphAddMemcpyNode1D(&after, gw, &wait, 1, out2, d, Q, cudaMemcpyDeviceToHost));
  CHECK(cudaGraphInstantiate(&xw, gw, 0));
  CHECK(cudaLaunchHostFunc(s2, slow, nullptr));
  CHECK(cudaMemsetAsync(d, 0x77, Q, s2));
  CHECK(cudaEventRecord(ready, s2));
  CHECK(cudaGraphLaunch(xw, s));
  CHECK(cudaStreamSynchronize(s));
  int waited = 0;
  for (size_t i = 0; i < Q; i++) waited += out2[i] == 0x77;
  printf("wait node: the copy saw the other stream's set: %s\n", waited == (int)Q ? "yes" : "no");

  // a captured graph's exec, updated from a second capture of the same shape
  cudaGraph_t c1, c2;
  cudaGraphExec_t cx;
  CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  CHECK(cudaMemsetAsync(d, 0x21, Q, s));
  CHECK(cudaMemcpyAsync(out2, d, Q, cudaMemcpyDeviceToHost, s));
  CHECK(cudaStreamEndCapture(s, &c1));
  CHECK(cudaGraphInstantiate(&cx, c1, 0));
  CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  CHECK(cudaMemsetAsync(d, 0x42, Q, s));
  CHECK(cudaMemcpyAsync(out2, d, Q, cudaMemcpyDeviceToHost, s));
  CHECK(cudaStreamEndCapture(s, &c2));
  size_t cn = 0;
  cudaGraphNode_t clist[2];
  cudaGraphNodeType ct0, ct1;
  CHECK(cudaGraphGetNodes(c2, nullptr, &cn));
  size_t two = 2;
  CHECK(cudaGraphGetNodes(c2, clist, &two));
  CHECK(cudaGraphNodeGetType(clist[0], &ct0));
  CHECK(cudaGraphNodeGetType(clist[1], &ct1));
  ue = cudaGraphExecUpdate(cx, c2, &info);
  CHECK(cudaGraphLaunch(cx, s));
  CHECK(cudaStreamSynchronize(s));
  printf("captured: %zu nodes (types %d %d), update %s, the exec set 0x%02x\n", cn, (int)ct0,
         (int)ct1, cudaGetErrorName(ue), out2[Q - 1]);

  CHECK(cudaGraphExecDestroy(x));
  CHECK(cudaGraphExecDestroy(tx));
  CHECK(cudaGraphExecDestroy(xw));
  CHECK(cudaGraphExecDestroy(cx));
  CHECK(cudaGraphDestroy(g));
  CHECK(cudaGraphDestroy(twin));
  CHECK(cudaGraphDestroy(child));
  CHECK(cudaGraphDestroy(other));
  CHECK(cudaGraphDestroy(gw));
  CHECK(cudaGraphDestroy(c1));
  CHECK(cudaGraphDestroy(c2));
  int ok = bad == 0 && twin_bad == 0 && waited == (int)Q && out2[Q - 1] == 0x42;
  CHECK(cudaFreeHost(in));
  CHECK(cudaFreeHost(out));
  CHECK(cudaFreeHost(pin));
  CHECK(cudaFreeHost(out2));
  printf("%s\n", ok ? "PASSED" : "FAILED");
  return ok ? 0 : 1;
}
