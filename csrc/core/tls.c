/* TLS for the core's connections (FARCUDA_TLS=1), through the system's OpenSSL, loaded with
 * dlopen when a connection needs it: a client machine without libssl can still use farcuda
 * in plain text, and nothing links against a particular OpenSSL.
 *
 * As in the Python client (interposer/tls.py) the transport never sees TLS: the TCP
 * connection's TLS handshake runs first, then a relay thread pumps bytes between the TLS
 * stream and one end of a socketpair, whose other end is what csrc/conn.c reads and writes.
 * The farcuda handshake itself runs inside TLS. Bytes leave the relay in the order they came
 * in; when either side ends, both are closed, so a dead link is seen as one, never half-open.
 * The server is verified against FARCUDA_TLS_CA (else the system's CAs) and its host name or
 * IP address; FARCUDA_TLS_CERT/KEY are this client's certificate.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core.h"

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_method_st SSL_METHOD;

static struct {
    int loaded;
    const SSL_METHOD *(*TLS_client_method)(void);
    SSL_CTX *(*SSL_CTX_new)(const SSL_METHOD *);
    void (*SSL_CTX_free)(SSL_CTX *);
    long (*SSL_CTX_ctrl)(SSL_CTX *, int, long, void *);
    int (*SSL_CTX_set_default_verify_paths)(SSL_CTX *);
    int (*SSL_CTX_load_verify_locations)(SSL_CTX *, const char *, const char *);
    int (*SSL_CTX_use_certificate_chain_file)(SSL_CTX *, const char *);
    int (*SSL_CTX_use_PrivateKey_file)(SSL_CTX *, const char *, int);
    void (*SSL_CTX_set_verify)(SSL_CTX *, int, void *);
    SSL *(*SSL_new)(SSL_CTX *);
    void (*SSL_free)(SSL *);
    int (*SSL_set_fd)(SSL *, int);
    long (*SSL_ctrl)(SSL *, int, long, void *);
    int (*SSL_set1_host)(SSL *, const char *);
    void *(*SSL_get0_param)(SSL *);
    int (*X509_VERIFY_PARAM_set1_ip_asc)(void *, const char *);
    int (*SSL_connect)(SSL *);
    int (*SSL_read)(SSL *, void *, int);
    int (*SSL_write)(SSL *, const void *, int);
    int (*SSL_pending)(const SSL *);
    int (*SSL_get_error)(const SSL *, int);
    int (*SSL_shutdown)(SSL *);
    long (*SSL_get_verify_result)(const SSL *);
    const char *(*X509_verify_cert_error_string)(long);
    unsigned long (*ERR_get_error)(void);
    void (*ERR_error_string_n)(unsigned long, char *, size_t);
    void (*ERR_clear_error)(void);
} ossl;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_error[256];

#define SSL_ERROR_WANT_READ 2
#define SSL_ERROR_WANT_WRITE 3
#define SSL_ERROR_SYSCALL 5
#define SSL_ERROR_ZERO_RETURN 6
#define SSL_VERIFY_PEER 1
#define SSL_FILETYPE_PEM 1
#define SSL_CTRL_SET_TLSEXT_HOSTNAME 55
#define SSL_CTRL_SET_MIN_PROTO_VERSION 123
#define SSL_CTRL_MODE 33
#define SSL_MODE_ENABLE_PARTIAL_WRITE 0x1
#define SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER 0x2
#define TLS1_2_VERSION 0x0303

static void load(void) {
    static const char *const names[] = {"libssl.so.3", "libssl.so.1.1", "libssl.so"};
    void *h = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !h; i++)
        h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(load_error, sizeof load_error, "no OpenSSL library (libssl.so.3) on this "
                 "machine");
        return;
    }
#define SYM(name)                                                                     \
    do {                                                                              \
        *(void **)&ossl.name = dlsym(h, #name);                                       \
        if (!ossl.name) {                                                             \
            snprintf(load_error, sizeof load_error, "OpenSSL lacks %s (too old?)", #name); \
            return;                                                                   \
        }                                                                             \
    } while (0)
    SYM(TLS_client_method); SYM(SSL_CTX_new); SYM(SSL_CTX_free); SYM(SSL_CTX_ctrl);
    SYM(SSL_CTX_set_default_verify_paths); SYM(SSL_CTX_load_verify_locations);
    SYM(SSL_CTX_use_certificate_chain_file); SYM(SSL_CTX_use_PrivateKey_file);
    SYM(SSL_CTX_set_verify); SYM(SSL_new); SYM(SSL_free); SYM(SSL_set_fd); SYM(SSL_ctrl);
    SYM(SSL_set1_host); SYM(SSL_get0_param); SYM(X509_VERIFY_PARAM_set1_ip_asc);
    SYM(SSL_connect); SYM(SSL_read); SYM(SSL_write); SYM(SSL_pending); SYM(SSL_get_error);
    SYM(SSL_shutdown); SYM(SSL_get_verify_result); SYM(X509_verify_cert_error_string);
    SYM(ERR_get_error); SYM(ERR_error_string_n); SYM(ERR_clear_error);
#undef SYM
    ossl.loaded = 1;
}

/* OpenSSL's reason for the last failure, in its words ("certificate verify failed"). */
static void reason(char *out, size_t cap) {
    unsigned long e = ossl.ERR_get_error(), last = e;
    while (e) {
        last = e;
        e = ossl.ERR_get_error();
    }
    if (!last) {
        snprintf(out, cap, "the connection was closed");
        return;
    }
    char buf[256];
    ossl.ERR_error_string_n(last, buf, sizeof buf);
    const char *r = strrchr(buf, ':'); /* "error:0A000086:SSL routines::certificate ..." */
    snprintf(out, cap, "%s", r ? r + 1 : buf);
}

