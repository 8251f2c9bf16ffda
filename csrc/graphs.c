/* Graphs: those captured from streams (streams.c captures them; they live on the server) and
 * those built node by node, which live here until they are instantiated.
 *
 * A built graph (cudaGraphCreate, cudaGraphAdd*Node) keeps its nodes, their parameters
 * (copied when a node is added or set, as CUDA copies them) and their dependencies.
 * Instantiating it captures its nodes on a private stream, one after another in an order
 * that keeps every dependency (independent nodes run one after the other: an order CUDA
 * allows), through the calls the program's own launches, sets, copies and event calls go
 * through, so that host memory in a copy node is read and written at each replay as a
 * captured copy's is; the server instantiates what it captured. An exec keeps its own copy of
 * the graph: a kernel node changed in the exec (cudaGraphExecKernelNodeSetParams) or
 * cudaGraphExecUpdate captures and instantiates it again, under the same handle.
 *
 * Kernel, memset, memcpy (1D, and pitched between device memory), empty, event record and
 * wait, and child graph nodes are built; the other kinds (host, memory allocation and free,
 * external semaphore, conditional nodes) are refused with cudaErrorNotSupported, said once.
 * As in CUDA, one graph is not to be changed by two threads at once.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdlib.h>
#include <string.h>

#include "fc.h"
#include "conn.h"
#include "graphs.h"
#include "launch.h"
#include "log.h"
#include "memory.h"
#include "runtime.h"
#include "streams.h"

static void say_once(int *said, const char *what) {
    if (!__atomic_exchange_n(said, 1, __ATOMIC_ACQ_REL)) fc_log("%s", what);
}

static fc_graph *graph_of(void *h, uint32_t magic) {
    fc_graph *g = h;
    return g && g->magic == magic ? g : NULL;
}

static fc_gnode *node_of(void *h) {
    fc_gnode *nd = h;
    return nd && nd->magic == FC_NODE_MAGIC ? nd : NULL;
}

/* ---------------- either kind ---------------- */

int fc_graph_nodes(void *graph, void **nodes, size_t *num) {
    fc_graph *g = graph_of(graph, FC_GRAPH_MAGIC);
    if (!g || !num) return cudaErrorInvalidValue;
    if (nodes) {
        size_t k = *num < g->n ? *num : g->n;
        for (size_t i = 0; i < k; i++) nodes[i] = g->nodes[i];
        for (size_t i = k; i < *num; i++) nodes[i] = NULL;
        if (*num > g->n) *num = g->n;
    } else {
        *num = g->n;
    }
    return cudaSuccess;
}

int fc_graph_node_type(void *node, int *type) {
    fc_gnode *nd = node_of(node);
    if (!nd || !type) return cudaErrorInvalidValue;
    *type = nd->type;
    return cudaSuccess;
}

static void built_free(fc_graph *g, int handed_out);
static int instantiate_built(fc_graph **exec, fc_graph *g, unsigned long long flags);

/* A captured graph's exec, instantiated on the server. */
static int instantiate_captured(fc_graph **exec, fc_graph *g, unsigned long long flags) {
    fc_graph *x = calloc(1, sizeof *x);
    if (!x) return cudaErrorMemoryAllocation;
    x->magic = FC_EXEC_MAGIC;
    x->id = fc_new_id();
    x->dev = g->dev;
    x->flags = flags;
    fc_GRAPH_INSTANTIATE m = {g->id, x->id, flags};
    int st = fc_call_dev(g->dev, FC_OP_GRAPH_INSTANTIATE, &m, sizeof m, NULL, 0);
    if (st) {
        free(x);
        return st;
    }
    *exec = x;
    return cudaSuccess;
}

int fc_graph_instantiate(void **exec, void *graph, unsigned long long flags) {
    int st = fc_ensure_init();
    if (st) return st;
    fc_graph *g = graph_of(graph, FC_GRAPH_MAGIC);
    if (!exec || !g) return cudaErrorInvalidValue;
    if (g->built) return instantiate_built((fc_graph **)exec, g, flags);
    if ((st = instantiate_captured((fc_graph **)exec, g, flags))) return st;
    ((fc_graph *)*exec)->origin = g; /* (what cudaGraphExecUpdate compares with) */
    return cudaSuccess;
}

int fc_graph_exec_op(void *exec, cudaStream_t s, int ptds, uint16_t op) {
    int st = fc_ensure_init();
    if (st) return st;
    fc_graph *x = graph_of(exec, FC_EXEC_MAGIC);
    if (!x) return cudaErrorInvalidValue;
    int dev = x->dev;
    uint32_t sid;
    if ((st = fc_stream_resolve(s, ptds, &dev, &sid))) return st;
    if (dev != x->dev) return cudaErrorInvalidValue;
    fc_GRAPH_LAUNCH m = {x->id, sid};
    return fc_post_dev(dev, op, &m, sizeof m);
}

