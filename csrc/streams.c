/* Streams, events, host callbacks and stream capture.
 *
 * The client names its streams, events and graphs itself (ids on the wire), so creating one
 * is an async frame, not a round trip. Handles given to the app point to small structs that
 * are never freed: a destroyed handle keeps a dead magic, so using it again is an error, not
 * a use-after-free.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "fc.h"
#include "api.h"
#include "conn.h"
#include "runtime.h"
#include "streams.h"

static pthread_mutex_t capture_mtx = PTHREAD_MUTEX_INITIALIZER;
static fc_stream *stream_struct(cudaStream_t s, int ptds, int dev);
static void capture_join(fc_capture *c, fc_stream *fs);

static uint32_t next_id = 1;
uint32_t fc_new_id(void) { return __atomic_fetch_add(&next_id, 1, __ATOMIC_RELAXED); }

/* ---------------- streams ---------------- */

static int per_thread_stream(int dev, uint32_t *id) {
    fc_tls *t = fc_tls_get();
    if (!t->ptds[dev] || t->ptds_gen[dev] != fc_devices[dev].generation) {
        int st = fc_device_ready(dev);
        if (st) return st;
        fc_stream *s = calloc(1, sizeof *s);
        if (!s) return cudaErrorMemoryAllocation;
        *s = (fc_stream){FC_STREAM_MAGIC, fc_new_id(), dev, 0, 0, 1, 0};
        fc_STREAM_CREATE m = {s->id, 0, 0};
        st = fc_post_dev(dev, FC_OP_STREAM_CREATE, &m, sizeof m);
        if (st) {
            free(s);
            return st;
        }
        t->ptds[dev] = s;
        t->ptds_gen[dev] = fc_devices[dev].generation;
    }
    *id = t->ptds[dev]->id;
    return cudaSuccess;
}

int fc_stream_resolve(cudaStream_t s, int ptds, int *dev, uint32_t *id) {
    if (s == NULL) {
        if (ptds) return per_thread_stream(*dev, id);
        *id = 0;
        return cudaSuccess;
    }
    if (s == FC_STREAM_LEGACY) {
        *id = 0;
        return cudaSuccess;
    }
    if (s == FC_STREAM_PER_THREAD) return per_thread_stream(*dev, id);
    fc_stream *st = s;
    if (st->magic != FC_STREAM_MAGIC) return cudaErrorInvalidResourceHandle;
    *dev = st->dev;
    *id = st->id;
    return cudaSuccess;
}

static fc_stream *stream_of(cudaStream_t s, int ptds, int *st_out) {
    int dev = fc_current_device();
    uint32_t id;
    *st_out = fc_stream_resolve(s, ptds, &dev, &id);
    if (*st_out) return NULL;
    if (s == NULL || s == FC_STREAM_LEGACY || s == FC_STREAM_PER_THREAD) return NULL;
    return s;
}

int fc_stream_create(cudaStream_t *out, unsigned int flags, int priority) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!out || (flags & ~1u)) return cudaErrorInvalidValue;
    int dev = fc_current_device();
    if ((st = fc_device_ready(dev))) return st;
    /* as CUDA does: priorities outside the device's range are clamped to it */
    fc_device *d = &fc_devices[dev];
    if (priority > d->prio_least) priority = d->prio_least;
    if (priority < d->prio_greatest) priority = d->prio_greatest;
    fc_stream *s = calloc(1, sizeof *s);
    if (!s) return cudaErrorMemoryAllocation;
    *s = (fc_stream){FC_STREAM_MAGIC, fc_new_id(), dev, flags, priority, 0, 0};
    fc_STREAM_CREATE m = {s->id, flags, priority};
    st = fc_post_dev(dev, FC_OP_STREAM_CREATE, &m, sizeof m);
    if (st) {
        free(s);
        return st;
    }
    *out = s;
    return cudaSuccess;
}

int fc_stream_destroy(cudaStream_t s) {
    int st = fc_ensure_init();
    if (st) return st;
    if (s == NULL || s == FC_STREAM_LEGACY || s == FC_STREAM_PER_THREAD)
        return cudaErrorInvalidResourceHandle;
    fc_stream *fs = s;
    if (fs->magic != FC_STREAM_MAGIC) return cudaErrorInvalidResourceHandle;
    fs->magic = FC_DEAD_MAGIC;
    fc_STREAM_DESTROY m = {fs->id};
    return fc_post_dev(fs->dev, FC_OP_STREAM_DESTROY, &m, sizeof m);
}

