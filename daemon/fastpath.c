/* The daemon's hot path in C: runs of async kernel launches and event operations, and the
 * synchronous requests that need not wait for the GPU.
 *
 * A client that launches many small kernels sends a stream of LAUNCH frames; decoding and
 * dispatching each in Python costs more than the launch itself. fp_run() executes as many
 * consecutive frames as it can, straight from the session's receive buffer, and stops at the
 * first frame it does not handle (anything else, an unknown handle, a pointer it cannot vouch
 * for), which the Python session then handles as usual. Handles and the session's memory are
 * registered from Python as it creates them.
 *
 * A synchronous request is taken here only when it cannot block: a small copy either way, or
 * a synchronization, whose stream (and what it implicitly waits for) is idle, or becomes idle
 * within a short spin (as long as the Python path would spin, FP_SPIN_NS: a loop of short
 * kernels and synchronizations finds its work done within microseconds), and stream and
 * event queries. Its REPLY is written to the caller's output buffer and the run ends there,
 * so that the session sends it (after any device printf output the synchronization flushed)
 * before it looks at the next frame. Anything that would wait longer goes to Python, which
 * waits off the event loop. Since a copy or a synchronization is taken only once nothing
 * queued before it can still run, it cannot overtake queued work.
 *
 * On a virtual device that shares its GPU's context (fp_set_legacy), stream 0 is a stream of
 * the device's own and the legacy stream's order against its blocking streams is restored in
 * Python: async work in stream 0 while the device has a blocking stream, and in its blocking
 * streams, goes there (async_stream). The synchronous requests are taken here on any of its
 * streams, since each waits until nothing its stream implicitly waits for can still run and
 * leaves nothing queued behind it (a copy completes before its reply; a query queues
 * nothing), and a device synchronization covers that device's streams only.
 *
 * libcuda.so.1 is opened at run time, so this builds on machines without CUDA. The tests build
 * it against a recording stand-in of the driver instead (FP_LIBCUDA names it): the parsing and
 * the checks here run in CI, and what they would have executed is compared with the frames.
 */
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fastpath.h"
#include "fc_wire.h" /* the frames: opcodes, the header, message layouts (generated) */

#define FP_MAX_VDEV 64

#ifndef FP_LIBCUDA
#define FP_LIBCUDA "libcuda.so.1"
#endif

typedef int (*launch_fn)(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                         unsigned, void *, void **, void **);
typedef int (*ctx_fn)(void *);
typedef int (*record_fn)(void *, void *, unsigned);
typedef int (*wait_fn)(void *, void *, unsigned);
typedef int (*dtoh_fn)(void *, uint64_t, size_t, void *);
typedef int (*htod_fn)(uint64_t, const void *, size_t, void *);
typedef int (*handle_fn)(void *);
typedef int (*void_fn)(void);

static launch_fn p_launch;
static ctx_fn p_set_current;
static record_fn p_record;
static wait_fn p_wait;
static dtoh_fn p_dtoh;
static htod_fn p_htod;
static handle_fn p_squery, p_ssync, p_equery, p_esync;
static void_fn p_ctxsync;

typedef struct { void *func; uint32_t param_size; } fp_kernel;
typedef struct { uint32_t id; uint32_t flags; void *handle; } fp_handle;
typedef struct { uint64_t base, size; } fp_range;

typedef struct {
    void *ctx;
    /* A device sharing its context (fp_set_legacy): its stream 0 is `legacy`, a stream of its
     * own, and the legacy order against its `nblocking` blocking streams is kept in Python. */
    int shared;
    void *legacy;
    uint32_t nblocking;
    fp_kernel *kernels;
    uint32_t nkernels;
    fp_handle *streams, *events; /* open addressing on id */
    uint32_t cap_streams, cap_events;
    fp_range *ranges;            /* the session's memory on this device, sorted by base */
    uint32_t nranges, cap_ranges;
    unsigned char *small;        /* pinned bounce buffer for small device-to-host copies */
    uint64_t small_size;
    /* Launches on this device, whichever path made them (Python reports its own with
     * fp_note_launch): how many so far, the last one's kernel, and the first one since the
     * last synchronization that succeeded (first_n 0: none), which are what a fault that
     * surfaces now may have come from. */
    uint64_t launches, first_n;
    uint32_t first_kid, last_kid;
} fp_dev;

