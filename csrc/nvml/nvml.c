/* farcuda's stand-in for NVML (libnvidia-ml.so.1): what frameworks and tools ask at start-up,
 * answered from the servers, so that they see the remote GPUs and never a local one.
 *
 * The devices are the virtual devices of the device map, in its order, as the driver layer
 * shows them (PyTorch counts GPUs through NVML before it initializes CUDA: the two must
 * agree). Names, UUIDs, PCI locations, compute capability and total memory come from the
 * server's GPU_INFO (no context is made); memory in use, utilization and power from its status,
 * which the server reads from its own NVML (when it has none, memory used is what farcuda's
 * tenants hold and the rest is NVML_ERROR_NOT_SUPPORTED, never a made-up figure). Functions
 * not here are not exported, so a caller's lookup of them fails as for an NVML too old for
 * them (pynvml: NVMLError_FunctionNotFound).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../core/core.h"

#define NVML_API __attribute__((visibility("default")))

typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0, NVML_ERROR_UNINITIALIZED = 1, NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3, NVML_ERROR_NOT_FOUND = 6, NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9, NVML_ERROR_GPU_IS_LOST = 15, NVML_ERROR_UNKNOWN = 999,
};

typedef struct fcn_device {
    uint32_t magic;
    unsigned int index;
} fcn_device;
typedef fcn_device *nvmlDevice_t;
#define FCN_MAGIC 0x4e564d4cu

typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct { unsigned int pid; unsigned long long usedGpuMemory;
                 unsigned int gpuInstanceId, computeInstanceId; } nvmlProcessInfo_t;

static fcn_device devices[FC_MAX_DEVICES];
static int init_count;
static pthread_mutex_t mtx = PTHREAD_MUTEX_INITIALIZER;

/* ---------------- init ---------------- */

static nvmlReturn_t init(void) {
    int st = fcc_init();
    if (st) return NVML_ERROR_DRIVER_NOT_LOADED; /* what NVML says with no usable driver */
    pthread_mutex_lock(&mtx);
    for (int i = 0; i < FC_MAX_DEVICES; i++) devices[i] = (fcn_device){FCN_MAGIC, (unsigned)i};
    init_count++;
    pthread_mutex_unlock(&mtx);
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlInit_v2(void) { return init(); }
NVML_API nvmlReturn_t nvmlInit(void) { return init(); }
NVML_API nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags; /* NVML_INIT_FLAG_NO_GPUS / NO_ATTACH: nothing to attach here */
    return init();
}

NVML_API nvmlReturn_t nvmlShutdown(void) {
    pthread_mutex_lock(&mtx);
    int was = init_count;
    if (init_count) init_count--;
    pthread_mutex_unlock(&mtx);
    return was ? NVML_SUCCESS : NVML_ERROR_UNINITIALIZED;
}

static nvmlReturn_t entered(void) {
    return __atomic_load_n(&init_count, __ATOMIC_ACQUIRE) ? NVML_SUCCESS
                                                          : NVML_ERROR_UNINITIALIZED;
}

NVML_API const char *nvmlErrorString(nvmlReturn_t r) {
    switch (r) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    default: return "Unknown Error";
    }
}

/* ---------------- what the servers say ---------------- */

static nvmlReturn_t device_of(nvmlDevice_t d, int *dev, const fcc_gpu_info **info) {
    nvmlReturn_t r = entered();
    if (r) return r;
    if (!d || d < devices || d >= devices + FC_MAX_DEVICES || d->magic != FCN_MAGIC ||
        (int)d->index >= fcc_device_count())
        return NVML_ERROR_INVALID_ARGUMENT;
    *dev = (int)d->index;
    if (info && fcc_device_info(*dev, info)) return NVML_ERROR_GPU_IS_LOST;
    return NVML_SUCCESS;
}

