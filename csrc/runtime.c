/* Process-wide and per-thread CUDA runtime state: configuration, errors, device selection.
 *
 * Error semantics follow the CUDA runtime: a failing call records its error as the thread's
 * last error (cudaGetLastError returns and clears it, cudaPeekAtLastError only returns it);
 * a sticky error (the device's context is broken, e.g. by a kernel fault or a lost server) is
 * returned by every later call that needs that device. An error of an asynchronous operation
 * is reported by the next call on its device.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FC_ABI_ERROR_TABLE
#include "fc.h"
#include "api.h"
#include "conn.h"
#include "gen/exports.h"
#include "gen/pycalls.h"
#include "launch.h"
#include "memory.h"
#include "pools.h"
#include "pyhost.h"
#include "runtime.h"

fc_server fc_servers[FC_MAX_SERVERS];
int fc_nservers;
fc_device fc_devices[FC_MAX_DEVICES];
int fc_ndevices;
int fc_init_status = cudaErrorInitializationError;
int64_t fc_connect_timeout_ms = 5000, fc_liveness_timeout_ms = 10000;
int64_t fc_spin_ns = 200000;

static __thread fc_tls tls = {.device = -1};
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t log_mtx = PTHREAD_MUTEX_INITIALIZER;

fc_tls *fc_tls_get(void) { return &tls; }

int64_t fc_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

void fc_log(const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&log_mtx);
    fprintf(stderr, "farcuda: %s\n", buf);
    fflush(stderr);
    pthread_mutex_unlock(&log_mtx);
}

void fcx_log(const char *msg) { fc_log("%s", msg); }

static void init_run(void) {
    for (int i = 0; i < FC_MAX_SERVERS; i++) pthread_mutex_init(&fc_servers[i].mtx, NULL);
    for (int i = 0; i < FC_MAX_DEVICES; i++) pthread_mutex_init(&fc_devices[i].mtx, NULL);
    if (fc_python_status() != cudaSuccess) {
        fc_init_status = cudaErrorInitializationError;
        atexit(fc_report_at_exit);
        return;
    }
    int st = fcpy_init();
    /* fcpy_init sets fc_init_status itself; a nonzero return means it could not even run */
    if (st) fc_init_status = st;
    atexit(fc_report_at_exit);
}

int fc_ensure_init(void) {
    pthread_once(&init_once, init_run);
    return fc_init_status;
}

int fc_ret(int status) {
    if (status != cudaSuccess) tls.last_error = status;
    return status;
}

int fc_ret_query(int status) { return status == cudaErrorNotReady ? status : fc_ret(status); }

int fc_current_device(void) { return tls.device < 0 ? 0 : tls.device; }

int fc_device_status(int dev) {
    fc_device *d = &fc_devices[dev];
    if (d->sticky) return d->sticky;
    int p = __atomic_exchange_n(&d->pending, 0, __ATOMIC_ACQ_REL);
    return p;
}

/* Connect to the device's server and create its context on first use. */
int fc_device_ready(int dev) {
    int st = fc_ensure_init();
    if (st) return st;
    if (dev < 0 || dev >= fc_ndevices) return cudaErrorInvalidDevice;
    fc_device *d = &fc_devices[dev];
    if (__atomic_load_n(&d->opened, __ATOMIC_ACQUIRE) == 1) {
        fc_conn *c = fc_servers[d->server].conn;
        if (c->dead) return c->dead_status;
        return fc_device_status(dev);
    }
    pthread_mutex_lock(&d->mtx);
    if (d->opened == 0) {
        fc_conn *c;
        st = fc_server_conn(d->server, &c);
        if (!st) {
            fc_python_ensure();
            st = fcpy_device_open(dev);
        }
        if (st) d->opened = -st; /* remembered: every later call fails the same way */
    }
    st = d->opened < 0 ? -d->opened : cudaSuccess;
    pthread_mutex_unlock(&d->mtx);
    if (st) return st;
    return fc_device_status(dev);
}