int fc_graph_destroy(void *graph) {
    int st = fc_ensure_init();
    if (st) return st;
    fc_graph *g = graph_of(graph, FC_GRAPH_MAGIC);
    if (!g) return cudaErrorInvalidValue;
    g->magic = FC_DEAD_MAGIC;
    if (g->built) { /* it lives on this side only */
        built_free(g, 1);
        return cudaSuccess;
    }
    fc_GRAPH_DESTROY m = {g->id};
    return fc_post_dev(g->dev, FC_OP_GRAPH_DESTROY, &m, sizeof m);
}

int fc_graph_exec_destroy(void *exec) {
    int st = fc_ensure_init();
    if (st) return st;
    fc_graph *x = graph_of(exec, FC_EXEC_MAGIC);
    if (!x) return cudaErrorInvalidValue;
    x->magic = FC_DEAD_MAGIC;
    if (x->source) built_free(x->source, 0);
    x->source = NULL;
    x->origin = NULL;
    fc_GRAPH_EXEC_DESTROY m = {x->id};
    return fc_post_dev(x->dev, FC_OP_GRAPH_EXEC_DESTROY, &m, sizeof m);
}

/* ---------------- built graphs: nodes ---------------- */

static void node_clear(fc_gnode *nd) {
    free(nd->params);
    free(nd->argv);
    free(nd->deps);
    nd->params = NULL;
    nd->argv = NULL;
    nd->deps = NULL;
    nd->ndeps = 0;
    if (nd->child) built_free(nd->child, 0);
    nd->child = NULL;
}

/* A built graph's memory. handed_out: the program holds handles of the graph and its nodes,
 * which stay (dead) rather than dangle; else (an exec's copy, a child node's) all of it goes. */
static void built_free(fc_graph *g, int handed_out) {
    for (size_t i = 0; i < g->n; i++) {
        node_clear(g->nodes[i]);
        g->nodes[i]->magic = FC_DEAD_MAGIC;
        if (!handed_out) free(g->nodes[i]);
    }
    if (!handed_out) {
        free(g->nodes);
        free(g);
    }
}

static fc_graph *built_new(void) {
    fc_graph *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->magic = FC_GRAPH_MAGIC;
    g->id = fc_new_id();
    g->dev = -1;
    g->built = 1;
    return g;
}

int fc_graph_create(void **graph, unsigned int flags) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!graph || flags) return cudaErrorInvalidValue;
    fc_graph *g = built_new();
    if (!g) return cudaErrorMemoryAllocation;
    *graph = g;
    return cudaSuccess;
}

static int push_node(fc_graph *g, fc_gnode *nd) {
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 16;
        fc_gnode **v = realloc(g->nodes, cap * sizeof *v);
        if (!v) return cudaErrorMemoryAllocation;
        g->nodes = v;
        g->cap = cap;
    }
    nd->graph = g;
    nd->at = g->n;
    g->nodes[g->n++] = nd;
    return cudaSuccess;
}

static int captured_refused;

/* A captured graph lives on the server: this side knows its nodes' kinds, not their
 * parameters or dependencies. */
static int refuse_captured(void) {
    say_once(&captured_refused, "changing a captured graph, or asking for its nodes' "
             "parameters or dependencies (cudaGraphAdd*Node, cudaGraphClone, "
             "cudaGraphGetRootNodes, ...) is not supported by farcuda: its nodes are the "
             "server's (cudaErrorNotSupported); a graph built node by node supports them");
    return cudaErrorNotSupported;
}

/* The graph a node is added to (or asked about): a built one. */
static int built_graph(void *graph, fc_graph **out) {
    fc_graph *g = graph_of(graph, FC_GRAPH_MAGIC);
    if (!g) return cudaErrorInvalidValue;
    if (!g->built) return refuse_captured();
    *out = g;
    return cudaSuccess;
}

/* A new node of the graph, after the given nodes of the same graph (not attached yet). */
static int new_node(void **out, void *graph, void *const *deps, size_t n, int type,
                    fc_graph **g, fc_gnode **made) {
    int st = fc_ensure_init();
    if (st) return st;
    if ((st = built_graph(graph, g))) return st;
    if (!out || (n && !deps)) return cudaErrorInvalidValue;
    for (size_t i = 0; i < n; i++) {
        fc_gnode *d = node_of(deps[i]);
        if (!d || d->graph != *g) return cudaErrorInvalidValue;
        for (size_t k = 0; k < i; k++)
            if (deps[k] == deps[i]) return cudaErrorInvalidValue; /* twice */
    }
    fc_gnode *nd = calloc(1, sizeof *nd);
    if (!nd) return cudaErrorMemoryAllocation;
    nd->magic = FC_NODE_MAGIC;
    nd->type = type;
    nd->dev = -1;
    if (n && !(nd->deps = malloc(n * sizeof *nd->deps))) {
        free(nd);
        return cudaErrorMemoryAllocation;
    }
    if (n) memcpy(nd->deps, deps, n * sizeof *deps);
    nd->ndeps = n;
    *made = nd;
    return cudaSuccess;
}

