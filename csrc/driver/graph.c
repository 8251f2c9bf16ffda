/* Stream capture and graphs: captured on the server, replayed there.
 *
 * A capture begins on one of the program's streams (never the legacy default stream); the
 * daemon captures what the stream and the streams that join it (by waiting on an event
 * recorded in the capture) then receive. This side keeps the captured graph's node list (what
 * cuGraphGetNodes and cuGraphNodeGetType answer) and the host memory of captured copies:
 * the daemon fetches or delivers those bytes at each replay, as CUDA reads and writes them
 * when the graph runs.
 *
 * A graph built with the explicit node API (cuGraphCreate, cuGraphAdd*Node) lives on this
 * side, nodes and dependencies, until it is instantiated: then its nodes are captured on the
 * server, in an order that keeps every dependency, into a graph the server instantiates (see
 * "explicit graphs" below). Kernel, memset, memcpy, empty, event record and wait, and child
 * graph nodes are supported; host nodes and the rest are refused by name.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdlib.h>
#include <string.h>

#include "fcd.h"
#include "../core/core.h"

enum { FCD_GRAPH = 0x47524831, FCD_EXEC = 0x47455831, FCD_NODE = 0x474e4431 };

struct fcd_graph;

typedef struct fcd_gnode {
    uint32_t magic;
    int type;                  /* a CUgraphNodeType */
    /* explicit graphs only: */
    struct fcd_graph *graph;   /* the graph it is in */
    struct fcd_gnode **deps;   /* the nodes it depends on */
    size_t ndeps;
    CUfunction func;           /* kernel: function, shape, packed parameters */
    unsigned int grid[3], block[3], shmem;
    char *params;
    size_t params_size;
    void **argv;               /* pointers into params, one per parameter */
    CUDA_MEMSET_NODE_PARAMS set;
    CUDA_MEMCPY3D copy;
    CUevent event;             /* event record and wait */
    struct fcd_graph *child;   /* child graph: the node's own copy */
} fcd_gnode;

typedef struct fcd_graph {
    uint32_t magic, id;
    int dev;
    fcd_gnode **nodes;
    size_t n, cap;
    int built;                 /* by the node API (explicit), not by capture */
    struct fcd_graph *source;  /* an exec of an explicit graph: its copy of the graph */
    struct fcd_graph *origin;  /* ... and the graph it was instantiated from */
    unsigned long long flags;  /* ... and the flags it was instantiated with */
    unsigned char *kinds;      /* an exec of a captured graph: its nodes' types, in order */
    size_t nkinds;
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

/* The node at the end of the graph's list (under capture_mtx); 0: no memory for it. */
static int push_node(fcd_graph *g, fcd_gnode *nd) {
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 16;
        fcd_gnode **v = realloc(g->nodes, cap * sizeof *v);
        if (v) {
            g->nodes = v;
            g->cap = cap;
        }
    }
    if (g->n == g->cap) return 0;
    g->nodes[g->n++] = nd;
    return 1;
}

void fcd_capture_node(struct fcd_capture *c, int type) {
    if (!c) return;
    fcd_gnode *nd = calloc(1, sizeof *nd);
    if (!nd) return;
    *nd = (fcd_gnode){FCD_NODE, type};
    pthread_mutex_lock(&capture_mtx);
    if (!push_node(c->graph, nd)) free(nd);
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

static CUresult instantiate_built(fcd_graph **exec, fcd_graph *g, unsigned long long flags);

static CUresult instantiate(fcd_graph **exec, fcd_graph *graph, unsigned long long flags) {
    CUresult st = fcd_enter();
    if (st) return st;
    fcd_graph *g = graph_of(graph, FCD_GRAPH);
    if (!exec) return CUDA_ERROR_INVALID_VALUE;
    if (!g) return CUDA_ERROR_INVALID_HANDLE;
    if (g->built) return instantiate_built(exec, g, flags);
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
    x->flags = flags;
    pthread_mutex_lock(&capture_mtx);
    if (g->n && (x->kinds = malloc(g->n))) {
        for (size_t i = 0; i < g->n; i++) x->kinds[i] = (unsigned char)g->nodes[i]->type;
        x->nkinds = g->n;
    }
    pthread_mutex_unlock(&capture_mtx);
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

static void built_free(fcd_graph *g, int handed_out);

static CUresult destroy(fcd_graph *g, uint32_t magic, uint16_t op) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!graph_of(g, magic)) return CUDA_ERROR_INVALID_HANDLE;
    fcd_handle_del(g);
    g->magic = 0;
    if (g->source) {
        built_free(g->source, 0);
        g->source = NULL;
    }
    free(g->kinds);
    g->kinds = NULL;
    if (g->built) { /* it lives on this side only */
        built_free(g, 1);
        return CUDA_SUCCESS;
    }
    fc_GRAPH_DESTROY m = {g->id};
    /* the nodes stay: handles the program still holds must not point at freed memory */
    return fcd_status(fcc_post(g->dev, op, &m, sizeof m, NULL, 0));
}

