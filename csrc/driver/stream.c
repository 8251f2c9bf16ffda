/* Streams, events, host functions and stream capture.
 *
 * Stream and event ids are the client's (csrc/core: unique in the process), so creating one
 * costs no round trip. The legacy default stream is id 0 of each virtual device; the
 * per-thread default stream is a stream of its own per thread and device, made on first use.
 * Captured graphs live on the server: kernels, sets and device-to-device copies captured into
 * them replay there; copies between host memory and a capturing stream are refused
 * (CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, one line on stderr).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdlib.h>
#include <string.h>

#include "fcd.h"
#include "../core/core.h"

static __thread CUstream ptds_streams[FC_MAX_DEVICES];

static CUresult post(int dev, uint16_t op, const void *m, size_t n) {
    return fcd_status(fcc_post(dev, op, m, n, NULL, 0));
}

static CUresult per_thread_stream(int dev, uint32_t *sid) {
    CUstream s = ptds_streams[dev];
    if (s && fcd_handle_live(s, FCD_STREAM)) {
        *sid = s->id;
        return CUDA_SUCCESS;
    }
    CUresult st = fcd_status(fcc_device_ready(dev));
    if (st) return st;
    s = calloc(1, sizeof *s);
    if (!s) return CUDA_ERROR_OUT_OF_MEMORY;
    *s = (struct fcd_stream){FCD_STREAM, fcc_new_id(), dev, NULL, 0, 0, NULL};
    fc_STREAM_CREATE m = {s->id, 0, 0};
    if ((st = post(dev, FC_OP_STREAM_CREATE, &m, sizeof m))) {
        free(s);
        return st;
    }
    fcd_handle_add(s);
    ptds_streams[dev] = s;
    *sid = s->id;
    return CUDA_SUCCESS;
}

CUresult fcd_stream_resolve(CUstream s, int ptds, int *dev, uint32_t *sid) {
    CUresult st;
    if (s == NULL || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD) {
        if (*dev < 0 && (st = fcd_current_device(dev))) return st;
        if (s == CU_STREAM_PER_THREAD || (s == NULL && ptds)) return per_thread_stream(*dev, sid);
        *sid = 0;
        return CUDA_SUCCESS;
    }
    if (!fcd_handle_live(s, FCD_STREAM)) return CUDA_ERROR_INVALID_HANDLE;
    if (*dev >= 0 && *dev != s->dev) return CUDA_ERROR_INVALID_VALUE;
    *dev = s->dev;
    *sid = s->id;
    return fcd_status(fcc_device_ready(s->dev));
}

static CUresult own_stream(CUstream s, int ptds, int *dev, uint32_t *sid) {
    *dev = -1;
    CUresult st = fcd_enter();
    if (st) return st;
    return fcd_stream_resolve(s, ptds, dev, sid);
}

/* ---------------- streams ---------------- */

FCD_EXPORT CUresult cuStreamCreateWithPriority(CUstream *ph, unsigned int flags, int priority) {
    int dev;
    CUresult st = fcd_current_device(&dev);
    if (st) return st;
    if (!ph || (flags & ~1u)) return CUDA_ERROR_INVALID_VALUE;
    int least = 0, greatest = 0;
    fcc_device_priorities(dev, &least, &greatest);
    if (priority > least) priority = least; /* clamped into the range, as CUDA does */
    if (priority < greatest) priority = greatest;
    struct fcd_stream *s = calloc(1, sizeof *s);
    if (!s) return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult cst;
    *s = (struct fcd_stream){FCD_STREAM, fcc_new_id(), dev, fcd_current(&cst), flags, priority,
                             NULL};
    fc_STREAM_CREATE m = {s->id, flags, priority};
    if ((st = post(dev, FC_OP_STREAM_CREATE, &m, sizeof m))) {
        free(s);
        return st;
    }
    fcd_handle_add(s);
    *ph = s;
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuStreamCreate(CUstream *ph, unsigned int flags) {
    return cuStreamCreateWithPriority(ph, flags, 0);
}

FCD_EXPORT CUresult cuStreamDestroy_v2(CUstream s) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!fcd_handle_live(s, FCD_STREAM)) return CUDA_ERROR_INVALID_HANDLE;
    fcd_handle_del(s);
    fc_STREAM_DESTROY m = {s->id};
    st = post(s->dev, FC_OP_STREAM_DESTROY, &m, sizeof m);
    s->magic = 0;
    free(s);
    return st;
}

FCD_EXPORT CUresult cuStreamDestroy(CUstream s) { return cuStreamDestroy_v2(s); }