static fp_dev devs[FP_MAX_VDEV];
static void *current_ctx;

int fp_init(void) {
    if (p_launch) return 0;
    void *h = dlopen(FP_LIBCUDA, RTLD_NOW | RTLD_GLOBAL);
    if (!h) return -1;
    p_launch = (launch_fn)dlsym(h, "cuLaunchKernel");
    p_set_current = (ctx_fn)dlsym(h, "cuCtxSetCurrent");
    p_record = (record_fn)dlsym(h, "cuEventRecordWithFlags");
    p_wait = (wait_fn)dlsym(h, "cuStreamWaitEvent");
    p_dtoh = (dtoh_fn)dlsym(h, "cuMemcpyDtoHAsync_v2");
    p_htod = (htod_fn)dlsym(h, "cuMemcpyHtoDAsync_v2");
    p_squery = (handle_fn)dlsym(h, "cuStreamQuery");
    p_ssync = (handle_fn)dlsym(h, "cuStreamSynchronize");
    p_equery = (handle_fn)dlsym(h, "cuEventQuery");
    p_esync = (handle_fn)dlsym(h, "cuEventSynchronize");
    p_ctxsync = (void_fn)dlsym(h, "cuCtxSynchronize");
    return (p_launch && p_set_current && p_record && p_wait && p_dtoh && p_htod && p_squery &&
            p_ssync && p_equery && p_esync && p_ctxsync) ? 0 : -2;
}

#ifndef FP_SPIN_NS
#define FP_SPIN_NS 60000 /* the Python path's spin (SPIN_S in daemon/backends/cuda/device.py) */
#endif
static uint64_t spin_ns = FP_SPIN_NS;

void fp_set_spin(uint64_t ns) { spin_ns = ns; }

/* The Python side changed the current context behind our back (or not): it tells us. */
void fp_note_current(void *ctx) { current_ctx = ctx; }

static fp_handle *slot(fp_handle **tab, uint32_t *cap, uint32_t id, int insert) {
    if (*cap == 0) {
        if (!insert) return NULL;
        *cap = 64;
        *tab = calloc(*cap, sizeof **tab);
        if (!*tab) { *cap = 0; return NULL; }
    }
    uint32_t mask = *cap - 1, i = (id * 2654435761u) & mask;
    for (uint32_t n = 0; n < *cap; n++, i = (i + 1) & mask) {
        if ((*tab)[i].id == id) return &(*tab)[i];
        if ((*tab)[i].id == 0) return insert ? &(*tab)[i] : NULL;
    }
    return NULL;
}

static int put(fp_handle **tab, uint32_t *cap, uint32_t id, void *handle, uint32_t flags,
               uint32_t *count) {
    if ((*count + 1) * 2 > *cap) { /* grow */
        uint32_t ncap = *cap ? *cap * 2 : 64, ocap = *cap;
        fp_handle *old = *tab, *nt = calloc(ncap, sizeof *nt);
        if (!nt) return -1;
        *tab = nt;
        *cap = ncap;
        for (uint32_t i = 0; i < ocap; i++)
            if (old[i].id) *slot(tab, cap, old[i].id, 1) = old[i];
        free(old);
    }
    fp_handle *s = slot(tab, cap, id, 1);
    if (!s) return -1;
    if (s->id == 0) (*count)++;
    s->id = id;
    s->flags = flags;
    s->handle = handle;
    return 0;
}

static uint32_t nstreams[FP_MAX_VDEV], nevents[FP_MAX_VDEV];

int fp_set_context(uint32_t vdev, void *ctx) {
    if (vdev >= FP_MAX_VDEV) return -1;
    devs[vdev].ctx = ctx;
    return 0;
}

int fp_set_legacy(uint32_t vdev, void *stream) {
    if (vdev >= FP_MAX_VDEV) return -1;
    devs[vdev].shared = 1;
    devs[vdev].legacy = stream;
    return 0;
}

