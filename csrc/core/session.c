/* The process's session with its servers: configuration, connections and their handshake,
 * virtual devices and their contexts on the server, host functions, the exit report.
 *
 * Nothing touches the network before the first call that needs a server. A connection is
 * opened once per server and shaken hands with exactly as interposer/runtime.py does
 * (SERVER_HELLO, HELLO with the HMAC proof of FARCUDA_TOKEN, the welcome); from then on the
 * framed transport of csrc/conn.c carries it: reader and sender threads, liveness,
 * acknowledgements. The messages a user reads on stderr are the Python client's, word for
 * word, so that both layers fail the same way.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define FC_ABI_ERROR_TABLE /* error names and texts for the lines on stderr */
#include "core.h"
#include "../join.h"
#include "../api.h"
#include "../gen/abi.h"

/* ---- the state of fc.h, which csrc/conn.c works on ---- */
fc_server fc_servers[FC_MAX_SERVERS];
int fc_nservers;
fc_device fc_devices[FC_MAX_DEVICES];
int fc_ndevices;
int64_t fc_connect_timeout_ms = 5000, fc_liveness_timeout_ms = 10000;
int64_t fc_spin_ns = 200000;

static fcc_config cfg;
/* the runtime shim's session, when the shim offered it before this core began one of its own
 * (join.h): then its configuration, connections and devices are this core's, and the core
 * connects by itself only for what needs a connection of its own (the server's status) */
static const fc_join *shim;
static int init_begun;
static int init_status = cudaErrorInitializationError;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t log_mtx = PTHREAD_MUTEX_INITIALIZER;
static fcc_gpu_info *gpu_info[FC_MAX_DEVICES];
static int dev_flags[FC_MAX_DEVICES];

int64_t fc_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void vlog(const char *fmt, va_list ap) {
    char buf[1024];
    vsnprintf(buf, sizeof buf, fmt, ap);
    pthread_mutex_lock(&log_mtx);
    fprintf(stderr, "farcuda: %s\n", buf);
    fflush(stderr);
    pthread_mutex_unlock(&log_mtx);
}

void fc_log(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(fmt, ap);
    va_end(ap);
}

void fcc_log(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(fmt, ap);
    va_end(ap);
}

static const char *error_name(int code) {
    for (size_t i = 0; i < sizeof fc_error_table / sizeof fc_error_table[0]; i++)
        if (fc_error_table[i].code == code) return fc_error_table[i].name;
    return "unrecognized error code";
}

static const char *error_text(int code) {
    for (size_t i = 0; i < sizeof fc_error_table / sizeof fc_error_table[0]; i++)
        if (fc_error_table[i].code == code) return fc_error_table[i].text;
    return "unrecognized error code";
}

/* ---------------- errors reported by the connection's reader ---------------- */

int fcc_sync_status(int dev, int st) {
    switch (st) {
    case cudaErrorIllegalAddress: case cudaErrorLaunchFailure: case cudaErrorAssert:
    case cudaErrorHardwareStackError: case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress: case cudaErrorInvalidAddressSpace: case cudaErrorInvalidPc:
    case cudaErrorLaunchTimeout: case cudaErrorDevicesUnavailable: case cudaErrorUnknown:
        if (dev >= 0 && dev < fc_ndevices) fc_devices[dev].sticky = st;
        break;
    default:
        break;
    }
    return st;
}

void fc_note_fault(int dev, int status, const char *culprit) {
    if (dev < 0 || dev >= fc_ndevices) return;
    fc_device *d = &fc_devices[dev];
    fc_server *s = &fc_servers[d->server];
    fc_log("device %d (%s:%d/%d): %s failed with %s (%s); the device is unusable from now on: "
           "every later call on it fails", dev, s->host, s->port, d->gpu, culprit,
           error_name(status), error_text(status));
    d->sticky = status;
}

void fc_note_async_error(int dev, int status) {
    if (dev < 0 || dev >= fc_ndevices || status == cudaSuccess) return;
    fcc_sync_status(dev, status);
    if (!fc_devices[dev].sticky) {
        int zero = 0;
        __atomic_compare_exchange_n(&fc_devices[dev].pending, &zero, status, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE);
    }
}

int fcc_device_status(int dev) {
    fc_device *d = &fc_devices[dev];
    if (d->sticky) return d->sticky;
    if (shim) return shim->device_status(dev); /* its connections' reader keeps the errors */
    return __atomic_exchange_n(&d->pending, 0, __ATOMIC_ACQ_REL);
}

/* Host memory named by captured copies: the daemon asks for it (FETCH) or sends it (PUSH)
 * each time the graph runs; only these registered ranges are ever touched. */
typedef struct { void *host; size_t n; int dev; int to_device; } hostnode;
#define HOSTNODE_BASE (1u << 30) /* above the shim's node ids: both may share a connection */
static hostnode *hostnodes;
static uint32_t nhostnodes, cap_hostnodes;
static pthread_mutex_t hostnode_mtx = PTHREAD_MUTEX_INITIALIZER;

uint32_t fcc_hostnode_add(int dev, void *host, size_t n, int to_device) {
    pthread_mutex_lock(&hostnode_mtx);
    if (nhostnodes == cap_hostnodes) {
        uint32_t cap = cap_hostnodes ? cap_hostnodes * 2 : 16;
        hostnode *v = realloc(hostnodes, cap * sizeof *v);
        if (!v) {
            pthread_mutex_unlock(&hostnode_mtx);
            return 0;
        }
        hostnodes = v;
        cap_hostnodes = cap;
    }
    hostnodes[nhostnodes] = (hostnode){host, n, dev, to_device};
    uint32_t id = HOSTNODE_BASE + ++nhostnodes;
    pthread_mutex_unlock(&hostnode_mtx);
    return id;
}