/* The node joins its graph (st: how filling it in went; a failure drops it). */
static int attach(int st, fc_graph *g, fc_gnode *nd, void **out) {
    if (!st) st = push_node(g, nd);
    if (st) {
        node_clear(nd);
        free(nd);
        return st;
    }
    *out = nd;
    return cudaSuccess;
}

/* A kernel node's fields from its parameters: the arguments copied by the kernel's layout
 * (its module loaded on the current device, where the node will run). */
static int kernel_fields(fc_gnode *nd, const struct fc_kernel_node_parms *p) {
    if (!p) return cudaErrorInvalidValue;
    fc_kernel *k = fc_kernel_by_host(p->func);
    if (!k) return cudaErrorInvalidDeviceFunction;
    if (!p->gridDim.x || !p->gridDim.y || !p->gridDim.z || !p->blockDim.x || !p->blockDim.y ||
        !p->blockDim.z)
        return cudaErrorInvalidValue;
    int dev = fc_current_device();
    int st = fc_kernel_layout(k, dev);
    if (st) return st;
    char *buf;
    if ((st = fc_kernel_pack(k, p->kernelParams, p->extra, &buf))) return st;
    void **argv = calloc(k->nparams ? k->nparams : 1, sizeof *argv);
    if (!argv) {
        free(buf);
        return cudaErrorMemoryAllocation;
    }
    for (uint32_t i = 0; i < k->nparams; i++) argv[i] = buf + k->params[i].offset;
    free(nd->params);
    free(nd->argv);
    nd->kernel = k;
    nd->func = p->func;
    nd->dev = dev;
    nd->grid = p->gridDim;
    nd->block = p->blockDim;
    nd->shmem = p->sharedMemBytes;
    nd->params = buf;
    nd->argv = argv;
    return cudaSuccess;
}

int fc_graph_add_kernel(void **out, void *graph, void *const *deps, size_t n,
                        const struct fc_kernel_node_parms *p) {
    fc_graph *g;
    fc_gnode *nd;
    int st = new_node(out, graph, deps, n, FC_NODE_KERNEL, &g, &nd);
    return st ? st : attach(kernel_fields(nd, p), g, nd, out);
}

static int memset_fields(fc_gnode *nd, const struct fc_memset_parms *p) {
    if (!p) return cudaErrorInvalidValue;
    size_t e = p->elementSize;
    if ((e != 1 && e != 2 && e != 4) || !p->width || !p->height || (uintptr_t)p->dst % e)
        return cudaErrorInvalidValue;
    size_t row, span;
    if (__builtin_mul_overflow(p->width, e, &row)) return cudaErrorInvalidValue;
    span = row;
    if (p->height > 1 && (p->pitch < row || p->pitch % e ||
                          __builtin_mul_overflow(p->height - 1, p->pitch, &span) ||
                          __builtin_add_overflow(span, row, &span)))
        return cudaErrorInvalidValue;
    int dev = fc_device_of(p->dst, span);
    if (dev < 0) return cudaErrorInvalidValue;
    nd->set = *p;
    nd->dev = dev;
    return cudaSuccess;
}

int fc_graph_add_memset(void **out, void *graph, void *const *deps, size_t n,
                        const struct fc_memset_parms *p) {
    fc_graph *g;
    fc_gnode *nd;
    int st = new_node(out, graph, deps, n, FC_NODE_MEMSET, &g, &nd);
    return st ? st : attach(memset_fields(nd, p), g, nd, out);
}

/* Where a box of a pitched pointer starts (bytes from ptr) and how far its bytes reach from
 * there: 0 when it does not fit in an address. */
static int box(const struct fc_pitched_ptr *pp, const struct fc_pos *pos,
               const struct fc_extent *e, uint64_t *start, uint64_t *span) {
    uint64_t rows, last;
    return !__builtin_mul_overflow((uint64_t)pos->z, (uint64_t)pp->ysize, &rows) &&
           !__builtin_add_overflow(rows, (uint64_t)pos->y, &rows) &&
           !__builtin_mul_overflow(rows, (uint64_t)pp->pitch, start) &&
           !__builtin_add_overflow(*start, (uint64_t)pos->x, start) &&
           !__builtin_mul_overflow((uint64_t)(e->depth - 1), (uint64_t)pp->ysize, &last) &&
           !__builtin_add_overflow(last, (uint64_t)(e->height - 1), &last) &&
           !__builtin_mul_overflow(last, (uint64_t)pp->pitch, span) &&
           !__builtin_add_overflow(*span, (uint64_t)e->width, span) &&
           !__builtin_add_overflow((uint64_t)(uintptr_t)pp->ptr, *start, &rows);
}

/* The rows of a box follow each other without a gap: its bytes are one 1D copy. */
static int box_flat(const struct fc_pitched_ptr *pp, const struct fc_extent *e) {
    return (e->height == 1 && e->depth == 1) ||
           (pp->pitch == e->width && (e->depth == 1 || pp->ysize == e->height));
}

static int copy_flat(const struct fc_memcpy3d_parms *p) {
    return box_flat(&p->srcPtr, &p->extent) && box_flat(&p->dstPtr, &p->extent);
}

