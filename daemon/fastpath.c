/* The daemon's hot path in C: runs of async kernel launches and event operations.
 *
 * A client that launches many small kernels sends a stream of LAUNCH frames; decoding and
 * dispatching each in Python costs more than the launch itself. fp_run() executes as many
 * consecutive frames as it can, straight from the session's receive buffer, and stops at the
 * first frame it does not handle (anything else, a sync request, an unknown handle), which the
 * Python session then handles as usual. Handles are registered from Python as it creates them.
 *
 * libcuda.so.1 is opened at run time, so this builds on machines without CUDA.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FP_MAX_VDEV 64

typedef int (*launch_fn)(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                         unsigned, void *, void **, void **);
typedef int (*ctx_fn)(void *);
typedef int (*record_fn)(void *, void *, unsigned);
typedef int (*wait_fn)(void *, void *, unsigned);

static launch_fn p_launch;
static ctx_fn p_set_current;
static record_fn p_record;
static wait_fn p_wait;

typedef struct { void *func; uint32_t param_size; } fp_kernel;
typedef struct { uint32_t id; void *handle; } fp_handle;

typedef struct {
    void *ctx;
    fp_kernel *kernels;
    uint32_t nkernels;
    fp_handle *streams, *events; /* open addressing on id */
    uint32_t cap_streams, cap_events;
} fp_dev;

static fp_dev devs[FP_MAX_VDEV];
static void *current_ctx;

int fp_init(void) {
    if (p_launch) return 0;
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    if (!h) return -1;
    p_launch = (launch_fn)dlsym(h, "cuLaunchKernel");
    p_set_current = (ctx_fn)dlsym(h, "cuCtxSetCurrent");
    p_record = (record_fn)dlsym(h, "cuEventRecordWithFlags");
    p_wait = (wait_fn)dlsym(h, "cuStreamWaitEvent");
    return (p_launch && p_set_current && p_record && p_wait) ? 0 : -2;
}

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

static int put(fp_handle **tab, uint32_t *cap, uint32_t id, void *handle, uint32_t *count) {
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
    s->handle = handle;
    return 0;
}

static uint32_t nstreams[FP_MAX_VDEV], nevents[FP_MAX_VDEV];