/* A GPU's figures from its server's status, refreshed at most once a second. */
typedef struct {
    int64_t at_ns;
    double mem_total, mem_used, util, power_w;
    int have_used, have_util, have_power;
} gpu_status;

static gpu_status status_cache[FC_MAX_DEVICES];

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static nvmlReturn_t status_of(int dev, gpu_status *out) {
    pthread_mutex_lock(&mtx);
    gpu_status *c = &status_cache[dev];
    if (c->at_ns && now_ns() - c->at_ns < 1000000000L) {
        *out = *c;
        pthread_mutex_unlock(&mtx);
        return NVML_SUCCESS;
    }
    pthread_mutex_unlock(&mtx);
    int gpu = 0, server = fcc_device_server(dev, &gpu);
    char *json = NULL;
    size_t n = 0;
    if (server < 0 || fcc_server_status(server, &json, &n)) return NVML_ERROR_GPU_IS_LOST;
    fcc_json *j = fcc_json_parse(json, n);
    free(json);
    const fcc_json *gpus = fcc_json_get(j, "gpus");
    gpu_status s = {now_ns(), 0, 0, 0, 0, 0, 0, 0};
    for (size_t i = 0; i < fcc_json_len(gpus); i++) {
        const fcc_json *g = fcc_json_at(gpus, i);
        if ((int)fcc_json_num(fcc_json_get(g, "gpu"), -1) != gpu) continue;
        s.mem_total = fcc_json_num(fcc_json_get(g, "memory_total"), 0);
        const fcc_json *used = fcc_json_get(g, "memory_used");
        s.have_used = !fcc_json_is_null(used);
        s.mem_used = fcc_json_num(used, 0);
        const fcc_json *u = fcc_json_get(g, "utilization");
        s.have_util = !fcc_json_is_null(u);
        s.util = fcc_json_num(u, 0);
        const fcc_json *p = fcc_json_get(g, "power_w");
        s.have_power = !fcc_json_is_null(p);
        s.power_w = fcc_json_num(p, 0);
    }
    fcc_json_free(j);
    pthread_mutex_lock(&mtx);
    status_cache[dev] = s;
    pthread_mutex_unlock(&mtx);
    *out = s;
    return NVML_SUCCESS;
}

int fcn_attr(int dev, int attr);
int fcn_attr(int dev, int attr) {
    const fcc_gpu_info *info;
    if (fcc_device_info(dev, &info)) return 0;
    return attr > 0 && attr < FC_MAX_ATTR ? info->attrs[attr] : 0;
}

/* ---------------- system ---------------- */

NVML_API nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *v) {
    nvmlReturn_t r = entered();
    if (r) return r;
    if (!v) return NVML_ERROR_INVALID_ARGUMENT;
    int d = fcc_driver_version();
    *v = d > 0 && d < 13000 ? d : 13000; /* as the driver layer reports it */
    return NVML_SUCCESS;
}
NVML_API nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *v) {
    return nvmlSystemGetCudaDriverVersion(v);
}

static nvmlReturn_t copy_str(char *out, unsigned int len, const char *s) {
    if (!out) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(s) + 1 > len) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(out, s, strlen(s) + 1);
    return NVML_SUCCESS;
}

/* The server's GPU driver (the version its kernel module reports), when it says. */
NVML_API nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int len) {
    nvmlReturn_t r = entered();
    if (r) return r;
    const fcc_gpu_info *info;
    if (fcc_device_count() == 0 || fcc_device_info(0, &info)) return NVML_ERROR_NOT_SUPPORTED;
    if (!info->driver_version[0]) return NVML_ERROR_NOT_SUPPORTED;
    return copy_str(version, len, info->driver_version);
}

NVML_API nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int len) {
    nvmlReturn_t r = entered();
    if (r) return r;
    const fcc_gpu_info *info;
    if (fcc_device_count() == 0 || fcc_device_info(0, &info) || !info->driver_version[0])
        return NVML_ERROR_NOT_SUPPORTED;
    char text[96];
    snprintf(text, sizeof text, "13.%s", info->driver_version); /* CUDA major.driver */
    return copy_str(version, len, text);
}