int fp_set_kernel(uint32_t vdev, uint32_t kid, void *func, uint32_t param_size) {
    if (vdev >= FP_MAX_VDEV || kid > (1u << 24)) return -1;
    fp_dev *d = &devs[vdev];
    if (kid >= d->nkernels) {
        uint32_t n = d->nkernels ? d->nkernels : 64;
        while (n <= kid) n *= 2;
        fp_kernel *k = realloc(d->kernels, n * sizeof *k);
        if (!k) return -1;
        memset(k + d->nkernels, 0, (n - d->nkernels) * sizeof *k);
        d->kernels = k;
        d->nkernels = n;
    }
    d->kernels[kid].func = func;
    d->kernels[kid].param_size = param_size;
    return 0;
}

/* id 0 is the legacy stream (handle NULL); streams and events are never id 0 otherwise.
 * flags: the stream's creation flags (1: non-blocking, it does not synchronize with the
 * legacy stream). */
static int blocking(const fp_handle *s) {
    return s && s->id && s->handle != (void *)-1 && !(s->flags & FC_STREAM_CREATE_NON_BLOCKING);
}

int fp_set_stream(uint32_t vdev, uint32_t sid, void *stream, uint32_t flags) {
    if (vdev >= FP_MAX_VDEV || sid == 0) return -1;
    fp_dev *d = &devs[vdev];
    if (blocking(slot(&d->streams, &d->cap_streams, sid, 0))) d->nblocking--;
    int r = put(&d->streams, &d->cap_streams, sid, stream, flags, &nstreams[vdev]);
    if (blocking(slot(&d->streams, &d->cap_streams, sid, 0))) d->nblocking++;
    return r;
}

int fp_set_event(uint32_t vdev, uint32_t eid, void *event) {
    if (vdev >= FP_MAX_VDEV || eid == 0) return -1;
    return put(&devs[vdev].events, &devs[vdev].cap_events, eid, event, 0, &nevents[vdev]);
}

int fp_set_small(uint32_t vdev, void *buf, uint64_t size) {
    if (vdev >= FP_MAX_VDEV) return -1;
    devs[vdev].small = buf;
    devs[vdev].small_size = size;
    return 0;
}

/* ---- the session's memory: what a copy may touch (mirrors DeviceState.check) ---- */

