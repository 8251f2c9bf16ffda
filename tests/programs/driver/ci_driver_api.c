/* The driver API as a framework uses it: libcuda.so.1 dlopened, every entry point through
 * cuGetProcAddress, contexts made current by hand, modules loaded from images (a cubin file,
 * cubin bytes, a fat binary as a library, PTX text), launches with kernelParams and with a
 * packed buffer. Prints one line per check; the CI test compares them exactly.
 *
 *   ci_driver_api KERNELS.cubin KERNELS.fatbin
 *
 * CI: the in-memory backend runs no kernels, so launches are checked at the daemon (their
 * parameter bytes), memory by round trips.
 */
#include <cuda.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static CUresult (*getProc)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);

static void *get(const char *name, int version) {
    void *fn = NULL;
    CUdriverProcAddressQueryResult st;
    if (getProc(name, &fn, version, CU_GET_PROC_ADDRESS_DEFAULT, &st) != CUDA_SUCCESS || !fn) {
        printf("no entry point %s@%d (status %d)\n", name, version, (int)st);
        exit(2);
    }
    return fn;
}

#define F(name, ver, ...) ((CUresult(*)(__VA_ARGS__))get(#name, ver))
#define SHOW(label, expr) printf("%s: %d\n", label, (int)(expr))
#define OK(expr) do { CUresult e_ = (expr); if (e_) { printf("FAIL %s: %d\n", #expr, e_); \
                       return 1; } } while (0)

static int callback_ran;
static void host_fn(void *p) { *(int *)p = 42; }
static void keep_function(void *out, CUfunction f) { *(CUfunction *)out = f; }

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc(*n);
    if (fread(b, 1, *n, f) != *n) { free(b); b = NULL; }
    fclose(f);
    return b;
}