typedef struct {
    SSL *ssl;
    SSL_CTX *ctx;
    int tcp, pair;
} relay;

enum { BUF = 1 << 18 };

static void *relay_main(void *arg) {
    relay *r = arg;
    char *up = malloc(BUF), *dn = malloc(BUF);
    size_t up_len = 0, up_off = 0, dn_len = 0, dn_off = 0;
    int want_write = 0, pair_eof = 0;
    fcntl(r->tcp, F_SETFL, fcntl(r->tcp, F_GETFL) | O_NONBLOCK);
    fcntl(r->pair, F_SETFL, fcntl(r->pair, F_GETFL) | O_NONBLOCK);
    while (up && dn) {
        int progress = 0;
        /* program -> server */
        if (up_off == up_len && !pair_eof) {
            ssize_t k = read(r->pair, up, BUF);
            if (k > 0) {
                up_len = (size_t)k;
                up_off = 0;
                progress = 1;
            } else if (k == 0 || (errno != EAGAIN && errno != EINTR)) {
                pair_eof = 1;
            }
        }
        if (up_off < up_len) {
            ossl.ERR_clear_error();
            int k = ossl.SSL_write(r->ssl, up + up_off, (int)(up_len - up_off));
            if (k > 0) {
                up_off += (size_t)k;
                want_write = 0;
                progress = 1;
            } else {
                int e = ossl.SSL_get_error(r->ssl, k);
                if (e == SSL_ERROR_WANT_WRITE) want_write = 1;
                else if (e != SSL_ERROR_WANT_READ) break;
            }
        }
        if (pair_eof && up_off == up_len) break; /* the program's side is gone */
        /* server -> program */
        if (dn_off == dn_len) {
            ossl.ERR_clear_error();
            int k = ossl.SSL_read(r->ssl, dn, BUF);
            if (k > 0) {
                dn_len = (size_t)k;
                dn_off = 0;
                progress = 1;
            } else {
                int e = ossl.SSL_get_error(r->ssl, k);
                if (e == SSL_ERROR_WANT_WRITE) want_write = 1;
                else if (e != SSL_ERROR_WANT_READ) break; /* closed or failed */
            }
        }
        if (dn_off < dn_len) {
            ssize_t k = write(r->pair, dn + dn_off, dn_len - dn_off);
            if (k > 0) {
                dn_off += (size_t)k;
                progress = 1;
            } else if (k < 0 && errno != EAGAIN && errno != EINTR) {
                break;
            }
        }
        if (progress || (dn_off == dn_len && ossl.SSL_pending(r->ssl) > 0)) continue;
        struct pollfd p[2] = {{r->tcp, (short)(POLLIN | (want_write ? POLLOUT : 0)), 0},
                              {r->pair, (short)((up_off == up_len && !pair_eof ? POLLIN : 0) |
                                                (dn_off < dn_len ? POLLOUT : 0)), 0}};
        if (poll(p, 2, 1000) < 0 && errno != EINTR) break;
    }
    /* either side ended: end both */
    ossl.SSL_shutdown(r->ssl);
    shutdown(r->pair, SHUT_RDWR);
    close(r->pair);
    close(r->tcp);
    ossl.SSL_free(r->ssl);
    ossl.SSL_CTX_free(r->ctx);
    free(up);
    free(dn);
    free(r);
    return NULL;
}