int fc_stream_sync(cudaStream_t s, int ptds, uint16_t op) {
    int st = fc_ensure_init();
    if (st) return st;
    int dev = fc_current_device();
    uint32_t id;
    if ((st = fc_stream_resolve(s, ptds, &dev, &id))) return st;
    if ((st = fc_device_ready(dev))) return st;
    fc_STREAM_SYNC m = {id};
    st = fc_call_dev(dev, op, &m, sizeof m, NULL, 0);
    if (op == FC_OP_STREAM_QUERY && st == cudaErrorNotReady) return st;
    return fc_sync_status(dev, st);
}

int fc_event_resolve(cudaEvent_t e, fc_event **out) {
    fc_event *ev = e;
    if (!ev || ev->magic != FC_EVENT_MAGIC) return cudaErrorInvalidResourceHandle;
    *out = ev;
    return cudaSuccess;
}

int fc_stream_wait_event(cudaStream_t s, cudaEvent_t e, unsigned int flags, int ptds) {
    int st = fc_ensure_init();
    if (st) return st;
    fc_event *ev;
    if ((st = fc_event_resolve(e, &ev))) return st;
    int dev = fc_current_device();
    uint32_t id;
    if ((st = fc_stream_resolve(s, ptds, &dev, &id))) return st;
    if ((st = fc_device_ready(dev))) return st;
    if (fc_devices[ev->dev].server != fc_devices[dev].server) {
        /* different servers cannot wait on each other's events: wait here instead */
        fc_EVENT_SYNC m = {ev->id};
        st = fc_call_dev(ev->dev, FC_OP_EVENT_SYNC, &m, sizeof m, NULL, 0);
        return fc_sync_status(ev->dev, st);
    }
    fc_STREAM_WAIT_EVENT m = {id, ev->id, flags};
    fc_stream *fs = stream_struct(s, ptds, dev);
    if (fs && (flags & FC_EVENT_WAIT_EXTERNAL)) /* a node of the graph: waits at each replay */
        fc_capture_node(fs->capture, FC_NODE_WAIT_EVENT);
    if (ev->capture && fs && !fs->capture) { /* waiting on a captured event joins the capture */
        pthread_mutex_lock(&capture_mtx);
        capture_join(ev->capture, fs);
        pthread_mutex_unlock(&capture_mtx);
    }
    fc_conn *c = fc_dev_conn(dev);
    char *p = fc_post_begin(c, FC_OP_STREAM_WAIT_EVENT, (uint16_t)dev, sizeof m);
    if (!p) return c->dead ? c->dead_status : cudaErrorMemoryAllocation;
    fc_STREAM_WAIT_EVENT_set_event_vdev((fc_hdr *)p - 1, (uint16_t)ev->dev);
    memcpy(p, &m, sizeof m);
    fc_post_commit(c);
    return fc_device_status(dev);
}

int fc_stream_field(cudaStream_t s, int ptds, int which, void *out) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!out) return cudaErrorInvalidValue;
    fc_stream *fs = stream_of(s, ptds, &st);
    if (st) return st;
    int dev = fs ? fs->dev : fc_current_device();
    switch (which) {
    case 0: *(unsigned int *)out = fs ? fs->flags : 0; break;
    case 1: *(int *)out = fs ? fs->priority : 0; break;
    case 2: *(int *)out = dev; break;
    case 3: {
        uint32_t id = 0;
        if (!fs) {
            int d = dev;
            if ((st = fc_stream_resolve(s, ptds, &d, &id))) return st;
        }
        *(unsigned long long *)out = fs ? fs->id : id;
        break;
    }
    }
    return cudaSuccess;
}

int fcx_stream_info(void *stream, int *dev, uint32_t *id, int *priority, unsigned int *flags) {
    int d = fc_current_device();
    uint32_t i;
    int st = fc_stream_resolve(stream, 0, &d, &i);
    if (st) return st;
    *dev = d;
    *id = i;
    fc_stream *fs = (stream == NULL || stream == FC_STREAM_LEGACY ||
                     stream == FC_STREAM_PER_THREAD) ? NULL : stream;
    *priority = fs ? fs->priority : 0;
    *flags = fs ? fs->flags : 0;
    return cudaSuccess;
}

/* ---------------- events ---------------- */