/* The unsupported-call answer: name the function once, then cudaErrorNotSupported. */
static unsigned char unsupported_seen[1024];

int fc_unsupported(int sym) {
    if (!__atomic_exchange_n(&unsupported_seen[sym], 1, __ATOMIC_ACQ_REL))
        fc_log("%s: %s (returns cudaErrorNotSupported)", fc_sym_names[sym], fc_sym_reasons[sym]);
    return fc_ret(cudaErrorNotSupported);
}

/* ---------------- errors ---------------- */

/* The last error of this thread, or an error an async operation of the current device
 * reported meanwhile. A sticky error is returned here once, like any other; the calls that
 * need the device keep returning it (as CUDA does). */
FC_EXPORT cudaError_t cudaGetLastError(void) {
    int e = tls.last_error;
    tls.last_error = cudaSuccess;
    if (e == cudaSuccess && fc_init_status == cudaSuccess) {
        int dev = fc_current_device();
        if (dev < fc_ndevices) e = __atomic_exchange_n(&fc_devices[dev].pending, 0,
                                                       __ATOMIC_ACQ_REL);
    }
    return e;
}

FC_EXPORT cudaError_t cudaPeekAtLastError(void) {
    if (tls.last_error == cudaSuccess && fc_init_status == cudaSuccess) {
        int dev = fc_current_device();
        if (dev < fc_ndevices) {
            int p = __atomic_exchange_n(&fc_devices[dev].pending, 0, __ATOMIC_ACQ_REL);
            if (p) tls.last_error = p;
        }
    }
    return tls.last_error;
}

static const fc_error_desc *error_desc(int code) {
    for (size_t i = 0; i < sizeof fc_error_table / sizeof fc_error_table[0]; i++)
        if (fc_error_table[i].code == code) return &fc_error_table[i];
    return NULL;
}

FC_EXPORT const char *cudaGetErrorName(cudaError_t e) {
    const fc_error_desc *d = error_desc(e);
    return d ? d->name : "unrecognized error code";
}

FC_EXPORT const char *cudaGetErrorString(cudaError_t e) {
    const fc_error_desc *d = error_desc(e);
    return d ? d->text : "unrecognized error code";
}

/* ---------------- devices ---------------- */

int fc_get_device_count(int *count) {
    int st = fc_ensure_init();
    if (!count) return cudaErrorInvalidValue;
    if (st) {
        *count = 0;
        return st;
    }
    *count = fc_ndevices;
    return cudaSuccess;
}

int fc_get_device(int *device) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!device) return cudaErrorInvalidValue;
    *device = fc_current_device();
    return cudaSuccess;
}

int fc_set_device(int device) {
    int st = fc_ensure_init();
    if (st) return st;
    if (device < 0 || device >= fc_ndevices) return cudaErrorInvalidDevice;
    tls.device = device;
    /* CUDA 12+ initializes the device's context here; so do we (a bad server shows now). */
    return fc_device_ready(device);
}

int fc_init_device(int device, unsigned int deviceFlags, unsigned int flags) {
    (void)deviceFlags;
    (void)flags;
    int st = fc_ensure_init();
    if (st) return st;
    if (device < 0 || device >= fc_ndevices) return cudaErrorInvalidDevice;
    return fc_device_ready(device);
}

/* A status from a synchronizing call: errors of the context's class are sticky. */
int fc_sync_status(int dev, int st) {
    switch (st) {
    case cudaErrorIllegalAddress: case cudaErrorLaunchFailure: case cudaErrorAssert:
    case cudaErrorHardwareStackError: case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress: case cudaErrorInvalidAddressSpace: case cudaErrorInvalidPc:
    case cudaErrorLaunchTimeout: case cudaErrorDevicesUnavailable: case cudaErrorUnknown:
        fc_devices[dev].sticky = st;
        break;
    default:
        break;
    }
    return st;
}

