/* Initialization, versions, errors, entry points (cuGetProcAddress), and devices.
 *
 * Every call but the few CUDA allows before it fails with CUDA_ERROR_NOT_INITIALIZED until
 * cuInit succeeded, as with the real driver. cuInit reads the configuration (once, in the
 * core) and says on stderr why it fails when farcuda cannot be used; it does not connect
 * unless the device count can only come from the server (FARCUDA_SERVER).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fcd.h"
#include "../core/core.h"

static volatile int initialized;

CUresult fcd_status(int e) {
    switch (e) {
    case cudaErrorInvalidConfiguration: case cudaErrorInvalidPitchValue:
    case cudaErrorInvalidDevicePointer: case cudaErrorInvalidMemcpyDirection:
        return CUDA_ERROR_INVALID_VALUE;
    case cudaErrorInvalidSymbol: return CUDA_ERROR_NOT_FOUND;
    case cudaErrorInvalidDeviceFunction: return CUDA_ERROR_INVALID_HANDLE;
    case cudaErrorInsufficientDriver: return CUDA_ERROR_DEVICE_UNAVAILABLE;
    case cudaErrorMissingConfiguration: return CUDA_ERROR_INVALID_VALUE;
    default: return e; /* the two enumerations agree on every other code */
    }
}

CUresult fcd_enter(void) {
    return __atomic_load_n(&initialized, __ATOMIC_ACQUIRE) ? CUDA_SUCCESS
                                                           : CUDA_ERROR_NOT_INITIALIZED;
}

CUresult fcd_check_device(CUdevice dev) {
    CUresult st = fcd_enter();
    if (st) return st;
    return dev >= 0 && dev < fcc_device_count() ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
}

static unsigned char unsupported_seen[1024];

CUresult fcd_unsupported(int sym) {
    if (sym >= 0 && sym < fcd_nsyms &&
        !__atomic_exchange_n(&unsupported_seen[sym], 1, __ATOMIC_ACQ_REL))
        fcc_log("%s: %s (returns CUDA_ERROR_NOT_SUPPORTED)", fcd_sym_names[sym],
                fcd_sym_reasons[sym]);
    return CUDA_ERROR_NOT_SUPPORTED;
}

void fcd_note_once(int *flag, const char *fmt, ...) {
    if (__atomic_exchange_n(flag, 1, __ATOMIC_ACQ_REL)) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fcc_log("%s", buf);
}

/* ---------------- init, versions ---------------- */

FCD_EXPORT CUresult cuInit(unsigned int flags) {
    if (flags) return CUDA_ERROR_INVALID_VALUE;
    int st = fcc_init();
    if (st) return fcd_status(st);
    __atomic_store_n(&initialized, 1, __ATOMIC_RELEASE);
    return CUDA_SUCCESS;
}

/* The driver API version this stand-in implements (CUDA 13.0, driver 580), or the server's
 * when that is older: programs must not use what the server's GPU driver cannot do. Stable
 * for the life of the process: the runtime's integrity check hashes it. */
static int driver_version;

