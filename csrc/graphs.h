/* Graphs (graphs.c): the queries and execs of captured graphs, and graphs built node by node,
 * instantiated by capturing their nodes through the shim's own calls. Handles are void *:
 * cudaGraph_t, cudaGraphNode_t and cudaGraphExec_t point to the structs of streams.h. */
#ifndef FARCUDA_GRAPHS_H
#define FARCUDA_GRAPHS_H

#include "fc.h"

/* the exports (the call table's C rows): graphs of either kind */
int fc_graph_nodes(void *graph, void **nodes, size_t *num);
int fc_graph_node_type(void *node, int *type);
int fc_graph_instantiate(void **exec, void *graph, unsigned long long flags);
int fc_graph_exec_op(void *exec, cudaStream_t s, int ptds, uint16_t op);
int fc_graph_destroy(void *graph);
int fc_graph_exec_destroy(void *exec);
int fc_graph_exec_update(void *exec, void *graph, struct fc_graph_update_info *info);

/* ... built node by node */
int fc_graph_create(void **graph, unsigned int flags);
int fc_graph_add_kernel(void **node, void *graph, void *const *deps, size_t ndeps,
                        const struct fc_kernel_node_parms *p);
int fc_graph_add_memset(void **node, void *graph, void *const *deps, size_t ndeps,
                        const struct fc_memset_parms *p);
int fc_graph_add_memcpy(void **node, void *graph, void *const *deps, size_t ndeps,
                        const struct fc_memcpy3d_parms *p);
int fc_graph_add_memcpy_1d(void **node, void *graph, void *const *deps, size_t ndeps,
                           void *dst, const void *src, size_t count, int kind);
int fc_graph_add_empty(void **node, void *graph, void *const *deps, size_t ndeps);
int fc_graph_add_event(void **node, void *graph, void *const *deps, size_t ndeps,
                       cudaEvent_t event, int type); /* FC_NODE_EVENT_RECORD or _WAIT_EVENT */
int fc_graph_add_child(void **node, void *graph, void *const *deps, size_t ndeps, void *child);
int fc_graph_add_node(void **node, void *graph, void *const *deps, const void *edges,
                      size_t ndeps, struct fc_graph_node_parms *p);
int fc_graph_add_dependencies(void *graph, void *const *from, void *const *to,
                              const void *edges, size_t n);
int fc_graph_root_nodes(void *graph, void **nodes, size_t *num);
int fc_graph_node_deps(void *node, void **deps, void *edges, size_t *num);
int fc_graph_kernel_get(void *node, struct fc_kernel_node_parms *p);
int fc_graph_kernel_set(void *node, const struct fc_kernel_node_parms *p);
int fc_graph_clone(void **out, void *graph);
int fc_graph_exec_kernel_set(void *exec, void *node, const struct fc_kernel_node_parms *p);

#endif
