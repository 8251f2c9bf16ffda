/* One ordered connection per server.
 *
 * Writers: async frames are appended to a queue that a sender thread drains, so a launch
 * costs a memcpy, not a system call; a synchronous call takes the send lock, flushes the queue
 * itself and writes its request behind it. Both flush under send_mtx, so frames leave in the
 * order each thread queued them (send_mtx is always taken before q_mtx).
 *
 * Readers: one reader thread per connection parses every frame the daemon sends. It alone
 * completes requests, so a waiter's buffers are never written after the waiter returned; when
 * the link fails (read error, protocol error, a write error that shut the socket down, or a
 * liveness timeout) it fails every pending request.
 *
 * Liveness, both ways, within FARCUDA_LIVENESS_TIMEOUT: nothing at all arriving means the
 * server or the link towards us is gone (the daemon sends a HEARTBEAT when idle); bytes we
 * handed to the socket staying unacknowledged (HEARTBEAT.received does not advance) while
 * the daemon sends nothing but heartbeats means the link towards the server is. The daemon
 * acknowledges every heartbeat period in which it received anything, so a long kernel
 * (nothing sent: all acknowledged) and a slow upload (the count advances) never look like a
 * failure. Any other frame restarts the clock: an acknowledgement travels behind the bulk
 * data queued before it, which on a slow link may take longer than the timeout to drain.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "fc.h"
#include "api.h"
#include "conn.h"
#include "log.h"
#include "runtime.h"

/* LZ4's bound for a piece (LZ4_COMPRESSBOUND) */
#define FC_ZBUF (FC_PIECE + FC_PIECE / 255 + 16)
#define FC_Z_MIN (64u << 10)

#define Q_HIGH_WATER (64u << 20)
#define ASYNC_MAX_N 256            /* async requests in flight per connection */
#define ASYNC_MAX_BYTES (64u << 20) /* and the bytes their results may hold */

