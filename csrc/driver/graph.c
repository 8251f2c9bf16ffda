/* Stream capture and graphs: captured on the server, replayed there.
 *
 * A capture begins on one of the program's streams (never the legacy default stream); the
 * daemon captures what the stream and the streams that join it (by waiting on an event
 * recorded in the capture) then receive. This side keeps the captured graph's node list (what
 * cuGraphGetNodes and cuGraphNodeGetType answer) and the host memory of captured copies:
 * the daemon fetches or delivers those bytes at each replay, as CUDA reads and writes them
 * when the graph runs. Graphs are built by capture only: the explicit node API
 * (cuGraphAdd*Node and friends) is not supported.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdlib.h>
#include <string.h>

#include "fcd.h"
#include "../core/core.h"

enum { FCD_GRAPH = 0x47524831, FCD_EXEC = 0x47455831, FCD_NODE = 0x474e4431 };

typedef struct fcd_gnode { uint32_t magic; int type; } fcd_gnode;

typedef struct fcd_graph {
    uint32_t magic, id;
    int dev;
    fcd_gnode **nodes;
    size_t n, cap;
} fcd_graph;

struct fcd_capture {
    fcd_graph *graph;
    CUstream *members;
    size_t nmembers;
    int mode;
};

static pthread_mutex_t capture_mtx = PTHREAD_MUTEX_INITIALIZER;
static __thread int capture_mode_tls; /* CU_STREAM_CAPTURE_MODE_GLOBAL */
/* Captures under way in the process: with none, no stream is capturing, and the question
 * (which frameworks ask before every allocation) needs no round trip. */
static int captures_active;

struct fcd_capture *fcd_capture_of(CUstream s) {
    if (!s || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD ||
        !fcd_handle_live(s, FCD_STREAM))
        return NULL;
    pthread_mutex_lock(&capture_mtx);
    struct fcd_capture *c = s->capture;
    pthread_mutex_unlock(&capture_mtx);
    return c;
}

void fcd_capture_node(struct fcd_capture *c, int type) {
    if (!c) return;
    fcd_gnode *nd = calloc(1, sizeof *nd);
    if (!nd) return;
    *nd = (fcd_gnode){FCD_NODE, type};
    pthread_mutex_lock(&capture_mtx);
    fcd_graph *g = c->graph;
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 16;
        fcd_gnode **v = realloc(g->nodes, cap * sizeof *v);
        if (v) {
            g->nodes = v;
            g->cap = cap;
        }
    }
    if (g->n < g->cap) g->nodes[g->n++] = nd;
    else free(nd);
    pthread_mutex_unlock(&capture_mtx);
}

/* A stream that waits on an event recorded in a capture joins it (the server's capture
 * follows the same dependency). */
void fcd_capture_join(struct fcd_capture *c, CUstream s) {
    if (!c || !s || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD) return;
    pthread_mutex_lock(&capture_mtx);
    if (!s->capture) {
        CUstream *m = realloc(c->members, (c->nmembers + 1) * sizeof *m);
        if (m) {
            c->members = m;
            c->members[c->nmembers++] = s;
            s->capture = c;
        }
    }
    pthread_mutex_unlock(&capture_mtx);
}

/* A copy between host memory and a capturing stream: the host side is registered, and the
 * daemon captures a host node that reads (or writes) it at each replay. */
CUresult fcd_capture_host_copy(struct fcd_capture *c, int dev, CUdeviceptr dptr, void *host,
                               size_t n, int to_device, uint32_t sid) {
    uint32_t node = fcc_hostnode_add(dev, host, n, to_device);
    if (!node) return CUDA_ERROR_OUT_OF_MEMORY;
    int e;
    if (to_device) {
        fc_CAPTURE_HTOD m = {dptr, n, sid, node};
        e = fcc_call(dev, FC_OP_CAPTURE_HTOD, &m, sizeof m, NULL, 0, NULL, 0, NULL, NULL);
    } else {
        fc_CAPTURE_DTOH m = {dptr, n, sid, node};
        e = fcc_call(dev, FC_OP_CAPTURE_DTOH, &m, sizeof m, NULL, 0, NULL, 0, NULL, NULL);
    }
    if (!e) fcd_capture_node(c, 1); /* CU_GRAPH_NODE_TYPE_MEMCPY */
    return fcd_status(e);
}