int fc_device_synchronize(void) {
    int st = fc_ensure_init();
    if (st) return st;
    int dev = fc_current_device();
    st = fc_device_ready(dev);
    if (!st) st = fc_call_dev(dev, FC_OP_DEVICE_SYNC, NULL, 0, NULL, 0);
    return fc_sync_status(dev, st);
}

int fc_runtime_version(int *v) {
    if (!v) return cudaErrorInvalidValue;
    *v = 13000;
    return cudaSuccess;
}

int fc_driver_version(int *v) {
    if (!v) return cudaErrorInvalidValue;
    *v = 0; /* as the real runtime answers with no driver */
    if (fc_ensure_init() || fc_ndevices == 0) return cudaSuccess;
    fc_server *s = &fc_servers[fc_devices[0].server];
    if (!s->driver_version) {
        fc_conn *c;
        if (fc_server_conn(fc_devices[0].server, &c)) return cudaSuccess;
    }
    *v = s->driver_version;
    return cudaSuccess;
}

int fc_device_attribute(int *value, int attr, int device) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!value) return cudaErrorInvalidValue;
    if (device < 0 || device >= fc_ndevices) return cudaErrorInvalidDevice;
    return fcx_get_attr(device, attr, value);
}

FC_EXPORT struct cudaChannelFormatDesc cudaCreateChannelDesc(int x, int y, int z, int w, int f) {
    struct cudaChannelFormatDesc d = {x, y, z, w, f};
    return d;
}

/* ---------------- the interface for the Python half ---------------- */

int fcx_add_server(const char *host, int port) {
    if (fc_nservers >= FC_MAX_SERVERS) return -1;
    fc_server *s = &fc_servers[fc_nservers];
    snprintf(s->host, sizeof s->host, "%s", host);
    s->port = port;
    return fc_nservers++;
}

int fcx_add_device(int server, int gpu, int sm_budget) {
    if (fc_ndevices >= FC_MAX_DEVICES || server < 0 || server >= fc_nservers) return -1;
    fc_device *d = &fc_devices[fc_ndevices];
    d->server = server;
    d->gpu = gpu;
    d->sm_budget = sm_budget;
    return fc_ndevices++;
}

void fcx_set_init_status(int status) { fc_init_status = status; }

void fcx_set_timeouts(int64_t connect_ms, int64_t liveness_ms) {
    fc_connect_timeout_ms = connect_ms;
    fc_liveness_timeout_ms = liveness_ms;
}

void fcx_set_spin(int64_t ns) { fc_spin_ns = ns; }

void fcx_server_set_info(int server, int ngpus, int driver_version) {
    fc_servers[server].ngpus = ngpus;
    fc_servers[server].driver_version = driver_version;
}

int fcx_server_of(int dev, int *gpu, int *sm_budget) {
    if (dev < 0 || dev >= fc_ndevices) return -1;
    if (gpu) *gpu = fc_devices[dev].gpu;
    if (sm_budget) *sm_budget = fc_devices[dev].sm_budget;
    return fc_devices[dev].server;
}

const char *fcx_server_host(int server, int *port) {
    if (port) *port = fc_servers[server].port;
    return fc_servers[server].host;
}

int fcx_server_failed(int server, int status) {
    fc_servers[server].failed_status = status;
    return status;
}

void fcx_free(void *p) { free(p); }

int fcx_current_device(void) { return fc_current_device(); }
int fcx_device_count(void) { return fc_ndevices; }
int fcx_device_status(int dev) { return fc_device_status(dev); }
void fcx_set_sticky(int dev, int status) { fc_devices[dev].sticky = status; }