static const char ptx[] =
    "//\n.version 8.0\n.target sm_90\n.address_size 64\n"
    ".visible .entry scale(\n .param .u64 scale_param_0,\n .param .f32 scale_param_1,\n"
    " .param .align 8 .b8 scale_param_2[12]\n)\n{\n ret;\n}\n";

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    void *lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib) { printf("dlopen: %s\n", dlerror()); return 2; }
    getProc = dlsym(lib, "cuGetProcAddress_v2");
    SHOW("cuInit", F(cuInit, 2000, unsigned)(0));
    int version = 0;
    F(cuDriverGetVersion, 2020, int *)(&version);
    printf("driver version >= 12000: %s\n", version >= 12000 ? "yes" : "no");
    int count = 0;
    SHOW("cuDeviceGetCount", F(cuDeviceGetCount, 2000, int *)(&count));
    CUdevice dev;
    SHOW("cuDeviceGet 99", F(cuDeviceGet, 2000, CUdevice *, int)(&dev, 99));
    OK(F(cuDeviceGet, 2000, CUdevice *, int)(&dev, 0));
    char name[128];
    OK(F(cuDeviceGetName, 2000, char *, int, CUdevice)(name, sizeof name, dev));
    int major = 0;
    OK(F(cuDeviceGetAttribute, 2000, int *, CUdevice_attribute, CUdevice)(
        &major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev));
    printf("device 0: %s, compute capability %d\n", name, major);

    /* no context yet: what the runtime probes for */
    CUcontext ctx = (CUcontext)0x1;
    OK(F(cuCtxGetCurrent, 4000, CUcontext *)(&ctx));
    printf("current context at start: %s\n", ctx ? "some" : "none");
    unsigned api = 0;
    SHOW("cuCtxGetApiVersion(NULL) with none current",
         F(cuCtxGetApiVersion, 3020, CUcontext, unsigned *)(NULL, &api));
    SHOW("cuCtxGetApiVersion(bogus)",
         F(cuCtxGetApiVersion, 3020, CUcontext, unsigned *)((CUcontext)0x1234, &api));
    CUdeviceptr d0;
    SHOW("cuMemAlloc without a context", F(cuMemAlloc, 3020, CUdeviceptr *, size_t)(&d0, 64));
    const char *ename = NULL;
    F(cuGetErrorName, 6000, CUresult, const char **)(CUDA_ERROR_INVALID_CONTEXT, &ename);
    printf("201 is %s\n", ename);

    /* the primary context */
    CUcontext primary;
    OK(F(cuDevicePrimaryCtxRetain, 7000, CUcontext *, CUdevice)(&primary, dev));
    unsigned flags = 9;
    int active = 0;
    OK(F(cuDevicePrimaryCtxGetState, 7000, CUdevice, unsigned *, int *)(dev, &flags, &active));
    printf("primary context: active %d, flags %u\n", active, flags);
    OK(F(cuCtxSetCurrent, 4000, CUcontext)(primary));
    SHOW("cuCtxGetApiVersion(NULL)", F(cuCtxGetApiVersion, 3020, CUcontext, unsigned *)(NULL, &api));
    printf("api version %u\n", api);
    CUdevice cd = -1;
    OK(F(cuCtxGetDevice, 13000, CUdevice *, CUcontext)(&cd, NULL));
    printf("context device %d\n", (int)cd);

    /* a context of its own: pushed, popped, destroyed */
    CUcontext mine, popped;
    OK(F(cuCtxCreate, 3020, CUcontext *, unsigned, CUdevice)(&mine, 0, dev));
    OK(F(cuCtxGetCurrent, 4000, CUcontext *)(&ctx));
    printf("created context is current: %s\n", ctx == mine ? "yes" : "no");
    /* what cuBLAS asks of the tools thread-local table (slot 2): the current context */
    static const CUuuid tools_tls = {{0x42, 0xd8, 0x5a, 0x81, 0x23, 0xf6, 0xcb, 0x47, 0x82,
                                      0x98, 0xf6, 0xe7, 0x8a, 0x3a, 0xec, 0xdc}};
    const void *const *tls = NULL;
    OK(F(cuGetExportTable, 3000, const void **, const CUuuid *)((const void **)&tls, &tools_tls));
    CUcontext via_tls = NULL;
    OK(((CUresult(*)(CUcontext *))tls[2])(&via_tls));
    printf("tools table: size %d, current context: %s\n", (int)(uintptr_t)tls[0],
           via_tls == mine ? "yes" : "no");
    unsigned cflags = 0;
    OK(F(cuCtxGetFlags, 7000, unsigned *)(&cflags));
    printf("context flags map host: %s\n", cflags & CU_CTX_MAP_HOST ? "yes" : "no");
    OK(F(cuCtxPopCurrent, 4000, CUcontext *)(&popped));
    OK(F(cuCtxGetCurrent, 4000, CUcontext *)(&ctx));
    printf("popped it: %s, primary current again: %s\n", popped == mine ? "yes" : "no",
           ctx == primary ? "yes" : "no");
    OK(F(cuCtxDestroy, 4000, CUcontext)(mine));
    SHOW("cuCtxGetApiVersion(destroyed)", F(cuCtxGetApiVersion, 3020, CUcontext, unsigned *)(mine, &api));

    /* memory */
    const size_t n = 1 << 20;
    CUdeviceptr a, b;
    OK(F(cuMemAlloc, 3020, CUdeviceptr *, size_t)(&a, n));
    OK(F(cuMemAlloc, 3020, CUdeviceptr *, size_t)(&b, n));
    unsigned *h = malloc(n);
    OK(F(cuMemsetD32, 3020, CUdeviceptr, unsigned, size_t)(a, 0xdeadbeef, n / 4));
    OK(F(cuMemsetD16, 3020, CUdeviceptr, unsigned short, size_t)(a, 0x1234, 2));
    OK(F(cuMemsetD8, 3020, CUdeviceptr, unsigned char, size_t)(a + 4, 0x56, 1));
    OK(F(cuMemcpyDtoH, 3020, void *, CUdeviceptr, size_t)(h, a, n));
    int bad = 0;
    for (size_t i = 2; i < n / 4; i++) bad += h[i] != 0xdeadbeef;
    printf("sets: %08x %08x, others bad %d\n", h[0], h[1], bad);
    for (size_t i = 0; i < n / 4; i++) h[i] = (unsigned)(i * 2654435761u);
    OK(F(cuMemcpyHtoD, 3020, CUdeviceptr, const void *, size_t)(a, h, n));
    OK(F(cuMemcpyDtoD, 3020, CUdeviceptr, CUdeviceptr, size_t)(b, a, n));
    unsigned *back;
    OK(F(cuMemAllocHost, 3020, void **, size_t)((void **)&back, n));
    CUstream s;
    OK(F(cuStreamCreate, 2000, CUstream *, unsigned)(&s, CU_STREAM_NON_BLOCKING));
    OK(F(cuMemcpyDtoHAsync, 3020, void *, CUdeviceptr, size_t, CUstream)(back, b, n, s));
    OK(F(cuLaunchHostFunc, 10000, CUstream, CUhostFn, void *)(s, host_fn, &callback_ran));
    OK(F(cuStreamSynchronize, 2000, CUstream)(s));
    printf("round trip through two allocations and pinned memory: %s; host function: %d\n",
           memcmp(back, h, n) ? "differs" : "equal", callback_ran);
    /* what cuBLAS-Lt asks of 21318c60 for the key of its per-stream workspace: the stream a
     * handle stands for (slot 51), then its id (slot 39) */
    static const CUuuid lt_uuid = {{0x21, 0x31, 0x8c, 0x60, 0x97, 0x14, 0x32, 0x48, 0x8c, 0xa6,
                                    0x41, 0xff, 0x73, 0x24, 0xc8, 0xf2}};
    const void *const *lt = NULL;
    OK(F(cuGetExportTable, 3000, const void **, const CUuuid *)((const void **)&lt, &lt_uuid));
    CUresult (*stream_of)(CUcontext, CUstream, CUstream *, int) =
        (CUresult(*)(CUcontext, CUstream, CUstream *, int))lt[51];
    CUresult (*stream_id)(CUcontext, CUstream, unsigned long long *) =
        (CUresult(*)(CUcontext, CUstream, unsigned long long *))lt[39];
    CUstream got, got_pt, got_null;
    unsigned long long id_s = 0, id_lt = 1, id_pt = 0, id_pt_lt = 1, id_null = 1, id_legacy = 0;
    OK(stream_of(primary, s, &got, 0));
    OK(stream_id(primary, got, &id_lt));
    OK(F(cuStreamGetId, 12000, CUstream, unsigned long long *)(s, &id_s));
    OK(stream_of(primary, CU_STREAM_PER_THREAD, &got_pt, 1));
    OK(stream_id(primary, got_pt, &id_pt_lt));
    OK(F(cuStreamGetId, 12000, CUstream, unsigned long long *)(CU_STREAM_PER_THREAD, &id_pt));
    OK(stream_of(primary, NULL, &got_null, 0));
    OK(stream_id(primary, got_null, &id_null));
    OK(F(cuStreamGetId, 12000, CUstream, unsigned long long *)(CU_STREAM_LEGACY, &id_legacy));
    CUstream bogus_out = NULL;
    printf("workspace keys: stream %s, per-thread %s, legacy %s, distinct %s, bogus %d\n",
           got == s && id_lt == id_s ? "same" : "differ",
           id_pt_lt == id_pt ? "same" : "differ", id_null == id_legacy ? "same" : "differ",
           id_s != id_pt && id_s != id_legacy && id_pt != id_legacy ? "yes" : "no",
           stream_of(primary, (CUstream)&bogus_out, &bogus_out, 0));
    CUdeviceptr base;
    size_t size;
    OK(F(cuMemGetAddressRange, 3020, CUdeviceptr *, size_t *, CUdeviceptr)(&base, &size, a + 100));
    unsigned type = 0;
    OK(F(cuPointerGetAttribute, 4000, void *, CUpointer_attribute, CUdeviceptr)(
        &type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, a + 8));
    printf("address range: base ok %s, size %zu, memory type %u\n", base == a ? "yes" : "no",
           size, type);

    /* modules: a cubin file, the same bytes, a fat binary as a library, PTX text */
    CUmodule m1, m2, m3;
    OK(F(cuModuleLoad, 2000, CUmodule *, const char *)(&m1, argv[1]));
    size_t cubin_n, fatbin_n;
    char *cubin = slurp(argv[1], &cubin_n), *fatbin = slurp(argv[2], &fatbin_n);
    OK(F(cuModuleLoadData, 2000, CUmodule *, const void *)(&m2, cubin));
    CUfunction fill, nope;
    OK(F(cuModuleGetFunction, 2000, CUfunction *, CUmodule, const char *)(&fill, m1, "fill"));
    SHOW("cuModuleGetFunction(nope)",
         F(cuModuleGetFunction, 2000, CUfunction *, CUmodule, const char *)(&nope, m2, "nope"));
    size_t off[3], sz[3];
    for (int i = 0; i < 3; i++)
        OK(F(cuFuncGetParamInfo, 12040, CUfunction, size_t, size_t *, size_t *)(fill, i, &off[i], &sz[i]));
    printf("fill's parameters: %zu+%zu %zu+%zu %zu+%zu; a fourth: %d\n", off[0], sz[0], off[1], sz[1],
           off[2], sz[2],
           F(cuFuncGetParamInfo, 12040, CUfunction, size_t, size_t *, size_t *)(fill, 3, &off[0], &sz[0]));
    unsigned value = 0x01020304;
    unsigned long long count64 = n / 4;
    void *params[] = {&b, &value, &count64};
    OK(F(cuLaunchKernel, 4000, CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
         unsigned, unsigned, CUstream, void **, void **)(fill, 256, 1, 1, 128, 1, 1, 0, s, params,
                                                         NULL));
    struct { CUdeviceptr p; unsigned v; unsigned pad; unsigned long long c; } packed = {a, 7, 0, 9};
    size_t psize = sizeof packed;
    void *extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, &packed, CU_LAUNCH_PARAM_BUFFER_SIZE, &psize,
                     CU_LAUNCH_PARAM_END};
    OK(F(cuLaunchKernel, 4000, CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
         unsigned, unsigned, CUstream, void **, void **)(fill, 2, 3, 4, 32, 2, 1, 64, NULL, NULL,
                                                         extra));
    SHOW("cuLaunchKernel with a zero grid",
         F(cuLaunchKernel, 4000, CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
           unsigned, unsigned, CUstream, void **, void **)(fill, 0, 1, 1, 1, 1, 1, 0, NULL, params,
                                                           NULL));
    /* refused by the device: the launch itself says so, and nothing is left for later */
    SHOW("cuLaunchKernel with grid.y 65536",
         F(cuLaunchKernel, 4000, CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
           unsigned, unsigned, CUstream, void **, void **)(fill, 1, 65536, 1, 1, 1, 1, 0, NULL,
                                                           params, NULL));
    SHOW("cuLaunchKernel with 64 KiB dynamic shared memory",
         F(cuLaunchKernel, 4000, CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
           unsigned, unsigned, CUstream, void **, void **)(fill, 1, 1, 1, 1, 1, 1, 65536, NULL,
                                                           params, NULL));
    SHOW("cuCtxSynchronize after them", F(cuCtxSynchronize, 2000, void)());
    CUdeviceptr g;
    size_t gsize;
    OK(F(cuModuleGetGlobal, 3020, CUdeviceptr *, size_t *, CUmodule, const char *)(&g, &gsize, m1, "table"));
    unsigned table[4];
    OK(F(cuMemcpyDtoH, 3020, void *, CUdeviceptr, size_t)(table, g, sizeof table));
    printf("global table: %zu bytes, starts %u %u %u %u\n", gsize, table[0], table[1], table[2],
           table[3]);
    CUlibrary libr;
    CUkernel k;
    OK(F(cuLibraryLoadData, 12000, CUlibrary *, const void *, CUjit_option *, void **, unsigned,
         CUlibraryOption *, void **, unsigned)(&libr, fatbin, NULL, NULL, 0, NULL, NULL, 0));
    OK(F(cuLibraryGetKernel, 12000, CUkernel *, CUlibrary, const char *)(&k, libr, "fill"));
    OK(F(cuLaunchKernel, 4000, CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
         unsigned, unsigned, CUstream, void **, void **)((CUfunction)k, 1, 1, 1, 1, 1, 1, 0, s, params,
                                                         NULL));
    OK(F(cuModuleLoadData, 2000, CUmodule *, const void *)(&m3, ptx));
    CUfunction scale;
    OK(F(cuModuleGetFunction, 2000, CUfunction *, CUmodule, const char *)(&scale, m3, "scale"));
    float f = 2.5f;
    struct { unsigned x, y, z; } v3 = {1, 2, 3};
    void *sparams[] = {&a, &f, &v3};
    OK(F(cuLaunchKernel, 4000, CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
         unsigned, unsigned, CUstream, void **, void **)(scale, 1, 1, 1, 64, 1, 1, 0, NULL, sparams,
                                                         NULL));
    OK(F(cuCtxSynchronize, 2000, void)());
    printf("launches queued: 4\n");

    /* a module's functions by enumeration; cuFFT finds the kernel of a module it made that way
     * (export table 6e163fbe, slot 7), and keys its plans by the context's id (21318c60,
     * slot 4) */
    unsigned nf = 0, nk = 0;
    OK(F(cuModuleGetFunctionCount, 12040, unsigned *, CUmodule)(&nf, m3));
    CUfunction listed[4] = {0};
    OK(F(cuModuleEnumerateFunctions, 12040, CUfunction *, unsigned, CUmodule)(listed, 4, m3));
    OK(F(cuLibraryGetKernelCount, 12040, unsigned *, CUlibrary)(&nk, libr));
    CUkernel klisted[2] = {0};
    OK(F(cuLibraryEnumerateKernels, 12040, CUkernel *, unsigned, CUlibrary)(klisted, 2, libr));
    static const CUuuid fft_uuid = {{0x6e, 0x16, 0x3f, 0xbe, 0xb9, 0x58, 0x44, 0x4d, 0x83, 0x5c,
                                     0xe1, 0x82, 0xaf, 0xf1, 0x99, 0x1e}};
    const void *const *fft = NULL;
    OK(F(cuGetExportTable, 3000, const void **, const CUuuid *)((const void **)&fft, &fft_uuid));
    CUfunction found = NULL;
    int each = ((int (*)(CUcontext, CUmodule, void (*)(void *, CUfunction), void *))fft[7])(
        NULL, m3, keep_function, &found);
    unsigned long long ctx_id = 0, lt_id = 0;
    OK(F(cuCtxGetId, 12000, CUcontext, unsigned long long *)(NULL, &ctx_id));
    OK(((CUresult(*)(CUcontext, unsigned long long *))lt[4])(NULL, &lt_id));
    printf("functions: module %u (%s), library %u (%s), cuFFT's way %d (%s); context id %s\n",
           nf, listed[0] == scale && !listed[1] ? "scale" : "?", nk,
           klisted[0] == k && !klisted[1] ? "fill" : "?", each, found == scale ? "scale" : "?",
           ctx_id && ctx_id == lt_id ? "same" : "differs");

    /* tensor maps (TMA descriptors): made by the GPU's driver, for this program's addresses */
    CUtensorMap tmap, before;
    cuuint64_t tdims[2] = {64, 16}, tstrides[1] = {256};
    cuuint32_t tbox[2] = {32, 8}, testrides[2] = {1, 1};
    CUresult (*encode)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *, const cuuint64_t *,
                       const cuuint64_t *, const cuuint32_t *, const cuuint32_t *,
                       CUtensorMapInterleave, CUtensorMapSwizzle, CUtensorMapL2promotion,
                       CUtensorMapFloatOOBfill) =
        F(cuTensorMapEncodeTiled, 12000, CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *,
          const cuuint64_t *, const cuuint64_t *, const cuuint32_t *, const cuuint32_t *,
          CUtensorMapInterleave, CUtensorMapSwizzle, CUtensorMapL2promotion,
          CUtensorMapFloatOOBfill);
    CUresult tiled = encode(&tmap, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 2, (void *)a, tdims, tstrides,
                            tbox, testrides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                            CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_NONE,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    before = tmap;
    CUresult replaced = F(cuTensorMapReplaceAddress, 12000, CUtensorMap *, void *)(
        &tmap, (void *)(a + 4096));
    CUresult misaligned = encode(&tmap, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 2, (void *)(a + 4), tdims,
                                 tstrides, tbox, testrides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                 CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_NONE,
                                 CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    printf("tensor map: tiled %d, address replaced %d (changed %s), misaligned %d\n", tiled,
           replaced, memcmp(&before, &tmap, sizeof tmap) ? "yes" : "no", misaligned);

    /* answers that only a setting changes are asked once (frameworks ask them often) */
    int maxt = 0, blocks = 0, dyn = 0, status = -1;
    for (int i = 0; i < 3; i++) {
        OK(F(cuFuncGetAttribute, 2020, int *, CUfunction_attribute, CUfunction)(
            &maxt, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, fill));
        OK(F(cuOccupancyMaxActiveBlocksPerMultiprocessor, 6050, int *, CUfunction, int, size_t)(
            &blocks, fill, 128, 0));
        OK(F(cuStreamIsCapturing, 10000, CUstream, CUstreamCaptureStatus *)(
            s, (CUstreamCaptureStatus *)&status));
    }
    OK(F(cuFuncSetAttribute, 9000, CUfunction, CUfunction_attribute, int)(
        fill, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 1024));
    OK(F(cuFuncGetAttribute, 2020, int *, CUfunction_attribute, CUfunction)(
        &dyn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, fill));
    printf("max threads %d, blocks per SM at 128 threads %d, capturing %d, dynamic smem set %d\n",
           maxt, blocks, status, dyn);

    /* events */
    CUevent e0, e1;
    OK(F(cuEventCreate, 2000, CUevent *, unsigned)(&e0, 0));
    OK(F(cuEventCreate, 2000, CUevent *, unsigned)(&e1, 0));
    OK(F(cuEventRecord, 2000, CUevent, CUstream)(e0, s));
    OK(F(cuEventRecord, 2000, CUevent, CUstream)(e1, s));
    OK(F(cuEventSynchronize, 2000, CUevent)(e1));
    float ms = -1;
    OK(F(cuEventElapsedTime, 2000, float *, CUevent, CUevent)(&ms, e0, e1));
    printf("events: elapsed >= 0: %s, query %d\n", ms >= 0 ? "yes" : "no",
           F(cuEventQuery, 2000, CUevent)(e1));

    OK(F(cuModuleUnload, 2000, CUmodule)(m1));
    SHOW("cuModuleUnload twice", F(cuModuleUnload, 2000, CUmodule)(m1));
    OK(F(cuMemFree, 3020, CUdeviceptr)(a));
    SHOW("cuMemFree twice", F(cuMemFree, 3020, CUdeviceptr)(a));
    OK(F(cuMemFreeHost, 2000, void *)(back));
    OK(F(cuDevicePrimaryCtxRelease, 11000, CUdevice)(dev));
    printf("PASSED\n");
    return 0;
}