FCD_EXPORT CUresult cuGraphDestroy(fcd_graph *g) { return destroy(g, FCD_GRAPH, FC_OP_GRAPH_DESTROY); }
FCD_EXPORT CUresult cuGraphExecDestroy(fcd_graph *x) {
    return destroy(x, FCD_EXEC, FC_OP_GRAPH_EXEC_DESTROY);
}

/* ---------------- explicit graphs ----------------
 *
 * Built here node by node; instantiated by capturing the nodes on the server, on a stream of
 * their own, one after another in an order that keeps every dependency (independent nodes
 * run one after the other: an order CUDA allows). An exec keeps its own copy of the graph:
 * a changed kernel node (cuGraphExecKernelNodeSetParams) or cuGraphExecUpdate captures and
 * instantiates it again on the server. */

CUresult fcd_pack_params(CUfunction f, void **params, void **extra, char **out, size_t *n);
CUresult cuStreamCreate(CUstream *ph, unsigned int flags);
CUresult cuStreamDestroy_v2(CUstream s);
CUresult cuStreamWaitEvent(CUstream s, CUevent e, unsigned int flags);
CUresult cuEventRecord(CUevent e, CUstream s);
CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                        unsigned by, unsigned bz, unsigned shmem, CUstream s, void **params,
                        void **extra);
CUresult cuMemsetD2D8Async(CUdeviceptr d, size_t pitch, unsigned char v, size_t w, size_t h,
                           CUstream s);
CUresult cuMemsetD2D16Async(CUdeviceptr d, size_t pitch, unsigned short v, size_t w, size_t h,
                            CUstream s);
CUresult cuMemsetD2D32Async(CUdeviceptr d, size_t pitch, unsigned int v, size_t w, size_t h,
                            CUstream s);
CUresult cuMemcpy3DAsync_v2(const CUDA_MEMCPY3D *p, CUstream s);

enum { NODE_KERNEL = 0, NODE_MEMCPY = 1, NODE_MEMSET = 2, NODE_GRAPH = 4, NODE_EMPTY = 5,
       NODE_WAIT_EVENT = 6, NODE_EVENT_RECORD = 7 }; /* CUgraphNodeType */

static void node_clear(fcd_gnode *nd) {
    free(nd->params);
    free(nd->argv);
    free(nd->deps);
    nd->params = NULL;
    nd->argv = NULL;
    nd->deps = NULL;
    if (nd->child) built_free(nd->child, 0);
    nd->child = NULL;
}

static void built_free(fcd_graph *g, int handed_out) {
    for (size_t i = 0; i < g->n; i++) {
        node_clear(g->nodes[i]);
        g->nodes[i]->magic = 0;
        if (!handed_out) free(g->nodes[i]); /* handles the program holds stay, dead */
    }
    if (!handed_out) {
        free(g->nodes);
        free(g);
    }
}

static fcd_graph *built_new(void) {
    fcd_graph *g = calloc(1, sizeof *g);
    if (g) *g = (fcd_graph){FCD_GRAPH, fcc_new_id(), -1, NULL, 0, 0, 1, NULL, NULL, 0};
    return g;
}

FCD_EXPORT CUresult cuGraphCreate(fcd_graph **graph, unsigned int flags) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!graph || flags) return CUDA_ERROR_INVALID_VALUE;
    fcd_graph *g = built_new();
    if (!g) return CUDA_ERROR_OUT_OF_MEMORY;
    fcd_handle_add(g);
    *graph = g;
    return CUDA_SUCCESS;
}

/* A kernel node's parameters copied into the node (as CUDA copies them when the node is
 * added or set), with pointers to each for cuGraphKernelNodeGetParams. */