static CUresult begin(CUstream s, int mode, int ptds) {
    int dev = -1;
    uint32_t sid;
    CUresult st = fcd_enter();
    if (st) return st;
    if (mode < 0 || mode > 2) return CUDA_ERROR_INVALID_VALUE;
    if ((st = fcd_stream_resolve(s, ptds, &dev, &sid))) return st;
    if (sid == 0 || !s || s == CU_STREAM_PER_THREAD) /* the legacy stream cannot capture */
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    if (fcd_capture_of(s)) return CUDA_ERROR_ILLEGAL_STATE;
    fc_CAPTURE_BEGIN m = {sid, (uint32_t)mode};
    if ((st = fcd_status(fcc_call(dev, FC_OP_CAPTURE_BEGIN, &m, sizeof m, NULL, 0, NULL, 0, NULL,
                                  NULL))))
        return st;
    struct fcd_capture *c = calloc(1, sizeof *c);
    fcd_graph *g = calloc(1, sizeof *g);
    if (!c || !g) {
        free(c);
        free(g);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *g = (fcd_graph){FCD_GRAPH, fcc_new_id(), dev, NULL, 0, 0};
    c->graph = g;
    c->mode = mode;
    fcd_capture_join(c, s);
    __atomic_add_fetch(&captures_active, 1, __ATOMIC_ACQ_REL);
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuStreamBeginCapture_v2(CUstream s, int mode) { return begin(s, mode, 0); }
FCD_EXPORT CUresult cuStreamBeginCapture_v2_ptsz(CUstream s, int mode) { return begin(s, mode, 1); }
FCD_EXPORT CUresult cuStreamBeginCapture(CUstream s) { return begin(s, 0, 0); }
FCD_EXPORT CUresult cuStreamBeginCapture_ptsz(CUstream s) { return begin(s, 0, 1); }

static CUresult end(CUstream s, fcd_graph **graph, int ptds) {
    int dev = -1;
    uint32_t sid;
    CUresult st = fcd_enter();
    if (st) return st;
    if (!graph) return CUDA_ERROR_INVALID_VALUE;
    if ((st = fcd_stream_resolve(s, ptds, &dev, &sid))) return st;
    struct fcd_capture *c = fcd_capture_of(s);
    if (!c) return CUDA_ERROR_ILLEGAL_STATE;
    fcd_graph *g = c->graph;
    fc_CAPTURE_END m = {sid, g->id};
    st = fcd_status(fcc_call(dev, FC_OP_CAPTURE_END, &m, sizeof m, NULL, 0, NULL, 0, NULL, NULL));
    pthread_mutex_lock(&capture_mtx); /* the capture is over for every stream that joined it */
    for (size_t i = 0; i < c->nmembers; i++) c->members[i]->capture = NULL;
    pthread_mutex_unlock(&capture_mtx);
    free(c->members);
    free(c);
    __atomic_sub_fetch(&captures_active, 1, __ATOMIC_ACQ_REL);
    if (st) {
        *graph = NULL;
        return st;
    }
    fcd_handle_add(g);
    *graph = g;
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuStreamEndCapture(CUstream s, fcd_graph **graph) { return end(s, graph, 0); }
FCD_EXPORT CUresult cuStreamEndCapture_ptsz(CUstream s, fcd_graph **graph) {
    return end(s, graph, 1);
}

static CUresult capturing(CUstream s, int *status, int ptds) {
    int dev = -1;
    uint32_t sid;
    CUresult st = fcd_enter();
    if (st) return st;
    if (!status) return CUDA_ERROR_INVALID_VALUE;
    if ((st = fcd_stream_resolve(s, ptds, &dev, &sid))) return st;
    if (!__atomic_load_n(&captures_active, __ATOMIC_ACQUIRE)) {
        *status = 0; /* CU_STREAM_CAPTURE_STATUS_NONE */
        return CUDA_SUCCESS;
    }
    fc_CAPTURE_STATUS m = {sid};
    fc_CAPTURE_STATUS_reply rep = {0};
    st = fcd_status(fcc_call(dev, FC_OP_CAPTURE_STATUS, &m, sizeof m, NULL, 0, &rep, sizeof rep,
                             NULL, NULL));
    if (!st) *status = (int)rep.status;
    return st;
}

FCD_EXPORT CUresult cuStreamIsCapturing(CUstream s, int *status) {
    return capturing(s, status, 0);
}
FCD_EXPORT CUresult cuStreamIsCapturing_ptsz(CUstream s, int *status) {
    return capturing(s, status, 1);
}

static CUresult info(CUstream s, int *status, unsigned long long *id, fcd_graph **graph,
                     const void **deps, const void **edges, size_t *ndeps, int ptds) {
    CUresult st = capturing(s, status, ptds);
    if (st) return st;
    struct fcd_capture *c = *status == 1 ? fcd_capture_of(s) : NULL;
    if (id) *id = c ? c->graph->id : 0;
    if (graph) *graph = c ? c->graph : NULL;
    if (deps) *deps = NULL; /* the capture's frontier is the server's */
    if (edges) *edges = NULL;
    if (ndeps) *ndeps = 0;
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuStreamGetCaptureInfo(CUstream s, int *status, unsigned long long *id) {
    return info(s, status, id, NULL, NULL, NULL, NULL, 0);
}
FCD_EXPORT CUresult cuStreamGetCaptureInfo_ptsz(CUstream s, int *status, unsigned long long *id) {
    return info(s, status, id, NULL, NULL, NULL, NULL, 1);
}
FCD_EXPORT CUresult cuStreamGetCaptureInfo_v2(CUstream s, int *status, unsigned long long *id,
                                              fcd_graph **g, const void **deps, size_t *n) {
    return info(s, status, id, g, deps, NULL, n, 0);
}
FCD_EXPORT CUresult cuStreamGetCaptureInfo_v2_ptsz(CUstream s, int *status,
                                                   unsigned long long *id, fcd_graph **g,
                                                   const void **deps, size_t *n) {
    return info(s, status, id, g, deps, NULL, n, 1);
}
FCD_EXPORT CUresult cuStreamGetCaptureInfo_v3(CUstream s, int *status, unsigned long long *id,
                                              fcd_graph **g, const void **deps,
                                              const void **edges, size_t *n) {
    return info(s, status, id, g, deps, edges, n, 0);
}
FCD_EXPORT CUresult cuStreamGetCaptureInfo_v3_ptsz(CUstream s, int *status,
                                                   unsigned long long *id, fcd_graph **g,
                                                   const void **deps, const void **edges,
                                                   size_t *n) {
    return info(s, status, id, g, deps, edges, n, 1);
}

FCD_EXPORT CUresult cuThreadExchangeStreamCaptureMode(int *mode) {
    if (!mode || *mode < 0 || *mode > 2) return CUDA_ERROR_INVALID_VALUE;
    int old = capture_mode_tls;
    capture_mode_tls = *mode;
    *mode = old;
    return CUDA_SUCCESS;
}

/* ---------------- graphs ---------------- */

static fcd_graph *graph_of(fcd_graph *g, uint32_t magic) {
    return g && fcd_handle_live(g, magic) ? g : NULL;
}

FCD_EXPORT CUresult cuGraphGetNodes(fcd_graph *graph, fcd_gnode **nodes, size_t *num) {
    CUresult st = fcd_enter();
    if (st) return st;
    fcd_graph *g = graph_of(graph, FCD_GRAPH);
    if (!g || !num) return g ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_INVALID_HANDLE;
    pthread_mutex_lock(&capture_mtx);
    if (nodes) {
        size_t k = *num < g->n ? *num : g->n;
        for (size_t i = 0; i < k; i++) nodes[i] = g->nodes[i];
        for (size_t i = k; i < *num; i++) nodes[i] = NULL;
        if (*num > g->n) *num = g->n;
    } else {
        *num = g->n;
    }
    pthread_mutex_unlock(&capture_mtx);
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuGraphNodeGetType(fcd_gnode *node, int *type) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!node || !type) return CUDA_ERROR_INVALID_VALUE;
    if (node->magic != FCD_NODE) return CUDA_ERROR_INVALID_HANDLE;
    *type = node->type;
    return CUDA_SUCCESS;
}

static CUresult instantiate(fcd_graph **exec, fcd_graph *graph, unsigned long long flags) {
    CUresult st = fcd_enter();
    if (st) return st;
    fcd_graph *g = graph_of(graph, FCD_GRAPH);
    if (!exec) return CUDA_ERROR_INVALID_VALUE;
    if (!g) return CUDA_ERROR_INVALID_HANDLE;
    fcd_graph *x = calloc(1, sizeof *x);
    if (!x) return CUDA_ERROR_OUT_OF_MEMORY;
    *x = (fcd_graph){FCD_EXEC, fcc_new_id(), g->dev, NULL, 0, 0};
    fc_GRAPH_INSTANTIATE m = {g->id, x->id, flags};
    st = fcd_status(fcc_call(g->dev, FC_OP_GRAPH_INSTANTIATE, &m, sizeof m, NULL, 0, NULL, 0,
                             NULL, NULL));
    if (st) {
        free(x);
        return st;
    }
    fcd_handle_add(x);
    *exec = x;
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuGraphInstantiateWithFlags(fcd_graph **exec, fcd_graph *graph,
                                                unsigned long long flags) {
    return instantiate(exec, graph, flags);
}

/* CUDA 10/11's form: an error node and a log buffer (left empty: errors are the status) */
FCD_EXPORT CUresult cuGraphInstantiate_v2(fcd_graph **exec, fcd_graph *graph, void **err_node,
                                          char *log, size_t log_size) {
    if (err_node) *err_node = NULL;
    if (log && log_size) *log = 0;
    return instantiate(exec, graph, 0);
}
FCD_EXPORT CUresult cuGraphInstantiate(fcd_graph **exec, fcd_graph *graph, void **err_node,
                                       char *log, size_t log_size) {
    return cuGraphInstantiate_v2(exec, graph, err_node, log, log_size);
}

/* CUDA_GRAPH_INSTANTIATE_PARAMS: {u64 flags; CUstream hUploadStream; CUgraphNode hErrNode_out;
 * CUgraphInstantiateResult result_out} */
static CUresult instantiate_params(fcd_graph **exec, fcd_graph *graph, void *params, int ptds) {
    if (!params) return CUDA_ERROR_INVALID_VALUE;
    struct { unsigned long long flags; CUstream upload; void *err; int result; } *p = params;
    CUresult st = instantiate(exec, graph, p->flags);
    p->err = NULL;
    p->result = st == CUDA_SUCCESS ? 0 : 1; /* CUDA_GRAPH_INSTANTIATE_SUCCESS / _ERROR */
    (void)ptds; /* an upload ahead of the first launch is what the first launch does anyway */
    return st;
}

FCD_EXPORT CUresult cuGraphInstantiateWithParams(fcd_graph **exec, fcd_graph *graph, void *p) {
    return instantiate_params(exec, graph, p, 0);
}
FCD_EXPORT CUresult cuGraphInstantiateWithParams_ptsz(fcd_graph **exec, fcd_graph *graph,
                                                      void *p) {
    return instantiate_params(exec, graph, p, 1);
}

static CUresult exec_op(fcd_graph *exec, CUstream s, int ptds, uint16_t op) {
    CUresult st = fcd_enter();
    if (st) return st;
    fcd_graph *x = graph_of(exec, FCD_EXEC);
    if (!x) return CUDA_ERROR_INVALID_HANDLE;
    int dev = x->dev;
    uint32_t sid;
    if ((st = fcd_stream_resolve(s, ptds, &dev, &sid))) return st;
    fc_GRAPH_LAUNCH m = {x->id, sid};
    return fcd_status(fcc_post(dev, op, &m, sizeof m, NULL, 0));
}

FCD_EXPORT CUresult cuGraphLaunch(fcd_graph *x, CUstream s) {
    return exec_op(x, s, 0, FC_OP_GRAPH_LAUNCH);
}
FCD_EXPORT CUresult cuGraphLaunch_ptsz(fcd_graph *x, CUstream s) {
    return exec_op(x, s, 1, FC_OP_GRAPH_LAUNCH);
}
FCD_EXPORT CUresult cuGraphUpload(fcd_graph *x, CUstream s) {
    return exec_op(x, s, 0, FC_OP_GRAPH_UPLOAD);
}
FCD_EXPORT CUresult cuGraphUpload_ptsz(fcd_graph *x, CUstream s) {
    return exec_op(x, s, 1, FC_OP_GRAPH_UPLOAD);
}

static CUresult destroy(fcd_graph *g, uint32_t magic, uint16_t op) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!graph_of(g, magic)) return CUDA_ERROR_INVALID_HANDLE;
    fcd_handle_del(g);
    g->magic = 0;
    fc_GRAPH_DESTROY m = {g->id};
    /* the nodes stay: handles the program still holds must not point at freed memory */
    return fcd_status(fcc_post(g->dev, op, &m, sizeof m, NULL, 0));
}

FCD_EXPORT CUresult cuGraphDestroy(fcd_graph *g) { return destroy(g, FCD_GRAPH, FC_OP_GRAPH_DESTROY); }
FCD_EXPORT CUresult cuGraphExecDestroy(fcd_graph *x) {
    return destroy(x, FCD_EXEC, FC_OP_GRAPH_EXEC_DESTROY);
}
