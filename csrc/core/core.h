/* farcuda client core: configuration, servers, connections, virtual devices, memory ranges.
 *
 * Pure C, no Python: it runs inside any process, Python interpreters (PyTorch, CuPy) included,
 * without an interpreter of its own to fight with theirs. It is built as libfarcuda.so.1 and
 * every layer of the client links to that one copy, so that a process has one session per
 * server whichever stand-in it came through: one connection per server, one device open per
 * virtual device, one table of device memory.
 *
 * What it owns is the state runtime.h declares (fc_servers, fc_devices, the connections of
 * conn.c); what it exports (version node FARCUDA_CORE_1) is the fcc_* API below. Statuses are the
 * daemon's, that is cudaError_t numbers; each layer maps them to its own API's codes.
 */
#ifndef FARCUDA_CORE_H
#define FARCUDA_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "../fc.h"
#include "../conn.h"     /* the transport, shared with the shim */
#include "../runtime.h"  /* the state the core defines (fc_servers, fc_devices, ...) */
#include "ranges.h"

#define FCC_API __attribute__((visibility("default")))

/* ---- configuration (config.c): the environment, read exactly as interposer/config.py ---- */
typedef struct fcc_entry {
    char host[256];
    int port;
    int gpu;
    int sm;
} fcc_entry;

typedef struct fcc_config {
    int configured;             /* a device map or a server is set */
    int ndevices;               /* entries of an explicit map (FARCUDA_DEVICES/_COUNT) */
    fcc_entry devices[FC_MAX_DEVICES];
    int has_server;             /* FARCUDA_SERVER: every GPU of that server */
    char server_host[256];
    int server_port;
    char source[128];           /* the variable the devices came from (or what set it) */
    char token[512];
    int has_token;
    double connect_timeout, liveness_timeout, spin_us;
    int report;
    int tls;
    char tls_ca[512], tls_cert[512], tls_key[512];
} fcc_config;

/* Parse an environment (NULL: this process's). Returns 0, or -1 with the message (the one
 * interposer/config.py raises, naming the variable at fault) in err. */
int fcc_config_parse(char *const *envp, fcc_config *cfg, char *err, size_t errcap);
/* The configuration as the core reads it, as one JSON object (or {"error": ...}), for tests
 * and `farcuda run --explain`. envblock: "K=V\0K=V\0\0", or NULL for this process. */
FCC_API int fcc_config_explain(const char *envblock, char *out, size_t cap);

/* ---- SHA-256 and HMAC-SHA256 (sha256.c) ---- */
typedef struct {
    uint32_t h[8];
    uint64_t len;
    unsigned char buf[64];
    size_t fill;
} fcc_sha256;
void fcc_sha256_init(fcc_sha256 *s);
void fcc_sha256_update(fcc_sha256 *s, const void *data, size_t n);
void fcc_sha256_final(fcc_sha256 *s, unsigned char out[32]);
FCC_API void fcc_sha256_digest(const void *data, size_t n, unsigned char out[32]);
FCC_API void fcc_hmac_sha256(const void *key, size_t klen, const void *msg, size_t mlen,
                             unsigned char out[32]);

/* ---- MD2 (md2.c) ---- */
typedef struct {
    unsigned char x[48], c[16], buf[16];
    size_t n;
} fcc_md2;
FCC_API void fcc_md2_init(fcc_md2 *m);
FCC_API void fcc_md2_update(fcc_md2 *m, const void *data, size_t n);
FCC_API void fcc_md2_final(fcc_md2 *m, unsigned char out[16]);
FCC_API void fcc_md2_digest(const void *data, size_t n, unsigned char out[16]);

/* ---- a small JSON reader (json.c), for the daemon's cold replies ---- */
typedef struct fcc_json fcc_json;
fcc_json *fcc_json_parse(const char *text, size_t n);
void fcc_json_free(fcc_json *j);
const fcc_json *fcc_json_get(const fcc_json *obj, const char *key);
const fcc_json *fcc_json_at(const fcc_json *arr, size_t i);
size_t fcc_json_len(const fcc_json *j);          /* array or object members */
const char *fcc_json_key(const fcc_json *obj, size_t i);
const fcc_json *fcc_json_value(const fcc_json *obj, size_t i);
int fcc_json_is_null(const fcc_json *j);
double fcc_json_num(const fcc_json *j, double dflt);
const char *fcc_json_str(const fcc_json *j);    /* NULL unless a string */

/* ---- the session (session.c) ---- */
/* Once per process: the configuration, the servers and the virtual devices. Returns the
 * status every call must fail with when farcuda is not usable (and said why on stderr once),
 * else cudaSuccess. */