static int hostnode_get(uint32_t id, hostnode *out) {
    pthread_mutex_lock(&hostnode_mtx);
    int ok = id > HOSTNODE_BASE && id - HOSTNODE_BASE <= nhostnodes;
    if (ok) *out = hostnodes[id - HOSTNODE_BASE - 1];
    pthread_mutex_unlock(&hostnode_mtx);
    return ok ? 0 : -1;
}

/* the reader thread: a replay reached a captured host-to-device copy */
static void hostnode_fetch(fc_conn *c, uint32_t node) {
    hostnode h;
    if (hostnode_get(node, &h) || !h.to_device) return;
    for (size_t off = 0; off < h.n; off += FC_PIECE) {
        size_t k = h.n - off < FC_PIECE ? h.n - off : FC_PIECE;
        fc_HOST_DATA m = {node, 0, off};
        fc_post(c, FC_OP_HOST_DATA, (uint16_t)h.dev, &m, sizeof m, (char *)h.host + off, k);
    }
}

/* the reader thread: where the bytes of a PUSH go (a registered device-to-host range only) */
static int hostnode_target(uint32_t node, uint64_t offset, size_t n, void **dst, int *dev) {
    hostnode h;
    if (hostnode_get(node, &h) || h.to_device || offset > h.n || n > h.n - offset) return -1;
    *dst = (char *)h.host + offset;
    *dev = h.dev;
    return 0;
}

/* ---------------- host functions ---------------- */

typedef struct host_fn {
    uint32_t id;
    uint64_t seq;
    int dev;
    void (*fn)(void *);
    void *arg;
    struct host_fn *next;
} host_fn;

static pthread_mutex_t hf_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hf_cv = PTHREAD_COND_INITIALIZER;
static host_fn *hf_waiting, *hf_ready, **hf_ready_tail = &hf_ready;
static int hf_thread_started;
static pthread_cond_t hf_done_cv = PTHREAD_COND_INITIALIZER;
static host_fn *hf_running;
static uint64_t hf_seq;
static __thread int hf_on_thread;

static int hf_earlier(int dev, uint64_t seq) {
    for (host_fn *h = hf_waiting; h; h = h->next)
        if (h->dev == dev && h->seq < seq) return 1;
    for (host_fn *h = hf_ready; h; h = h->next)
        if (h->dev == dev && h->seq < seq) return 1;
    return hf_running && hf_running->dev == dev && hf_running->seq < seq;
}

/* A copy from pinned memory must see what host functions queued before it write there (the
 * GPU reads the source when the copy executes, after them): wait until they have run. A host
 * function itself does not wait (it may not call CUDA anyway). */
void fcc_wait_host_funcs(int dev) {
    if (hf_on_thread) return;
    pthread_mutex_lock(&hf_mtx);
    uint64_t me = ++hf_seq;
    while (hf_earlier(dev, me)) pthread_cond_wait(&hf_done_cv, &hf_mtx);
    pthread_mutex_unlock(&hf_mtx);
}

/* Host functions run on one thread of their own, in the order the streams reach them: never
 * on the connection's reader, which must go on reading while a function calls CUDA itself. */
static void *hf_main(void *arg) {
    (void)arg;
    hf_on_thread = 1;
    for (;;) {
        pthread_mutex_lock(&hf_mtx);
        while (!hf_ready) pthread_cond_wait(&hf_cv, &hf_mtx);
        host_fn *h = hf_ready;
        hf_ready = h->next;
        if (!hf_ready) hf_ready_tail = &hf_ready;
        hf_running = h;
        pthread_mutex_unlock(&hf_mtx);
        h->fn(h->arg);
        fc_CALLBACK_DONE m = {h->id};
        fcc_post(h->dev, FC_OP_CALLBACK_DONE, &m, sizeof m, NULL, 0);
        pthread_mutex_lock(&hf_mtx);
        hf_running = NULL;
        pthread_cond_broadcast(&hf_done_cv);
        pthread_mutex_unlock(&hf_mtx);
        free(h);
    }
    return NULL;
}

static void callback_reached(uint32_t id) {
    pthread_mutex_lock(&hf_mtx);
    host_fn **pp = &hf_waiting, *h;
    while ((h = *pp) && h->id != id) pp = &h->next;
    if (h) {
        *pp = h->next;
        h->next = NULL;
        *hf_ready_tail = h;
        hf_ready_tail = &h->next;
        pthread_cond_signal(&hf_cv);
    }
    pthread_mutex_unlock(&hf_mtx);
}

int fcc_host_func(int dev, uint32_t stream, void (*fn)(void *), void *arg) {
    int st = fcc_device_ready(dev);
    if (st) return st;
    host_fn *h = calloc(1, sizeof *h);
    if (!h) return cudaErrorMemoryAllocation;
    *h = (host_fn){.id = fcc_new_id(), .dev = dev, .fn = fn, .arg = arg};
    pthread_mutex_lock(&hf_mtx);
    if (!hf_thread_started) {
        pthread_t t;
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pthread_create(&t, NULL, hf_main, NULL);
        pthread_detach(t);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        hf_thread_started = 1;
    }
    h->seq = ++hf_seq;
    h->next = hf_waiting;
    hf_waiting = h;
    pthread_mutex_unlock(&hf_mtx);
    fc_HOST_FUNC m = {stream, h->id};
    return fcc_post(dev, FC_OP_HOST_FUNC, &m, sizeof m, NULL, 0);
}

/* ---------------- ids ---------------- */

/* Above the range the runtime shim numbers its registered modules and kernels in, so that
 * both layers' objects can live in one session. */