static CUresult stream_sync(CUstream s, int ptds) {
    int dev;
    uint32_t sid;
    CUresult st = own_stream(s, ptds, &dev, &sid);
    if (st) return st;
    fc_STREAM_SYNC m = {sid};
    return fcd_status(fcc_sync_status(dev, fcc_call(dev, FC_OP_STREAM_SYNC, &m, sizeof m, NULL, 0,
                                                    NULL, 0, NULL, NULL)));
}

FCD_EXPORT CUresult cuStreamSynchronize(CUstream s) { return stream_sync(s, 0); }
FCD_EXPORT CUresult cuStreamSynchronize_ptsz(CUstream s) { return stream_sync(s, 1); }

static CUresult stream_query(CUstream s, int ptds) {
    int dev;
    uint32_t sid;
    CUresult st = own_stream(s, ptds, &dev, &sid);
    if (st) return st;
    fc_STREAM_QUERY m = {sid};
    int e = fcc_call(dev, FC_OP_STREAM_QUERY, &m, sizeof m, NULL, 0, NULL, 0, NULL, NULL);
    return fcd_status(e == cudaErrorNotReady ? e : fcc_sync_status(dev, e));
}

FCD_EXPORT CUresult cuStreamQuery(CUstream s) { return stream_query(s, 0); }
FCD_EXPORT CUresult cuStreamQuery_ptsz(CUstream s) { return stream_query(s, 1); }

static CUresult wait_event(CUstream s, CUevent e, unsigned int flags, int ptds) {
    int dev;
    uint32_t sid;
    CUresult st = own_stream(s, ptds, &dev, &sid);
    if (st) return st;
    if (!fcd_handle_live(e, FCD_EVENT)) return CUDA_ERROR_INVALID_HANDLE;
    if (flags & ~1u) return CUDA_ERROR_INVALID_VALUE;
    if (fc_devices[dev].server != fc_devices[e->dev].server) {
        /* another server's event: wait for it here, then go on */
        fc_EVENT_SYNC es = {e->id};
        st = fcd_status(fcc_call(e->dev, FC_OP_EVENT_SYNC, &es, sizeof es, NULL, 0, NULL, 0, NULL,
                                 NULL));
        return st;
    }
    if (e->capture) fcd_capture_join(e->capture, s); /* as the server's capture does */
    fc_STREAM_WAIT_EVENT m = {sid, e->id, flags};
    fc_conn *c = fcc_dev_conn(dev);
    char *p = fc_post_begin(c, FC_OP_STREAM_WAIT_EVENT, (uint16_t)dev, sizeof m);
    if (!p) return CUDA_ERROR_OUT_OF_MEMORY;
    ((fc_hdr *)p)[-1].aux = (uint16_t)e->dev; /* the event's virtual device */
    memcpy(p, &m, sizeof m);
    fc_post_commit(c);
    return fcd_status(fcc_device_status(dev));
}

FCD_EXPORT CUresult cuStreamWaitEvent(CUstream s, CUevent e, unsigned int flags) {
    return wait_event(s, e, flags, 0);
}
FCD_EXPORT CUresult cuStreamWaitEvent_ptsz(CUstream s, CUevent e, unsigned int flags) {
    return wait_event(s, e, flags, 1);
}

static CUresult stream_get(CUstream s, int ptds, CUstream *own) {
    int dev;
    uint32_t sid;
    CUresult st = own_stream(s, ptds, &dev, &sid);
    *own = (st || s == NULL || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD) ? NULL : s;
    return st;
}

FCD_EXPORT CUresult cuStreamGetFlags(CUstream s, unsigned int *flags) {
    CUstream o;
    CUresult st = stream_get(s, 0, &o);
    if (st) return st;
    if (!flags) return CUDA_ERROR_INVALID_VALUE;
    *flags = o ? o->flags : 0;
    return CUDA_SUCCESS;
}
FCD_EXPORT CUresult cuStreamGetFlags_ptsz(CUstream s, unsigned int *flags) {
    return cuStreamGetFlags(s, flags);
}

FCD_EXPORT CUresult cuStreamGetPriority(CUstream s, int *priority) {
    CUstream o;
    CUresult st = stream_get(s, 0, &o);
    if (st) return st;
    if (!priority) return CUDA_ERROR_INVALID_VALUE;
    *priority = o ? o->priority : 0;
    return CUDA_SUCCESS;
}
FCD_EXPORT CUresult cuStreamGetPriority_ptsz(CUstream s, int *priority) {
    return cuStreamGetPriority(s, priority);
}

