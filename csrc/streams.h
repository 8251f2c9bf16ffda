/* Streams, events, host callbacks and captured graphs (streams.c). */
#ifndef FARCUDA_STREAMS_H
#define FARCUDA_STREAMS_H

#include "fc.h"

/* Resolve an app stream handle: its device (*dev in: the default stream's device) and its
 * id on the wire (the per-thread default stream of *dev when ptds or asked for). */
int fc_stream_resolve(cudaStream_t s, int ptds, int *dev, uint32_t *id);
int fc_event_resolve(cudaEvent_t e, fc_event **out);
uint32_t fc_new_id(void); /* ids of streams, events, graphs and callbacks: the client's */

/* stream capture: the client keeps the captured graph's node list (what the app asks of
 * cudaGraphGetNodes), and host memory in captured copies is served at replay time */
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
int fc_graph_nodes(void *graph, void **nodes, size_t *num);
int fc_graph_node_type(void *node, int *type);
int fc_graph_instantiate(void **exec, void *graph, unsigned long long flags);
int fc_graph_exec_op(void *exec, cudaStream_t s, int ptds, uint16_t op);
int fc_graph_destroy(void *graph);
int fc_graph_exec_destroy(void *exec);

#endif