/* ---------------- devices ---------------- */

NVML_API nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    nvmlReturn_t r = entered();
    if (r) return r;
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    *count = (unsigned int)fcc_device_count();
    return NVML_SUCCESS;
}
NVML_API nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) {
    return nvmlDeviceGetCount_v2(count);
}

NVML_API nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    nvmlReturn_t r = entered();
    if (r) return r;
    if (!device || index >= (unsigned int)fcc_device_count()) return NVML_ERROR_INVALID_ARGUMENT;
    *device = &devices[index];
    return NVML_SUCCESS;
}
NVML_API nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

NVML_API nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t d, unsigned int *index) {
    int dev;
    nvmlReturn_t r = device_of(d, &dev, NULL);
    if (r) return r;
    if (!index) return NVML_ERROR_INVALID_ARGUMENT;
    *index = (unsigned int)dev;
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int len) {
    int dev;
    const fcc_gpu_info *info;
    nvmlReturn_t r = device_of(d, &dev, &info);
    return r ? r : copy_str(name, len, info->name);
}

static void uuid_text(const unsigned char *b, char out[41]) {
    snprintf(out, 41, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
             b[13], b[14], b[15]);
}

NVML_API nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int len) {
    int dev;
    const fcc_gpu_info *info;
    nvmlReturn_t r = device_of(d, &dev, &info);
    if (r) return r;
    char text[41];
    uuid_text(info->uuid, text);
    return copy_str(uuid, len, text);
}

NVML_API nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    nvmlReturn_t r = entered();
    if (r) return r;
    if (!uuid || !device) return NVML_ERROR_INVALID_ARGUMENT;
    for (int i = 0; i < fcc_device_count(); i++) {
        const fcc_gpu_info *info;
        if (fcc_device_info(i, &info)) continue;
        char text[41];
        uuid_text(info->uuid, text);
        if (!strcasecmp(text, uuid) || !strcasecmp(text + 4, uuid)) {
            *device = &devices[i];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

static void pci_info(int dev, nvmlPciInfo_t *p) {
    memset(p, 0, sizeof *p);
    p->domain = (unsigned)fcn_attr(dev, 50);
    p->bus = (unsigned)fcn_attr(dev, 33);
    p->device = (unsigned)fcn_attr(dev, 34);
    p->pciDeviceId = (unsigned)fcn_attr(dev, 139);    /* device id << 16 | vendor id */
    p->pciSubSystemId = (unsigned)fcn_attr(dev, 140);
    snprintf(p->busIdLegacy, sizeof p->busIdLegacy, "%04X:%02X:%02X.0", p->domain & 0xffff,
             p->bus & 0xff, p->device & 0xff);
    snprintf(p->busId, sizeof p->busId, "%08X:%02X:%02X.0", p->domain, p->bus & 0xff,
             p->device & 0xff);
}

NVML_API nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t *pci) {
    int dev;
    const fcc_gpu_info *info;
    nvmlReturn_t r = device_of(d, &dev, &info);
    if (r) return r;
    if (!pci) return NVML_ERROR_INVALID_ARGUMENT;
    pci_info(dev, pci);
    return NVML_SUCCESS;
}
NVML_API nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t d, nvmlPciInfo_t *pci) {
    return nvmlDeviceGetPciInfo_v3(d, pci);
}
NVML_API nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t d, nvmlPciInfo_t *pci) {
    return nvmlDeviceGetPciInfo_v3(d, pci);
}