FCD_EXPORT CUresult cuStreamGetId(CUstream s, unsigned long long *id) {
    int dev;
    uint32_t sid;
    CUresult st = own_stream(s, 0, &dev, &sid);
    if (st) return st;
    if (!id) return CUDA_ERROR_INVALID_VALUE;
    *id = sid;
    return CUDA_SUCCESS;
}
FCD_EXPORT CUresult cuStreamGetId_ptsz(CUstream s, unsigned long long *id) {
    int dev;
    uint32_t sid;
    CUresult st = own_stream(s, 1, &dev, &sid);
    if (st) return st;
    if (!id) return CUDA_ERROR_INVALID_VALUE;
    *id = sid;
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuStreamGetCtx(CUstream s, CUcontext *pctx) {
    int dev;
    uint32_t sid;
    CUresult st = own_stream(s, 0, &dev, &sid);
    if (st) return st;
    if (!pctx) return CUDA_ERROR_INVALID_VALUE;
    CUstream o;
    stream_get(s, 0, &o);
    *pctx = o && o->ctx ? o->ctx : fcd_primary(dev);
    return CUDA_SUCCESS;
}
FCD_EXPORT CUresult cuStreamGetCtx_ptsz(CUstream s, CUcontext *pctx) { return cuStreamGetCtx(s, pctx); }

FCD_EXPORT CUresult cuStreamGetDevice(CUstream s, CUdevice *device) {
    int dev;
    uint32_t sid;
    CUresult st = own_stream(s, 0, &dev, &sid);
    if (st) return st;
    if (!device) return CUDA_ERROR_INVALID_VALUE;
    *device = dev;
    return CUDA_SUCCESS;
}
FCD_EXPORT CUresult cuStreamGetDevice_ptsz(CUstream s, CUdevice *device) {
    return cuStreamGetDevice(s, device);
}

/* ---------------- host functions ---------------- */

typedef struct {
    void (*fn)(void *);
    void (*cb)(CUstream, CUresult, void *);
    CUstream stream;
    void *data;
} host_call;

static int captured_host_fn_notice;

static void run_host_call(void *arg) {
    host_call *h = arg;
    if (h->fn) h->fn(h->data);
    else h->cb(h->stream, CUDA_SUCCESS, h->data);
    free(h);
}

static CUresult host_func(CUstream s, int ptds, void (*fn)(void *),
                          void (*cb)(CUstream, CUresult, void *), void *data) {
    int dev;
    uint32_t sid;
    CUresult st = own_stream(s, ptds, &dev, &sid);
    if (st) return st;
    if (!fn && !cb) return CUDA_ERROR_INVALID_VALUE;
    if (fcd_capture_of(s)) {
        fcd_note_once(&captured_host_fn_notice, "host functions in a captured graph are not "
                      "supported by farcuda's driver layer (CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED)");
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    }
    host_call *h = malloc(sizeof *h);
    if (!h) return CUDA_ERROR_OUT_OF_MEMORY;
    *h = (host_call){fn, cb, s, data};
    st = fcd_status(fcc_host_func(dev, sid, run_host_call, h));
    return st;
}

FCD_EXPORT CUresult cuLaunchHostFunc(CUstream s, void (*fn)(void *), void *data) {
    return host_func(s, 0, fn, NULL, data);
}
FCD_EXPORT CUresult cuLaunchHostFunc_ptsz(CUstream s, void (*fn)(void *), void *data) {
    return host_func(s, 1, fn, NULL, data);
}
FCD_EXPORT CUresult cuStreamAddCallback(CUstream s, void (*cb)(CUstream, CUresult, void *),
                                        void *data, unsigned int flags) {
    if (flags) return CUDA_ERROR_INVALID_VALUE;
    return host_func(s, 0, NULL, cb, data);
}
FCD_EXPORT CUresult cuStreamAddCallback_ptsz(CUstream s, void (*cb)(CUstream, CUresult, void *),
                                             void *data, unsigned int flags) {
    if (flags) return CUDA_ERROR_INVALID_VALUE;
    return host_func(s, 1, NULL, cb, data);
}

/* ---------------- events ---------------- */

FCD_EXPORT CUresult cuEventCreate(CUevent *ph, unsigned int flags) {
    int dev;
    CUresult st = fcd_current_device(&dev);
    if (st) return st;
    /* CU_EVENT_BLOCKING_SYNC 1, DISABLE_TIMING 2, INTERPROCESS 4 */
    if (!ph || (flags & ~7u)) return CUDA_ERROR_INVALID_VALUE;
    if (flags & 4) return CUDA_ERROR_NOT_SUPPORTED; /* IPC: out of scope */
    struct fcd_event *e = calloc(1, sizeof *e);
    if (!e) return CUDA_ERROR_OUT_OF_MEMORY;
    *e = (struct fcd_event){FCD_EVENT, fcc_new_id(), dev, flags, NULL};
    fc_EVENT_CREATE m = {e->id, flags};
    if ((st = post(dev, FC_OP_EVENT_CREATE, &m, sizeof m))) {
        free(e);
        return st;
    }
    fcd_handle_add(e);
    *ph = e;
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuEventDestroy_v2(CUevent e) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!fcd_handle_live(e, FCD_EVENT)) return CUDA_ERROR_INVALID_HANDLE;
    fcd_handle_del(e);
    fc_EVENT_DESTROY m = {e->id};
    st = post(e->dev, FC_OP_EVENT_DESTROY, &m, sizeof m);
    e->magic = 0;
    free(e);
    return st;
}

