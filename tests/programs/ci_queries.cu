// Queries whose answers cannot change, asked again and again: device properties and
// attributes, a kernel's attributes, occupancy (also through the runtime's templates, which
// ask many of them), cluster occupancy. Every repetition must give the first one's answers.
// Usage: ci_queries [REPS] [set]: "set" changes a kernel attribute afterwards and asks again.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cuda_runtime.h>

__global__ void __launch_bounds__(256) scale(float *x, float a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= a;
}

struct Answers {
    cudaDeviceProp prop;
    int attrs[6];
    cudaFuncAttributes fa;
    int occ128, occ256, min_grid, block, cluster;
    cudaError_t cluster_st;
};

static const cudaDeviceAttr ATTRS[6] = {
    cudaDevAttrMaxThreadsPerBlock, cudaDevAttrMultiProcessorCount,
    cudaDevAttrComputeCapabilityMajor, cudaDevAttrComputeCapabilityMinor,
    cudaDevAttrMaxSharedMemoryPerBlockOptin, cudaDevAttrWarpSize};

#define CHECK(x)                                                               \
    do {                                                                       \
        cudaError_t e_ = (x);                                                  \
        if (e_ != cudaSuccess) {                                               \
            printf("%s: %s\nFAILED\n", #x, cudaGetErrorName(e_));              \
            return 1;                                                          \
        }                                                                      \
    } while (0)

static int ask(Answers *a) {
    memset(a, 0, sizeof *a);
    CHECK(cudaGetDeviceProperties(&a->prop, 0));
    for (int i = 0; i < 6; i++) CHECK(cudaDeviceGetAttribute(&a->attrs[i], ATTRS[i], 0));
    CHECK(cudaFuncGetAttributes(&a->fa, scale));
    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&a->occ128, scale, 128, 0));
    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(&a->occ256, scale, 256, 1024,
                                                                 cudaOccupancyDefault));
    CHECK(cudaOccupancyMaxPotentialBlockSize(&a->min_grid, &a->block, scale, 0, 0));
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(64);
    cfg.blockDim = dim3(128);
    a->cluster_st = cudaOccupancyMaxPotentialClusterSize(&a->cluster, scale, &cfg);
    return 0;
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 4;
    Answers first, again;
    if (ask(&first)) return 1;
    printf("device: %s, %d SMs, compute %d.%d\n", first.prop.name, first.attrs[1],
           first.attrs[2], first.attrs[3]);
    printf("attributes:");
    for (int i = 0; i < 6; i++) printf(" %d", first.attrs[i]);
    printf("\n");
    printf("scale: maxThreadsPerBlock %d numRegs %d maxDynamicSharedSizeBytes %d ptx %d\n",
           first.fa.maxThreadsPerBlock, first.fa.numRegs, first.fa.maxDynamicSharedSizeBytes,
           first.fa.ptxVersion);
    printf("occupancy: %d blocks of 128, %d blocks of 256 with 1 KiB\n", first.occ128,
           first.occ256);
    printf("potential block size: %d (min grid %d)\n", first.block, first.min_grid);
    printf("cluster size: %s %d\n", cudaGetErrorName(first.cluster_st),
           first.cluster_st == cudaSuccess ? first.cluster : 0);
    int mismatches = 0;
    for (int r = 1; r < reps; r++) {
        if (ask(&again)) return 1;
        mismatches += memcmp(&first, &again, sizeof first) != 0;
    }
    if (argc > 2 && !strcmp(argv[2], "set")) {
        CHECK(cudaFuncSetAttribute(scale, cudaFuncAttributeMaxDynamicSharedMemorySize, 8192));
        cudaFuncAttributes fa;
        CHECK(cudaFuncGetAttributes(&fa, scale));
        CHECK(cudaFuncGetAttributes(&fa, scale));
        printf("after set: maxDynamicSharedSizeBytes %s\n",
               fa.maxDynamicSharedSizeBytes == 8192 ? "8192" : "unchanged");
    }
    printf("repetitions %d, mismatches %d\n", reps, mismatches);
    printf(mismatches ? "FAILED\n" : "PASSED\n");
    return mismatches != 0;
}