NVML_API nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *bus, nvmlDevice_t *device) {
    nvmlReturn_t r = entered();
    if (r) return r;
    if (!bus || !device) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned dom = 0, b = 0, dv = 0, fn = 0;
    if (sscanf(bus, "%x:%x:%x.%x", &dom, &b, &dv, &fn) != 4) {
        dom = 0;
        if (sscanf(bus, "%x:%x.%x", &b, &dv, &fn) != 3) return NVML_ERROR_INVALID_ARGUMENT;
    }
    for (int i = 0; i < fcc_device_count(); i++) {
        const fcc_gpu_info *info;
        if (fcc_device_info(i, &info)) continue;
        if ((unsigned)fcn_attr(i, 50) == dom && (unsigned)fcn_attr(i, 33) == b &&
            (unsigned)fcn_attr(i, 34) == dv) {
            *device = &devices[i];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}
NVML_API nvmlReturn_t nvmlDeviceGetHandleByPciBusId(const char *bus, nvmlDevice_t *device) {
    return nvmlDeviceGetHandleByPciBusId_v2(bus, device);
}

NVML_API nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t d, int *major, int *minor) {
    int dev;
    const fcc_gpu_info *info;
    nvmlReturn_t r = device_of(d, &dev, &info);
    if (r) return r;
    if (!major || !minor) return NVML_ERROR_INVALID_ARGUMENT;
    *major = fcn_attr(dev, 75);
    *minor = fcn_attr(dev, 76);
    return NVML_SUCCESS;
}

/* NVML_DEVICE_ARCH_*: from the compute capability */
NVML_API nvmlReturn_t nvmlDeviceGetArchitecture(nvmlDevice_t d, unsigned int *arch) {
    int dev;
    const fcc_gpu_info *info;
    nvmlReturn_t r = device_of(d, &dev, &info);
    if (r) return r;
    if (!arch) return NVML_ERROR_INVALID_ARGUMENT;
    int major = fcn_attr(dev, 75), minor = fcn_attr(dev, 76);
    static const unsigned by_major[] = {0, 0, 1, 2, 0, 3, 4, 5, 7, 9, 10, 10, 10};
    *arch = major == 7 && minor >= 5 ? 6 : (major == 8 && minor == 9 ? 8
            : (major > 0 && major < 13 ? by_major[major] : 0xffffffffu));
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *m) {
    int dev;
    const fcc_gpu_info *info;
    nvmlReturn_t r = device_of(d, &dev, &info);
    if (r) return r;
    if (!m) return NVML_ERROR_INVALID_ARGUMENT;
    gpu_status s;
    if ((r = status_of(dev, &s))) return r;
    m->total = s.mem_total > 0 ? (unsigned long long)s.mem_total : info->total_mem;
    m->used = (unsigned long long)s.mem_used;
    m->free = m->total > m->used ? m->total - m->used : 0;
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *m) {
    if (!m) return NVML_ERROR_INVALID_ARGUMENT;
    nvmlMemory_t v1;
    nvmlReturn_t r = nvmlDeviceGetMemoryInfo(d, &v1);
    if (r) return r;
    m->total = v1.total;
    m->reserved = 0;
    m->used = v1.used;
    m->free = v1.free;
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u) {
    int dev;
    nvmlReturn_t r = device_of(d, &dev, NULL);
    if (r) return r;
    if (!u) return NVML_ERROR_INVALID_ARGUMENT;
    gpu_status s;
    if ((r = status_of(dev, &s))) return r;
    if (!s.have_util) return NVML_ERROR_NOT_SUPPORTED; /* the server cannot read it */
    u->gpu = (unsigned int)s.util;
    u->memory = 0; /* not reported by the server */
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned int *mw) {
    int dev;
    nvmlReturn_t r = device_of(d, &dev, NULL);
    if (r) return r;
    if (!mw) return NVML_ERROR_INVALID_ARGUMENT;
    gpu_status s;
    if ((r = status_of(dev, &s))) return r;
    if (!s.have_power) return NVML_ERROR_NOT_SUPPORTED;
    *mw = (unsigned int)(s.power_w * 1000.0);
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t d, unsigned int *minor) {
    return nvmlDeviceGetIndex(d, minor); /* there is no /dev/nvidiaN of it on this machine */
}

NVML_API nvmlReturn_t nvmlDeviceGetComputeMode(nvmlDevice_t d, int *mode) {
    int dev;
    nvmlReturn_t r = device_of(d, &dev, NULL);
    if (r) return r;
    if (!mode) return NVML_ERROR_INVALID_ARGUMENT;
    *mode = fcn_attr(dev, 20); /* CU_DEVICE_ATTRIBUTE_COMPUTE_MODE: the same enumeration */
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetMultiGpuBoard(nvmlDevice_t d, unsigned int *multi) {
    int dev;
    nvmlReturn_t r = device_of(d, &dev, NULL);
    if (r) return r;
    if (!multi) return NVML_ERROR_INVALID_ARGUMENT;
    *multi = (unsigned int)fcn_attr(dev, 84); /* CU_DEVICE_ATTRIBUTE_MULTI_GPU_BOARD */
    return NVML_SUCCESS;
}

/* Processes using the GPU: farcuda's own client processes are not the server's to list
 * here; none of this machine's processes runs on it directly. */
static nvmlReturn_t no_processes(nvmlDevice_t d, unsigned int *count, nvmlProcessInfo_t *infos) {
    int dev;
    nvmlReturn_t r = device_of(d, &dev, NULL);
    if (r) return r;
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    (void)infos;
    *count = 0;
    return NVML_SUCCESS;
}
NVML_API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *n,
                                                             nvmlProcessInfo_t *p) {
    return no_processes(d, n, p);
}
NVML_API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t d, unsigned int *n,
                                                          nvmlProcessInfo_t *p) {
    return no_processes(d, n, p);
}