int fc_event_create(cudaEvent_t *out, unsigned int flags) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!out || (flags & ~0xfu)) return cudaErrorInvalidValue;
    int dev = fc_current_device();
    if ((st = fc_device_ready(dev))) return st;
    fc_event *e = calloc(1, sizeof *e);
    if (!e) return cudaErrorMemoryAllocation;
    *e = (fc_event){FC_EVENT_MAGIC, fc_new_id(), dev, flags, 0};
    fc_EVENT_CREATE m = {e->id, flags};
    st = fc_post_dev(dev, FC_OP_EVENT_CREATE, &m, sizeof m);
    if (st) {
        free(e);
        return st;
    }
    *out = e;
    return cudaSuccess;
}

int fc_event_record(cudaEvent_t e, cudaStream_t s, unsigned int flags, int ptds) {
    int st = fc_ensure_init();
    if (st) return st;
    fc_event *ev;
    if ((st = fc_event_resolve(e, &ev))) return st;
    int dev = ev->dev;
    uint32_t id;
    if ((st = fc_stream_resolve(s, ptds, &dev, &id))) return st;
    if (dev != ev->dev) return cudaErrorInvalidResourceHandle;
    if ((st = fc_device_ready(dev))) return st;
    fc_EVENT_RECORD m = {ev->id, id, flags};
    ev->recorded = 1;
    fc_capture *cap = fc_capture_of(s, ptds, dev);
    /* recorded in a capture, the event ties a stream that waits on it into the capture;
     * an external record (cudaEventRecordExternal) is a node of the graph instead, recorded
     * at each replay, and waiting on it joins nothing */
    ev->capture = (flags & FC_EVENT_RECORD_EXTERNAL) ? NULL : cap;
    if (flags & FC_EVENT_RECORD_EXTERNAL) fc_capture_node(cap, FC_NODE_EVENT_RECORD);
    return fc_post_dev(dev, FC_OP_EVENT_RECORD, &m, sizeof m);
}

int fc_event_call(cudaEvent_t e, uint16_t op) {
    int st = fc_ensure_init();
    if (st) return st;
    fc_event *ev;
    if ((st = fc_event_resolve(e, &ev))) return st;
    if ((st = fc_device_ready(ev->dev))) return st;
    fc_EVENT_SYNC m = {ev->id};
    st = fc_call_dev(ev->dev, op, &m, sizeof m, NULL, 0);
    if (op == FC_OP_EVENT_QUERY && st == cudaErrorNotReady) return st;
    return fc_sync_status(ev->dev, st);
}

int fc_event_elapsed(float *ms, cudaEvent_t start, cudaEvent_t end) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!ms) return cudaErrorInvalidValue;
    fc_event *a, *b;
    if ((st = fc_event_resolve(start, &a)) || (st = fc_event_resolve(end, &b))) return st;
    if (a->dev != b->dev) return cudaErrorInvalidResourceHandle;
    if ((st = fc_device_ready(a->dev))) return st;
    fc_EVENT_ELAPSED m = {a->id, b->id};
    fc_EVENT_ELAPSED_reply rep = {0};
    st = fc_call_dev(a->dev, FC_OP_EVENT_ELAPSED, &m, sizeof m, &rep, sizeof rep);
    if (st == cudaSuccess) *ms = rep.ms;
    return st;
}

int fc_event_destroy(cudaEvent_t e) {
    int st = fc_ensure_init();
    if (st) return st;
    fc_event *ev;
    if ((st = fc_event_resolve(e, &ev))) return st;
    ev->magic = FC_DEAD_MAGIC;
    fc_EVENT_DESTROY m = {ev->id};
    return fc_post_dev(ev->dev, FC_OP_EVENT_DESTROY, &m, sizeof m);
}

/* ---------------- host callbacks ---------------- */

typedef struct fc_callback {
    uint32_t id;
    uint64_t seq;
    int persistent;             /* captured into a graph: runs at every replay */
    int dev;
    int kind; /* 0 host function, 1 stream callback */
    void (*fn)(void *);
    void (*cb)(cudaStream_t, int, void *);
    void *data;
    cudaStream_t stream;
    struct fc_callback *next;
} fc_callback;