static int arrays_refused, host_host_refused, pitched_host_refused, peer_refused;

/* A copy node's parameters (cudaMemcpy3DParms of linear memory), checked as CUDA checks
 * them when the node is added. A copy whose rows lie back to back on both sides is one 1D
 * copy, host memory on either side or not (read or written at each replay); a pitched copy
 * (2D, 3D) is supported between device memory, where the capture keeps it one operation. */
static int copy_fields(fc_gnode *nd, const struct fc_memcpy3d_parms *p) {
    int st = fc_memcpy3d_check_kind(p, "cudaGraphAddMemcpyNode", &arrays_refused);
    if (st) return st;
    const struct fc_extent *e = &p->extent;
    if (!e->width || !e->height || !e->depth || !p->srcPtr.ptr || !p->dstPtr.ptr)
        return cudaErrorInvalidValue;
    if ((st = fc_memcpy3d_check_box(p))) return st;
    uint64_t s0, sspan, d0, dspan;
    if (!box(&p->srcPtr, &p->srcPos, e, &s0, &sspan) ||
        !box(&p->dstPtr, &p->dstPos, e, &d0, &dspan))
        return cudaErrorInvalidValue;
    int ddev, sdev;
    st = fc_copy_node_sides((char *)p->dstPtr.ptr + d0, dspan, (const char *)p->srcPtr.ptr + s0,
                            sspan, p->kind, &ddev, &sdev);
    if (st) return st;
    if (ddev < 0 && sdev < 0) {
        say_once(&host_host_refused, "a graph's memcpy node from host memory to host memory "
                 "is not supported by farcuda (cudaErrorNotSupported)");
        return cudaErrorNotSupported;
    }
    if (ddev >= 0 && sdev >= 0 && ddev != sdev) {
        say_once(&peer_refused, "a graph's memcpy node between two devices is not supported "
                 "by farcuda (cudaErrorNotSupported)");
        return cudaErrorNotSupported;
    }
    if ((ddev < 0 || sdev < 0) && !copy_flat(p)) {
        say_once(&pitched_host_refused, "a graph's pitched (2D or 3D) memcpy node between host "
                 "and device memory is not supported by farcuda: 1D copies (rows back to "
                 "back) and pitched copies between device memory are (cudaErrorNotSupported)");
        return cudaErrorNotSupported;
    }
    nd->copy = *p;
    nd->dev = ddev >= 0 ? ddev : sdev;
    return cudaSuccess;
}

int fc_graph_add_memcpy(void **out, void *graph, void *const *deps, size_t n,
                        const struct fc_memcpy3d_parms *p) {
    fc_graph *g;
    fc_gnode *nd;
    int st = new_node(out, graph, deps, n, FC_NODE_MEMCPY, &g, &nd);
    return st ? st : attach(copy_fields(nd, p), g, nd, out);
}

int fc_graph_add_memcpy_1d(void **out, void *graph, void *const *deps, size_t n, void *dst,
                           const void *src, size_t count, int kind) {
    if (!count) return cudaErrorInvalidValue;
    struct fc_memcpy3d_parms p;
    memset(&p, 0, sizeof p);
    p.srcPtr = (struct fc_pitched_ptr){(void *)src, count, count, 1};
    p.dstPtr = (struct fc_pitched_ptr){dst, count, count, 1};
    p.extent = (struct fc_extent){count, 1, 1};
    p.kind = kind;
    return fc_graph_add_memcpy(out, graph, deps, n, &p);
}

int fc_graph_add_empty(void **out, void *graph, void *const *deps, size_t n) {
    fc_graph *g;
    fc_gnode *nd;
    int st = new_node(out, graph, deps, n, FC_NODE_EMPTY, &g, &nd);
    return st ? st : attach(cudaSuccess, g, nd, out);
}

int fc_graph_add_event(void **out, void *graph, void *const *deps, size_t n, cudaEvent_t e,
                       int type) {
    fc_graph *g;
    fc_gnode *nd;
    int st = new_node(out, graph, deps, n, type, &g, &nd);
    if (st) return st;
    fc_event *ev;
    if (!(st = fc_event_resolve(e, &ev))) {
        nd->event = e;
        nd->dev = ev->dev;
    }
    return attach(st, g, nd, out);
}

static fc_graph *built_clone(const fc_graph *g);

static int child_fields(fc_gnode *nd, fc_graph *g, void *child) {
    fc_graph *c = graph_of(child, FC_GRAPH_MAGIC);
    if (!c || c == g) return cudaErrorInvalidValue;
    int st = built_graph(c, &c);
    if (st) return st;
    return (nd->child = built_clone(c)) ? cudaSuccess : cudaErrorMemoryAllocation;
}

int fc_graph_add_child(void **out, void *graph, void *const *deps, size_t n, void *child) {
    fc_graph *g;
    fc_gnode *nd;
    int st = new_node(out, graph, deps, n, FC_NODE_GRAPH, &g, &nd);
    return st ? st : attach(child_fields(nd, g, child), g, nd, out);
}

