/* The explicit graph API on the driver layer, linked against libcuda.so.1 as a driver API
 * program is: a graph built node by node (memset, device-to-device copy, kernel, empty, event
 * record, child graph), asked about, instantiated, launched, its kernel node changed in the
 * exec, cloned, and an update that changes the topology refused. Against the in-memory
 * daemon the memory is checked here and each launch at the daemon. argv[1]: a cubin with
 * fill(unsigned *p, unsigned v, unsigned long long n). */
#include <cuda.h>
#include <stdio.h>
#include <string.h>

#define OK(expr) do { CUresult e_ = (expr); if (e_) { printf("FAIL %s: %d\n", #expr, e_); \
                                                      return 1; } } while (0)

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    CUdevice dev;
    CUcontext ctx;
    OK(cuInit(0));
    OK(cuDeviceGet(&dev, 0));
    OK(cuDevicePrimaryCtxRetain(&ctx, dev));
    OK(cuCtxSetCurrent(ctx));
    CUmodule mod;
    CUfunction fill;
    OK(cuModuleLoad(&mod, argv[1]));
    OK(cuModuleGetFunction(&fill, mod, "fill"));
    enum { N = 4096 };
    CUdeviceptr a, b;
    OK(cuMemAlloc(&a, N));
    OK(cuMemAlloc(&b, N));
    CUstream s;
    OK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CUevent ev;
    OK(cuEventCreate(&ev, 0));

    CUgraph g, child;
    OK(cuGraphCreate(&g, 0));
    CUgraphNode set, copy, kern, empty, rec, sub;
    CUDA_MEMSET_NODE_PARAMS ms = {a, 0, 0x11223344u, 4, N / 4, 1};
    OK(cuGraphAddMemsetNode(&set, g, NULL, 0, &ms, ctx));
    CUDA_MEMCPY3D cp;
    memset(&cp, 0, sizeof cp);
    cp.srcMemoryType = CU_MEMORYTYPE_DEVICE, cp.srcDevice = a, cp.srcPitch = N, cp.srcHeight = 1;
    cp.dstMemoryType = CU_MEMORYTYPE_DEVICE, cp.dstDevice = b, cp.dstPitch = N, cp.dstHeight = 1;
    cp.WidthInBytes = N, cp.Height = 1, cp.Depth = 1;
    OK(cuGraphAddMemcpyNode(&copy, g, &set, 1, &cp, ctx));
    unsigned v = 5;
    unsigned long long count = 8;
    void *args[] = {&b, &v, &count};
    CUDA_KERNEL_NODE_PARAMS kp;
    memset(&kp, 0, sizeof kp);
    kp.func = fill, kp.gridDimX = 1, kp.gridDimY = 1, kp.gridDimZ = 1;
    kp.blockDimX = 8, kp.blockDimY = 1, kp.blockDimZ = 1, kp.kernelParams = args;
    OK(cuGraphAddKernelNode(&kern, g, &copy, 1, &kp));
    v = 77; /* the node keeps the values it was given */
    OK(cuGraphAddEmptyNode(&empty, g, &kern, 1));
    OK(cuGraphAddEventRecordNode(&rec, g, &empty, 1, ev));
    OK(cuGraphCreate(&child, 0));
    CUgraphNode child_set;
    CUDA_MEMSET_NODE_PARAMS ms8 = {a, 0, 0x55, 1, 16, 1};
    OK(cuGraphAddMemsetNode(&child_set, child, NULL, 0, &ms8, ctx));
    OK(cuGraphAddChildGraphNode(&sub, g, &rec, 1, child));

    size_t nn = 0, nroots = 0, ndeps = 4;
    CUgraphNode roots[2], deps[4];
    OK(cuGraphGetNodes(g, NULL, &nn));
    OK(cuGraphGetRootNodes(g, NULL, &nroots));
    OK(cuGraphGetRootNodes(g, roots, &nroots));
    CUgraphEdgeData edges[4];
    OK(cuGraphNodeGetDependencies(copy, deps, edges, &ndeps));
    CUgraphNodeType kt, ct;
    OK(cuGraphNodeGetType(kern, &kt));
    OK(cuGraphNodeGetType(sub, &ct));
    CUDA_KERNEL_NODE_PARAMS back;
    OK(cuGraphKernelNodeGetParams(kern, &back));
    printf("graph: %zu nodes, %zu root (%s), copy after %s, types %d %d, kernel v %u block %u\n",
           nn, nroots, roots[0] == set ? "the memset" : "?",
           ndeps == 1 && deps[0] == set ? "the memset" : "?", (int)kt, (int)ct,
           *(unsigned *)back.kernelParams[1], back.blockDimX);
    kp.gridDimX = 0;
    printf("a kernel node with a zero grid: %d\n", cuGraphAddKernelNode(&empty, g, NULL, 0, &kp));
    kp.gridDimX = 1;

    CUgraphExec x;
    OK(cuGraphInstantiate(&x, g, 0));
    OK(cuGraphLaunch(x, s));
    OK(cuStreamSynchronize(s));
    static unsigned ha[N / 4], hb[N / 4];
    OK(cuMemcpyDtoH(ha, a, N));
    OK(cuMemcpyDtoH(hb, b, N));
    int b_ok = 1, a_ok = 1;
    for (int i = 0; i < N / 4; i++) {
        b_ok &= hb[i] == 0x11223344u;
        a_ok &= ha[i] == (i < 4 ? 0x55555555u : 0x11223344u);
    }
    printf("launched: copy of the memset %s, child graph's memset after it %s, event %d\n",
           b_ok ? "yes" : "no", a_ok ? "yes" : "no", cuEventQuery(ev));

    v = 9;
    OK(cuGraphExecKernelNodeSetParams(x, kern, &kp));
    OK(cuGraphLaunch(x, s));
    CUgraph twin;
    CUgraphExec tx;
    OK(cuGraphClone(&twin, g));
    OK(cuGraphInstantiate(&tx, twin, 0));
    OK(cuGraphLaunch(tx, s));
    OK(cuStreamSynchronize(s));

    CUgraph other;
    CUgraphNode lone;
    OK(cuGraphCreate(&other, 0));
    OK(cuGraphAddEmptyNode(&lone, other, NULL, 0));
    CUgraphExecUpdateResultInfo info;
    CUresult up = cuGraphExecUpdate(x, other, &info);
    printf("update to another topology: %d, result %d\n", up, (int)info.result);
    printf("destroying a node: %d\n", cuGraphDestroyNode(lone));

    OK(cuGraphExecDestroy(x));
    OK(cuGraphExecDestroy(tx));
    OK(cuGraphDestroy(g));
    OK(cuGraphDestroy(twin));
    OK(cuGraphDestroy(child));
    OK(cuGraphDestroy(other));
    printf("graph destroyed twice: %d\n", cuGraphDestroy(g));
    OK(cuStreamDestroy(s));
    OK(cuMemFree(a));
    OK(cuMemFree(b));
    printf("PASSED\n");
    return 0;
}