static pthread_mutex_t cb_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cb_cv = PTHREAD_COND_INITIALIZER;
static fc_callback *cb_registered; /* waiting for the stream to reach them */
static fc_callback *cb_ready_head, *cb_ready_tail;
static int cb_thread_started;
static pthread_t cb_thread;
static fc_callback *cb_running;
static pthread_cond_t cb_done_cv = PTHREAD_COND_INITIALIZER;
static uint64_t cb_seq;

static int earlier_pending(int dev, uint64_t seq) {
    for (fc_callback *c = cb_registered; c; c = c->next)
        if (c->dev == dev && c->seq < seq && !c->persistent) return 1;
    for (fc_callback *c = cb_ready_head; c; c = c->next)
        if (c->dev == dev && c->seq < seq) return 1;
    return cb_running && cb_running->dev == dev && cb_running->seq < seq;
}

/* A copy from pinned memory must see what earlier host callbacks of the device write there
 * (CUDA reads the source when the copy executes, after them): wait until they have run. */
void fc_wait_callbacks(int dev) {
    pthread_mutex_lock(&cb_mtx);
    uint64_t me = ++cb_seq;
    while (earlier_pending(dev, me)) pthread_cond_wait(&cb_done_cv, &cb_mtx);
    pthread_mutex_unlock(&cb_mtx);
}

/* Callbacks run on a thread of their own, in the order the daemon reports them, as CUDA runs
 * them on a driver thread; the reader thread never runs user code. */
static void *cb_main(void *arg) {
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&cb_mtx);
        while (!cb_ready_head) pthread_cond_wait(&cb_cv, &cb_mtx);
        fc_callback *c = cb_ready_head;
        cb_ready_head = c->next;
        if (!cb_ready_head) cb_ready_tail = NULL;
        cb_running = c;
        pthread_mutex_unlock(&cb_mtx);
        if (c->kind == 0) c->fn(c->data);
        else c->cb(c->stream, cudaSuccess, c->data);
        fc_CALLBACK_DONE m = {c->id};
        fc_post(fc_dev_conn(c->dev), FC_OP_CALLBACK_DONE, (uint16_t)c->dev, &m, sizeof m, NULL, 0);
        pthread_mutex_lock(&cb_mtx);
        cb_running = NULL;
        if (c->persistent) { /* back to waiting for the next replay */
            c->next = cb_registered;
            cb_registered = c;
        }
        pthread_cond_broadcast(&cb_done_cv);
        pthread_mutex_unlock(&cb_mtx);
        if (!c->persistent) free(c);
    }
    return NULL;
}

/* reader thread: a stream reached a host function (CALLBACK) */
static void callback_reached(uint32_t id) {
    pthread_mutex_lock(&cb_mtx);
    fc_callback **pp = &cb_registered, *c;
    while ((c = *pp) && c->id != id) pp = &c->next;
    if (c) {
        *pp = c->next;
        c->next = NULL;
        if (cb_ready_tail) cb_ready_tail->next = c;
        else cb_ready_head = c;
        cb_ready_tail = c;
        pthread_cond_signal(&cb_cv);
    }
    pthread_mutex_unlock(&cb_mtx);
}

int fc_add_callback(cudaStream_t s, int ptds, int kind, void (*fn)(void *),
                    void (*cb)(cudaStream_t, int, void *), void *data) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!fn && !cb) return cudaErrorInvalidValue;
    int dev = fc_current_device();
    uint32_t sid;
    if ((st = fc_stream_resolve(s, ptds, &dev, &sid))) return st;
    if ((st = fc_device_ready(dev))) return st;
    fc_callback *c = calloc(1, sizeof *c);
    if (!c) return cudaErrorMemoryAllocation;
    fc_capture *cap = fc_capture_of(s, ptds, dev);
    *c = (fc_callback){fc_new_id(), 0, cap != NULL, dev, kind, fn, cb, data, s, NULL};
    pthread_mutex_lock(&cb_mtx);
    c->seq = ++cb_seq;
    if (!cb_thread_started) {
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pthread_create(&cb_thread, NULL, cb_main, NULL);
        pthread_detach(cb_thread);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        cb_thread_started = 1;
    }
    c->next = cb_registered;
    cb_registered = c;
    pthread_mutex_unlock(&cb_mtx);
    fc_HOST_FUNC m = {sid, c->id};
    fc_conn *conn = fc_dev_conn(dev);
    char *p = fc_post_begin(conn, FC_OP_HOST_FUNC, (uint16_t)dev, sizeof m);
    if (!p) return conn->dead ? conn->dead_status : cudaErrorMemoryAllocation;
    fc_HOST_FUNC_set_captured((fc_hdr *)p - 1, cap != NULL);
    memcpy(p, &m, sizeof m);
    fc_post_commit(conn);
    fc_capture_node(cap, FC_NODE_HOST);
    return fc_device_status(dev);
}

