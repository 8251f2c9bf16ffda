/* Streams, events, host callbacks and stream capture (streams.c). */
#ifndef FARCUDA_STREAMS_H
#define FARCUDA_STREAMS_H

#include "fc.h"

/* Resolve an app stream handle: its device (*dev in: the default stream's device) and its
 * id on the wire (the per-thread default stream of *dev when ptds or asked for). */
int fc_stream_resolve(cudaStream_t s, int ptds, int *dev, uint32_t *id);
int fc_event_resolve(cudaEvent_t e, fc_event **out);
uint32_t fc_new_id(void); /* ids of streams, events, graphs and callbacks: the client's */

/* Graphs (cudaGraph_t) and execs (cudaGraphExec_t). A captured graph lives on the server;
 * this side keeps the kinds of what was captured, in capture order (what cudaGraphGetNodes
 * and cudaGraphNodeGetType answer). A graph built node by node (graphs.c) lives here, nodes,
 * parameters and dependencies, until it is instantiated. Handles given to the app are never
 * freed: a destroyed one keeps a dead magic. */
#define FC_GRAPH_MAGIC 0x47524150U
#define FC_EXEC_MAGIC 0x47455845U
#define FC_NODE_MAGIC 0x4e4f4445U
#define FC_DEAD_MAGIC 0xdeadbeefU

typedef struct fc_graph fc_graph;

typedef struct fc_gnode {
    uint32_t magic;
    int type;                   /* FC_NODE_* (a cudaGraphNodeType) */
    /* nodes of built graphs only: */
    fc_graph *graph;            /* the graph it is in, */
    size_t at;                  /* ... at this place of its list */
    struct fc_gnode **deps;     /* the nodes it depends on */
    size_t ndeps;
    fc_kernel *kernel;          /* kernel: the kernel, its host function, the device whose */
    const void *func;           /* ... module gave the layout, the shape and the arguments */
    int dev;
    fc_dim3 grid, block;
    unsigned int shmem;
    char *params;               /* ... packed by the kernel's layout, */
    void **argv;                /* ... and a pointer to each (cudaGraphKernelNodeGetParams) */
    struct fc_memset_parms set; /* memset */
    struct fc_memcpy3d_parms copy; /* memcpy */
    cudaEvent_t event;          /* event record and wait */
    fc_graph *child;            /* child graph: the node's own copy of the graph */
} fc_gnode;

struct fc_graph {
    uint32_t magic, id;         /* id: the server's graph, or exec */
    int dev;
    fc_gnode **nodes;           /* captured: what was captured, in order; built: its nodes */
    size_t n, cap;
    int built;                  /* by the node API, not by capture */
    fc_graph *source;           /* an exec of a built graph: its own copy of the graph, */
    fc_graph *origin;           /* ... the graph it was instantiated from */
    unsigned long long flags;   /* ... and the flags it was instantiated with */
};

/* stream capture: the captured graph's node list is kept here, and host memory in captured
 * copies is served at replay time */
fc_capture *fc_capture_of(cudaStream_t s, int ptds, int dev);
void fc_capture_node(fc_capture *c, int type);
uint32_t fc_hostnode_add(int dev, void *host, size_t n, int to_device);
/* until the host callbacks queued earlier on the device have run (a pinned source of a copy
 * must be read after them) */
void fc_wait_callbacks(int dev);

/* the exports (the call table's C rows) */
int fc_stream_create(cudaStream_t *out, unsigned int flags, int priority);
int fc_stream_destroy(cudaStream_t s);
int fc_stream_sync(cudaStream_t s, int ptds, uint16_t op); /* STREAM_SYNC or STREAM_QUERY */
int fc_stream_wait_event(cudaStream_t s, cudaEvent_t e, unsigned int flags, int ptds);
int fc_stream_field(cudaStream_t s, int ptds, int which, void *out);
int fc_event_create(cudaEvent_t *out, unsigned int flags);
int fc_event_record(cudaEvent_t e, cudaStream_t s, unsigned int flags, int ptds);
int fc_event_call(cudaEvent_t e, uint16_t op); /* EVENT_SYNC or EVENT_QUERY */
int fc_event_elapsed(float *ms, cudaEvent_t start, cudaEvent_t end);
int fc_event_destroy(cudaEvent_t e);
int fc_add_callback(cudaStream_t s, int ptds, int kind, void (*fn)(void *),
                    void (*cb)(cudaStream_t, int, void *), void *data);
int fc_begin_capture(cudaStream_t s, int mode, int ptds);
int fc_end_capture(cudaStream_t s, void **graph, int ptds);
int fc_capture_status(cudaStream_t s, int *status, int ptds);
int fc_capture_info(cudaStream_t s, int *status, unsigned long long *id_out, void **graph,
                    const void **deps, const void **edges, size_t *ndeps, int ptds);
int fc_exchange_capture_mode(int *mode);

#endif