FCD_EXPORT CUresult cuEventDestroy(CUevent e) { return cuEventDestroy_v2(e); }

static CUresult record(CUevent e, CUstream s, unsigned int flags, int ptds) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!fcd_handle_live(e, FCD_EVENT)) return CUDA_ERROR_INVALID_HANDLE;
    int dev = e->dev;
    uint32_t sid;
    if ((st = fcd_stream_resolve(s, ptds, &dev, &sid)))
        return st == CUDA_ERROR_INVALID_VALUE ? CUDA_ERROR_INVALID_HANDLE : st;
    e->capture = fcd_capture_of(s);
    fc_EVENT_RECORD m = {e->id, sid, flags};
    return post(dev, FC_OP_EVENT_RECORD, &m, sizeof m);
}

FCD_EXPORT CUresult cuEventRecord(CUevent e, CUstream s) { return record(e, s, 0, 0); }
FCD_EXPORT CUresult cuEventRecord_ptsz(CUevent e, CUstream s) { return record(e, s, 0, 1); }
FCD_EXPORT CUresult cuEventRecordWithFlags(CUevent e, CUstream s, unsigned int flags) {
    if (flags & ~1u) return CUDA_ERROR_INVALID_VALUE;
    return record(e, s, flags, 0);
}
FCD_EXPORT CUresult cuEventRecordWithFlags_ptsz(CUevent e, CUstream s, unsigned int flags) {
    if (flags & ~1u) return CUDA_ERROR_INVALID_VALUE;
    return record(e, s, flags, 1);
}

FCD_EXPORT CUresult cuEventSynchronize(CUevent e) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!fcd_handle_live(e, FCD_EVENT)) return CUDA_ERROR_INVALID_HANDLE;
    fc_EVENT_SYNC m = {e->id};
    return fcd_status(fcc_sync_status(e->dev, fcc_call(e->dev, FC_OP_EVENT_SYNC, &m, sizeof m,
                                                       NULL, 0, NULL, 0, NULL, NULL)));
}

FCD_EXPORT CUresult cuEventQuery(CUevent e) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!fcd_handle_live(e, FCD_EVENT)) return CUDA_ERROR_INVALID_HANDLE;
    fc_EVENT_QUERY m = {e->id};
    int r = fcc_call(e->dev, FC_OP_EVENT_QUERY, &m, sizeof m, NULL, 0, NULL, 0, NULL, NULL);
    return fcd_status(r == cudaErrorNotReady ? r : fcc_sync_status(e->dev, r));
}

FCD_EXPORT CUresult cuEventElapsedTime_v2(float *ms, CUevent a, CUevent b) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!ms) return CUDA_ERROR_INVALID_VALUE;
    if (!fcd_handle_live(a, FCD_EVENT) || !fcd_handle_live(b, FCD_EVENT))
        return CUDA_ERROR_INVALID_HANDLE;
    if (a->dev != b->dev) return CUDA_ERROR_INVALID_HANDLE;
    fc_EVENT_ELAPSED m = {a->id, b->id};
    fc_EVENT_ELAPSED_reply rep = {0};
    st = fcd_status(fcc_call(a->dev, FC_OP_EVENT_ELAPSED, &m, sizeof m, NULL, 0, &rep, sizeof rep,
                             NULL, NULL));
    if (!st) *ms = rep.ms;
    return st;
}

FCD_EXPORT CUresult cuEventElapsedTime(float *ms, CUevent a, CUevent b) {
    return cuEventElapsedTime_v2(ms, a, b);
}