int fcd_driver_version(void);
int fcd_driver_version(void) {
    int v = __atomic_load_n(&driver_version, __ATOMIC_ACQUIRE);
    if (v) return v;
    v = 13000;
    if (fcc_init() == cudaSuccess) {
        int server = fcc_driver_version();
        if (server > 0 && server < v) v = server;
    }
    int zero = 0;
    __atomic_compare_exchange_n(&driver_version, &zero, v, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    return __atomic_load_n(&driver_version, __ATOMIC_ACQUIRE);
}

FCD_EXPORT CUresult cuDriverGetVersion(int *version) {
    if (!version) return CUDA_ERROR_INVALID_VALUE;
    *version = fcd_driver_version();
    return CUDA_SUCCESS;
}

static const fcd_error *find_error(CUresult e) {
    for (int i = 0; i < fcd_nerrors; i++)
        if (fcd_errors[i].code == e) return &fcd_errors[i];
    return NULL;
}

FCD_EXPORT CUresult cuGetErrorName(CUresult e, const char **name) {
    if (!name) return CUDA_ERROR_INVALID_VALUE;
    const fcd_error *d = find_error(e);
    *name = d ? d->name : NULL;
    return d ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

FCD_EXPORT CUresult cuGetErrorString(CUresult e, const char **text) {
    if (!text) return CUDA_ERROR_INVALID_VALUE;
    const fcd_error *d = find_error(e);
    *text = d ? d->text : NULL;
    return d ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

/* ---------------- cuGetProcAddress ---------------- */

/* FARCUDA_TRACE_DRIVER=1: every entry point and export table asked for, on stderr (what a
 * program or library needs of the driver, and what it got). */
int fcd_trace = -1;

int fcd_tracing(void) {
    if (__atomic_load_n(&fcd_trace, __ATOMIC_RELAXED) < 0) {
        const char *e = getenv("FARCUDA_TRACE_DRIVER");
        __atomic_store_n(&fcd_trace, e && *e && strcmp(e, "0") ? 1 : 0, __ATOMIC_RELAXED);
    }
    return fcd_trace;
}

/* The entry point named `symbol` as of CUDA `version`: the newest of its ABI versions not
 * newer than that, as the real driver chooses. */
static CUresult proc_address(const char *symbol, void **pfn, int version, unsigned long long flags,
                             int *status) {
    int dummy;
    if (!status) status = &dummy;
    if (!symbol || !pfn) return CUDA_ERROR_INVALID_VALUE;
    if (flags & ~3ull) return CUDA_ERROR_INVALID_VALUE;
    *pfn = NULL;
    if (!*symbol) { /* as the real driver answers the runtime's first, empty probe */
        *status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
        return CUDA_SUCCESS;
    }
    int lo = 0, hi = fcd_nprocs - 1, first = -1;
    while (lo <= hi) { /* the first row of the name */
        int mid = (lo + hi) / 2;
        int c = strcmp(fcd_procs[mid].name, symbol);
        if (c < 0) {
            lo = mid + 1;
        } else {
            if (c == 0) first = mid;
            hi = mid - 1;
        }
    }
    if (first < 0) {
        *status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
        return CUDA_ERROR_NOT_FOUND;
    }
    const fcd_proc *best = NULL;
    for (int i = first; i < fcd_nprocs && !strcmp(fcd_procs[i].name, symbol); i++)
        if (fcd_procs[i].version <= version) best = &fcd_procs[i];
    if (!best) {
        *status = CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT;
        return CUDA_ERROR_NOT_FOUND;
    }
    *pfn = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) ? best->fn_pt : best->fn;
    *status = CU_GET_PROC_ADDRESS_SUCCESS;
    return CUDA_SUCCESS;
}

static CUresult traced(const char *symbol, void **pfn, int version, unsigned long long flags,
                       int *status) {
    int st_local = -1;
    CUresult r = proc_address(symbol, pfn, version, flags, status ? status : &st_local);
    if (fcd_tracing())
        fcc_log("trace: cuGetProcAddress %s %d %llu -> %d status %d", symbol ? symbol : "(null)",
                version, flags, r, status ? *status : st_local);
    return r;
}

FCD_EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion,
                                        unsigned long long flags, int *symbolStatus) {
    return traced(symbol, pfn, cudaVersion, flags, symbolStatus);
}

FCD_EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion,
                                     unsigned long long flags) {
    return traced(symbol, pfn, cudaVersion, flags, NULL);
}

FCD_EXPORT CUresult cuGetExportTable(const void **table, const CUuuid *id) {
    if (!table || !id) return CUDA_ERROR_INVALID_VALUE;
    return fcd_get_export_table(table, id);
}

/* ---------------- devices ---------------- */