/* ---------------- stream capture ---------------- */

struct fc_capture {
    fc_graph *graph;
    fc_stream **members;        /* streams that joined (the origin first) */
    size_t nmembers;
};

static fc_stream *stream_struct(cudaStream_t s, int ptds, int dev) {
    if (s == FC_STREAM_LEGACY || (s == NULL && !ptds)) return NULL;
    if (s == NULL || s == FC_STREAM_PER_THREAD) {
        if (dev < 0 || dev >= FC_MAX_DEVICES) return NULL;
        return fc_tls_get()->ptds[dev];
    }
    fc_stream *fs = s;
    return fs->magic == FC_STREAM_MAGIC ? fs : NULL;
}

fc_capture *fc_capture_of(cudaStream_t s, int ptds, int dev) {
    fc_stream *fs = stream_struct(s, ptds, dev);
    return fs ? fs->capture : NULL;
}

static void capture_join(fc_capture *c, fc_stream *fs) {
    fc_stream **m = realloc(c->members, (c->nmembers + 1) * sizeof *m);
    if (!m) return;
    c->members = m;
    c->members[c->nmembers++] = fs;
    fs->capture = c;
}

void fc_capture_node(fc_capture *c, int type) {
    if (!c) return;
    fc_gnode *nd = calloc(1, sizeof *nd);
    if (!nd) return;
    nd->magic = FC_NODE_MAGIC;
    nd->type = type;
    pthread_mutex_lock(&capture_mtx);
    fc_graph *g = c->graph;
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 16;
        fc_gnode **v = realloc(g->nodes, cap * sizeof *v);
        if (v) {
            g->nodes = v;
            g->cap = cap;
        }
    }
    if (g->n < g->cap) g->nodes[g->n++] = nd;
    pthread_mutex_unlock(&capture_mtx);
}

/* Host memory named by captured copies: the daemon asks for it (FETCH) or sends it (PUSH)
 * each time the graph runs; only these registered ranges are ever touched. */
typedef struct { void *host; size_t n; int dev; int to_device; } fc_hostnode;
static fc_hostnode *hostnodes;
static uint32_t nhostnodes, cap_hostnodes;

uint32_t fc_hostnode_add(int dev, void *host, size_t n, int to_device) {
    pthread_mutex_lock(&capture_mtx);
    if (nhostnodes == cap_hostnodes) {
        uint32_t cap = cap_hostnodes ? cap_hostnodes * 2 : 16;
        fc_hostnode *v = realloc(hostnodes, cap * sizeof *v);
        if (!v) {
            pthread_mutex_unlock(&capture_mtx);
            return 0;
        }
        hostnodes = v;
        cap_hostnodes = cap;
    }
    hostnodes[nhostnodes] = (fc_hostnode){host, n, dev, to_device};
    uint32_t id = ++nhostnodes;
    pthread_mutex_unlock(&capture_mtx);
    return id;
}

static int hostnode_get(uint32_t id, fc_hostnode *out) {
    pthread_mutex_lock(&capture_mtx);
    int ok = id >= 1 && id <= nhostnodes;
    if (ok) *out = hostnodes[id - 1];
    pthread_mutex_unlock(&capture_mtx);
    return ok ? 0 : -1;
}

/* reader thread: a replay reached a captured host-to-device copy */
static void hostnode_fetch(fc_conn *c, uint32_t node) {
    fc_hostnode h;
    if (hostnode_get(node, &h) || !h.to_device) return;
    for (size_t off = 0; off < h.n; off += FC_PIECE) {
        size_t k = h.n - off < FC_PIECE ? h.n - off : FC_PIECE;
        fc_HOST_DATA m = {node, 0, off};
        fc_post(c, FC_OP_HOST_DATA, (uint16_t)h.dev, &m, sizeof m, (char *)h.host + off, k);
    }
}

/* reader thread: where the bytes of a PUSH go (a registered device-to-host range only) */
static int hostnode_target(uint32_t node, uint64_t offset, size_t n, void **dst, int *dev) {
    fc_hostnode h;
    if (hostnode_get(node, &h) || h.to_device || offset > h.n || n > h.n - offset) return -1;
    *dst = (char *)h.host + offset;
    *dev = h.dev;
    return 0;
}

