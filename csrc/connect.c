/* The shim's connections (connect.c): a server's connection made on first use, the Python
 * half shaking hands, and a virtual device opened on it; what the Python half asks of the
 * transport (api.h). The driver layer's client core makes its connections itself
 * (core/session.c) on the same transport (conn.c). */
#include <stdlib.h>

#include "fc.h"
#include "api.h"
#include "conn.h"
#include "gen/pycalls.h"
#include "pyhost.h"
#include "runtime.h"

/* ---------- connections of servers and devices ---------- */

int fc_server_conn(int server, fc_conn **out) {
    fc_server *s = &fc_servers[server];
    fc_conn *c = __atomic_load_n(&s->conn, __ATOMIC_ACQUIRE);
    if (c) {
        *out = c;
        return c->dead ? c->dead_status : cudaSuccess;
    }
    pthread_mutex_lock(&s->mtx);
    int st = s->failed_status;
    if (!st && !s->conn) {
        fc_python_ensure();
        st = fcpy_connect(server);
        if (!st && !s->conn) st = cudaErrorDevicesUnavailable;
        if (st) s->failed_status = st;
    }
    pthread_mutex_unlock(&s->mtx);
    if (st) return st;
    *out = s->conn;
    return s->conn->dead ? s->conn->dead_status : cudaSuccess;
}

/* (see conn.h) */
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

int fcx_device_ready(int dev) { return fc_device_ready(dev); }

fc_conn *fc_dev_conn(int dev) { return fc_servers[fc_devices[dev].server].conn; }

int fc_post_dev(int dev, uint16_t op, const void *fixed, size_t flen) {
    int st = fc_post(fc_dev_conn(dev), op, (uint16_t)dev, fixed, flen, NULL, 0);
    return st ? st : fc_device_status(dev);
}

int fc_call_dev(int dev, uint16_t op, const void *fixed, size_t flen, void *rep, size_t cap) {
    fc_req r;
    fc_req_init(&r, rep, cap);
    return fc_call(fc_dev_conn(dev), op, (uint16_t)dev, fixed, flen, NULL, 0, &r);
}

/* A request that waits for the device (DEVICE_SYNC, FREE); once it succeeded, nothing queued
 * on the device before it is pending */
int fc_call_syncing(int dev, uint16_t op, const void *fixed, size_t flen) {
    fc_device *d = &fc_devices[dev];
    uint64_t g = __atomic_load_n(&fc_dev_conn(dev)->work_gen[dev], __ATOMIC_ACQUIRE);
    int st = fc_call_dev(dev, op, fixed, flen, NULL, 0);
    if (st == cudaSuccess) {
        uint64_t s = __atomic_load_n(&d->synced_gen, __ATOMIC_ACQUIRE);
        while (s < g && !__atomic_compare_exchange_n(&d->synced_gen, &s, g, 0, __ATOMIC_ACQ_REL,
                                                     __ATOMIC_ACQUIRE)) {
        }
    }
    return st;
}

int fc_call_device_sync(int dev) { return fc_call_syncing(dev, FC_OP_DEVICE_SYNC, NULL, 0); }

/* Nothing queued on the device can still be pending (no frame that may queue work went out
 * since the last successful synchronization covered everything before it: the driver layer's
 * frames count too where the shim lent it the connection). */
int fc_device_quiet(int dev) {
    fc_device *d = &fc_devices[dev];
    return __atomic_load_n(&d->synced_gen, __ATOMIC_ACQUIRE) ==
           __atomic_load_n(&fc_dev_conn(dev)->work_gen[dev], __ATOMIC_ACQUIRE);
}

/* ---------- what the Python half asks of the transport (api.h) ---------- */

/* compression of host-to-device pieces, and the link measured for it (wire/compress.py) */
static const fc_conn_codec python_codec = {fcpy_compress, fcpy_link_probe};

int fcx_attach(int server, int fd, int heartbeat_ms) {
    fc_conn_set_codec(&python_codec);
    fc_conn *c = fc_conn_new(fd, server, heartbeat_ms);
    if (!c) return cudaErrorMemoryAllocation;
    __atomic_store_n(&fc_servers[server].conn, c, __ATOMIC_RELEASE);
    return cudaSuccess;
}

int fcx_server_connected(int server) { return fc_servers[server].conn != NULL; }

/* A request from Python: its reply's fixed fields in rep, a bulk result (if asked for)
 * allocated here for Python to free with fcx_free. */
static int call_for_python(fc_conn *c, int op, uint16_t vdev, const void *fixed, size_t flen,
                           const void *tail, size_t tlen, void *rep, size_t rep_cap,
                           void **bulk, size_t *bulk_len) {
    fc_req r;
    fc_req_init(&r, rep, rep_cap);
    r.bulk_alloc = bulk != NULL;
    int st = fc_call(c, (uint16_t)op, vdev, fixed, flen, tail, tlen, &r);
    if (bulk) {
        *bulk = r.bulk;
        *bulk_len = r.bulk_len;
    } else {
        free(r.bulk);
    }
    return st;
}

int fcx_call(int dev, int op, const void *fixed, size_t flen, const void *tail, size_t tlen,
             void *rep, size_t rep_cap, void **bulk, size_t *bulk_len) {
    if (dev < 0 || dev >= fc_ndevices) return cudaErrorInvalidDevice;
    fc_conn *c;
    int st = fc_server_conn(fc_devices[dev].server, &c);
    if (st) return st;
    return call_for_python(c, op, (uint16_t)dev, fixed, flen, tail, tlen, rep, rep_cap, bulk,
                           bulk_len);
}

int fcx_call_server(int server, int op, const void *fixed, size_t flen, void *rep,
                    size_t rep_cap, void **bulk, size_t *bulk_len) {
    fc_conn *c;
    int st = fc_server_conn(server, &c);
    if (st) return st;
    return call_for_python(c, op, 0, fixed, flen, NULL, 0, rep, rep_cap, bulk, bulk_len);
}

int fcx_post(int dev, int op, const void *fixed, size_t flen, const void *tail, size_t tlen) {
    int st = fc_device_ready(dev);
    if (st) return st;
    return fc_post(fc_dev_conn(dev), (uint16_t)op, (uint16_t)dev, fixed, flen, tail, tlen);
}