/* cudaGraphEdgeData: {from_port, to_port, type, reserved[5]}; all zero is a plain edge, the
 * only kind built graphs have here. */
static int plain_edges(const void *edges, size_t n) {
    const unsigned char *b = edges;
    for (size_t i = 0; b && i < n * FC_SIZEOF_cudaGraphEdgeData; i++)
        if (b[i]) return 0;
    return 1;
}

static int edges_refused, kind_refused[16];

int fc_graph_add_node(void **out, void *graph, void *const *deps, const void *edges, size_t n,
                      struct fc_graph_node_parms *p) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!p) return cudaErrorInvalidValue;
    if (!plain_edges(edges, n)) {
        say_once(&edges_refused, "graph edges other than plain dependencies (ports, "
                 "programmatic dependencies) are not supported by farcuda "
                 "(cudaErrorNotSupported)");
        return cudaErrorNotSupported;
    }
    switch (p->type) {
    case FC_NODE_KERNEL: return fc_graph_add_kernel(out, graph, deps, n, &p->kernel);
    case FC_NODE_MEMCPY:
        if (p->memcpy.flags) return cudaErrorInvalidValue;
        return fc_graph_add_memcpy(out, graph, deps, n, &p->memcpy.copyParams);
    case FC_NODE_MEMSET: return fc_graph_add_memset(out, graph, deps, n, &p->memset);
    /* the child graph is copied into the node, whichever ownership is asked for */
    case FC_NODE_GRAPH: return fc_graph_add_child(out, graph, deps, n, p->graph.graph);
    case FC_NODE_EMPTY: return fc_graph_add_empty(out, graph, deps, n);
    case FC_NODE_WAIT_EVENT:
    case FC_NODE_EVENT_RECORD: return fc_graph_add_event(out, graph, deps, n, p->event, p->type);
    }
    static const char *const names[16] = {
        [3] = "host", [8] = "external semaphore signal", [9] = "external semaphore wait",
        [10] = "memory allocation", [11] = "memory free", [12] = "batch memory operation",
        [13] = "conditional"};
    if (p->type < 0 || p->type >= 16 || !names[p->type]) return cudaErrorInvalidValue;
    if (!__atomic_exchange_n(&kind_refused[p->type], 1, __ATOMIC_ACQ_REL))
        fc_log("cudaGraphAddNode: %s nodes are not supported by farcuda; kernel, memset, memcpy, "
               "empty, event record and wait, and child graph nodes are "
               "(cudaErrorNotSupported)", names[p->type]);
    return cudaErrorNotSupported;
}

int fc_graph_add_dependencies(void *graph, void *const *from, void *const *to,
                              const void *edges, size_t n) {
    int st = fc_ensure_init();
    if (st) return st;
    fc_graph *g;
    if ((st = built_graph(graph, &g))) return st;
    if (!plain_edges(edges, n)) {
        say_once(&edges_refused, "graph edges other than plain dependencies (ports, "
                 "programmatic dependencies) are not supported by farcuda "
                 "(cudaErrorNotSupported)");
        return cudaErrorNotSupported;
    }
    if (n && (!from || !to)) return cudaErrorInvalidValue;
    for (size_t i = 0; i < n; i++) {
        fc_gnode *a = node_of(from[i]), *b = node_of(to[i]);
        if (!a || !b || a == b || a->graph != g || b->graph != g) return cudaErrorInvalidValue;
        for (size_t k = 0; k < b->ndeps; k++)
            if (b->deps[k] == a) return cudaErrorInvalidValue; /* there already */
        for (size_t k = 0; k < i; k++)
            if (from[k] == from[i] && to[k] == to[i]) return cudaErrorInvalidValue;
    }
    for (size_t i = 0; i < n; i++) {
        fc_gnode *b = to[i];
        fc_gnode **d = realloc(b->deps, (b->ndeps + 1) * sizeof *d);
        if (!d) return cudaErrorMemoryAllocation;
        b->deps = d;
        b->deps[b->ndeps++] = from[i];
    }
    return cudaSuccess;
}

int fc_graph_root_nodes(void *graph, void **nodes, size_t *num) {
    int st = fc_ensure_init();
    if (st) return st;
    fc_graph *g;
    if (!graph_of(graph, FC_GRAPH_MAGIC) || !num) return cudaErrorInvalidValue;
    if ((st = built_graph(graph, &g))) return st;
    size_t k = 0;
    for (size_t i = 0; i < g->n; i++) {
        if (g->nodes[i]->ndeps) continue;
        if (nodes && k < *num) nodes[k] = g->nodes[i];
        k++;
    }
    if (nodes)
        for (size_t i = k; i < *num; i++) nodes[i] = NULL;
    if (!nodes || *num > k) *num = k;
    return cudaSuccess;
}