static uint32_t range_index(fp_dev *d, uint64_t base) { /* first range with .base >= base */
    uint32_t lo = 0, hi = d->nranges;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (d->ranges[mid].base < base) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

int fp_range_add(uint32_t vdev, uint64_t base, uint64_t size) {
    if (vdev >= FP_MAX_VDEV || size == 0) return -1;
    fp_dev *d = &devs[vdev];
    uint32_t i = range_index(d, base);
    if (i < d->nranges && d->ranges[i].base == base) {
        d->ranges[i].size = size;
        return 0;
    }
    if (d->nranges == d->cap_ranges) {
        uint32_t cap = d->cap_ranges ? d->cap_ranges * 2 : 64;
        fp_range *r = realloc(d->ranges, cap * sizeof *r);
        if (!r) return -1;
        d->ranges = r;
        d->cap_ranges = cap;
    }
    memmove(d->ranges + i + 1, d->ranges + i, (d->nranges - i) * sizeof *d->ranges);
    d->ranges[i].base = base;
    d->ranges[i].size = size;
    d->nranges++;
    return 0;
}

void fp_range_remove(uint32_t vdev, uint64_t base) {
    if (vdev >= FP_MAX_VDEV) return;
    fp_dev *d = &devs[vdev];
    uint32_t i = range_index(d, base);
    if (i < d->nranges && d->ranges[i].base == base) {
        memmove(d->ranges + i, d->ranges + i + 1, (d->nranges - i - 1) * sizeof *d->ranges);
        d->nranges--;
    }
}

void fp_range_clear(uint32_t vdev) {
    if (vdev < FP_MAX_VDEV) devs[vdev].nranges = 0;
}

/* ptr..ptr+n lies inside one range of the session */
static int range_holds(fp_dev *d, uint64_t ptr, uint64_t n) {
    uint32_t i = range_index(d, ptr + 1); /* ranges with base <= ptr end before index i */
    if (i == 0) return 0;
    const fp_range *r = &d->ranges[i - 1];
    return ptr - r->base < r->size && n <= r->size - (ptr - r->base);
}

/* Forget a handle (destroyed): later frames naming it go to Python, which reports the error. */
void fp_drop_stream(uint32_t vdev, uint32_t sid) {
    fp_handle *s = vdev < FP_MAX_VDEV ? slot(&devs[vdev].streams, &devs[vdev].cap_streams,
                                              sid, 0) : NULL;
    if (blocking(s)) devs[vdev].nblocking--;
    if (s) s->handle = (void *)-1;
}

void fp_drop_event(uint32_t vdev, uint32_t eid) {
    fp_handle *s = vdev < FP_MAX_VDEV ? slot(&devs[vdev].events, &devs[vdev].cap_events,
                                              eid, 0) : NULL;
    if (s) s->handle = (void *)-1;
}

void fp_drop_device(uint32_t vdev) {
    if (vdev >= FP_MAX_VDEV) return;
    fp_dev *d = &devs[vdev];
    free(d->kernels);
    free(d->streams);
    free(d->events);
    free(d->ranges);
    memset(d, 0, sizeof *d);
    nstreams[vdev] = nevents[vdev] = 0;
}

static int stream_of(fp_dev *d, uint32_t vdev, uint32_t sid, void **out) {
    if (sid == 0) {
        *out = d->legacy;
        return 0;
    }
    fp_handle *s = slot(&d->streams, &d->cap_streams, sid, 0);
    (void)vdev;
    if (!s || s->handle == (void *)-1) return -1;
    *out = s->handle;
    return 0;
}

/* The stream to queue async work in here: on a device sharing its context, only where no
 * legacy order has to be restored (stream 0 while the device has no blocking stream, or a
 * non-blocking stream); the rest goes to Python (CudaDevice._q). */
static int async_stream(fp_dev *d, uint32_t vdev, uint32_t sid, void **out) {
    if (stream_of(d, vdev, sid, out)) return -1;
    if (!d->shared) return 0;
    if (sid == 0) return d->nblocking ? -1 : 0;
    return blocking(slot(&d->streams, &d->cap_streams, sid, 0)) ? -1 : 0;
}

/* ---- which launches a fault may have come from ---- */

static void note_launch(fp_dev *d, uint32_t kid) {
    d->launches++;
    d->last_kid = kid;
    if (!d->first_n) {
        d->first_n = d->launches;
        d->first_kid = kid;
    }
}

void fp_note_launch(uint32_t vdev, uint32_t kid) {
    if (vdev < FP_MAX_VDEV) note_launch(&devs[vdev], kid);
}

void fp_note_synced(uint32_t vdev) {
    if (vdev < FP_MAX_VDEV) devs[vdev].first_n = 0;
}

/* out: the first launch since the last good synchronization (ordinal, kernel; 0 0: none),
 * and the last launch (ordinal, kernel). */
void fp_launch_window(uint32_t vdev, uint64_t out[4]) {
    memset(out, 0, 4 * sizeof *out);
    if (vdev >= FP_MAX_VDEV) return;
    fp_dev *d = &devs[vdev];
    if (d->first_n) {
        out[0] = d->first_n;
        out[1] = d->first_kid;
    }
    out[2] = d->launches;
    out[3] = d->last_kid;
}

#define CU_SUCCESS 0
/* cuLaunchKernel's `extra`: the packed parameter buffer as it came in the frame */
#define CU_LAUNCH_PARAM_END ((void *)0)
#define CU_LAUNCH_PARAM_BUFFER_POINTER ((void *)1)
#define CU_LAUNCH_PARAM_BUFFER_SIZE ((void *)2)

static int make_current(fp_dev *d) {
    if (current_ctx != d->ctx) {
        if (p_set_current(d->ctx)) return -1;
        current_ctx = d->ctx;
    }
    return 0;
}

/* 1 if the stream has nothing pending, 0 if it has (or is in a state Python must judge). */
static int stream_idle(void *stream) { return p_squery(stream) == CU_SUCCESS; }

/* Nothing can run before new work in stream `sid`: the stream is idle, and so is what it
 * implicitly waits for (the legacy stream waits for every blocking stream, a blocking stream
 * for the legacy one). Mirrors CudaDevice._idle_for. */
static int idle_for(fp_dev *d, uint32_t sid, void *stream) {
    if (!stream_idle(stream)) return 0;
    if (sid != 0) {
        fp_handle *s = slot(&d->streams, &d->cap_streams, sid, 0);
        return (s->flags & FC_STREAM_CREATE_NON_BLOCKING) ? 1 : stream_idle(d->legacy);
    }
    for (uint32_t i = 0; i < d->cap_streams; i++) {
        fp_handle *s = &d->streams[i];
        if (s->id && s->handle != (void *)-1 && !(s->flags & FC_STREAM_CREATE_NON_BLOCKING) &&
            !stream_idle(s->handle))
            return 0;
    }
    return 1;
}

/* Every stream of the device, the legacy one included, is idle. */
static int device_idle(fp_dev *d) {
    if (!stream_idle(d->legacy)) return 0;
    for (uint32_t i = 0; i < d->cap_streams; i++) {
        fp_handle *s = &d->streams[i];
        if (s->id && s->handle != (void *)-1 && !stream_idle(s->handle)) return 0;
    }
    return 1;
}

static uint64_t now_ns(void);

/* idle_for, or after a short spin: 1 once nothing queued before can run, 0 if still busy */
static int wait_idle_for(fp_dev *d, uint32_t sid, void *stream) {
    if (idle_for(d, sid, stream)) return 1;
    uint64_t end = now_ns() + spin_ns;
    while (now_ns() < end)
        if (idle_for(d, sid, stream)) return 1;
    return 0;
}

static int wait_device_idle(fp_dev *d) {
    if (device_idle(d)) return 1;
    uint64_t end = now_ns() + spin_ns;
    while (now_ns() < end)
        if (device_idle(d)) return 1;
    return 0;
}

#define CUDA_ERROR_NOT_READY 600

/* the event completed (1), or not yet or failed (0: Python reports what it is) */
static int wait_event(void *event) {
    int err = p_equery(event);
    uint64_t end = now_ns() + spin_ns;
    while (err == CUDA_ERROR_NOT_READY && now_ns() < end) err = p_equery(event);
    return err == CU_SUCCESS;
}

/* A REPLY with no fixed fields and `tail` bytes behind it; returns where the tail goes. */
static unsigned char *reply_header(unsigned char *out, uint32_t rid, uint16_t vdev,
                                   uint32_t status, uint32_t tail) {
    fc_hdr h = {(uint32_t)sizeof(fc_REPLY) + tail, FC_OP_REPLY, 0, rid, vdev, 0};
    fc_REPLY r = {status, 0};
    memcpy(out, &h, sizeof h);
    memcpy(out + sizeof h, &r, sizeof r);
    return out + sizeof h + sizeof r;
}

#define REPLY_HEAD (sizeof(fc_hdr) + sizeof(fc_REPLY))

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A synchronous request that need not wait: answer it into `out` (capacity `cap`).
 * Returns 1 if answered, 0 if Python must handle it. */
static int run_sync(fp_dev *d, const fc_hdr *h, const unsigned char *body, unsigned char *out,
                    uint64_t cap, fp_result *res) {
    void *stream;
    int err, synced = 1;
    uint32_t tail = 0;
    uint16_t vdev = h->vdev;
    if (h->op == FC_OP_MEMCPY_DTOH) {
        fc_MEMCPY_DTOH m;
        if (h->len != sizeof m) return 0;
        memcpy(&m, body, sizeof m);
        if (m.flags != 0) return 0; /* a deferred copy: the session keeps those in order */
        uint64_t n = m.size;
        if (n == 0 || n > d->small_size || REPLY_HEAD + n > cap || !range_holds(d, m.src, n))
            return 0;
        if (stream_of(d, vdev, m.stream, &stream) || make_current(d) ||
            !wait_idle_for(d, m.stream, stream))
            return 0;
        err = p_dtoh(d->small, m.src, n, stream);
        if (err == CU_SUCCESS) err = p_ssync(stream);
        if (err == CU_SUCCESS) {
            memcpy(out + REPLY_HEAD, d->small, n);
            tail = (uint32_t)n;
        }
    } else if (h->op == FC_OP_MEMCPY_HTOD) {
        /* a synchronous copy of a small payload (in the frame): through the pinned bounce
         * buffer, complete before the reply, so that the buffer is free again */
        fc_MEMCPY_HTOD m;
        if (h->len <= sizeof m) return 0;
        memcpy(&m, body, sizeof m);
        uint64_t n = h->len - sizeof m;
        if (m.flags != 0 || n > d->small_size || !range_holds(d, m.dst, n)) return 0;
        if (stream_of(d, vdev, m.stream, &stream) || make_current(d) ||
            !wait_idle_for(d, m.stream, stream))
            return 0;
        memcpy(d->small, body + sizeof m, n);
        err = p_htod(m.dst, d->small, n, stream);
        if (err == CU_SUCCESS) err = p_ssync(stream);
        synced = 0;
    } else if (h->op == FC_OP_STREAM_SYNC) {
        fc_STREAM_SYNC m;
        if (h->len != sizeof m) return 0;
        memcpy(&m, body, sizeof m);
        if (stream_of(d, vdev, m.stream, &stream) || make_current(d) ||
            !wait_idle_for(d, m.stream, stream))
            return 0;
        err = p_ssync(stream); /* returns at once; flushes device printf, reports faults */
    } else if (h->op == FC_OP_EVENT_SYNC) {
        fc_EVENT_SYNC m;
        if (h->len != sizeof m) return 0;
        memcpy(&m, body, sizeof m);
        fp_handle *e = slot(&d->events, &d->cap_events, m.event, 0);
        if (!e || e->handle == (void *)-1 || make_current(d) || !wait_event(e->handle))
            return 0;
        err = p_esync(e->handle);
    } else if (h->op == FC_OP_DEVICE_SYNC) {
        if (h->len != 0 || make_current(d) || !wait_device_idle(d)) return 0;
        /* a device sharing its context: its own streams only (they are idle; the legacy
         * stream's synchronization reports the context's faults), as CudaDevice._sync_own
         * (the context's cuCtxSynchronize would wait for the other devices' work too) */
        err = d->shared ? p_ssync(d->legacy) : p_ctxsync();
    } else if (h->op == FC_OP_STREAM_QUERY) {
        /* cudaErrorNotReady (the driver's code is the runtime's) is an answer, not a fault */
        fc_STREAM_QUERY m;
        if (h->len != sizeof m) return 0;
        memcpy(&m, body, sizeof m);
        if (stream_of(d, vdev, m.stream, &stream) || make_current(d)) return 0;
        err = p_squery(stream);
        synced = 0;
    } else if (h->op == FC_OP_EVENT_QUERY) {
        fc_EVENT_QUERY m;
        if (h->len != sizeof m) return 0;
        memcpy(&m, body, sizeof m);
        fp_handle *e = slot(&d->events, &d->cap_events, m.event, 0);
        if (!e || e->handle == (void *)-1 || make_current(d)) return 0;
        err = p_equery(e->handle);
        synced = 0;
    } else {
        return 0;
    }
    if (err == CU_SUCCESS && synced) d->first_n = 0; /* every launch before it got through */
    reply_header(out, h->rid, vdev, (uint32_t)err, tail);
    res->sync_status = err;
    res->out_len = REPLY_HEAD + tail;
    res->sync_op = h->op;
    res->sync_vdev = vdev;
    return 1;
}

/* Send the reply at once when nothing may go before it: the session's transport holds nothing
 * (the caller passes sock < 0 otherwise), no device printf output is waiting in the pipe
 * (pipe_fd < 0: none can be), and it reports success (a failure may be a fault, which the
 * session reports first). Whatever is not sent here the session sends, after the rest. */
static void send_reply(const unsigned char *out, fp_result *res, int sock, int pipe_fd) {
    if (sock < 0 || (res->sync_status != CU_SUCCESS && res->sync_status != CUDA_ERROR_NOT_READY))
        return;
    if (pipe_fd >= 0) {
        struct pollfd p = {pipe_fd, POLLIN, 0};
        if (poll(&p, 1, 0) != 0) return;
    }
    uint64_t off = 0;
    while (off < res->out_len) {
        ssize_t k = send(sock, out + off, res->out_len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k > 0) {
            off += (uint64_t)k;
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        break; /* would block or failed: the transport takes the rest (and sees any error) */
    }
    res->out_sent = off;
}

/* Execute consecutive frames from buf[0:len]: async launches and event operations, and at
 * most one synchronous request that need not wait (its reply goes to out[0:out_cap], and out
 * to `sock` if it may, see send_reply; the run ends after it). Stops at anything else. */
void fp_run(const unsigned char *buf, uint64_t len, unsigned char *out, uint64_t out_cap,
            int sock, int pipe_fd, fp_result *res) {
    memset(res, 0, sizeof *res);
    uint64_t off = 0;
    while (len - off >= sizeof(fc_hdr)) {
        fc_hdr h;
        memcpy(&h, buf + off, sizeof h);
        if (h.vdev >= FP_MAX_VDEV || len - off - sizeof h < h.len) break;
        fp_dev *d = &devs[h.vdev];
        if (!d->ctx) break;
        const unsigned char *body = buf + off + sizeof h;
        if (h.rid != 0) {
            uint64_t t0 = now_ns();
            if (!out || !run_sync(d, &h, body, out, out_cap, res)) break;
            res->sync_ns = now_ns() - t0;
            send_reply(out, res, sock, pipe_fd);
            off += sizeof h + h.len;
            break;
        }
        int err = 0;
        void *stream;
        if (h.op == FC_OP_LAUNCH) {
            /* the message structs are packed (alignment 1): read in place, nothing copied */
            const fc_LAUNCH *m = (const fc_LAUNCH *)body;
            if (h.len < sizeof *m) break;
            /* a cooperative launch (or a flag this path does not know) goes to Python */
            uint32_t kid = m->kernel;
            if (m->flags != 0 || kid >= d->nkernels || !d->kernels[kid].func) break;
            size_t psize = h.len - sizeof *m;
            if (psize != d->kernels[kid].param_size) break;
            if (async_stream(d, h.vdev, m->stream, &stream) || make_current(d)) break;
            void *extra[5] = {CU_LAUNCH_PARAM_BUFFER_POINTER, (void *)(body + sizeof *m),
                              CU_LAUNCH_PARAM_BUFFER_SIZE, &psize, CU_LAUNCH_PARAM_END};
            err = p_launch(d->kernels[kid].func, m->grid[0], m->grid[1], m->grid[2],
                           m->block[0], m->block[1], m->block[2], m->shmem, stream, NULL,
                           psize ? extra : NULL);
            note_launch(d, kid);
            res->launches++;
        } else if (h.op == FC_OP_EVENT_RECORD) {
            const fc_EVENT_RECORD *m = (const fc_EVENT_RECORD *)body;
            if (h.len != sizeof *m) break;
            fp_handle *e = slot(&d->events, &d->cap_events, m->event, 0);
            if (!e || e->handle == (void *)-1 || async_stream(d, h.vdev, m->stream, &stream) ||
                make_current(d))
                break;
            err = p_record(e->handle, stream, m->flags);
            res->records++;
        } else if (h.op == FC_OP_STREAM_WAIT_EVENT) {
            const fc_STREAM_WAIT_EVENT *m = (const fc_STREAM_WAIT_EVENT *)body;
            /* another device's event: the Python path */
            if (h.len != sizeof *m || fc_STREAM_WAIT_EVENT_event_vdev(&h) != h.vdev) break;
            fp_handle *e = slot(&d->events, &d->cap_events, m->event, 0);
            if (!e || e->handle == (void *)-1 || async_stream(d, h.vdev, m->stream, &stream) ||
                make_current(d))
                break;
            err = p_wait(stream, e->handle, m->flags);
            res->waits++;
        } else {
            break;
        }
        off += sizeof h + h.len;
        if (err) {
            res->error = err;
            res->error_op = h.op;
            res->error_vdev = h.vdev;
            break;
        }
    }
    res->consumed = off;
}
