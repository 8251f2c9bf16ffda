/* The transport (conn.c): one ordered connection per server, async frames through a queue,
 * synchronous requests waited for, and the frames the daemon sends unasked. */
#ifndef FARCUDA_CONN_H
#define FARCUDA_CONN_H

#include "fc.h"

fc_conn *fc_conn_new(int fd, int server, int heartbeat_ms);
void fc_conn_close(fc_conn *c);
/* The shim's connections (connect.c; the client core has its own, core/session.c): */
/* The connection of a server, made on first use (the Python half shakes hands). */
int fc_server_conn(int server, fc_conn **out);
/* Connect to the device's server and open the device on first use (the Python half asks the
 * daemon); afterwards the device's sticky or pending error, or success. Every call that
 * needs a device starts here. */
int fc_device_ready(int dev);
/* The connection of an opened virtual device. */
fc_conn *fc_dev_conn(int dev);

/* The transport itself (conn.c): */
/* Queue an async frame; the tail is copied. */
int fc_post(fc_conn *c, uint16_t op, uint16_t vdev, const void *fixed, size_t flen,
            const void *tail, size_t tlen);
/* Reserve room for one async frame in the queue and fill it in place; returns a pointer to
 * the frame's fixed part (header written) with c->q_mtx held; fc_post_commit releases it. */
void *fc_post_begin(fc_conn *c, uint16_t op, uint16_t vdev, size_t length);
void fc_post_commit(fc_conn *c);
/* A synchronous request: flushes the queue, sends, waits for the reply. */
int fc_call(fc_conn *c, uint16_t op, uint16_t vdev, const void *fixed, size_t flen,
            const void *tail, size_t tlen, fc_req *req);
void fc_req_init(fc_req *r, void *rep, size_t rep_cap);
/* The same on an opened virtual device: an async frame (returning the device's pending
 * error, as an async call does), and a request with its reply's fixed fields in rep. */
int fc_post_dev(int dev, uint16_t op, const void *fixed, size_t flen);
int fc_call_dev(int dev, uint16_t op, const void *fixed, size_t flen, void *rep, size_t cap);
int fc_call_syncing(int dev, uint16_t op, const void *fixed, size_t flen);
int fc_call_device_sync(int dev);
int fc_device_quiet(int dev);
/* results may come compressed (DATA_Z): the system's liblz4 is there to decompress them */
int fc_lz4_available(void);
int fc_compressing(fc_conn *c, int dev, size_t n);
/* Send a host-to-device payload in frames of FC_PIECE, the last one synchronous when
 * `sync` is set; returns the status. */
int fc_send_htod(fc_conn *c, uint16_t vdev, uint16_t op, const void *fixed, size_t flen,
                 size_t dst_off_field, const char *src, size_t n, int sync);
/* A request whose reply nobody waits for (a device-to-host copy into pinned memory): `r` is
 * heap-allocated and owned by the connection from here on; its bulk result lands in r->bulk
 * when the daemon sends it, which the daemon does before the reply to any later request that
 * covers it (a synchronization). Blocks while too many are in flight. */
int fc_post_req(fc_conn *c, uint16_t op, uint16_t vdev, const void *fixed, size_t flen,
                fc_req *r, size_t bytes);
/* Wait until no async request of any connection is in flight (cudaFreeHost). */
void fc_wait_async_all(void);
void fc_conn_fail(fc_conn *c, int status, const char *why);

/* What the daemon sends unasked that the layers above act on (streams.c sets them, before
 * any connection exists): a stream reached a host function; a graph replay needs the host
 * bytes of a captured copy (FETCH), or delivers those of one (PUSH: where they go). */
typedef struct {
    void (*callback_reached)(uint32_t callback);
    void (*fetch)(fc_conn *c, uint32_t node);
    int (*push_target)(uint32_t node, uint64_t offset, size_t n, void **dst, int *dev);
} fc_conn_notices;
void fc_conn_set_notices(const fc_conn_notices *n);
/* The notices of the other layer of the process when the shim lends its connections to the
 * driver layer's client core (join.c): told of what the first set does not own. */
void fc_conn_join_notices(const fc_conn_notices *n);

/* How host-to-device pieces are compressed and the link measured for FARCUDA_COMPRESS=auto:
 * the shim's Python half (wire/compress.py) sets it. Where none is set (the driver layer's
 * client core, also on a connection the shim lent it) nothing goes compressed. Compressed
 * results (DATA_Z) come only for a request that asked for them, and the transport reads them
 * with the system's liblz4 either way. */
typedef struct {
    int (*compress)(const void *src, size_t n, void *dst, size_t cap);
    int (*link_probe)(int dev);
} fc_conn_codec;
void fc_conn_set_codec(const fc_conn_codec *k);

#endif