int fc_graph_node_deps(void *node, void **deps, void *edges, size_t *num) {
    int st = fc_ensure_init();
    if (st) return st;
    fc_gnode *nd = node_of(node);
    if (!nd || !num) return cudaErrorInvalidValue;
    if (!nd->graph) return refuse_captured();
    if (deps) {
        for (size_t i = 0; i < *num; i++) deps[i] = i < nd->ndeps ? nd->deps[i] : NULL;
        if (edges) memset(edges, 0, *num * FC_SIZEOF_cudaGraphEdgeData); /* plain edges */
        if (*num > nd->ndeps) *num = nd->ndeps;
    } else {
        *num = nd->ndeps;
    }
    return cudaSuccess;
}

static int kernel_node(void *node, fc_gnode **out) {
    int st = fc_ensure_init();
    if (st) return st;
    fc_gnode *nd = node_of(node);
    if (!nd || nd->type != FC_NODE_KERNEL) return cudaErrorInvalidValue;
    if (!nd->graph) return refuse_captured();
    *out = nd;
    return cudaSuccess;
}

int fc_graph_kernel_get(void *node, struct fc_kernel_node_parms *p) {
    fc_gnode *nd;
    int st = kernel_node(node, &nd);
    if (st) return st;
    if (!p) return cudaErrorInvalidValue;
    p->func = nd->func;
    p->gridDim = nd->grid;
    p->blockDim = nd->block;
    p->sharedMemBytes = nd->shmem;
    p->kernelParams = nd->argv; /* the node's own copy of the arguments */
    p->extra = NULL;
    return cudaSuccess;
}

int fc_graph_kernel_set(void *node, const struct fc_kernel_node_parms *p) {
    fc_gnode *nd;
    int st = kernel_node(node, &nd);
    return st ? st : kernel_fields(nd, p);
}

/* A deep copy: nodes, parameters, dependencies (by place), child graphs. */
static fc_graph *built_clone(const fc_graph *g) {
    fc_graph *c = built_new();
    if (!c) return NULL;
    c->nodes = calloc(g->n ? g->n : 1, sizeof *c->nodes);
    c->cap = g->n ? g->n : 1;
    if (!c->nodes) {
        free(c);
        return NULL;
    }
    int ok = 1;
    for (size_t i = 0; i < g->n && ok; i++) {
        const fc_gnode *o = g->nodes[i];
        fc_gnode *nd = malloc(sizeof *nd);
        if (!(ok = nd != NULL)) break;
        *nd = *o;
        nd->graph = c;
        nd->at = i;
        nd->params = NULL, nd->argv = NULL, nd->deps = NULL, nd->child = NULL;
        c->nodes[c->n++] = nd;
        if (o->params) {
            const fc_kernel *k = o->kernel;
            nd->params = malloc(k->param_size ? k->param_size : 1);
            nd->argv = calloc(k->nparams ? k->nparams : 1, sizeof *nd->argv);
            ok = nd->params && nd->argv;
            if (ok) {
                memcpy(nd->params, o->params, k->param_size);
                for (uint32_t a = 0; a < k->nparams; a++)
                    nd->argv[a] = nd->params + k->params[a].offset;
            }
        }
        if (ok && o->ndeps) ok = (nd->deps = malloc(o->ndeps * sizeof *nd->deps)) != NULL;
        if (ok && o->child) ok = (nd->child = built_clone(o->child)) != NULL;
    }
    /* the dependencies by place, once every node is there (cudaGraphAddDependencies may
     * make a node depend on one later in the list) */
    for (size_t i = 0; ok && i < c->n; i++)
        for (size_t d = 0; d < c->nodes[i]->ndeps; d++)
            c->nodes[i]->deps[d] = c->nodes[g->nodes[i]->deps[d]->at];
    if (!ok) {
        built_free(c, 0);
        return NULL;
    }
    return c;
}

int fc_graph_clone(void **out, void *graph) {
    int st = fc_ensure_init();
    if (st) return st;
    fc_graph *g;
    if (!out || !graph_of(graph, FC_GRAPH_MAGIC)) return cudaErrorInvalidValue;
    if ((st = built_graph(graph, &g))) return st;
    fc_graph *c = built_clone(g);
    if (!c) return cudaErrorMemoryAllocation;
    *out = c;
    return cudaSuccess;
}

/* ---------------- built graphs: instantiation ---------------- */

/* The device the graph's nodes run on (one for all of them; the current one for a graph of
 * empty nodes only). */
static int several_refused;
static int nodes_device(const fc_graph *g, int *dev) {
    for (size_t i = 0; i < g->n; i++) {
        const fc_gnode *nd = g->nodes[i];
        int st, d = nd->dev;
        if (nd->child && (st = nodes_device(nd->child, &d))) return st;
        if (d < 0) continue;
        if (*dev >= 0 && d != *dev) {
            say_once(&several_refused, "a graph whose nodes are on more than one device is not "
                     "supported by farcuda (cudaErrorNotSupported)");
            return cudaErrorNotSupported;
        }
        *dev = d;
    }
    return cudaSuccess;
}