FCD_EXPORT CUresult cuDeviceGetCount(int *count) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!count) return CUDA_ERROR_INVALID_VALUE;
    *count = fcc_device_count();
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuDeviceGet(CUdevice *device, int ordinal) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!device) return CUDA_ERROR_INVALID_VALUE;
    if (ordinal < 0 || ordinal >= fcc_device_count()) return CUDA_ERROR_INVALID_DEVICE;
    *device = ordinal;
    return CUDA_SUCCESS;
}

static CUresult info_of(CUdevice dev, const fcc_gpu_info **info) {
    CUresult st = fcd_check_device(dev);
    if (st) return st;
    return fcd_status(fcc_device_info(dev, info));
}

FCD_EXPORT CUresult cuDeviceGetName(char *name, int len, CUdevice dev) {
    const fcc_gpu_info *info;
    CUresult st = info_of(dev, &info);
    if (st) return st;
    if (!name || len <= 0) return CUDA_ERROR_INVALID_VALUE;
    snprintf(name, (size_t)len, "%s", info->name);
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuDeviceGetUuid_v2(CUuuid *uuid, CUdevice dev) {
    const fcc_gpu_info *info;
    CUresult st = info_of(dev, &info);
    if (st) return st;
    if (!uuid) return CUDA_ERROR_INVALID_VALUE;
    memcpy(uuid->bytes, info->uuid, 16);
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice dev) {
    return cuDeviceGetUuid_v2(uuid, dev);
}

FCD_EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev) {
    const fcc_gpu_info *info;
    CUresult st = info_of(dev, &info);
    if (st) return st;
    if (!bytes) return CUDA_ERROR_INVALID_VALUE;
    *bytes = info->total_mem;
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuDeviceTotalMem(unsigned int *bytes, CUdevice dev) {
    size_t b;
    CUresult st = cuDeviceTotalMem_v2(&b, dev);
    if (!st) {
        if (!bytes) return CUDA_ERROR_INVALID_VALUE;
        *bytes = b > 0xffffffffu ? 0xffffffffu : (unsigned int)b;
    }
    return st;
}

#define FCD_ATTR_MAX 148 /* CU_DEVICE_ATTRIBUTE_MAX in CUDA 13.0 */

int fcd_attr(int dev, int attr);
int fcd_attr(int dev, int attr) {
    const fcc_gpu_info *info;
    if (fcc_device_info(dev, &info)) return 0;
    if (fc_devices[dev].attrs_valid) return fc_devices[dev].attrs[attr];
    return info->attrs[attr];
}

FCD_EXPORT CUresult cuDeviceGetAttribute(int *value, int attr, CUdevice dev) {
    const fcc_gpu_info *info;
    CUresult st = info_of(dev, &info);
    if (st) return st;
    if (!value || attr < 1 || attr >= FCD_ATTR_MAX) return CUDA_ERROR_INVALID_VALUE;
    /* an SM-budget device counts the SMs of its partition, known once its context exists */
    if (attr == 16 && fc_devices[dev].sm_budget && (st = fcd_status(fcc_device_ready(dev))))
        return st;
    *value = fcd_attr(dev, attr);
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuDeviceGetProperties(CUdevprop *p, CUdevice dev) {
    const fcc_gpu_info *info;
    CUresult st = info_of(dev, &info);
    if (st) return st;
    if (!p) return CUDA_ERROR_INVALID_VALUE;
    p->maxThreadsPerBlock = fcd_attr(dev, 1);
    for (int i = 0; i < 3; i++) {
        p->maxThreadsDim[i] = fcd_attr(dev, 2 + i);
        p->maxGridSize[i] = fcd_attr(dev, 5 + i);
    }
    p->sharedMemPerBlock = fcd_attr(dev, 8);
    p->totalConstantMemory = fcd_attr(dev, 9);
    p->SIMDWidth = fcd_attr(dev, 10);
    p->memPitch = fcd_attr(dev, 11);
    p->regsPerBlock = fcd_attr(dev, 12);
    p->clockRate = fcd_attr(dev, 13);
    p->textureAlign = fcd_attr(dev, 14);
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuDeviceComputeCapability(int *major, int *minor, CUdevice dev) {
    const fcc_gpu_info *info;
    CUresult st = info_of(dev, &info);
    if (st) return st;
    if (!major || !minor) return CUDA_ERROR_INVALID_VALUE;
    *major = fcd_attr(dev, 75);
    *minor = fcd_attr(dev, 76);
    return CUDA_SUCCESS;
}

static void bus_id(int dev, char *out, size_t n) {
    snprintf(out, n, "%04x:%02x:%02x.0", fcd_attr(dev, 50), fcd_attr(dev, 33), fcd_attr(dev, 34));
}

FCD_EXPORT CUresult cuDeviceGetPCIBusId(char *pciBusId, int len, CUdevice dev) {
    const fcc_gpu_info *info;
    CUresult st = info_of(dev, &info);
    if (st) return st;
    if (!pciBusId || len <= 0) return CUDA_ERROR_INVALID_VALUE;
    char text[32];
    bus_id(dev, text, sizeof text);
    snprintf(pciBusId, (size_t)len, "%s", text);
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuDeviceGetByPCIBusId(CUdevice *dev, const char *pciBusId) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!dev || !pciBusId) return CUDA_ERROR_INVALID_VALUE;
    char want[32];
    size_t i = 0;
    for (; pciBusId[i] && i < sizeof want - 1; i++)
        want[i] = (char)(pciBusId[i] >= 'A' && pciBusId[i] <= 'F' ? pciBusId[i] + 32 : pciBusId[i]);
    want[i] = 0;
    for (int d = 0; d < fcc_device_count(); d++) {
        const fcc_gpu_info *info;
        if ((st = info_of(d, &info))) return st;
        char mine[32], longer[40];
        bus_id(d, mine, sizeof mine);
        snprintf(longer, sizeof longer, "0000%s", mine);
        if (!strcmp(want, mine) || !strcmp(want, mine + 5) || !strcmp(want, longer)) {
            *dev = d;
            return CUDA_SUCCESS;
        }
    }
    return CUDA_ERROR_INVALID_DEVICE;
}

/* Peers: virtual devices of one physical GPU of one server share its memory. */
static int same_gpu(int a, int b) {
    return a != b && fc_devices[a].server == fc_devices[b].server &&
           fc_devices[a].gpu == fc_devices[b].gpu;
}

FCD_EXPORT CUresult cuDeviceCanAccessPeer(int *can, CUdevice dev, CUdevice peer) {
    CUresult st = fcd_check_device(dev);
    if (!st) st = fcd_check_device(peer);
    if (st) return st;
    if (!can) return CUDA_ERROR_INVALID_VALUE;
    *can = same_gpu(dev, peer);
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuDeviceGetP2PAttribute(int *value, int attrib, CUdevice src, CUdevice dst) {
    CUresult st = fcd_check_device(src);
    if (!st) st = fcd_check_device(dst);
    if (st) return st;
    if (!value || src == dst) return src == dst ? CUDA_ERROR_INVALID_DEVICE
                                                : CUDA_ERROR_INVALID_VALUE;
    int p = same_gpu(src, dst);
    switch (attrib) {
    case 1: *value = 0; break;      /* performance rank */
    case 2: *value = p; break;      /* access supported */
    case 3: *value = p; break;      /* native atomics */
    case 4: *value = 0; break;      /* CUDA arrays */
    default: return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

/* Profiling hooks: without a profiler attached the real driver accepts and ignores them. */
FCD_EXPORT CUresult cuProfilerStart(void) { return fcd_enter(); }
FCD_EXPORT CUresult cuProfilerStop(void) { return fcd_enter(); }
