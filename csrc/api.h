/* Functions of the C runtime that the embedded Python half calls (declared to cffi too; the
 * Python entry points the C half calls are in gen/pycalls.h, generated from the call table).
 * Plain C types only: this file is parsed by cffi.
 */
#ifndef FARCUDA_API_H
#define FARCUDA_API_H
#ifndef FARCUDA_CDEF
#include <stddef.h>
#include <stdint.h>
#endif

/* configuration */
int fcx_add_server(const char *host, int port);
int fcx_add_device(int server, int gpu, int sm_budget);
void fcx_set_init_status(int status);
void fcx_set_timeouts(int64_t connect_ms, int64_t liveness_ms);
void fcx_set_spin(int64_t ns);
void fcx_server_set_info(int server, int ngpus, int driver_version);
int fcx_server_of(int dev, int *gpu, int *sm_budget);
const char *fcx_server_host(int server, int *port);
int fcx_server_failed(int server, int status);
int fcx_attach(int server, int fd, int heartbeat_ms);
int fcx_server_connected(int server);

/* requests: `rep` receives the reply's fixed fields; a bulk reply is allocated by the runtime
 * (free it with fcx_free) unless bulk_dst is given */
int fcx_call(int dev, int op, const void *fixed, size_t flen, const void *tail, size_t tlen,
             void *rep, size_t rep_cap, void **bulk, size_t *bulk_len);
int fcx_call_server(int server, int op, const void *fixed, size_t flen, void *rep,
                    size_t rep_cap, void **bulk, size_t *bulk_len);
int fcx_post(int dev, int op, const void *fixed, size_t flen, const void *tail, size_t tlen);
void fcx_free(void *p);

/* devices */
int fcx_current_device(void);
int fcx_device_count(void);
int fcx_device_status(int dev);
void fcx_set_sticky(int dev, int status);
void fcx_set_attrs(int dev, const int *attrs, int n, size_t shmem_optin);
void fcx_set_priorities(int dev, int least, int greatest);
int fcx_get_attr(int dev, int attr, int *value);
int fcx_window_reserve(int dev, uint64_t size, uint64_t *base);
int fcx_window_adopt(int dev, uint64_t base, uint64_t size);
void fcx_device_opened(int dev, int opened);
int fcx_device_ready(int dev);
int fcx_device_reset_local(int dev);

/* modules, kernels, variables */
int fcx_module_count(void);
int fcx_module_image(int mod, const char **image, size_t *size);
int fcx_kernel_count(void);
int fcx_kernel_info(int k, int *mod, const char **name);
int fcx_var_count(void);
int fcx_var_info(int v, int *mod, const char **name, size_t *size, int *constant, int *managed);
int fcx_set_kernel_plan(int k, const uint32_t *params, int nparams, uint32_t param_size,
                        int max_threads, uint32_t max_dyn_smem);
void fcx_kernel_set_smem(int k, uint32_t max_dyn_smem);
void fcx_set_var_addr(int v, int dev, uint64_t addr);
void fcx_module_loaded(int mod, int dev);
int fcx_module_ready(int mod, int dev);
int fcx_kernel_by_host(const void *host_fun);

/* memory tables */
int fcx_range_add(uint64_t base, uint64_t size, int dev, int kind);
int fcx_range_find(uint64_t p, int *dev, uint64_t *base, uint64_t *size, int *kind,
                   unsigned int *flags, uint64_t *devptr);

/* streams */
int fcx_stream_info(void *stream, int *dev, uint32_t *id, int *priority, unsigned int *flags);

/* compression of a server's host-to-device pieces: 0 off, 1 on, 2 decide at the first large
 * copy (fcpy_link_probe); and the bytes compressed so far (raw, sent) */
void fcx_set_compress(int server, int state);
void fcx_compressed(uint64_t *out2);

/* the arena size the daemon offers for client-side sub-allocation (0: none) */
void fcx_set_arena(int dev, uint64_t size);

/* statistics: calls, sync calls, bytes out, bytes in, wait ns, summed over servers */
void fcx_stats(uint64_t *out5);
/* round trips (every request answered by a reply) and synchronous ones (a caller waited) */
void fcx_round_trips(uint64_t *out2);
void fcx_log(const char *msg);

#endif