/* P2P between two devices: possible between virtual devices of one physical GPU
 * (NVML_P2P_STATUS_OK 0, else NVML_P2P_STATUS_NOT_SUPPORTED 5). */
NVML_API nvmlReturn_t nvmlDeviceGetP2PStatus(nvmlDevice_t a, nvmlDevice_t b, int index,
                                            int *status) {
    int da, db;
    nvmlReturn_t r = device_of(a, &da, NULL);
    if (!r) r = device_of(b, &db, NULL);
    if (r) return r;
    if (!status || index < 0) return NVML_ERROR_INVALID_ARGUMENT;
    int ga, gb;
    int sa = fcc_device_server(da, &ga), sb = fcc_device_server(db, &gb);
    *status = sa == sb && ga == gb ? 0 : 5;
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t d, unsigned int *current,
                                          unsigned int *pending) {
    int dev;
    nvmlReturn_t r = device_of(d, &dev, NULL);
    if (r) return r;
    if (!current || !pending) return NVML_ERROR_INVALID_ARGUMENT;
    *current = *pending = 0; /* MIG is not in use (the daemon leaves it to the server) */
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetPersistenceMode(nvmlDevice_t d, int *mode) {
    int dev;
    nvmlReturn_t r = device_of(d, &dev, NULL);
    if (r) return r;
    return mode ? NVML_ERROR_NOT_SUPPORTED : NVML_ERROR_INVALID_ARGUMENT;
}

NVML_API nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, int sensor, unsigned int *t) {
    int dev;
    nvmlReturn_t r = device_of(d, &dev, NULL);
    if (r) return r;
    (void)sensor;
    return t ? NVML_ERROR_NOT_SUPPORTED : NVML_ERROR_INVALID_ARGUMENT; /* not reported */
}

/* NVLink: between GPUs of this process's own machine there is none. */
NVML_API nvmlReturn_t nvmlDeviceGetNvLinkState(nvmlDevice_t d, unsigned int link, int *active) {
    int dev;
    nvmlReturn_t r = device_of(d, &dev, NULL);
    if (r) return r;
    (void)link;
    return active ? NVML_ERROR_NOT_SUPPORTED : NVML_ERROR_INVALID_ARGUMENT;
}
