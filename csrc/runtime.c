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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FC_ABI_ERROR_TABLE
#include "fc.h"
#include "api.h"
#include "gen/exports.h"
#include "gen/pycalls.h"
#include "log.h"
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

fc_tls *fc_tls_get(void) { return &tls; }

int64_t fc_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

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

int fc_init_done;

static void init_then_done(void) {
    init_run();
    __atomic_store_n(&fc_init_done, 1, __ATOMIC_RELEASE);
}

int fc_ensure_init_slow(void) {
    pthread_once(&init_once, init_then_done);
    return fc_init_status;
}

int fc_ret(int status) {
    if (status != cudaSuccess) tls.last_error = status;
    return status;
}

int fc_ret_query(int status) { return status == cudaErrorNotReady ? status : fc_ret(status); }

int fc_current_device(void) { return tls.device < 0 ? 0 : tls.device; }

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
/* The connections' counters, summed (they count what they carry; read without their locks:
 * figures for a report) */
void fcx_stats(uint64_t *out5) {
    memset(out5, 0, 5 * sizeof(uint64_t));
    for (int i = 0; i < fc_nservers; i++) {
        fc_conn *c = fc_servers[i].conn;
        if (!c) continue;
        out5[0] += c->calls;
        out5[1] += c->sync_calls;
        out5[2] += c->bytes_out;
        out5[3] += c->bytes_in;
        out5[4] += c->wait_ns;
    }
}

void fcx_round_trips(uint64_t *out2) {
    out2[0] = out2[1] = 0;
    for (int i = 0; i < fc_nservers; i++) {
        fc_conn *c = fc_servers[i].conn;
        if (!c) continue;
        out2[0] += c->sync_calls + c->async_reqs;
        out2[1] += c->sync_calls;
    }
}

void fcx_set_compress(int server, int state) {
    if (server >= 0 && server < fc_nservers && fc_servers[server].conn)
        __atomic_store_n(&fc_servers[server].conn->compress, state, __ATOMIC_RELEASE);
}

void fcx_compressed(uint64_t *out2) {
    out2[0] = out2[1] = 0;
    for (int i = 0; i < fc_nservers; i++) {
        fc_conn *c = fc_servers[i].conn;
        if (!c) continue;
        out2[0] += c->z_raw + c->z_in_raw;
        out2[1] += c->z_sent + c->z_in;
    }
}

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
    uint64_t s[5], rt[2];
    fcx_stats(s);
    fcx_round_trips(rt);
    fc_log("report: calls=%llu sync_calls=%llu round_trips=%llu sync_round_trips=%llu "
           "bytes_to_server=%llu bytes_from_server=%llu wait_s=%.3f", (unsigned long long)s[0],
           (unsigned long long)s[1], (unsigned long long)rt[0], (unsigned long long)rt[1],
           (unsigned long long)s[2], (unsigned long long)s[3], s[4] / 1e9);
}