/* What the reader thread hands over of what the daemon tells unasked (conn.h). */
static const fc_conn_notices notices = {callback_reached, hostnode_fetch, hostnode_target};

__attribute__((constructor)) static void streams_notices(void) { fc_conn_set_notices(&notices); }

static __thread int capture_mode_tls; /* cudaStreamCaptureModeGlobal = 0 */

int fc_begin_capture(cudaStream_t s, int mode, int ptds) {
    int st = fc_ensure_init();
    if (st) return st;
    int dev = fc_current_device();
    uint32_t id;
    if ((st = fc_stream_resolve(s, ptds, &dev, &id))) return st;
    if (id == 0) return cudaErrorStreamCaptureUnsupported; /* the legacy stream cannot */
    if ((st = fc_device_ready(dev))) return st;
    fc_stream *fs = stream_struct(s, ptds, dev);
    if (!fs) return cudaErrorStreamCaptureUnsupported;
    fc_CAPTURE_BEGIN m = {id, (uint32_t)mode};
    st = fc_call_dev(dev, FC_OP_CAPTURE_BEGIN, &m, sizeof m, NULL, 0);
    if (st) return st;
    fc_capture *c = calloc(1, sizeof *c);
    fc_graph *g = calloc(1, sizeof *g);
    if (!c || !g) return cudaErrorMemoryAllocation;
    g->magic = FC_GRAPH_MAGIC;
    g->id = fc_new_id();
    g->dev = dev;
    c->graph = g;
    pthread_mutex_lock(&capture_mtx);
    capture_join(c, fs);
    pthread_mutex_unlock(&capture_mtx);
    return cudaSuccess;
}

int fc_end_capture(cudaStream_t s, void **graph, int ptds) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!graph) return cudaErrorInvalidValue;
    int dev = fc_current_device();
    uint32_t id;
    if ((st = fc_stream_resolve(s, ptds, &dev, &id))) return st;
    if ((st = fc_device_ready(dev))) return st;
    fc_stream *fs = stream_struct(s, ptds, dev);
    fc_capture *c = fs ? fs->capture : NULL;
    fc_graph *g = c ? c->graph : NULL;
    fc_CAPTURE_END m = {id, g ? g->id : fc_new_id()};
    st = fc_call_dev(dev, FC_OP_CAPTURE_END, &m, sizeof m, NULL, 0);
    if (c) { /* the capture is over for every stream that joined it */
        pthread_mutex_lock(&capture_mtx);
        for (size_t i = 0; i < c->nmembers; i++) c->members[i]->capture = NULL;
        pthread_mutex_unlock(&capture_mtx);
        free(c->members);
        free(c);
    }
    if (st || !g) {
        *graph = NULL;
        return st ? st : cudaErrorStreamCaptureUnmatched;
    }
    *graph = g;
    return cudaSuccess;
}

int fc_capture_status(cudaStream_t s, int *status, int ptds) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!status) return cudaErrorInvalidValue;
    int dev = fc_current_device();
    uint32_t id;
    if ((st = fc_stream_resolve(s, ptds, &dev, &id))) return st;
    if ((st = fc_device_ready(dev))) return st;
    fc_CAPTURE_STATUS m = {id};
    fc_CAPTURE_STATUS_reply rep = {0};
    st = fc_call_dev(dev, FC_OP_CAPTURE_STATUS, &m, sizeof m, &rep, sizeof rep);
    if (!st) *status = (int)rep.status;
    return st;
}

int fc_capture_info(cudaStream_t s, int *status, unsigned long long *id_out, void **graph,
                    const void **deps, const void **edges, size_t *ndeps, int ptds) {
    int st = fc_capture_status(s, status, ptds);
    if (st) return st;
    if (id_out) *id_out = 0;
    if (graph) *graph = NULL;
    if (deps) *deps = NULL;
    if (edges) *edges = NULL;
    if (ndeps) *ndeps = 0;
    return cudaSuccess;
}

int fc_exchange_capture_mode(int *mode) {
    if (!mode) return cudaErrorInvalidValue;
    int old = capture_mode_tls;
    capture_mode_tls = *mode;
    *mode = old;
    return cudaSuccess;
}