static uint32_t next_id = 1u << 30;
uint32_t fcc_new_id(void) { return __atomic_fetch_add(&next_id, 1, __ATOMIC_RELAXED); }

/* Kernel ids index an array in the daemon's C path: kept dense, above the shim's. */
static uint32_t next_kernel_id = 1u << 14;
uint32_t fcc_new_kernel_id(void) {
    return __atomic_fetch_add(&next_kernel_id, 1, __ATOMIC_RELAXED);
}

/* ---------------- connections ---------------- */

static const char *cfg_var(void) { return cfg.source[0] ? cfg.source : "FARCUDA_SERVER"; }

static int add_server(const char *host, int port) {
    for (int i = 0; i < fc_nservers; i++)
        if (!strcmp(fc_servers[i].host, host) && fc_servers[i].port == port) return i;
    if (fc_nservers == FC_MAX_SERVERS) return -1;
    fc_server *s = &fc_servers[fc_nservers];
    snprintf(s->host, sizeof s->host, "%s", host);
    s->port = port;
    return fc_nservers++;
}

/* TCP connect within FARCUDA_CONNECT_TIMEOUT, every address the name resolves to in turn
 * (socket.create_connection's behaviour). Returns the fd, or -1 with a reason. */
static int tcp_connect(const char *host, int port, char *why, size_t cap) {
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc) {
        snprintf(why, cap, "%s", gai_strerror(rc));
        return -1;
    }
    int fd = -1, last_err = 0;
    int64_t deadline = fc_now_ns() + fc_connect_timeout_ms * 1000000L;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            last_err = errno;
            continue;
        }
        int fl = fcntl(fd, F_GETFL);
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
            fcntl(fd, F_SETFL, fl);
            break;
        }
        if (errno == EINPROGRESS) {
            struct pollfd p = {fd, POLLOUT, 0};
            int64_t left = (deadline - fc_now_ns()) / 1000000L;
            int n;
            do {
                n = poll(&p, 1, left > 0 ? (int)left : 0);
            } while (n < 0 && errno == EINTR);
            if (n == 0) {
                last_err = ETIMEDOUT;
            } else {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (!err) {
                    fcntl(fd, F_SETFL, fl);
                    break;
                }
                last_err = err;
            }
        } else {
            last_err = errno;
        }
        close(fd);
        fd = -1;
        if (last_err == ETIMEDOUT) break;
    }
    freeaddrinfo(res);
    if (fd < 0)
        snprintf(why, cap, "%s", last_err == ETIMEDOUT ? "timed out" : strerror(last_err));
    return fd;
}