static int replay_copy(const struct fc_memcpy3d_parms *p, cudaStream_t s) {
    if (!copy_flat(p)) return fc_memcpy3d_impl(p, s, 1, 0);
    uint64_t s0, d0, span;
    if (!box(&p->srcPtr, &p->srcPos, &p->extent, &s0, &span) ||
        !box(&p->dstPtr, &p->dstPos, &p->extent, &d0, &span))
        return cudaErrorInvalidValue;
    size_t n = p->extent.width * p->extent.height * p->extent.depth;
    return fc_memcpy_impl((char *)p->dstPtr.ptr + d0, (const char *)p->srcPtr.ptr + s0, n,
                          p->kind, s, 1, 0);
}

static int replay_node(const fc_gnode *nd, cudaStream_t s);

/* The graph's nodes onto the capturing stream s, each after those it depends on: in the
 * order of the list where it allows (Kahn's, first come first served). */
static int replay(const fc_graph *g, cudaStream_t s) {
    size_t n = g->n, edges = 0;
    for (size_t i = 0; i < n; i++) edges += g->nodes[i]->ndeps;
    size_t *waiting = calloc(n + 1, sizeof *waiting); /* dependencies not replayed yet */
    size_t *first = calloc(n + 2, sizeof *first);     /* each node's dependents in `next` */
    size_t *next = calloc(edges + 1, sizeof *next);
    size_t *queue = calloc(n + 1, sizeof *queue);
    int st = waiting && first && next && queue ? cudaSuccess : cudaErrorMemoryAllocation;
    for (size_t i = 0; !st && i < n; i++) {
        waiting[i] = g->nodes[i]->ndeps;
        for (size_t d = 0; d < g->nodes[i]->ndeps; d++) first[g->nodes[i]->deps[d]->at + 2]++;
    }
    for (size_t i = 2; !st && i < n + 2; i++) first[i] += first[i - 1];
    for (size_t i = 0; !st && i < n; i++)
        for (size_t d = 0; d < g->nodes[i]->ndeps; d++)
            next[first[g->nodes[i]->deps[d]->at + 1]++] = i;
    /* now node i's dependents are next[first[i] .. first[i + 1]) */
    size_t head = 0, tail = 0;
    for (size_t i = 0; !st && i < n; i++)
        if (!waiting[i]) queue[tail++] = i;
    while (!st && head < tail) {
        size_t i = queue[head++];
        st = replay_node(g->nodes[i], s);
        for (size_t k = first[i]; !st && k < first[i + 1]; k++)
            if (!--waiting[next[k]]) queue[tail++] = next[k];
    }
    if (!st && tail < n) st = cudaErrorInvalidValue; /* a cycle */
    free(waiting);
    free(first);
    free(next);
    free(queue);
    return st;
}

static int replay_node(const fc_gnode *nd, cudaStream_t s) {
    switch (nd->type) {
    case FC_NODE_KERNEL:
        return fc_launch(nd->kernel, nd->grid, nd->block, nd->argv, nd->shmem, s, 0, 0);
    case FC_NODE_MEMSET: {
        const struct fc_memset_parms *p = &nd->set;
        return fc_memset_elems(p->dst, p->pitch, p->value, p->elementSize, p->width, p->height,
                               s);
    }
    case FC_NODE_MEMCPY: return replay_copy(&nd->copy, s);
    case FC_NODE_EVENT_RECORD:
        return fc_event_record(nd->event, s, FC_EVENT_RECORD_EXTERNAL, 0);
    case FC_NODE_WAIT_EVENT: return fc_stream_wait_event(s, nd->event, FC_EVENT_WAIT_EXTERNAL, 0);
    case FC_NODE_GRAPH: return replay(nd->child, s);
    default: return cudaSuccess; /* empty */
    }
}

/* The server's exec of a built graph: its nodes captured on a private stream of the graph's
 * device, the capture instantiated there, and what was only a means to it (the stream, the
 * captured graph, which the program never sees) let go. */
static int server_exec(const fc_graph *g, unsigned long long flags, fc_graph **exec) {
    int dev = -1;
    int st = nodes_device(g, &dev);
    if (st) return st;
    fc_tls *t = fc_tls_get();
    int before = t->device;
    if (dev >= 0) t->device = dev; /* the private stream is the nodes' device's */
    cudaStream_t s;
    st = fc_stream_create(&s, 1 /* cudaStreamNonBlocking */, 0);
    if (!st) {
        st = fc_begin_capture(s, 2 /* cudaStreamCaptureModeRelaxed */, 0);
        if (!st) {
            int e = replay(g, s);
            fc_graph *captured = NULL;
            st = fc_end_capture(s, (void **)&captured, 0);
            if (!st) st = e;
            if (!st) st = instantiate_captured(exec, captured, flags);
            if (captured) {
                fc_graph_destroy(captured);
                for (size_t i = 0; i < captured->n; i++) free(captured->nodes[i]);
                free(captured->nodes);
                free(captured);
            }
        }
        if (!fc_stream_destroy(s)) free(s);
    }
    t->device = before;
    return st;
}

static int instantiate_built(fc_graph **exec, fc_graph *g, unsigned long long flags) {
    fc_graph *copy = built_clone(g);
    if (!copy) return cudaErrorMemoryAllocation;
    int st = server_exec(copy, flags, exec);
    if (st) {
        built_free(copy, 0);
        return st;
    }
    (*exec)->source = copy;
    (*exec)->origin = g;
    return cudaSuccess;
}