int fp_set_context(uint32_t vdev, void *ctx) {
    if (vdev >= FP_MAX_VDEV) return -1;
    devs[vdev].ctx = ctx;
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

/* id 0 is the legacy stream (handle NULL); streams and events are never id 0 otherwise */
int fp_set_stream(uint32_t vdev, uint32_t sid, void *stream) {
    if (vdev >= FP_MAX_VDEV || sid == 0) return -1;
    return put(&devs[vdev].streams, &devs[vdev].cap_streams, sid, stream, &nstreams[vdev]);
}

int fp_set_event(uint32_t vdev, uint32_t eid, void *event) {
    if (vdev >= FP_MAX_VDEV || eid == 0) return -1;
    return put(&devs[vdev].events, &devs[vdev].cap_events, eid, event, &nevents[vdev]);
}

/* Forget a handle (destroyed): later frames naming it go to Python, which reports the error. */
void fp_drop_stream(uint32_t vdev, uint32_t sid) {
    fp_handle *s = vdev < FP_MAX_VDEV ? slot(&devs[vdev].streams, &devs[vdev].cap_streams,
                                              sid, 0) : NULL;
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
    memset(d, 0, sizeof *d);
    nstreams[vdev] = nevents[vdev] = 0;
}

static int stream_of(fp_dev *d, uint32_t vdev, uint32_t sid, void **out) {
    if (sid == 0) {
        *out = NULL;
        return 0;
    }
    fp_handle *s = slot(&d->streams, &d->cap_streams, sid, 0);
    (void)vdev;
    if (!s || s->handle == (void *)-1) return -1;
    *out = s->handle;
    return 0;
}

/* Frame layouts (see interposer/protocol/_messages.py; little-endian, packed). */
#define OP_LAUNCH 0x0310
#define OP_STREAM_WAIT_EVENT 0x0405
#define OP_EVENT_RECORD 0x0412
#define HDR 16
#define LAUNCH_FIXED 40

typedef struct {
    uint64_t consumed;   /* bytes of buf executed */
    uint32_t launches;   /* frames of each kind executed */
    uint32_t records;
    uint32_t waits;
    int32_t error;       /* a CUDA error of the frame at `consumed` (it was consumed), or 0 */
    uint32_t error_op;
    uint32_t error_vdev;
} fp_result;

static inline uint32_t rd32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline uint16_t rd16(const unsigned char *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

/* Execute consecutive async frames from buf[0:len]; stop at anything else. */
void fp_run(const unsigned char *buf, uint64_t len, fp_result *res) {
    memset(res, 0, sizeof *res);
    uint64_t off = 0;
    while (len - off >= HDR) {
        const unsigned char *h = buf + off;
        uint32_t flen = rd32(h);
        uint16_t op = rd16(h + 4);
        uint32_t rid = rd32(h + 8);
        uint16_t vdev = rd16(h + 12);
        uint16_t aux = rd16(h + 14);
        if (rid != 0 || vdev >= FP_MAX_VDEV || len - off - HDR < flen) break;
        fp_dev *d = &devs[vdev];
        if (!d->ctx) break;
        const unsigned char *m = h + HDR;
        int err = 0;
        if (op == OP_LAUNCH) {
            if (flen < LAUNCH_FIXED) break;
            uint32_t kid = rd32(m), sid = rd32(m + 4), flags = rd32(m + 36);
            if (flags != 0 || kid >= d->nkernels || !d->kernels[kid].func) break;
            if (flen - LAUNCH_FIXED != d->kernels[kid].param_size) break;
            void *stream;
            if (stream_of(d, vdev, sid, &stream)) break;
            if (current_ctx != d->ctx) {
                if (p_set_current(d->ctx)) break;
                current_ctx = d->ctx;
            }
            size_t psize = flen - LAUNCH_FIXED;
            void *extra[5] = {(void *)1, (void *)(m + LAUNCH_FIXED), (void *)2, &psize, NULL};
            err = p_launch(d->kernels[kid].func, rd32(m + 8), rd32(m + 12), rd32(m + 16),
                           rd32(m + 20), rd32(m + 24), rd32(m + 28), rd32(m + 32), stream, NULL,
                           psize ? extra : NULL);
            res->launches++;
        } else if (op == OP_EVENT_RECORD) {
            if (flen != 12) break;
            fp_handle *e = slot(&d->events, &d->cap_events, rd32(m), 0);
            void *stream;
            if (!e || e->handle == (void *)-1 || stream_of(d, vdev, rd32(m + 4), &stream)) break;
            if (current_ctx != d->ctx) {
                if (p_set_current(d->ctx)) break;
                current_ctx = d->ctx;
            }
            err = p_record(e->handle, stream, rd32(m + 8));
            res->records++;
        } else if (op == OP_STREAM_WAIT_EVENT) {
            if (flen != 12 || aux != vdev) break; /* another device's event: the Python path */
            fp_handle *e = slot(&d->events, &d->cap_events, rd32(m + 4), 0);
            void *stream;
            if (!e || e->handle == (void *)-1 || stream_of(d, vdev, rd32(m), &stream)) break;
            if (current_ctx != d->ctx) {
                if (p_set_current(d->ctx)) break;
                current_ctx = d->ctx;
            }
            err = p_wait(stream, e->handle, rd32(m + 8));
            res->waits++;
        } else {
            break;
        }
        off += HDR + flen;
        if (err) {
            res->error = err;
            res->error_op = op;
            res->error_vdev = vdev;
            break;
        }
    }
    res->consumed = off;
}