static int recv_all(int fd, void *buf, size_t n) {
    char *p = buf;
    while (n) {
        ssize_t k = recv(fd, p, n, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            errno = ETIMEDOUT;
            return -1;
        }
        if (k <= 0) {
            if (k == 0) errno = ECONNRESET;
            return k == 0 ? -2 : -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* JSON string contents, escaped */
static size_t json_escape(char *out, size_t cap, const char *s) {
    size_t o = 0;
    for (; *s && o + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = 0;
    return o;
}

/* The identity the daemon shows in `farcuda status` (the same keys as the Python client's). */
static size_t identity(char *out, size_t cap) {
    char exe[256] = "", host[256] = "", user[256] = "";
    char path[4096];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    if (n > 0) {
        path[n] = 0;
        const char *b = strrchr(path, '/');
        snprintf(exe, sizeof exe, "%.255s", b ? b + 1 : path);
    }
    gethostname(host, sizeof host - 1);
    const char *u = getenv("LOGNAME");
    if (!u || !*u) u = getenv("USER");
    struct passwd pw, *res = NULL;
    char pwbuf[4096];
    if (getpwuid_r(getuid(), &pw, pwbuf, sizeof pwbuf, &res) == 0 && res) u = res->pw_name;
    if (u && *u)
        snprintf(user, sizeof user, "%s", u);
    else
        snprintf(user, sizeof user, "%u", (unsigned)getuid());
    char e1[512], e2[512], e3[512], e4[800] = "";
    json_escape(e1, sizeof e1, exe);
    json_escape(e2, sizeof e2, host);
    json_escape(e3, sizeof e3, user);
    /* the scheduler's job (slurm:ID), shown beside the session by `farcuda status` */
    const char *job = getenv("FARCUDA_JOB");
    char jb[129] = "";
    if (job) {
        while (*job == ' ' || *job == '\t') job++;
        snprintf(jb, sizeof jb, "%s", job);
        for (size_t k = strlen(jb); k && (jb[k - 1] == ' ' || jb[k - 1] == '\t'); k--) jb[k - 1] = 0;
    }
    if (jb[0]) {
        char ej[300];
        json_escape(ej, sizeof ej, jb);
        snprintf(e4, sizeof e4, ", \"job\": \"%s\"", ej);
    }
    return (size_t)snprintf(out, cap, "{\"exe\": \"%s\", \"host\": \"%s\"%s, \"pid\": %d, "
                            "\"user\": \"%s\"}", e1, e2, e4, (int)getpid(), e3);
}

/* The handshake's exchange: SERVER_HELLO in, HELLO (with the token's proof) out, the reply
 * in (its header in *rh, its payload in body). Returns 0, or -1 with a reason in why, or a
 * status already said on stderr. */
static int hello(int fd, const char *where, const char *ident, size_t ilen, fc_hdr *rh,
                 char *body, size_t cap, const char **why, char *whybuf, size_t whycap) {
    struct timeval tv = {fc_connect_timeout_ms / 1000, (fc_connect_timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    fc_hdr h;
    fc_SERVER_HELLO sh;
    *why = NULL;
    int rc = recv_all(fd, &h, sizeof h);
    if (!rc && (h.op != FC_OP_SERVER_HELLO || h.len < sizeof sh)) *why = "unexpected frame";
    if (!rc && !*why) rc = recv_all(fd, &sh, sizeof sh);
    if (!rc && !*why && h.len > sizeof sh) {
        char skip[256];
        size_t rest = h.len - sizeof sh;
        while (!rc && rest) {
            size_t k = rest < sizeof skip ? rest : sizeof skip;
            rc = recv_all(fd, skip, k);
            rest -= k;
        }
    }
    if (!rc && !*why && sh.magic != FC_PROTO_MAGIC) *why = "not a farcuda server (bad magic)";
    if (rc)
        *why = rc == -2 ? "the server closed the connection during the handshake"
                        : (errno == ETIMEDOUT ? "timed out" : strerror(errno));
    if (*why) return -1;
    if ((sh.flags & 1) && !cfg.has_token) {
        fc_log("the GPU server %s requires a token: set FARCUDA_TOKEN", where);
        return cudaErrorDevicesUnavailable;
    }
    fc_HELLO hel = {FC_PROTO_MAGIC, FC_PROTO_VERSION, (uint16_t)(cfg.has_token ? 1 : 0),
                    (uint32_t)getpid(), {0}};
    if (cfg.has_token) {
        static const char label[] = "farcuda-hello-v1";
        char *msg = malloc(48 + ilen);
        if (!msg) return cudaErrorMemoryAllocation;
        memcpy(msg, label, 16);
        memcpy(msg + 16, sh.nonce, 32);
        memcpy(msg + 48, ident, ilen);
        fcc_hmac_sha256(cfg.token, strlen(cfg.token), msg, 48 + ilen, hel.mac);
        free(msg);
    }
    fc_hdr hh = {(uint32_t)(sizeof hel + ilen), FC_OP_HELLO, 0, 1, 0, 0};
    struct iovec iov[3] = {{&hh, sizeof hh}, {&hel, sizeof hel}, {(void *)ident, ilen}};
    struct msghdr mh = {0};
    mh.msg_iov = iov;
    mh.msg_iovlen = 3;
    size_t total = sizeof hh + sizeof hel + ilen;
    ssize_t sent = sendmsg(fd, &mh, MSG_NOSIGNAL);
    if (sent != (ssize_t)total) { /* a handshake fits a socket buffer: short means failed */
        *why = sent < 0 ? strerror(errno) : "short write";
        return -1;
    }
    rc = recv_all(fd, rh, sizeof *rh);
    if (!rc && (rh->op != FC_OP_REPLY || rh->len < 8 || rh->len > cap)) {
        snprintf(whybuf, whycap, "unexpected frame 0x%04x", rh->op);
        *why = whybuf;
        return -1;
    }
    if (!rc) rc = recv_all(fd, body, rh->len);
    if (rc) {
        *why = rc == -2 ? "the server closed the connection during the handshake"
                        : (errno == ETIMEDOUT ? "timed out" : strerror(errno));
        return -1;
    }
    return 0;
}

static int handshake(int server, int fd) {
    fc_server *s = &fc_servers[server];
    char where[300], whybuf[300];
    snprintf(where, sizeof where, "%s:%d", s->host, s->port);
    char ident[2048];
    size_t ilen = identity(ident, sizeof ident);
    fc_hdr h;
    static __thread char body[65536];
    const char *why;
    int rc = hello(fd, where, ident, ilen, &h, body, sizeof body, &why, whybuf, sizeof whybuf);
    if (rc > 0) return rc;
    if (rc < 0) goto failed;
    uint32_t head[2];
    memcpy(head, body, 8);
    if (head[0] != 0) {
        fc_log("the GPU server %s refused this client: %.*s", where, (int)(h.len - 8), body + 8);
        return (int)head[0];
    }
    fc_HELLO_reply welcome;
    if (head[1] < sizeof welcome || head[1] > h.len - 8) {
        why = "short welcome";
        goto failed;
    }
    memcpy(&welcome, body + 8, sizeof welcome);
    struct timeval tv = {0, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    s->ngpus = (int)welcome.ngpus;
    s->driver_version = (int)welcome.driver;
    fc_conn *c = fc_conn_new(fd, server, (int)welcome.heartbeat_ms);
    if (!c) {
        close(fd);
        return cudaErrorMemoryAllocation;
    }
    __atomic_store_n(&s->conn, c, __ATOMIC_RELEASE);
    return cudaSuccess;
failed:
    fc_log("handshake with the GPU server %s failed: %s%s", where, why,
           !cfg.tls ? (!strcmp(why, "timed out")
                           ? " (if the server uses TLS, set FARCUDA_TLS=1 and FARCUDA_TLS_CA)" : "")
           /* TLS 1.3 reports a refused client certificate only as a close */
           : !cfg.tls_cert[0] ? " (over TLS: the server may require a client certificate: set "
                                "FARCUDA_TLS_CERT and FARCUDA_TLS_KEY)"
                              : " (over TLS: the server may not accept this client's "
                                "certificate)");
    return cudaErrorDevicesUnavailable;
}

static int open_fd(fc_server *s, int quiet);

int fcc_server_status(int server, char **json, size_t *n) {
    *json = NULL;
    *n = 0;
    int st = fcc_init();
    if (st) return st;
    if (server < 0 || server >= fc_nservers) return cudaErrorInvalidValue;
    fc_server *s = &fc_servers[server];
    char where[300], whybuf[300];
    snprintf(where, sizeof where, "%s:%d", s->host, s->port);
    int fd = open_fd(s, 1);
    if (fd < 0) return cudaErrorDevicesUnavailable;
    char ident[128];
    size_t ilen = (size_t)snprintf(ident, sizeof ident, "{\"pid\": %d, \"purpose\": \"status\"}",
                                   (int)getpid());
    size_t cap = 16u << 20;
    char *body = malloc(cap);
    fc_hdr h;
    const char *why;
    int rc = body ? hello(fd, where, ident, ilen, &h, body, cap, &why, whybuf, sizeof whybuf)
                  : cudaErrorMemoryAllocation;
    close(fd);
    if (rc || ((uint32_t *)body)[0] != 0) {
        free(body);
        return rc > 0 ? rc : cudaErrorDevicesUnavailable;
    }
    uint32_t flen = ((uint32_t *)body)[1];
    if (8 + flen > h.len) {
        free(body);
        return cudaErrorUnknown;
    }
    *n = h.len - 8 - flen;
    memmove(body, body + 8 + flen, *n);
    body[*n] = 0;
    *json = body;
    return cudaSuccess;
}

int fcc_tls_open(int tcp, const char *host, const char *ca, const char *cert, const char *key,
                 char *why, size_t cap);

/* A connection to the server, through TLS with FARCUDA_TLS=1: the fd to speak farcuda on, or
 * -1 once the reason is on stderr. */
static int open_fd(fc_server *s, int quiet) {
    char why[512];
    int fd = tcp_connect(s->host, s->port, why, sizeof why);
    if (fd >= 0 && cfg.tls) {
        struct timeval tv = {fc_connect_timeout_ms / 1000, (fc_connect_timeout_ms % 1000) * 1000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        int relay = fcc_tls_open(fd, s->host, cfg.tls_ca, cfg.tls_cert, cfg.tls_key, why,
                                 sizeof why);
        if (relay == -2) {
            if (!quiet)
                fc_log("cannot set up TLS for the GPU server %s:%d: %s", s->host, s->port, why);
            close(fd);
            return -1;
        }
        if (relay < 0) close(fd);
        fd = relay;
    }
    if (fd < 0 && !quiet)
        fc_log("cannot reach the GPU server %s:%d (set by %s): %s; start farcudad there or fix "
               "%s%s", s->host, s->port, cfg_var(), why, cfg_var(),
               cfg.tls ? " (or FARCUDA_TLS_*)" : "");
    return fd;
}

static int connect_server(int server) {
    fc_server *s = &fc_servers[server];
    int fd = open_fd(s, 0);
    if (fd < 0) return cudaErrorDevicesUnavailable;
    int st = handshake(server, fd);
    if (st && !s->conn) close(fd);
    return st;
}

/* A connection of the shim's session: the shim makes it (its handshake, its TLS). */
static int shared_server_conn(int server, fc_conn **out) {
    fc_conn *c = NULL;
    int st = shim->server_conn(server, &c);
    if (st) return st;
    fc_server *s = &fc_servers[server];
    s->ngpus = shim->servers[server].ngpus;
    s->driver_version = shim->servers[server].driver_version;
    __atomic_store_n(&s->conn, c, __ATOMIC_RELEASE);
    *out = c;
    return c->dead ? c->dead_status : cudaSuccess;
}

int fcc_server_conn(int server, fc_conn **out) {
    fc_server *s = &fc_servers[server];
    fc_conn *c = __atomic_load_n(&s->conn, __ATOMIC_ACQUIRE);
    if (c) {
        *out = c;
        return c->dead ? c->dead_status : cudaSuccess;
    }
    if (shim) return shared_server_conn(server, out);
    pthread_mutex_lock(&s->mtx);
    int st = s->failed_status;
    if (!st && !s->conn) {
        st = connect_server(server);
        if (!st && !s->conn) st = cudaErrorDevicesUnavailable;
        if (st) s->failed_status = st;
    }
    pthread_mutex_unlock(&s->mtx);
    if (st) return st;
    *out = s->conn;
    return s->conn->dead ? s->conn->dead_status : cudaSuccess;
}

fc_conn *fcc_dev_conn(int dev) { return fc_servers[fc_devices[dev].server].conn; }

int fcc_device_server(int dev, int *gpu) {
    if (fcc_init() || dev < 0 || dev >= fc_ndevices) return -1;
    if (gpu) *gpu = fc_devices[dev].gpu;
    return fc_devices[dev].server;
}

/* ---------------- initialization ---------------- */

static void report_at_exit(void);
static void maps_at_exit(void);

/* what the transport's reader hands over (conn.c): host functions, captured host memory */
static const fc_conn_notices notices = {callback_reached, hostnode_fetch, hostnode_target};

static void child_after_fork(void) {
    /* The child gets no connection of its parent: it connects anew on first use, and none of
     * the parent's device memory, streams or modules are its own. A session the shim lent is
     * the parent's too: the child's core makes its own (the configuration is read already). */
    if (shim) {
        shim = NULL;
        fcc_ranges_join(NULL);
        fc_conn_set_notices(&notices);
    }
    for (int i = 0; i < fc_nservers; i++) {
        fc_servers[i].conn = NULL;
        fc_servers[i].failed_status = 0;
        pthread_mutex_init(&fc_servers[i].mtx, NULL);
    }
    for (int i = 0; i < fc_ndevices; i++) {
        fc_devices[i].opened = 0;
        fc_devices[i].sticky = 0;
        fc_devices[i].pending = 0;
        pthread_mutex_init(&fc_devices[i].mtx, NULL);
        fcc_range_drop_device(i); /* the parent's device memory is not the child's */
        fcc_pools_reset_device(i);
    }
    pthread_mutex_init(&hf_mtx, NULL);
    hf_thread_started = 0;
    hf_waiting = hf_ready = hf_running = NULL;
    hf_ready_tail = &hf_ready;
    pthread_cond_init(&hf_done_cv, NULL);
}

/* The shim's session: its servers and devices, in its order (both layers read the same
 * configuration; the shim's is the one in use). */
static void init_shared(void) {
    char err[1024];
    /* the shim says what is wrong with it; the core's own connections (NVML's status) need
     * the same token and TLS settings */
    if (fcc_config_parse(NULL, &cfg, err, sizeof err) == 0) {
        fc_connect_timeout_ms = (int64_t)(cfg.connect_timeout * 1000);
        fc_liveness_timeout_ms = (int64_t)(cfg.liveness_timeout * 1000);
    }
    init_status = shim->init();
    shim->join_notices(&notices);
    shim->set_other_ranges(fcc_range_find_own);
    fcc_ranges_join(shim->range_find);
    if (init_status) return;
    fc_nservers = *shim->nservers;
    for (int i = 0; i < fc_nservers; i++) {
        memcpy(fc_servers[i].host, shim->servers[i].host, sizeof fc_servers[i].host);
        fc_servers[i].port = shim->servers[i].port;
    }
    fc_ndevices = *shim->ndevices;
    for (int i = 0; i < fc_ndevices; i++) {
        fc_devices[i].server = shim->devices[i].server;
        fc_devices[i].gpu = shim->devices[i].gpu;
        fc_devices[i].sm_budget = shim->devices[i].sm_budget;
    }
}

static void init_run(void) {
    __atomic_store_n(&init_begun, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < FC_MAX_SERVERS; i++) pthread_mutex_init(&fc_servers[i].mtx, NULL);
    for (int i = 0; i < FC_MAX_DEVICES; i++) pthread_mutex_init(&fc_devices[i].mtx, NULL);
    pthread_atfork(NULL, NULL, child_after_fork);
    if (shim) {
        init_shared();
        return;
    }
    fc_conn_set_notices(&notices);
    atexit(maps_at_exit);
    char err[1024];
    if (fcc_config_parse(NULL, &cfg, err, sizeof err)) {
        fc_log("bad configuration: %s", err);
        init_status = cudaErrorInvalidValue;
        return;
    }
    fc_connect_timeout_ms = (int64_t)(cfg.connect_timeout * 1000);
    fc_liveness_timeout_ms = (int64_t)(cfg.liveness_timeout * 1000);
    fc_spin_ns = (int64_t)(cfg.spin_us * 1000);
    if (cfg.report) atexit(report_at_exit);
    if (!cfg.configured) {
        fc_log("no GPU server configured: set FARCUDA_SERVER=host[:port], or "
               "FARCUDA_DEVICES=host:port/gpu,..., or run the program with `farcuda run -- "
               "PROGRAM`");
        init_status = cudaErrorNoDevice;
        return;
    }
    if (!cfg.has_server) {
        for (int i = 0; i < cfg.ndevices; i++) {
            int s = add_server(cfg.devices[i].host, cfg.devices[i].port);
            if (s < 0) {
                fc_log("%s: more than %d servers", cfg.source, FC_MAX_SERVERS);
                init_status = cudaErrorInvalidValue;
                return;
            }
            fc_devices[i].server = s;
            fc_devices[i].gpu = cfg.devices[i].gpu;
            fc_devices[i].sm_budget = cfg.devices[i].sm;
        }
        fc_ndevices = cfg.ndevices;
        init_status = cudaSuccess;
        return;
    }
    int s = add_server(cfg.server_host, cfg.server_port);
    fc_conn *c;
    int st = fcc_server_conn(s, &c);
    if (st) {
        init_status = st;
        return;
    }
    int n = fc_servers[s].ngpus;
    if (n == 0) {
        fc_log("the server %s:%d (%s) has no GPU", cfg.server_host, cfg.server_port, cfg_var());
        init_status = cudaErrorNoDevice;
        return;
    }
    for (int i = 0; i < n && i < FC_MAX_DEVICES; i++) {
        fc_devices[i].server = s;
        fc_devices[i].gpu = i;
        fc_devices[i].sm_budget = 0;
    }
    fc_ndevices = n < FC_MAX_DEVICES ? n : FC_MAX_DEVICES;
    init_status = cudaSuccess;
}

int fcc_init(void) {
    pthread_once(&init_once, init_run);
    return init_status;
}

/* (join.h) Taken only before this core began a session of its own. */
int fcc_join_shim(const struct fc_join *offer) {
    if (!offer || offer->version != FC_JOIN_VERSION || offer->size < sizeof(fc_join))
        return -1;
    static pthread_mutex_t join_mtx = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&join_mtx);
    int ok = !__atomic_load_n(&init_begun, __ATOMIC_ACQUIRE) && !shim;
    if (ok) shim = offer;
    pthread_mutex_unlock(&join_mtx);
    return ok ? 0 : -1;
}

int fcc_shares_session(void) { return shim != NULL; }

int fcc_device_count(void) { return fcc_init() ? 0 : fc_ndevices; }

int fcc_driver_version(void) {
    if (fcc_init() || !fc_ndevices) return 0;
    fc_server *s = &fc_servers[fc_devices[0].server];
    if (!s->driver_version) {
        fc_conn *c;
        if (fcc_server_conn(fc_devices[0].server, &c)) return 0;
    }
    return s->driver_version;
}

/* ---------------- requests ---------------- */

static int call_conn(fc_conn *c, int dev, uint16_t op, const void *fixed, size_t flen,
                     const void *tail, size_t tlen, void *rep, size_t rep_cap, char **bulk,
                     size_t *bulk_len) {
    fc_req r;
    fc_req_init(&r, rep, rep_cap);
    if (bulk) r.bulk_alloc = 1;
    int st = fc_call(c, op, (uint16_t)dev, fixed, flen, tail, tlen, &r);
    if (bulk) {
        *bulk = r.bulk;
        *bulk_len = r.bulk_len;
    } else {
        free(r.bulk);
    }
    return st;
}

int fcc_call(int dev, uint16_t op, const void *fixed, size_t flen, const void *tail, size_t tlen,
             void *rep, size_t rep_cap, char **bulk, size_t *bulk_len) {
    if (bulk) *bulk = NULL;
    fc_conn *c;
    int st = fcc_server_conn(fc_devices[dev].server, &c);
    if (st) return st;
    return call_conn(c, dev, op, fixed, flen, tail, tlen, rep, rep_cap, bulk, bulk_len);
}

int fcc_post(int dev, uint16_t op, const void *fixed, size_t flen, const void *tail,
             size_t tlen) {
    fc_conn *c = fcc_dev_conn(dev);
    if (!c) return cudaErrorDevicesUnavailable;
    int st = fc_post(c, op, (uint16_t)dev, fixed, flen, tail, tlen);
    return st ? st : fcc_device_status(dev);
}

/* ---------------- devices ---------------- */

static pthread_mutex_t info_mtx = PTHREAD_MUTEX_INITIALIZER;

static int parse_uuid(const char *hex, unsigned char out[16]) {
    if (!hex || strlen(hex) != 32) return -1;
    for (int i = 0; i < 16; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) return -1;
        out[i] = (unsigned char)v;
    }
    return 0;
}

int fcc_device_info(int dev, const fcc_gpu_info **out) {
    int st = fcc_init();
    if (st) return st;
    if (dev < 0 || dev >= fc_ndevices) return cudaErrorInvalidDevice;
    pthread_mutex_lock(&info_mtx);
    if (gpu_info[dev]) {
        *out = gpu_info[dev];
        pthread_mutex_unlock(&info_mtx);
        return cudaSuccess;
    }
    fc_device *d = &fc_devices[dev];
    fc_server *s = &fc_servers[d->server];
    fc_conn *c;
    st = fcc_server_conn(d->server, &c);
    char *bulk = NULL;
    size_t n = 0;
    if (!st) {
        fc_GPU_INFO m = {(uint32_t)d->gpu};
        st = call_conn(c, 0, FC_OP_GPU_INFO, &m, sizeof m, NULL, 0, NULL, 0, &bulk, &n);
    }
    fcc_json *j = !st && bulk ? fcc_json_parse(bulk, n) : NULL;
    free(bulk);
    if (!st && !j) st = cudaErrorUnknown;
    if (!st && fcc_json_str(fcc_json_get(j, "error"))) {
        fc_log("device %d (%s:%d/%d, set by %s): %s", dev, s->host, s->port, d->gpu, cfg_var(),
               fcc_json_str(fcc_json_get(j, "error")));
        st = cudaErrorInvalidDevice;
    }
    fcc_gpu_info *info = NULL;
    if (!st && (info = calloc(1, sizeof *info))) {
        const char *name = fcc_json_str(fcc_json_get(j, "name"));
        snprintf(info->name, sizeof info->name, "%s", name ? name : "");
        parse_uuid(fcc_json_str(fcc_json_get(j, "uuid")), info->uuid);
        info->total_mem = (uint64_t)fcc_json_num(fcc_json_get(j, "total_mem"), 0);
        const char *dv = fcc_json_str(fcc_json_get(j, "driver_version"));
        snprintf(info->driver_version, sizeof info->driver_version, "%s", dv ? dv : "");
        const fcc_json *attrs = fcc_json_get(j, "attrs");
        for (size_t i = 0; i < fcc_json_len(attrs); i++) {
            int k = atoi(fcc_json_key(attrs, i));
            if (k > 0 && k < FC_MAX_ATTR)
                info->attrs[k] = (int)fcc_json_num(fcc_json_value(attrs, i), 0);
        }
        gpu_info[dev] = info;
    } else if (!st) {
        st = cudaErrorMemoryAllocation;
    }
    fcc_json_free(j);
    pthread_mutex_unlock(&info_mtx);
    if (!st) *out = info;
    return st;
}

static int device_open(int dev) {
    fc_device *d = &fc_devices[dev];
    fc_server *s = &fc_servers[d->server];
    const fcc_gpu_info *info;
    int st = fcc_device_info(dev, &info);
    if (st) return st;
    uint64_t base, size = 1ULL << 38;
    if (fcc_window_reserve(dev, size, &base)) {
        fc_log("device %d: no free address window for its memory in this process", dev);
        return cudaErrorMemoryAllocation;
    }
    fc_DEVICE_OPEN m = {(uint32_t)d->gpu, (uint32_t)d->sm_budget, (uint32_t)dev_flags[dev], base,
                        size};
    fc_DEVICE_OPEN_reply rep = {0};
    char *bulk = NULL;
    size_t n = 0;
    st = fcc_call(dev, FC_OP_DEVICE_OPEN, &m, sizeof m, NULL, 0, &rep, sizeof rep, &bulk, &n);
    if (st) {
        if (bulk && n)
            fc_log("device %d (%s:%d/%d): the server refused it: %.*s", dev, s->host, s->port,
                   d->gpu, (int)n, bulk);
        free(bulk);
        return st;
    }
    if (rep.window_base != base && fcc_window_adopt(dev, rep.window_base, size)) {
        fc_log("device %d: the server's address window 0x%llx collides with memory of this "
               "process; refusing it", dev, (unsigned long long)rep.window_base);
        free(bulk);
        return cudaErrorDevicesUnavailable;
    }
    fcc_json *j = bulk ? fcc_json_parse(bulk, n) : NULL;
    d->prio_least = (int)fcc_json_num(fcc_json_get(j, "priority_least"), 0);
    d->prio_greatest = (int)fcc_json_num(fcc_json_get(j, "priority_greatest"), 0);
    fcc_json_free(j);
    free(bulk);
    for (int i = 0; i < FC_MAX_ATTR; i++) d->attrs[i] = info->attrs[i];
    if (d->sm_budget) d->attrs[16] = (int)rep.sm_count; /* MultiProcessorCount */
    d->attrs_valid = 1;
    return cudaSuccess;
}

/* A device of the shim's session: the shim opens it (once, in its address window); this core
 * learns what its own device_open would have. */
static int shared_device_open(int dev) {
    int st = shim->device_ready(dev);
    if (st) return st;
    fc_conn *c;
    st = fcc_server_conn(fc_devices[dev].server, &c);
    if (st) return st;
    const fcc_gpu_info *info;
    st = fcc_device_info(dev, &info);
    if (st) return st;
    fc_device *d = &fc_devices[dev];
    const fc_device *theirs = &shim->devices[dev];
    d->prio_least = theirs->prio_least;
    d->prio_greatest = theirs->prio_greatest;
    for (int i = 0; i < FC_MAX_ATTR; i++) d->attrs[i] = info->attrs[i];
    if (theirs->attrs_valid) d->attrs[16] = theirs->attrs[16]; /* MultiProcessorCount */
    d->attrs_valid = 1;
    return cudaSuccess;
}

int fcc_device_ready(int dev) {
    int st = fcc_init();
    if (st) return st;
    if (dev < 0 || dev >= fc_ndevices) return cudaErrorInvalidDevice;
    fc_device *d = &fc_devices[dev];
    if (__atomic_load_n(&d->opened, __ATOMIC_ACQUIRE) == 1) {
        fc_conn *c = fc_servers[d->server].conn;
        if (c->dead) return c->dead_status;
        return fcc_device_status(dev);
    }
    pthread_mutex_lock(&d->mtx);
    if (d->opened == 0) {
        st = shim ? shared_device_open(dev) : device_open(dev);
        __atomic_store_n(&d->opened, st ? -st : 1, __ATOMIC_RELEASE);
    }
    st = d->opened < 0 ? -d->opened : cudaSuccess;
    pthread_mutex_unlock(&d->mtx);
    if (st) return st;
    return fcc_device_status(dev);
}

int fcc_device_priorities(int dev, int *least, int *greatest) {
    int st = fcc_device_ready(dev);
    if (st) return st;
    *least = fc_devices[dev].prio_least;
    *greatest = fc_devices[dev].prio_greatest;
    return cudaSuccess;
}

int fcc_device_set_flags(int dev, unsigned int flags) {
    int st = fcc_init();
    if (st) return st;
    if (dev < 0 || dev >= fc_ndevices) return cudaErrorInvalidDevice;
    dev_flags[dev] = (int)flags;
    if (__atomic_load_n(&fc_devices[dev].opened, __ATOMIC_ACQUIRE) != 1) return cudaSuccess;
    fc_SET_FLAGS m = {flags};
    return fcc_call(dev, FC_OP_SET_FLAGS, &m, sizeof m, NULL, 0, NULL, 0, NULL, NULL);
}

/* ---------------- statistics and the exit report ---------------- */

void fcc_stats(uint64_t out5[5]) {
    memset(out5, 0, 5 * sizeof(uint64_t));
    for (int i = 0; i < fc_nservers; i++) {
        fc_conn *c = fc_servers[i].conn;
        if (!c) continue;
        out5[0] += c->calls;
        out5[1] += c->sync_calls;
        out5[2] += c->bytes_out;
        out5[3] += c->bytes_in;
        out5[4] += c->wait_ns;
    }
}

/* diagnostic: FARCUDA_MAPS_FILE=path records which libraries this process mapped (the GPU
 * tests check that no real CUDA library was loaded) */
static void maps_at_exit(void) {
    const char *maps = getenv("FARCUDA_MAPS_FILE");
    if (!maps || !maps[0]) return;
    FILE *in = fopen("/proc/self/maps", "r"), *out = fopen(maps, "w");
    char line[4096];
    while (in && out && fgets(line, sizeof line, in)) fputs(line, out);
    if (in) fclose(in);
    if (out) fclose(out);
}

static void report_at_exit(void) {
    uint64_t s[5];
    fcc_stats(s);
    double joules = 0;
    int known = 0;
    for (int i = 0; i < fc_nservers; i++) {
        fc_conn *c = fc_servers[i].conn;
        if (!c || c->dead) continue;
        char *bulk = NULL;
        size_t n = 0;
        if (call_conn(c, 0, FC_OP_STATUS, NULL, 0, NULL, 0, NULL, 0, &bulk, &n) == 0 && bulk) {
            fcc_json *j = fcc_json_parse(bulk, n);
            const fcc_json *e = fcc_json_get(j, "energy_j");
            if (e && !fcc_json_is_null(e)) {
                joules += fcc_json_num(e, 0);
                known = 1;
            }
            fcc_json_free(j);
        }
        free(bulk);
    }
    char energy[64];
    if (known)
        snprintf(energy, sizeof energy, "%.3f", joules);
    else
        snprintf(energy, sizeof energy, "unavailable");
    fc_log("report: calls=%llu sync_calls=%llu bytes_to_server=%llu bytes_from_server=%llu "
           "wait_s=%.3f gpu_energy_j=%s", (unsigned long long)s[0], (unsigned long long)s[1],
           (unsigned long long)s[2], (unsigned long long)s[3], (double)s[4] / 1e9, energy);
}