void fcx_set_attrs(int dev, const int *attrs, int n, size_t shmem_optin) {
    fc_device *d = &fc_devices[dev];
    if (n > FC_MAX_ATTR) n = FC_MAX_ATTR;
    memcpy(d->attrs, attrs, (size_t)n * sizeof(int));
    /* attribute numbers: cudaDevAttr values (equal to the driver's) */
    d->max_threads = d->attrs[1];
    for (int i = 0; i < 3; i++) {
        d->max_block[i] = d->attrs[2 + i];
        d->max_grid[i] = d->attrs[5 + i];
    }
    d->cooperative = d->attrs[95];
    d->shmem_optin = shmem_optin;
    __atomic_store_n(&d->attrs_valid, 1, __ATOMIC_RELEASE);
}

void fcx_set_priorities(int dev, int least, int greatest) {
    fc_devices[dev].prio_least = least;
    fc_devices[dev].prio_greatest = greatest;
}

int fcx_get_attr(int dev, int attr, int *value) {
    fc_device *d = &fc_devices[dev];
    if (!__atomic_load_n(&d->attrs_valid, __ATOMIC_ACQUIRE)) {
        fc_python_ensure();
        int st = fcpy_device_describe(dev);
        if (st) return st;
    }
    if (attr < 1 || attr >= FC_MAX_ATTR) return cudaErrorInvalidValue;
    *value = d->attrs[attr];
    return cudaSuccess;
}

void fcx_device_opened(int dev, int opened) { fc_devices[dev].opened = opened; }

int fcx_device_reset_local(int dev) {
    fc_ranges_drop_device(dev);
    fc_pools_reset_device(dev);
    fc_modules_forget_device(dev);
    fc_devices[dev].sticky = 0;
    fc_devices[dev].pending = 0;
    __atomic_add_fetch(&fc_devices[dev].generation, 1, __ATOMIC_ACQ_REL);
    return cudaSuccess;
}
int fcx_device_ready(int dev) { return fc_device_ready(dev); }

/* The daemon's FAULT notice: a kernel left the device's context unusable. Said once, as the
 * reply or notice that reports the error follows it (the program may never look). */
void fc_note_fault(int dev, int status, const char *culprit) {
    if (dev < 0 || dev >= fc_ndevices) return;
    fc_device *d = &fc_devices[dev];
    fc_server *s = &fc_servers[d->server];
    fc_log("device %d (%s:%d/%d): %s failed with %s (%s); the device is unusable from now on: "
           "every later call on it fails", dev, s->host, s->port, d->gpu, culprit,
           cudaGetErrorName(status), cudaGetErrorString(status));
    d->sticky = status;
}

void fc_note_async_error(int dev, int status) {
    if (dev < 0 || dev >= fc_ndevices || status == cudaSuccess) return;
    fc_sync_status(dev, status);
    if (!fc_devices[dev].sticky) {
        int zero = 0;
        __atomic_compare_exchange_n(&fc_devices[dev].pending, &zero, status, 0,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    }
}

/* FARCUDA_REPORT=1: one summary line on stderr when the program ends. */
void fc_report_at_exit(void) {
    /* diagnostic: FARCUDA_MAPS_FILE=path records which libraries this process mapped */
    const char *maps = getenv("FARCUDA_MAPS_FILE");
    if (maps && maps[0]) {
        FILE *in = fopen("/proc/self/maps", "r"), *out = fopen(maps, "w");
        char line[4096];
        while (in && out && fgets(line, sizeof line, in)) fputs(line, out);
        if (in) fclose(in);
        if (out) fclose(out);
    }
    const char *r = getenv("FARCUDA_REPORT");
    if (!r || !r[0] || (r[0] == '0' && !r[1])) return;
    if (fc_python_status() == cudaSuccess && fcpy_report() == cudaSuccess) return;
    uint64_t s[5];
    fcx_stats(s);
    fc_log("report: calls=%llu sync_calls=%llu bytes_to_server=%llu bytes_from_server=%llu "
           "wait_s=%.3f", (unsigned long long)s[0], (unsigned long long)s[1],
           (unsigned long long)s[2], (unsigned long long)s[3], s[4] / 1e9);
}