/* The exec instantiated again on the server from `fresh` (an exec made for it), under the
 * same handle: what is queued with the old one runs as it was, and the server's old exec goes
 * once that is done (as CUDA frees an exec in flight). */
static void take_over(fc_graph *x, fc_graph *fresh) {
    uint32_t old = x->id;
    int old_dev = x->dev;
    x->id = fresh->id;
    x->dev = fresh->dev;
    fc_GRAPH_EXEC_DESTROY m = {old};
    fc_post_dev(old_dev, FC_OP_GRAPH_EXEC_DESTROY, &m, sizeof m);
    free(fresh);
}

int fc_graph_exec_kernel_set(void *exec, void *node, const struct fc_kernel_node_parms *p) {
    fc_gnode *nd;
    int st = kernel_node(node, &nd);
    if (st) return st;
    fc_graph *x = graph_of(exec, FC_EXEC_MAGIC);
    if (!x || !p || !x->source || nd->graph != x->origin || nd->at >= x->source->n)
        return cudaErrorInvalidValue; /* not of the exec's graph, or added after */
    fc_gnode *mine = x->source->nodes[nd->at];
    fc_gnode before = *mine;
    mine->params = NULL; /* kept until the exec is made again */
    mine->argv = NULL;
    fc_graph *fresh = NULL;
    if (!(st = kernel_fields(mine, p)) && !(st = server_exec(x->source, x->flags, &fresh))) {
        take_over(x, fresh);
        free(before.params);
        free(before.argv);
        return cudaSuccess;
    }
    free(mine->params);
    free(mine->argv);
    *mine = before;
    return st;
}

/* Two built graphs of one shape: as many nodes, of the same kinds, with the same
 * dependencies (by place), child graphs alike. The first node that differs, and how
 * (cudaGraphExecUpdateErrorTopologyChanged 2, ...NodeTypeChanged 3), else 0. */
static int same_shape(const fc_graph *a, const fc_graph *b, fc_gnode **where) {
    if (a->n != b->n) {
        *where = NULL;
        return 2;
    }
    for (size_t i = 0; i < a->n; i++) {
        const fc_gnode *p = a->nodes[i], *q = b->nodes[i];
        *where = a->nodes[i];
        if (p->type != q->type) return 3;
        if (p->ndeps != q->ndeps) return 2;
        for (size_t d = 0; d < p->ndeps; d++)
            if (p->deps[d]->at != q->deps[d]->at) return 2;
        fc_gnode *inner;
        if (p->child && same_shape(p->child, q->child, &inner)) return 2;
    }
    *where = NULL;
    return 0;
}

static int mixed_refused;

/* cudaGraphExecUpdate: the exec takes the graph's parameters where its shape is the exec's
 * graph's; else cudaErrorGraphExecUpdateFailure and why. Either way of building: a captured
 * graph's shape is what this side knows of it, its nodes' kinds in order. */
int fc_graph_exec_update(void *exec, void *graph, struct fc_graph_update_info *info) {
    int st = fc_ensure_init();
    if (st) return st;
    fc_graph *x = graph_of(exec, FC_EXEC_MAGIC), *g = graph_of(graph, FC_GRAPH_MAGIC);
    if (!x || !g) return cudaErrorInvalidValue;
    struct fc_graph_update_info r = {0, NULL, NULL};
    fc_graph *fresh = NULL;
    if (!g->built != !x->source) {
        say_once(&mixed_refused, "cudaGraphExecUpdate between a captured graph and a graph "
                 "built node by node is not supported by farcuda (cudaErrorGraphExecUpdateFailure"
                 ", cudaGraphExecUpdateErrorNotSupported): instantiate the graph");
        r.result = 6; /* cudaGraphExecUpdateErrorNotSupported */
    } else if (g->built) {
        fc_gnode *where;
        if ((r.result = same_shape(g, x->source, &where))) {
            r.errorNode = where;
        } else {
            fc_graph *copy = built_clone(g);
            if (!copy) return cudaErrorMemoryAllocation;
            if ((st = server_exec(copy, x->flags, &fresh))) {
                built_free(copy, 0);
                r.result = 1; /* cudaGraphExecUpdateError */
            } else {
                built_free(x->source, 0);
                x->source = copy;
                x->origin = g;
            }
        }
    } else {
        fc_graph *was = x->origin;
        int same = was && was->n == g->n;
        for (size_t i = 0; same && i < g->n; i++) same = g->nodes[i]->type == was->nodes[i]->type;
        if (!was) r.result = 6;
        else if (!same) r.result = 2;
        else if ((st = instantiate_captured(&fresh, g, x->flags))) r.result = 1;
        else x->origin = g;
    }
    if (fresh) take_over(x, fresh);
    if (info) *info = r;
    if (st) return st;
    return r.result ? cudaErrorGraphExecUpdateFailure : cudaSuccess;
}