static int64_t load64(volatile int64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

static const fc_conn_notices *notices, *joined;

void fc_conn_set_notices(const fc_conn_notices *n) { notices = n; }

/* how pieces are compressed (the shim's; none in the driver layer's client core) */
static const fc_conn_codec *codec;

void fc_conn_set_codec(const fc_conn_codec *k) { __atomic_store_n(&codec, k, __ATOMIC_RELEASE); }
void fc_conn_join_notices(const fc_conn_notices *n) {
    __atomic_store_n(&joined, n, __ATOMIC_RELEASE);
}

/* The notices of both layers sharing the connection: each knows only its own ids (disjoint:
 * core/session.c), so both are told of a host function or a fetch, and the first that owns
 * a push's node takes its bytes. */
static void notice_callback(uint32_t id) {
    const fc_conn_notices *j = __atomic_load_n(&joined, __ATOMIC_ACQUIRE);
    if (notices) notices->callback_reached(id);
    if (j) j->callback_reached(id);
}

static void notice_fetch(fc_conn *c, uint32_t node) {
    const fc_conn_notices *j = __atomic_load_n(&joined, __ATOMIC_ACQUIRE);
    if (notices) notices->fetch(c, node);
    if (j) j->fetch(c, node);
}

static int notice_push_target(uint32_t node, uint64_t offset, size_t n, void **dst, int *dev) {
    const fc_conn_notices *j = __atomic_load_n(&joined, __ATOMIC_ACQUIRE);
    if (notices && notices->push_target(node, offset, n, dst, dev) == 0) return 0;
    return j ? j->push_target(node, offset, n, dst, dev) : -1;
}

/* ---------- writing ---------- */

static int writev_all(fc_conn *c, struct iovec *iov, int cnt) {
    while (cnt > 0) {
        struct msghdr mh = {0};
        mh.msg_iov = iov;
        mh.msg_iovlen = cnt > 64 ? 64 : cnt;
        ssize_t n = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        __atomic_fetch_add(&c->bytes_out, (uint64_t)n, __ATOMIC_RELAXED);
        while (cnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    c->last_tx_ns = fc_now_ns();
    return 0;
}

/* A write failed: shut the socket so that the reader sees the end and fails everyone. */
static void write_failed(fc_conn *c) {
    if (!c->dead) shutdown(c->fd, SHUT_RDWR);
}

/* Take what the queue holds (send_mtx held). */
static char *q_take(fc_conn *c, size_t *len, char **spare, size_t *spare_cap) {
    pthread_mutex_lock(&c->q_mtx);
    char *buf = c->q;
    *len = c->q_len;
    c->q = *spare;
    size_t cap = c->q_cap;
    c->q_cap = *spare_cap;
    c->q_len = 0;
    *spare = buf;
    *spare_cap = cap;
    if (c->room_waiters) /* posters waiting at the high-water mark: there is room now */
        pthread_cond_broadcast(&c->room_cv);
    pthread_mutex_unlock(&c->q_mtx);
    return buf;
}

/* Spare queue buffer, swapped with c->q on each flush; only touched under send_mtx. */
typedef struct { char *buf; size_t cap; } spare_t;

static spare_t *conn_spare(fc_conn *c) {
    /* stored right after the conn struct (allocated together in fc_conn_new) */
    return (spare_t *)(c + 1);
}

static int flush_locked(fc_conn *c, struct iovec *extra, int nextra) {
    spare_t *sp = conn_spare(c);
    size_t len;
    char *buf = q_take(c, &len, &sp->buf, &sp->cap);
    struct iovec iov[8];
    int n = 0;
    if (len) {
        iov[n].iov_base = buf;
        iov[n].iov_len = len;
        n++;
    }
    for (int i = 0; i < nextra && n < 8; i++) iov[n++] = extra[i];
    if (n == 0) return 0;
    if (c->dead) return -1;
    if (writev_all(c, iov, n)) {
        write_failed(c);
        return -1;
    }
    return 0;
}

static void *sender_main(void *arg) {
    fc_conn *c = arg;
    for (;;) {
        pthread_mutex_lock(&c->q_mtx);
        while (c->q_len == 0 && !c->stop && !c->dead) {
            c->sender_waiting = 1;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t wait_ms = c->heartbeat_ms > 0 ? c->heartbeat_ms : 1000;
            ts.tv_sec += wait_ms / 1000;
            ts.tv_nsec += (wait_ms % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
            int rc = pthread_cond_timedwait(&c->q_cv, &c->q_mtx, &ts);
            c->sender_waiting = 0;
            if (rc == ETIMEDOUT && c->q_len == 0 && !c->stop && !c->dead &&
                fc_now_ns() - c->last_tx_ns > wait_ms * 1000000L) {
                /* idle: tell the daemon we are alive */
                pthread_mutex_unlock(&c->q_mtx);
                fc_post(c, FC_OP_PING, 0, NULL, 0, NULL, 0);
                pthread_mutex_lock(&c->q_mtx);
            }
        }
        int stop = c->stop || c->dead;
        pthread_mutex_unlock(&c->q_mtx);
        if (stop) break;
        pthread_mutex_lock(&c->send_mtx);
        flush_locked(c, NULL, 0);
        pthread_mutex_unlock(&c->send_mtx);
    }
    return NULL;
}

/* A frame of `op` for device `vdev` was queued or written: may it have queued work there? (What
 * cannot is listed; anything else counts, a call of another server's device at worst too.)
 * Counted on the connection, so that the frames of both layers sharing it count. */
static void note_work(fc_conn *c, uint16_t op, uint16_t vdev) {
    switch (op) {
    case FC_OP_PING: case FC_OP_DEVICE_SYNC: case FC_OP_MALLOC: case FC_OP_FREE:
    case FC_OP_MEM_GET_INFO: case FC_OP_ARENA: case FC_OP_SUBALLOC: case FC_OP_SUBFREE:
    case FC_OP_ARENA_RELEASE: case FC_OP_GPU_INFO: case FC_OP_STATUS: case FC_OP_FUNC_ATTRS:
    case FC_OP_OCCUPANCY: case FC_OP_STREAM_QUERY: case FC_OP_EVENT_QUERY:
    case FC_OP_HELLO: case FC_OP_DEVICE_OPEN: case FC_OP_MODULE_LOAD: case FC_OP_FUNC_SET_ATTR:
    case FC_OP_OCCUPANCY_SMEM: case FC_OP_OCCUPANCY_CLUSTERS: case FC_OP_GET_LIMIT:
    case FC_OP_POINTER_INFO: case FC_OP_STREAM_CREATE: case FC_OP_EVENT_CREATE:
    case FC_OP_MALLOC_PITCH:
        return;
    default:
        if (vdev < FC_MAX_DEVICES)
            __atomic_add_fetch(&c->work_gen[vdev], 1, __ATOMIC_ACQ_REL);
    }
}

void *fc_post_begin(fc_conn *c, uint16_t op, uint16_t vdev, size_t length) {
    size_t total = sizeof(fc_hdr) + length;
    pthread_mutex_lock(&c->q_mtx);
    while (c->q_len > Q_HIGH_WATER && !c->dead) {
        c->room_waiters++;
        if (c->sender_waiting) pthread_cond_broadcast(&c->q_cv);
        pthread_cond_wait(&c->room_cv, &c->q_mtx);
        c->room_waiters--;
    }
    if (c->q_len + total > c->q_cap) {
        size_t cap = c->q_cap ? c->q_cap : 65536;
        while (cap < c->q_len + total) cap *= 2;
        char *q = realloc(c->q, cap);
        if (!q) {
            pthread_mutex_unlock(&c->q_mtx);
            return NULL;
        }
        c->q = q;
        c->q_cap = cap;
    }
    fc_hdr *h = (fc_hdr *)(c->q + c->q_len);
    h->len = (uint32_t)length;
    h->op = op;
    h->flags = 0;
    h->rid = 0;
    h->vdev = vdev;
    h->aux = 0;
    c->q_len += total;
    if (op != FC_OP_PING) c->calls++; /* heartbeats are not the program's calls */
    note_work(c, op, vdev); /* (queued: a synchronization sent after this covers it) */
    return h + 1;
}

void fc_post_commit(fc_conn *c) {
    int wake = c->sender_waiting;
    pthread_mutex_unlock(&c->q_mtx);
    if (wake) pthread_cond_broadcast(&c->q_cv);
}

int fc_post(fc_conn *c, uint16_t op, uint16_t vdev, const void *fixed, size_t flen,
            const void *tail, size_t tlen) {
    if (c->dead) return c->dead_status;
    char *p = fc_post_begin(c, op, vdev, flen + tlen);
    if (!p) return cudaErrorMemoryAllocation;
    if (flen) memcpy(p, fixed, flen);
    if (tlen) memcpy(p + flen, tail, tlen);
    fc_post_commit(c);
    return cudaSuccess;
}

/* ---------- requests ---------- */

void fc_req_init(fc_req *r, void *rep, size_t rep_cap) {
    memset(r, 0, sizeof *r);
    r->rep = rep;
    r->rep_cap = rep_cap;
}

static void req_register(fc_conn *c, fc_req *r) {
    pthread_mutex_lock(&c->rep_mtx);
    r->rid = ++c->next_rid;
    if (r->rid == 0) r->rid = ++c->next_rid;
    r->mtx = &c->rep_mtx;
    pthread_cond_init(&r->cv, NULL);
    r->next = c->pending;
    c->pending = r;
    pthread_mutex_unlock(&c->rep_mtx);
}

int fc_post_req(fc_conn *c, uint16_t op, uint16_t vdev, const void *fixed, size_t flen,
                fc_req *r, size_t bytes) {
    r->async = 1;
    r->vdev = vdev;
    r->async_bytes = bytes;
    pthread_mutex_lock(&c->rep_mtx);
    while (!c->dead && (c->async_n >= ASYNC_MAX_N ||
                        (c->async_n && c->async_bytes + bytes > ASYNC_MAX_BYTES)))
        pthread_cond_wait(&c->async_cv, &c->rep_mtx);
    if (c->dead) {
        pthread_mutex_unlock(&c->rep_mtx);
        free(r);
        return c->dead_status;
    }
    c->async_n++;
    c->async_bytes += bytes;
    c->async_reqs++;
    r->rid = ++c->next_rid;
    if (r->rid == 0) r->rid = ++c->next_rid;
    r->mtx = &c->rep_mtx;
    r->next = c->pending;
    c->pending = r;
    /* queued under rep_mtx: the reader cannot see the reply before r is registered, and the
     * frame cannot be overtaken by a later request of this thread */
    char *p = fc_post_begin(c, op, vdev, flen);
    if (p) {
        memcpy(p, fixed, flen);
        ((fc_hdr *)p - 1)->rid = r->rid;
        fc_post_commit(c);
    } else {
        c->pending = r->next;
        c->async_n--;
        c->async_bytes -= bytes;
        free(r);
    }
    pthread_mutex_unlock(&c->rep_mtx);
    return p ? cudaSuccess : cudaErrorMemoryAllocation;
}

void fc_wait_async_all(void) {
    for (int i = 0; i < fc_nservers; i++) {
        fc_conn *c = fc_servers[i].conn;
        if (!c) continue;
        pthread_mutex_lock(&c->rep_mtx);
        while (c->async_n && !c->dead) pthread_cond_wait(&c->async_cv, &c->rep_mtx);
        pthread_mutex_unlock(&c->rep_mtx);
    }
}

static void req_wait(fc_conn *c, fc_req *r) {
    int64_t t0 = fc_now_ns();
    /* A short spin: most replies on a fast link arrive within tens of microseconds, and a
     * condition-variable wake-up costs about as much again. Bounded by time, not by a count
     * of pause instructions, whose length differs tenfold between processors. */
    __atomic_add_fetch(&c->spinners, 1, __ATOMIC_ACQ_REL); /* the reader polls meanwhile */
    for (int i = 1;; i++) {
        if (__atomic_load_n(&r->done, __ATOMIC_ACQUIRE)) break;
        __builtin_ia32_pause();
        if ((i & 15) == 0 && fc_now_ns() - t0 > fc_spin_ns) break;
    }
    __atomic_sub_fetch(&c->spinners, 1, __ATOMIC_ACQ_REL);
    if (__atomic_load_n(&r->done, __ATOMIC_ACQUIRE)) goto out;
    pthread_mutex_lock(&c->rep_mtx);
    while (!__atomic_load_n(&r->done, __ATOMIC_ACQUIRE)) pthread_cond_wait(&r->cv, &c->rep_mtx);
    pthread_mutex_unlock(&c->rep_mtx);
out:
    pthread_cond_destroy(&r->cv);
    c->wait_ns += (uint64_t)(fc_now_ns() - t0);
}

int fc_call(fc_conn *c, uint16_t op, uint16_t vdev, const void *fixed, size_t flen,
            const void *tail, size_t tlen, fc_req *r) {
    if (c->dead) return c->dead_status;
    req_register(c, r);
    fc_hdr h = {(uint32_t)(flen + tlen), op, 0, r->rid, vdev, 0};
    struct iovec iov[3] = {{&h, sizeof h}, {(void *)fixed, flen}, {(void *)tail, tlen}};
    pthread_mutex_lock(&c->send_mtx);
    c->calls++;
    c->sync_calls++;
    flush_locked(c, iov, tlen ? 3 : (flen ? 2 : 1));
    note_work(c, op, vdev);
    pthread_mutex_unlock(&c->send_mtx);
    /* On a failed write the reader fails this request too; wait for it either way. */
    req_wait(c, r);
    return r->status;
}


/* A piece of a host-to-device copy compressed into c->zbuf (its length), or 0: sent as it is. */
static size_t compress_piece(fc_conn *c, const char *src, size_t k) {
    const fc_conn_codec *z_ = __atomic_load_n(&codec, __ATOMIC_ACQUIRE);
    if (!z_ || (!c->zbuf && !(c->zbuf = malloc(FC_ZBUF)))) return 0;
    int z = z_->compress(src, k, c->zbuf, FC_ZBUF);
    return z > 0 ? (size_t)z : 0;
}

/* Do copies of n bytes go compressed on c? In auto mode the link is measured at the first
 * copy of 1 MiB or more (by the shim's Python half: its codec's link_probe); not before that.
 * Never where no codec was set (the driver layer's client core, also on a connection the
 * shim lent it): its pieces go as they are. */
int fc_compressing(fc_conn *c, int dev, size_t n) {
    const fc_conn_codec *z_ = __atomic_load_n(&codec, __ATOMIC_ACQUIRE);
    if (n < FC_Z_MIN || !z_) return 0;
    if (n >= (1u << 20) && __atomic_load_n(&c->compress, __ATOMIC_ACQUIRE) == 2)
        z_->link_probe(dev);
    return __atomic_load_n(&c->compress, __ATOMIC_ACQUIRE) == 1;
}

int fc_send_htod(fc_conn *c, uint16_t vdev, uint16_t op, const void *fixed, size_t flen,
                 size_t dst_off_field, const char *src, size_t n, int sync) {
    if (c->dead) return c->dead_status;
    int zop = op == FC_OP_MEMCPY_HTOD && flen == sizeof(fc_MEMCPY_HTOD) &&
              fc_compressing(c, vdev, n);
    char fx[256];
    if (flen > sizeof fx) return cudaErrorInvalidValue;
    memcpy(fx, fixed, flen);
    fc_req r;
    fc_req_init(&r, NULL, 0);
    if (sync) req_register(c, &r);
    uint64_t dst0;
    memcpy(&dst0, fx + dst_off_field, 8);
    pthread_mutex_lock(&c->send_mtx);
    size_t off = 0;
    int failed = 0;
    do {
        size_t k = n - off < FC_PIECE ? n - off : FC_PIECE;
        int last = off + k == n;
        uint64_t dst = dst0 + off;
        memcpy(fx + dst_off_field, &dst, 8);
        fc_hdr h = {(uint32_t)(flen + k), op, 0, (last && sync) ? r.rid : 0, vdev, 0};
        struct iovec iov[3] = {{&h, sizeof h}, {fx, flen}, {(void *)(src + off), k}};
        fc_MEMCPY_HTOD_Z z;
        size_t zn = zop && k >= FC_Z_MIN ? compress_piece(c, src + off, k) : 0;
        if (zn) {
            memcpy(&z, fx, sizeof(fc_MEMCPY_HTOD)); /* dst, stream, flags */
            z.size = k;
            h.op = FC_OP_MEMCPY_HTOD_Z;
            h.len = (uint32_t)(sizeof z + zn);
            iov[1] = (struct iovec){&z, sizeof z};
            iov[2] = (struct iovec){c->zbuf, zn};
            c->z_raw += k;
            c->z_sent += zn;
        }
        c->calls++;
        if (flush_locked(c, iov, 3)) {
            failed = 1;
            break;
        }
        off += k;
    } while (off < n);
    if (sync) c->sync_calls++;
    note_work(c, op, vdev);
    pthread_mutex_unlock(&c->send_mtx);
    if (!sync) return failed ? (c->dead ? c->dead_status : cudaErrorDevicesUnavailable)
                             : cudaSuccess;
    req_wait(c, &r);
    return r.status;
}

/* ---------- reading ---------- */

/* While a caller spins for its reply, and for FARCUDA_SPIN_US after a reply came (the next
 * request of a program that synchronizes often is usually on its way), the reader polls the
 * socket instead of sleeping in recv: waking a thread costs a good part of a reply's whole
 * trip on a fast link. Only with cores to spare: on two cores the spinning caller, the
 * polling reader and a local daemon would fight for them. */
static ssize_t recv_some(fc_conn *c, void *buf, size_t n) {
    while (c->poll && (__atomic_load_n(&c->spinners, __ATOMIC_ACQUIRE) ||
                       fc_now_ns() < c->poll_until_ns)) {
        ssize_t k = recv(c->fd, buf, n, MSG_DONTWAIT);
        if (k >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return k;
        __builtin_ia32_pause();
    }
    return recv(c->fd, buf, n, 0);
}

/* Has what this client sent gone unacknowledged, without progress and with the daemon
 * sending nothing but heartbeats, for longer than `limit`? Asked only when the socket had
 * nothing more to read, so that every acknowledgement that arrived is counted first (after
 * the process was stopped a while, say). */
static int acks_stalled(fc_conn *c, int64_t now, int64_t limit) {
    if (!c->acks) return 0; /* a daemon that does not acknowledge */
    if (__atomic_load_n(&c->bytes_out, __ATOMIC_RELAXED) <= c->acked) {
        c->unacked_since_ns = 0;
        return 0;
    }
    if (!c->unacked_since_ns) {
        c->unacked_since_ns = now;
        return 0;
    }
    return now - c->unacked_since_ns > limit;
}

static int read_full(fc_conn *c, void *buf, size_t n) {
    char *p = buf;
    while (n > 0) {
        if (c->in_r < c->in_w) {
            size_t k = c->in_w - c->in_r < n ? c->in_w - c->in_r : n;
            memcpy(p, c->in + c->in_r, k);
            c->in_r += k;
            p += k;
            n -= k;
            continue;
        }
        c->in_r = c->in_w = 0;
        /* small reads go through the buffer (one system call for many frames); large ones
         * land where they belong. The socket has a receive timeout (fc_conn_new): a blocking
         * recv wakes as soon as data arrives, and times out to check the liveness deadline. */
        int direct = n >= sizeof c->in / 2;
        ssize_t k = recv_some(c, direct ? p : c->in, direct ? n : sizeof c->in);
        if (k > 0) {
            if (direct) {
                p += k;
                n -= (size_t)k;
            } else {
                c->in_w = (size_t)k;
            }
            c->bytes_in += (uint64_t)k;
            __atomic_store_n(&c->last_rx_ns, fc_now_ns(), __ATOMIC_RELEASE);
            continue;
        }
        if (k == 0) return -1; /* orderly close */
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
        if (c->stop) return -1;
        if (fc_liveness_timeout_ms > 0) {
            int64_t now = fc_now_ns(), limit = fc_liveness_timeout_ms * 1000000L;
            if (now - load64(&c->last_rx_ns) > limit) return c->rx_fail = -2;
            if (acks_stalled(c, now, limit)) return c->rx_fail = -5;
        }
    }
    return 0;
}

static int skip(fc_conn *c, size_t n) {
    char tmp[4096];
    while (n) {
        size_t k = n < sizeof tmp ? n : sizeof tmp;
        if (read_full(c, tmp, k)) return -1;
        n -= k;
    }
    return 0;
}

static fc_req *req_find(fc_conn *c, uint32_t rid, int unlink) {
    pthread_mutex_lock(&c->rep_mtx);
    fc_req **pp = &c->pending, *r;
    while ((r = *pp) && r->rid != rid) pp = &r->next;
    if (r && unlink) *pp = r->next;
    pthread_mutex_unlock(&c->rep_mtx);
    return r;
}

static void req_complete(fc_conn *c, fc_req *r, int status) {
    if (r->async) {
        if (status == cudaSuccess && r->bulk_len != r->bulk_cap) status = cudaErrorUnknown;
        if (status != cudaSuccess) fc_note_async_error(r->vdev, status);
        pthread_mutex_lock(&c->rep_mtx);
        c->async_n--;
        c->async_bytes -= r->async_bytes;
        pthread_cond_broadcast(&c->async_cv);
        pthread_mutex_unlock(&c->rep_mtx);
        free(r);
        return;
    }
    /* `done` last: a caller that sees it without the lock (req_wait's spin) returns at once,
     * and its request, on its stack, is gone. Signalled first, the condition variable is not
     * touched after that (a late signal once added 2 to a saved register of the caller). */
    pthread_mutex_lock(&c->rep_mtx);
    r->status = status;
    pthread_cond_signal(&r->cv);
    __atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&c->rep_mtx);
}

/* Receive `n` bulk bytes for request r at logical offset `off`. */
static int read_bulk(fc_conn *c, fc_req *r, uint64_t off, size_t n) {
    if (r == NULL) return skip(c, n);
    if (r->bulk_alloc) {
        if (off + n > (64u << 20) + r->bulk_cap) return -3; /* no unbounded growth */
        if (off + n > r->bulk_cap) {
            size_t cap = r->bulk_cap ? r->bulk_cap : 4096;
            while (cap < off + n) cap *= 2;
            char *b = realloc(r->bulk, cap);
            if (!b) return -3;
            r->bulk = b;
            r->bulk_cap = cap;
        }
    } else if (off + n > r->bulk_cap) {
        return -3;
    }
    if (r->row_width) { /* 2D: logical offset in tightly packed rows -> pitched buffer */
        while (n) {
            size_t row = off / r->row_width, col = off % r->row_width;
            size_t k = r->row_width - col < n ? r->row_width - col : n;
            if (read_full(c, r->bulk + row * r->row_pitch + col, k)) return -1;
            off += k;
            n -= k;
        }
    } else if (read_full(c, r->bulk + off, n)) {
        return -1;
    }
    if (off + n > r->bulk_len) r->bulk_len = off + n;
    return 0;
}

static int handle_reply(fc_conn *c, const fc_hdr *h) {
    uint32_t head[2];
    if (h->len < 8 || read_full(c, head, 8)) return -1;
    uint32_t status = head[0], fixed_len = head[1];
    if (fixed_len > h->len - 8) return -3;
    fc_req *r = req_find(c, h->rid, 1);
    size_t take = 0;
    if (r && r->rep) take = fixed_len < r->rep_cap ? fixed_len : r->rep_cap;
    if (take && read_full(c, r->rep, take)) return -1;
    if (skip(c, fixed_len - take)) return -1;
    size_t tail = h->len - 8 - fixed_len;
    if (tail) {
        int rc = read_bulk(c, r, r ? r->bulk_len : 0, tail);
        if (rc) return rc;
    }
    if (r && !r->async && fc_spin_ns > 0) c->poll_until_ns = fc_now_ns() + fc_spin_ns;
    if (r) req_complete(c, r, (int)status); /* frees an async r */
    return 0;
}

static int handle_data(fc_conn *c, const fc_hdr *h) {
    uint64_t off;
    if (h->len < 8 || read_full(c, &off, 8)) return -1;
    fc_req *r = req_find(c, h->rid, 0);
    return read_bulk(c, r, off, h->len - 8);
}

/* LZ4_decompress_safe of the system's liblz4 (Debian's liblz4-1), opened at first need:
 * results come compressed only to a client that has it (fc_lz4_available). */
typedef int (*lz4_dec_fn)(const char *, char *, int, int);
static lz4_dec_fn lz4_dec;
static pthread_once_t lz4_once = PTHREAD_ONCE_INIT;

static void lz4_open(void) {
    void *h = dlopen("liblz4.so.1", RTLD_NOW | RTLD_LOCAL);
    if (h) lz4_dec = (lz4_dec_fn)dlsym(h, "LZ4_decompress_safe");
}

int fc_lz4_available(void) {
    pthread_once(&lz4_once, lz4_open);
    return lz4_dec != NULL;
}

/* DATA_Z: a piece of a result, compressed; decompressed where it belongs. */
static int handle_data_z(fc_conn *c, const fc_hdr *h) {
    fc_DATA_Z m;
    if (h->len < sizeof m || read_full(c, &m, sizeof m)) return -1;
    size_t zn = h->len - sizeof m;
    fc_req *r = req_find(c, h->rid, 0);
    if (r == NULL) return skip(c, zn);
    if (!fc_lz4_available() || r->row_width || r->bulk_alloc || zn > FC_ZBUF ||
        m.size > FC_PIECE || m.offset + m.size > r->bulk_cap)
        return -3; /* never asked for */
    if (!c->zin && !(c->zin = malloc(FC_ZBUF))) return -3;
    if (read_full(c, c->zin, zn)) return -1;
    if (lz4_dec(c->zin, r->bulk + m.offset, (int)zn, (int)m.size) != (int)m.size) return -3;
    if (m.offset + m.size > r->bulk_len) r->bulk_len = m.offset + m.size;
    c->z_in += zn;
    c->z_in_raw += m.size;
    return 0;
}

static int handle_heartbeat(fc_conn *c, const fc_hdr *h) {
    fc_HEARTBEAT m;
    if (h->len < sizeof m) return skip(c, h->len); /* no count: acknowledges nothing */
    if (read_full(c, &m, sizeof m) || skip(c, h->len - sizeof m)) return -1;
    c->acks = 1;
    if (m.received > c->acked) { /* progress: the stall clock starts again */
        c->acked = m.received;
        c->unacked_since_ns = 0;
    }
    return 0;
}

static int handle_stdout(fc_conn *c, const fc_hdr *h) {
    char buf[8192];
    size_t n = h->len;
    while (n) {
        size_t k = n < sizeof buf ? n : sizeof buf;
        if (read_full(c, buf, k)) return -1;
        /* The app's own stdout stream: device printf output stays in order with what the
         * program printed itself, as it does natively. */
        fwrite(buf, 1, k, stdout);
        n -= k;
    }
    return 0;
}

static void *reader_main(void *arg) {
    fc_conn *c = arg;
    const char *why = "connection closed by the server";
    int rc = 0;
    while (!c->stop) {
        fc_hdr h;
        rc = read_full(c, &h, sizeof h);
        if (rc) break;
        switch (h.op) {
        case FC_OP_REPLY: rc = handle_reply(c, &h); break;
        case FC_OP_DATA: rc = handle_data(c, &h); break;
        case FC_OP_DATA_Z: rc = handle_data_z(c, &h); break;
        case FC_OP_HEARTBEAT: rc = handle_heartbeat(c, &h); break;
        case FC_OP_STDOUT: rc = handle_stdout(c, &h); break;
        case FC_OP_ASYNC_ERROR: {
            fc_ASYNC_ERROR m;
            if (h.len < sizeof m || read_full(c, &m, sizeof m) || skip(c, h.len - sizeof m)) {
                rc = -1;
                break;
            }
            fc_note_async_error(h.vdev, (int)m.status);
            break;
        }
        case FC_OP_CALLBACK: {
            fc_CALLBACK m;
            if (h.len < sizeof m || read_full(c, &m, sizeof m) || skip(c, h.len - sizeof m)) {
                rc = -1;
                break;
            }
            notice_callback(m.callback);
            break;
        }
        case FC_OP_FETCH: {
            fc_FETCH m;
            if (h.len < sizeof m || read_full(c, &m, sizeof m) || skip(c, h.len - sizeof m)) {
                rc = -1;
                break;
            }
            notice_fetch(c, m.node);
            break;
        }
        case FC_OP_PUSH: {
            fc_PUSH m;
            void *dst;
            int dev;
            if (h.len < sizeof m || read_full(c, &m, sizeof m)) { rc = -1; break; }
            size_t n = h.len - sizeof m;
            if (notice_push_target(m.node, m.offset, n, &dst, &dev) == 0) {
                rc = read_full(c, dst, n);
                if (!rc && m.last) { /* the graph may go on */
                    fc_PUSH_DONE d = {m.node};
                    fc_post(c, FC_OP_PUSH_DONE, (uint16_t)dev, &d, sizeof d, NULL, 0);
                }
            } else {
                rc = skip(c, n);
            }
            break;
        }
        case FC_OP_FAULT: {
            char text[512];
            fc_FAULT m;
            size_t rest = h.len >= sizeof m ? h.len - sizeof m : 0;
            if (h.len < sizeof m || read_full(c, &m, sizeof m)) { rc = -1; break; }
            size_t k = rest < sizeof text - 1 ? rest : sizeof text - 1;
            if (read_full(c, text, k) || skip(c, rest - k)) { rc = -1; break; }
            text[k] = 0;
            fc_note_fault(h.vdev, (int)m.status, text);
            break;
        }
        case FC_OP_GOODBYE: {
            static char msg[512];
            fc_GOODBYE m;
            size_t rest = h.len >= sizeof m ? h.len - sizeof m : 0;
            if (h.len < sizeof m || read_full(c, &m, sizeof m)) { rc = -1; break; }
            size_t k = rest < sizeof msg - 1 ? rest : sizeof msg - 1;
            if (read_full(c, msg, k) || skip(c, rest - k)) { rc = -1; break; }
            msg[k] = 0;
            why = msg;
            rc = -4;
            break;
        }
        default:
            rc = -3;
        }
        if (rc) break;
        if (h.op != FC_OP_HEARTBEAT) c->unacked_since_ns = 0; /* see the top of this file */
    }
    if (!c->stop) {
        char stalled[256];
        if (c->rx_fail) rc = c->rx_fail; /* a timeout inside a frame surfaces as a read error */
        if (rc == -2) {
            why = "no sign of life from the server within FARCUDA_LIVENESS_TIMEOUT";
        } else if (rc == -5) {
            snprintf(stalled, sizeof stalled, "the server has not received what this client "
                     "sent for %g s (FARCUDA_LIVENESS_TIMEOUT): the link towards it is broken",
                     (double)fc_liveness_timeout_ms / 1000.0);
            why = stalled;
        } else if (rc == -3) {
            why = "malformed frame from the server";
        }
        fc_conn_fail(c, cudaErrorDevicesUnavailable, why);
    } else {
        fc_conn_fail(c, cudaErrorDevicesUnavailable, NULL);
    }
    return NULL;
}

void fc_conn_fail(fc_conn *c, int status, const char *why) {
    /* the line first: a program may exit as soon as its waiting call returns */
    if (!__atomic_exchange_n(&c->fail_logged, 1, __ATOMIC_ACQ_REL) && !c->dead && why) {
        fc_server *s = &fc_servers[c->server];
        fc_log("lost the server %s:%d: %s; its devices now fail with "
               "cudaErrorDevicesUnavailable", s->host, s->port, why);
    }
    pthread_mutex_lock(&c->rep_mtx);
    c->dead_status = status;
    __atomic_store_n(&c->dead, 1, __ATOMIC_RELEASE);
    for (fc_req *r = c->pending, *next; r; r = next) {
        next = r->next;
        if (r->async) { /* nobody waits: its device's next call reports the lost server */
            free(r);
            continue;
        }
        r->status = status;
        pthread_cond_signal(&r->cv);
        __atomic_store_n(&r->done, 1, __ATOMIC_RELEASE); /* last: see req_complete */
    }
    c->pending = NULL;
    c->async_n = 0;
    c->async_bytes = 0;
    pthread_cond_broadcast(&c->async_cv);
    pthread_mutex_unlock(&c->rep_mtx);
    pthread_mutex_lock(&c->q_mtx);
    pthread_cond_broadcast(&c->q_cv);
    pthread_cond_broadcast(&c->room_cv);
    pthread_mutex_unlock(&c->q_mtx);
    shutdown(c->fd, SHUT_RDWR);
}

fc_conn *fc_conn_new(int fd, int server, int heartbeat_ms) {
    fc_conn *c = calloc(1, sizeof(fc_conn) + sizeof(spare_t));
    if (!c) return NULL;
    c->fd = fd;
    c->server = server;
    c->heartbeat_ms = heartbeat_ms;
    c->poll = fc_spin_ns > 0 && sysconf(_SC_NPROCESSORS_ONLN) >= 4;
    pthread_mutex_init(&c->send_mtx, NULL);
    pthread_mutex_init(&c->q_mtx, NULL);
    pthread_mutex_init(&c->rep_mtx, NULL);
    pthread_cond_init(&c->q_cv, NULL);
    pthread_cond_init(&c->room_cv, NULL);
    pthread_cond_init(&c->async_cv, NULL);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int bufsz = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof bufsz);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsz, sizeof bufsz);
    struct timeval tv = {0, 250000}; /* reader wake-ups to check liveness */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    c->last_rx_ns = fc_now_ns();
    c->last_tx_ns = fc_now_ns();
    /* The threads must not receive the app's signals handled in its main thread. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_create(&c->reader, NULL, reader_main, c);
    pthread_create(&c->sender, NULL, sender_main, c);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return c;
}

void fc_conn_close(fc_conn *c) {
    if (!c) return;
    if (!c->dead) {
        fc_post(c, FC_OP_BYE, 0, NULL, 0, NULL, 0);
        pthread_mutex_lock(&c->send_mtx);
        flush_locked(c, NULL, 0);
        pthread_mutex_unlock(&c->send_mtx);
    }
    c->stop = 1;
    pthread_mutex_lock(&c->q_mtx);
    pthread_cond_broadcast(&c->q_cv);
    pthread_mutex_unlock(&c->q_mtx);
    shutdown(c->fd, SHUT_RDWR);
    pthread_join(c->sender, NULL);
    pthread_join(c->reader, NULL);
    close(c->fd);
}