int fcc_tls_open(int tcp, const char *host, const char *ca, const char *cert, const char *key,
                 char *why, size_t cap) {
    pthread_once(&load_once, load);
    if (!ossl.loaded) {
        snprintf(why, cap, "%s", load_error);
        return -1;
    }
    SSL_CTX *ctx = ossl.SSL_CTX_new(ossl.TLS_client_method());
    if (!ctx) {
        reason(why, cap);
        return -1;
    }
    ossl.SSL_CTX_ctrl(ctx, SSL_CTRL_SET_MIN_PROTO_VERSION, TLS1_2_VERSION, NULL);
    ossl.SSL_CTX_ctrl(ctx, SSL_CTRL_MODE,
                      SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER, NULL);
    ossl.SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int ok = ca && *ca ? ossl.SSL_CTX_load_verify_locations(ctx, ca, NULL)
                       : ossl.SSL_CTX_set_default_verify_paths(ctx);
    if (ok == 1 && cert && *cert)
        ok = ossl.SSL_CTX_use_certificate_chain_file(ctx, cert) == 1 &&
             ossl.SSL_CTX_use_PrivateKey_file(ctx, key && *key ? key : cert, SSL_FILETYPE_PEM) == 1;
    if (ok != 1) {
        char r[200];
        reason(r, sizeof r);
        snprintf(why, cap, "FARCUDA_TLS_CA/CERT/KEY: %s", r);
        ossl.SSL_CTX_free(ctx);
        return -2;
    }
    SSL *ssl = ossl.SSL_new(ctx);
    if (!ssl) {
        reason(why, cap);
        ossl.SSL_CTX_free(ctx);
        return -1;
    }
    unsigned char addr[16];
    int is_ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
    if (is_ip) {
        ossl.X509_VERIFY_PARAM_set1_ip_asc(ossl.SSL_get0_param(ssl), host);
    } else {
        ossl.SSL_set1_host(ssl, host);
        ossl.SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, 0, (void *)host); /* SNI */
    }
    ossl.SSL_set_fd(ssl, tcp);
    ossl.ERR_clear_error();
    if (ossl.SSL_connect(ssl) != 1) { /* blocking, within the socket's timeouts */
        long v = ossl.SSL_get_verify_result(ssl);
        char r[200];
        if (v != 0)
            snprintf(r, sizeof r, "%s", ossl.X509_verify_cert_error_string(v));
        else if (errno == EAGAIN || errno == EWOULDBLOCK)
            snprintf(r, sizeof r, "timed out");
        else
            reason(r, sizeof r);
        snprintf(why, cap, "TLS handshake failed: %s", r);
        ossl.SSL_free(ssl);
        ossl.SSL_CTX_free(ctx);
        return -1;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
        snprintf(why, cap, "%s", strerror(errno));
        ossl.SSL_free(ssl);
        ossl.SSL_CTX_free(ctx);
        return -1;
    }
    relay *r = malloc(sizeof *r);
    if (!r) {
        close(sv[0]);
        close(sv[1]);
        ossl.SSL_free(ssl);
        ossl.SSL_CTX_free(ctx);
        snprintf(why, cap, "out of memory");
        return -1;
    }
    *r = (relay){ssl, ctx, tcp, sv[1]};
    pthread_t t;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&t, NULL, relay_main, r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        close(sv[0]);
        close(sv[1]);
        ossl.SSL_free(ssl);
        ossl.SSL_CTX_free(ctx);
        free(r);
        snprintf(why, cap, "cannot start the TLS relay");
        return -1;
    }
    pthread_detach(t);
    return sv[0];
}