FCC_API int fcc_init(void);
/* The runtime shim's offer of its session (join.h): 0 when taken. Whether it was: */
struct fc_join;
FCC_API int fcc_join_shim(const struct fc_join *offer);
FCC_API int fcc_shares_session(void);
FCC_API int fcc_device_count(void);
FCC_API void fcc_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
FCC_API int fcc_server_conn(int server, fc_conn **out);
FCC_API fc_conn *fcc_dev_conn(int dev);
/* The server's status (`farcuda status`'s JSON: GPUs, memory, utilization, tenants), over a
 * connection of its own; *json is malloc'd and NUL-terminated. */
FCC_API int fcc_server_status(int server, char **json, size_t *n);
FCC_API int fcc_device_server(int dev, int *gpu);  /* the server of a virtual device */
/* The physical GPU's description (GPU_INFO, no context): name, uuid (16 bytes), memory,
 * attributes indexed by cudaDeviceAttr (= CUdevice_attribute) number. */
typedef struct fcc_gpu_info {
    char name[256];
    unsigned char uuid[16];
    uint64_t total_mem;
    int attrs[FC_MAX_ATTR];
    char driver_version[64];    /* the server's GPU driver, "" when it does not say */
} fcc_gpu_info;
FCC_API int fcc_device_info(int dev, const fcc_gpu_info **out);
/* Connect, and create the virtual device's context on the server (once). */
FCC_API int fcc_device_ready(int dev);
FCC_API int fcc_device_status(int dev);        /* sticky or pending error, else success */
FCC_API int fcc_sync_status(int dev, int st);  /* a synchronizing call's status: sticky ones */
FCC_API int fcc_device_priorities(int dev, int *least, int *greatest);
/* The context flags the device's context is (or will be) created with (scheduling, ...). */
FCC_API int fcc_device_set_flags(int dev, unsigned int flags);
FCC_API int fcc_driver_version(void);          /* the first server's driver, 0 if unknown */
/* A synchronous request on a virtual device: rep gets the reply's fixed part; a bulk reply
 * goes to bulk (malloc'd, *bulk_len bytes; free it) when bulk is given. */
FCC_API int fcc_call(int dev, uint16_t op, const void *fixed, size_t flen, const void *tail,
                     size_t tlen, void *rep, size_t rep_cap, char **bulk, size_t *bulk_len);
FCC_API int fcc_post(int dev, uint16_t op, const void *fixed, size_t flen, const void *tail,
                     size_t tlen);
/* Ids the client gives streams, events, kernels, modules and callbacks: unique in the
 * process, so that every layer's objects can share one session. */
/* Wait until the host functions queued on the device before this call have run. */
FCC_API void fcc_wait_host_funcs(int dev);
FCC_API uint32_t fcc_new_id(void);
FCC_API uint32_t fcc_new_kernel_id(void);  /* dense: the daemon indexes arrays by them */

/* Host memory of a captured copy, served at each replay of its graph (FETCH/PUSH); returns
 * the node's id (0: out of memory). */
FCC_API uint32_t fcc_hostnode_add(int dev, void *host, size_t n, int to_device);

/* Host functions: run on the client when the daemon says the stream reached them. */
FCC_API int fcc_host_func(int dev, uint32_t stream, void (*fn)(void *), void *arg);

/* ---- memory ranges and address windows: ranges.h ---- */

/* ---- memory pools (pools.c): cudaMemPool and CUmemoryPool share one ABI ---- */
FCC_API int fcc_pool_of_device(int dev, int current, void **out);
FCC_API int fcc_pool_set_device(int dev, void *handle);
FCC_API int fcc_pool_location(const void *location, int type, int *dev, const char *fn);
FCC_API int fcc_pool_create(void **out, const void *props, const char *fn);
FCC_API int fcc_pool_destroy(void *handle);
FCC_API int fcc_pool_trim(void *handle);
FCC_API int fcc_pool_set_attr(void *handle, int attr, const void *value);
FCC_API int fcc_pool_get_attr(void *handle, int attr, void *value);
FCC_API int fcc_pool_set_access(void *handle, const void *descs, size_t count, const char *fn);
FCC_API int fcc_pool_get_access(int *flags, void *handle, const void *location);
FCC_API int fcc_pool_for_alloc(void *handle, int *dev, size_t size, fc_pool **out);
FCC_API void fcc_pool_account(fc_pool *p, uint64_t used, uint64_t reserved);
FCC_API void fcc_pool_release(const fc_range *r);
FCC_API void fcc_pools_reset_device(int dev);

/* ---- statistics ---- */
FCC_API void fcc_stats(uint64_t out5[5]);

#endif