static CUresult kernel_fields(fcd_gnode *nd, const CUDA_KERNEL_NODE_PARAMS *p, int v2) {
    CUfunction f = p->func ? p->func : (v2 ? p->kern : NULL);
    if (!f || !fcd_handle_live(f, FCD_FUNC)) return CUDA_ERROR_INVALID_VALUE;
    if (!p->gridDimX || !p->gridDimY || !p->gridDimZ || !p->blockDimX || !p->blockDimY ||
        !p->blockDimZ)
        return CUDA_ERROR_INVALID_VALUE;
    char *buf;
    size_t n;
    CUresult st = fcd_pack_params(f, p->kernelParams, p->extra, &buf, &n);
    if (st) return st;
    void **argv = calloc(f->nparams ? f->nparams : 1, sizeof *argv);
    if (!argv) {
        free(buf);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    for (uint32_t i = 0; i < f->nparams; i++) argv[i] = buf + f->params[i].offset;
    free(nd->params);
    free(nd->argv);
    nd->func = f;
    nd->grid[0] = p->gridDimX, nd->grid[1] = p->gridDimY, nd->grid[2] = p->gridDimZ;
    nd->block[0] = p->blockDimX, nd->block[1] = p->blockDimY, nd->block[2] = p->blockDimZ;
    nd->shmem = p->sharedMemBytes;
    nd->params = buf;
    nd->params_size = n;
    nd->argv = argv;
    return CUDA_SUCCESS;
}

/* A new node of the graph, after the given nodes of the same graph. */
static CUresult add_node(fcd_gnode **out, fcd_graph *graph, fcd_gnode *const *deps, size_t n,
                         int type, fcd_gnode **made) {
    CUresult st = fcd_enter();
    if (st) return st;
    fcd_graph *g = graph_of(graph, FCD_GRAPH);
    if (!g) return CUDA_ERROR_INVALID_HANDLE;
    if (!out || (n && !deps)) return CUDA_ERROR_INVALID_VALUE;
    if (!g->built) {
        static int notice;
        fcd_note_once(&notice, "adding nodes to a captured graph is not supported by farcuda's "
                      "driver layer (CUDA_ERROR_NOT_SUPPORTED)");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    for (size_t i = 0; i < n; i++)
        if (!deps[i] || deps[i]->magic != FCD_NODE || deps[i]->graph != g)
            return CUDA_ERROR_INVALID_VALUE;
    fcd_gnode *nd = calloc(1, sizeof *nd);
    if (!nd) return CUDA_ERROR_OUT_OF_MEMORY;
    nd->magic = FCD_NODE;
    nd->type = type;
    nd->graph = g;
    if (n && !(nd->deps = malloc(n * sizeof *nd->deps))) {
        free(nd);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    if (n) memcpy(nd->deps, deps, n * sizeof *deps);
    nd->ndeps = n;
    *made = nd;
    return CUDA_SUCCESS;
}

static CUresult attach(fcd_graph *g, fcd_gnode *nd, fcd_gnode **out) {
    pthread_mutex_lock(&capture_mtx);
    int ok = push_node(g, nd);
    pthread_mutex_unlock(&capture_mtx);
    if (!ok) {
        node_clear(nd);
        free(nd);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *out = nd;
    return CUDA_SUCCESS;
}

static CUresult add_kernel(fcd_gnode **out, fcd_graph *g, fcd_gnode *const *deps, size_t n,
                           const CUDA_KERNEL_NODE_PARAMS *p, int v2) {
    fcd_gnode *nd;
    CUresult st = add_node(out, g, deps, n, NODE_KERNEL, &nd);
    if (st) return st;
    if (!p) st = CUDA_ERROR_INVALID_VALUE;
    if (!st) st = kernel_fields(nd, p, v2);
    if (st) {
        node_clear(nd);
        free(nd);
        return st;
    }
    return attach(g, nd, out);
}

FCD_EXPORT CUresult cuGraphAddKernelNode_v2(fcd_gnode **out, fcd_graph *g,
                                            fcd_gnode *const *deps, size_t n,
                                            const CUDA_KERNEL_NODE_PARAMS *p) {
    return add_kernel(out, g, deps, n, p, 1);
}
FCD_EXPORT CUresult cuGraphAddKernelNode(fcd_gnode **out, fcd_graph *g, fcd_gnode *const *deps,
                                         size_t n, const CUDA_KERNEL_NODE_PARAMS *p) {
    return add_kernel(out, g, deps, n, p, 0); /* the _v1 layout: no kern, no ctx */
}

FCD_EXPORT CUresult cuGraphAddMemsetNode(fcd_gnode **out, fcd_graph *g, fcd_gnode *const *deps,
                                         size_t n, const CUDA_MEMSET_NODE_PARAMS *p,
                                         CUcontext ctx) {
    (void)ctx;
    fcd_gnode *nd;
    CUresult st = add_node(out, g, deps, n, NODE_MEMSET, &nd);
    if (st) return st;
    if (!p || (p->elementSize != 1 && p->elementSize != 2 && p->elementSize != 4) ||
        !p->width || !p->height || (p->height > 1 && p->pitch < p->width * p->elementSize)) {
        node_clear(nd);
        free(nd);
        return CUDA_ERROR_INVALID_VALUE;
    }
    nd->set = *p;
    return attach(g, nd, out);
}

FCD_EXPORT CUresult cuGraphAddMemcpyNode(fcd_gnode **out, fcd_graph *g, fcd_gnode *const *deps,
                                         size_t n, const CUDA_MEMCPY3D *p, CUcontext ctx) {
    (void)ctx;
    fcd_gnode *nd;
    CUresult st = add_node(out, g, deps, n, NODE_MEMCPY, &nd);
    if (st) return st;
    if (!p) {
        free(nd->deps);
        free(nd);
        return CUDA_ERROR_INVALID_VALUE;
    }
    nd->copy = *p; /* checked when it is captured, as the copy it describes */
    return attach(g, nd, out);
}

FCD_EXPORT CUresult cuGraphAddEmptyNode(fcd_gnode **out, fcd_graph *g, fcd_gnode *const *deps,
                                        size_t n) {
    fcd_gnode *nd;
    CUresult st = add_node(out, g, deps, n, NODE_EMPTY, &nd);
    return st ? st : attach(g, nd, out);
}

static CUresult add_event(fcd_gnode **out, fcd_graph *g, fcd_gnode *const *deps, size_t n,
                          CUevent e, int type) {
    fcd_gnode *nd;
    CUresult st = add_node(out, g, deps, n, type, &nd);
    if (st) return st;
    if (!e || !fcd_handle_live(e, FCD_EVENT)) {
        free(nd->deps);
        free(nd);
        return CUDA_ERROR_INVALID_VALUE;
    }
    nd->event = e;
    return attach(g, nd, out);
}

FCD_EXPORT CUresult cuGraphAddEventRecordNode(fcd_gnode **out, fcd_graph *g,
                                              fcd_gnode *const *deps, size_t n, CUevent e) {
    return add_event(out, g, deps, n, e, NODE_EVENT_RECORD);
}
FCD_EXPORT CUresult cuGraphAddEventWaitNode(fcd_gnode **out, fcd_graph *g,
                                            fcd_gnode *const *deps, size_t n, CUevent e) {
    return add_event(out, g, deps, n, e, NODE_WAIT_EVENT);
}

static fcd_graph *built_clone(const fcd_graph *g);

FCD_EXPORT CUresult cuGraphAddChildGraphNode(fcd_gnode **out, fcd_graph *g,
                                             fcd_gnode *const *deps, size_t n,
                                             fcd_graph *child) {
    fcd_gnode *nd;
    CUresult st = add_node(out, g, deps, n, NODE_GRAPH, &nd);
    if (st) return st;
    fcd_graph *c = graph_of(child, FCD_GRAPH);
    if (!c || !c->built || c == g || !(nd->child = built_clone(c))) {
        free(nd->deps);
        free(nd);
        return !c || c == g ? CUDA_ERROR_INVALID_VALUE
               : !c->built  ? CUDA_ERROR_NOT_SUPPORTED
                            : CUDA_ERROR_OUT_OF_MEMORY;
    }
    return attach(g, nd, out);
}

/* CUgraphEdgeData: {from_port, to_port, type, reserved[5]}; all zero is a plain edge, the
 * only kind explicit graphs have here. */
static int plain_edges(const unsigned char *edges, size_t n) {
    for (size_t i = 0; edges && i < n * 8; i++)
        if (edges[i]) return 0;
    return 1;
}

static CUresult add_dependencies(fcd_graph *graph, fcd_gnode *const *from, fcd_gnode *const *to,
                                 size_t n);

FCD_EXPORT CUresult cuGraphAddDependencies_v2(fcd_graph *graph, fcd_gnode *const *from,
                                              fcd_gnode *const *to, const void *edges,
                                              size_t n) {
    if (!plain_edges(edges, n)) return CUDA_ERROR_NOT_SUPPORTED;
    return add_dependencies(graph, from, to, n);
}

FCD_EXPORT CUresult cuGraphAddDependencies(fcd_graph *graph, fcd_gnode *const *from,
                                           fcd_gnode *const *to, size_t n) {
    return add_dependencies(graph, from, to, n);
}

/* cuGraphAddNode: CUgraphNodeParams is {type, reserved0[3], union of the kinds' parameters
 * (232 bytes), reserved2}; the kinds the other cuGraphAdd*Node calls take go their way. */
typedef struct {
    int type;
    int reserved0[3];
    union {
        long long reserved1[29];
        CUDA_KERNEL_NODE_PARAMS kernel;
        struct { int flags, reserved; CUcontext ctx; CUDA_MEMCPY3D copy; } memcpy;
        struct { CUDA_MEMSET_NODE_PARAMS set; CUcontext ctx; } memset;
        struct { fcd_graph *graph; int ownership; } graph;
        struct { CUevent event; } event;
    };
    long long reserved2;
} fcd_node_params;
_Static_assert(sizeof(fcd_node_params) == 256, "CUgraphNodeParams is 256 bytes");

static CUresult add_any(fcd_gnode **out, fcd_graph *g, fcd_gnode *const *deps, size_t n,
                        const fcd_node_params *p) {
    if (!p) return CUDA_ERROR_INVALID_VALUE;
    switch (p->type) {
    case NODE_KERNEL: return add_kernel(out, g, deps, n, &p->kernel, 1);
    case NODE_MEMCPY:
        if (p->memcpy.flags || p->memcpy.reserved) return CUDA_ERROR_INVALID_VALUE;
        return cuGraphAddMemcpyNode(out, g, deps, n, &p->memcpy.copy, p->memcpy.ctx);
    case NODE_MEMSET: return cuGraphAddMemsetNode(out, g, deps, n, &p->memset.set, p->memset.ctx);
    case NODE_GRAPH:
        if (p->graph.ownership) { /* moving the child into the parent */
            static int notice;
            fcd_note_once(&notice, "cuGraphAddNode: a child graph whose ownership moves to the "
                          "parent is not supported by farcuda's driver layer "
                          "(CUDA_ERROR_NOT_SUPPORTED)");
            return CUDA_ERROR_NOT_SUPPORTED;
        }
        return cuGraphAddChildGraphNode(out, g, deps, n, p->graph.graph);
    case NODE_EMPTY: return cuGraphAddEmptyNode(out, g, deps, n);
    case NODE_WAIT_EVENT: return cuGraphAddEventWaitNode(out, g, deps, n, p->event.event);
    case NODE_EVENT_RECORD: return cuGraphAddEventRecordNode(out, g, deps, n, p->event.event);
    default: {
        static int notice;
        fcd_note_once(&notice, "cuGraphAddNode: host, memory, semaphore, batch and conditional "
                      "nodes are not supported by farcuda's driver layer "
                      "(CUDA_ERROR_NOT_SUPPORTED)");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    }
}

FCD_EXPORT CUresult cuGraphAddNode(fcd_gnode **out, fcd_graph *g, fcd_gnode *const *deps,
                                   size_t n, const fcd_node_params *p) {
    return add_any(out, g, deps, n, p);
}
FCD_EXPORT CUresult cuGraphAddNode_v2(fcd_gnode **out, fcd_graph *g, fcd_gnode *const *deps,
                                      const void *edges, size_t n, const fcd_node_params *p) {
    if (!plain_edges(edges, n)) return CUDA_ERROR_NOT_SUPPORTED;
    return add_any(out, g, deps, n, p);
}

static CUresult add_dependencies(fcd_graph *graph, fcd_gnode *const *from, fcd_gnode *const *to,
                                 size_t n) {
    CUresult st = fcd_enter();
    if (st) return st;
    fcd_graph *g = graph_of(graph, FCD_GRAPH);
    if (!g) return CUDA_ERROR_INVALID_HANDLE;
    if (!g->built) return CUDA_ERROR_NOT_SUPPORTED;
    if (n && (!from || !to)) return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < n; i++)
        if (!from[i] || !to[i] || from[i] == to[i] || from[i]->magic != FCD_NODE ||
            to[i]->magic != FCD_NODE || from[i]->graph != g || to[i]->graph != g)
            return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < n; i++) {
        fcd_gnode *t = to[i];
        for (size_t k = 0; k < t->ndeps; k++)
            if (t->deps[k] == from[i]) return CUDA_ERROR_INVALID_VALUE; /* there already */
        fcd_gnode **d = realloc(t->deps, (t->ndeps + 1) * sizeof *d);
        if (!d) return CUDA_ERROR_OUT_OF_MEMORY;
        t->deps = d;
        t->deps[t->ndeps++] = from[i];
    }
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuGraphGetRootNodes(fcd_graph *graph, fcd_gnode **nodes, size_t *num) {
    CUresult st = fcd_enter();
    if (st) return st;
    fcd_graph *g = graph_of(graph, FCD_GRAPH);
    if (!g || !num) return g ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_INVALID_HANDLE;
    size_t k = 0;
    for (size_t i = 0; i < g->n; i++) {
        if (g->nodes[i]->ndeps) continue;
        if (nodes && k < *num) nodes[k] = g->nodes[i];
        k++;
    }
    if (nodes)
        for (size_t i = k; i < *num; i++) nodes[i] = NULL;
    if (!nodes || *num > k) *num = k;
    return CUDA_SUCCESS;
}

static CUresult get_dependencies(fcd_gnode *node, fcd_gnode **deps, size_t *num);

FCD_EXPORT CUresult cuGraphNodeGetDependencies_v2(fcd_gnode *node, fcd_gnode **deps,
                                                  void *edges, size_t *num) {
    CUresult st = get_dependencies(node, deps, num);
    if (!st && edges && deps) memset(edges, 0, *num * 8); /* plain edges */
    return st;
}

FCD_EXPORT CUresult cuGraphNodeGetDependencies(fcd_gnode *node, fcd_gnode **deps, size_t *num) {
    return get_dependencies(node, deps, num);
}

static CUresult get_dependencies(fcd_gnode *node, fcd_gnode **deps, size_t *num) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!node || node->magic != FCD_NODE) return CUDA_ERROR_INVALID_HANDLE;
    if (!num) return CUDA_ERROR_INVALID_VALUE;
    if (deps) {
        for (size_t i = 0; i < *num; i++) deps[i] = i < node->ndeps ? node->deps[i] : NULL;
        if (*num > node->ndeps) *num = node->ndeps;
    } else {
        *num = node->ndeps;
    }
    return CUDA_SUCCESS;
}

static CUresult kernel_node(fcd_gnode *node) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!node || node->magic != FCD_NODE) return CUDA_ERROR_INVALID_HANDLE;
    return node->type == NODE_KERNEL && node->graph ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

static CUresult kernel_get(fcd_gnode *node, CUDA_KERNEL_NODE_PARAMS *p, int v2) {
    CUresult st = kernel_node(node);
    if (st) return st;
    if (!p) return CUDA_ERROR_INVALID_VALUE;
    p->func = node->func;
    p->gridDimX = node->grid[0], p->gridDimY = node->grid[1], p->gridDimZ = node->grid[2];
    p->blockDimX = node->block[0], p->blockDimY = node->block[1], p->blockDimZ = node->block[2];
    p->sharedMemBytes = node->shmem;
    p->kernelParams = node->argv;
    p->extra = NULL;
    if (v2) {
        /* a CUkernel and the CUfunction it gives are one handle here; the runtime looks its
         * entry up by either */
        p->kern = (CUkernel)node->func;
        p->ctx = NULL;
    }
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuGraphKernelNodeGetParams_v2(fcd_gnode *node, CUDA_KERNEL_NODE_PARAMS *p) {
    return kernel_get(node, p, 1);
}
FCD_EXPORT CUresult cuGraphKernelNodeGetParams(fcd_gnode *node, CUDA_KERNEL_NODE_PARAMS *p) {
    return kernel_get(node, p, 0);
}

static CUresult kernel_set(fcd_gnode *node, const CUDA_KERNEL_NODE_PARAMS *p, int v2) {
    CUresult st = kernel_node(node);
    if (st) return st;
    return p ? kernel_fields(node, p, v2) : CUDA_ERROR_INVALID_VALUE;
}

FCD_EXPORT CUresult cuGraphKernelNodeSetParams_v2(fcd_gnode *node,
                                                  const CUDA_KERNEL_NODE_PARAMS *p) {
    return kernel_set(node, p, 1);
}
FCD_EXPORT CUresult cuGraphKernelNodeSetParams(fcd_gnode *node,
                                               const CUDA_KERNEL_NODE_PARAMS *p) {
    return kernel_set(node, p, 0);
}

/* A deep copy: nodes, parameters, dependencies (by position), child graphs. */
static fcd_graph *built_clone(const fcd_graph *g) {
    fcd_graph *c = built_new();
    if (!c) return NULL;
    c->nodes = calloc(g->n ? g->n : 1, sizeof *c->nodes);
    c->cap = g->n ? g->n : 1;
    if (!c->nodes) {
        free(c);
        return NULL;
    }
    int ok = 1;
    for (size_t i = 0; i < g->n && ok; i++) {
        const fcd_gnode *o = g->nodes[i];
        fcd_gnode *nd = malloc(sizeof *nd);
        if (!nd) {
            ok = 0;
            break;
        }
        *nd = *o;
        nd->graph = c;
        nd->params = NULL, nd->argv = NULL, nd->deps = NULL, nd->child = NULL;
        c->nodes[c->n++] = nd;
        if (o->params) {
            size_t np = o->func->nparams;
            nd->params = malloc(o->params_size ? o->params_size : 1);
            nd->argv = calloc(np ? np : 1, sizeof *nd->argv);
            ok = nd->params && nd->argv;
            if (ok) {
                memcpy(nd->params, o->params, o->params_size);
                for (size_t k = 0; k < np; k++)
                    nd->argv[k] = nd->params + o->func->params[k].offset;
            }
        }
        if (ok && o->child) ok = (nd->child = built_clone(o->child)) != NULL;
    }
    /* the dependencies once every node has its copy: cuGraphAddDependencies can make a node
     * depend on one added after it */
    for (size_t i = 0; i < c->n && ok; i++) {
        const fcd_gnode *o = g->nodes[i];
        fcd_gnode *nd = c->nodes[i];
        if (!o->ndeps) continue;
        ok = (nd->deps = malloc(o->ndeps * sizeof *nd->deps)) != NULL;
        for (size_t k = 0; ok && k < o->ndeps; k++) {
            size_t at = 0;
            while (at < g->n && g->nodes[at] != o->deps[k]) at++;
            nd->deps[k] = c->nodes[at];
        }
    }
    if (!ok) {
        built_free(c, 0);
        return NULL;
    }
    return c;
}

FCD_EXPORT CUresult cuGraphClone(fcd_graph **out, fcd_graph *graph) {
    CUresult st = fcd_enter();
    if (st) return st;
    fcd_graph *g = graph_of(graph, FCD_GRAPH);
    if (!g) return CUDA_ERROR_INVALID_HANDLE;
    if (!out) return CUDA_ERROR_INVALID_VALUE;
    if (!g->built) return CUDA_ERROR_NOT_SUPPORTED;
    fcd_graph *c = built_clone(g);
    if (!c) return CUDA_ERROR_OUT_OF_MEMORY;
    fcd_handle_add(c);
    *out = c;
    return CUDA_SUCCESS;
}

/* The nodes, each after what it depends on, onto the capturing stream s. */
static CUresult emit(const fcd_graph *g, CUstream s) {
    size_t n = g->n;
    char *done = calloc(n ? n : 1, 1);
    if (!done) return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult st = CUDA_SUCCESS;
    for (size_t emitted = 0; emitted < n && !st;) {
        size_t before = emitted;
        for (size_t i = 0; i < n && !st; i++) {
            if (done[i]) continue;
            const fcd_gnode *nd = g->nodes[i];
            int ready = 1;
            for (size_t k = 0; k < nd->ndeps && ready; k++) {
                size_t at = 0;
                while (at < n && g->nodes[at] != nd->deps[k]) at++;
                ready = at < n && done[at];
            }
            if (!ready) continue;
            switch (nd->type) {
            case NODE_KERNEL: {
                size_t size = nd->params_size;
                void *extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, nd->params,
                                 CU_LAUNCH_PARAM_BUFFER_SIZE, &size, CU_LAUNCH_PARAM_END};
                st = cuLaunchKernel(nd->func, nd->grid[0], nd->grid[1], nd->grid[2],
                                    nd->block[0], nd->block[1], nd->block[2], nd->shmem, s,
                                    NULL, extra);
                break;
            }
            case NODE_MEMSET: {
                const CUDA_MEMSET_NODE_PARAMS *p = &nd->set;
                size_t pitch = p->height > 1 ? p->pitch : p->width * p->elementSize;
                st = p->elementSize == 1
                         ? cuMemsetD2D8Async(p->dst, pitch, (unsigned char)p->value, p->width,
                                             p->height, s)
                     : p->elementSize == 2
                         ? cuMemsetD2D16Async(p->dst, pitch, (unsigned short)p->value, p->width,
                                              p->height, s)
                         : cuMemsetD2D32Async(p->dst, pitch, p->value, p->width, p->height, s);
                break;
            }
            case NODE_MEMCPY: st = cuMemcpy3DAsync_v2(&nd->copy, s); break;
            /* external record and wait: in a capture they become event nodes that record and wait
             * at each launch of the graph, as the nodes they stand for do */
            case NODE_EVENT_RECORD: st = cuEventRecordWithFlags(nd->event, s, 1); break;
            case NODE_WAIT_EVENT: st = cuStreamWaitEvent(s, nd->event, 1); break;
            case NODE_GRAPH: st = emit(nd->child, s); break;
            default: break; /* empty */
            }
            done[i] = 1;
            emitted++;
        }
        if (emitted == before && !st) st = CUDA_ERROR_INVALID_VALUE; /* a cycle */
    }
    free(done);
    return st;
}

/* Capture the graph's nodes on the server and instantiate what was captured there. */
static CUresult server_exec(fcd_graph *g, unsigned long long flags, fcd_graph **exec) {
    CUstream s;
    CUresult st = cuStreamCreate(&s, 1 /* CU_STREAM_NON_BLOCKING */);
    if (st) return st;
    st = begin(s, 2 /* CU_STREAM_CAPTURE_MODE_RELAXED */, 0);
    if (!st) {
        CUresult e = emit(g, s);
        fcd_graph *captured = NULL;
        st = end(s, &captured, 0);
        if (!st) st = e;
        if (!st) st = instantiate(exec, captured, flags);
        if (captured) destroy(captured, FCD_GRAPH, FC_OP_GRAPH_DESTROY);
    }
    cuStreamDestroy_v2(s);
    return st;
}

static CUresult instantiate_built(fcd_graph **exec, fcd_graph *g, unsigned long long flags) {
    fcd_graph *copy = built_clone(g);
    if (!copy) return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult st = server_exec(copy, flags, exec);
    if (st) {
        built_free(copy, 0);
        return st;
    }
    (*exec)->source = copy;
    (*exec)->origin = g;
    (*exec)->flags = flags;
    return CUDA_SUCCESS;
}

/* An exec whose copy of its graph changed: instantiated again on the server, under the same
 * handle (what is queued with the old one runs as it was). */
static CUresult reinstantiate(fcd_graph *x) {
    fcd_graph *fresh = NULL;
    CUresult st = server_exec(x->source, x->flags, &fresh);
    if (st) return st;
    uint32_t old = x->id;
    x->id = fresh->id;
    fresh->id = old;
    fresh->source = NULL;
    destroy(fresh, FCD_EXEC, FC_OP_GRAPH_EXEC_DESTROY); /* the server's old exec goes */
    return CUDA_SUCCESS;
}

static CUresult exec_kernel_set(fcd_graph *exec, fcd_gnode *node,
                                const CUDA_KERNEL_NODE_PARAMS *p, int v2) {
    CUresult st = kernel_node(node);
    if (st) return st;
    fcd_graph *x = graph_of(exec, FCD_EXEC);
    if (!x) return CUDA_ERROR_INVALID_HANDLE;
    if (!x->source || node->graph != x->origin || !p) return CUDA_ERROR_INVALID_VALUE;
    size_t at = 0;
    while (at < x->origin->n && x->origin->nodes[at] != node) at++;
    if (at >= x->source->n) return CUDA_ERROR_INVALID_VALUE; /* added after instantiation */
    fcd_gnode *mine = x->source->nodes[at];
    if ((st = kernel_fields(mine, p, v2))) return st;
    return reinstantiate(x);
}

FCD_EXPORT CUresult cuGraphExecKernelNodeSetParams_v2(fcd_graph *x, fcd_gnode *node,
                                                      const CUDA_KERNEL_NODE_PARAMS *p) {
    return exec_kernel_set(x, node, p, 1);
}
FCD_EXPORT CUresult cuGraphExecKernelNodeSetParams(fcd_graph *x, fcd_gnode *node,
                                                   const CUDA_KERNEL_NODE_PARAMS *p) {
    return exec_kernel_set(x, node, p, 0);
}

/* An exec of a captured graph takes another captured graph whose nodes are of the same kinds,
 * in the same order: the server instantiates that graph, and the exec's handle stands for it
 * from then on (what is queued with the old one runs as it was). */
static CUresult update_captured(fcd_graph *x, fcd_graph *g, int *result, fcd_gnode **err) {
    pthread_mutex_lock(&capture_mtx);
    int same = x->kinds && g->n == x->nkinds;
    for (size_t i = 0; i < g->n && same; i++) {
        same = g->nodes[i]->type == x->kinds[i];
        if (!same && err) *err = g->nodes[i];
    }
    pthread_mutex_unlock(&capture_mtx);
    if (!same) {
        if (result) *result = 2; /* CU_GRAPH_EXEC_UPDATE_ERROR_TOPOLOGY_CHANGED */
        return 910;
    }
    fcd_graph *fresh = NULL;
    CUresult st = instantiate(&fresh, g, x->flags);
    if (st) {
        if (result) *result = 1; /* CU_GRAPH_EXEC_UPDATE_ERROR */
        return st;
    }
    uint32_t old = x->id;
    x->id = fresh->id;
    fresh->id = old;
    destroy(fresh, FCD_EXEC, FC_OP_GRAPH_EXEC_DESTROY); /* the server's old exec goes */
    return CUDA_SUCCESS;
}

/* cuGraphExecUpdate: the exec takes the graph's parameters where its topology is the same
 * (same number and kinds of nodes, same dependencies); else CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE
 * with the result CU_GRAPH_EXEC_UPDATE_ERROR_TOPOLOGY_CHANGED (2). */
static CUresult exec_update(fcd_graph *exec, fcd_graph *graph, int *result, fcd_gnode **err) {
    CUresult st = fcd_enter();
    if (st) return st;
    fcd_graph *x = graph_of(exec, FCD_EXEC), *g = graph_of(graph, FCD_GRAPH);
    if (!x || !g) return CUDA_ERROR_INVALID_HANDLE;
    if (result) *result = 0;
    if (err) *err = NULL;
    if (!x->source && !g->built) return update_captured(x, g, result, err);
    if (!x->source || !g->built) { /* a captured graph into an explicit one's exec, or back */
        static int notice;
        fcd_note_once(&notice, "cuGraphExecUpdate between a captured graph and one built node "
                      "by node is not supported by farcuda's driver layer "
                      "(CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE)");
        if (result) *result = 6; /* CU_GRAPH_EXEC_UPDATE_ERROR_NOT_SUPPORTED */
        return 910;
    }
    int same = g->n == x->source->n;
    for (size_t i = 0; i < g->n && same; i++) {
        const fcd_gnode *a = g->nodes[i], *b = x->source->nodes[i];
        same = a->type == b->type && a->ndeps == b->ndeps;
        if (!same && err) *err = g->nodes[i];
    }
    if (!same) {
        if (result) *result = 2;
        return 910; /* CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE */
    }
    fcd_graph *copy = built_clone(g);
    if (!copy) return CUDA_ERROR_OUT_OF_MEMORY;
    fcd_graph *before = x->source;
    x->source = copy;
    if ((st = reinstantiate(x))) {
        x->source = before;
        built_free(copy, 0);
        if (result) *result = 1; /* CU_GRAPH_EXEC_UPDATE_ERROR */
        return st;
    }
    built_free(before, 0);
    x->origin = g;
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuGraphExecUpdate(fcd_graph *x, fcd_graph *g, fcd_gnode **err, int *result) {
    return exec_update(x, g, result, err);
}

/* CUgraphExecUpdateResultInfo: {CUgraphExecUpdateResult result; CUgraphNode errorNode;
 * CUgraphNode errorFromNode} */
FCD_EXPORT CUresult cuGraphExecUpdate_v2(fcd_graph *x, fcd_graph *g, void *info) {
    struct { int result; fcd_gnode *node, *from; } *r = info;
    if (!r) return exec_update(x, g, NULL, NULL);
    r->from = NULL;
    return exec_update(x, g, &r->result, &r->node);
}
