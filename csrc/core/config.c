/* The client's configuration from the environment, read exactly as interposer/config.py reads
 * it: the same variables, precedence, defaults, and the same messages for malformed values
 * (tests/unit/test_core_config.py runs both over one table of environments).
 *
 * Precedence: FARCUDA_DEVICES (the device map), then FARCUDA_DEVICE_COUNT with
 * FARCUDA_DEVICE_<i>, then FARCUDA_SERVER. Whitespace is ASCII here; Python's str.strip() also
 * strips other Unicode spaces, which no environment of ours contains.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core.h"

extern char **environ;

#define DEFAULT_PORT 7420

typedef struct {
    char *const *envp;
} env_t;

static const char *env_get(const env_t *e, const char *name) {
    size_t n = strlen(name);
    for (char *const *p = e->envp; p && *p; p++)
        if (strncmp(*p, name, n) == 0 && (*p)[n] == '=') return *p + n + 1;
    return NULL;
}

static int fail(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    return -1;
}

/* Python's repr() of a str, for the ASCII strings environments hold. */
static void repr(const char *s, size_t n, char *out, size_t cap) {
    int has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    size_t o = 0;
#define PUT(c) do { if (o + 1 < cap) out[o++] = (c); } while (0)
    PUT(q);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\\' || c == (unsigned char)q) {
            PUT('\\');
            PUT((char)c);
        } else if (c == '\n') {
            PUT('\\'); PUT('n');
        } else if (c == '\t') {
            PUT('\\'); PUT('t');
        } else if (c == '\r') {
            PUT('\\'); PUT('r');
        } else if (c < 0x20 || c == 0x7f) {
            char hex[5];
            snprintf(hex, sizeof hex, "\\x%02x", c);
            for (int k = 0; k < 4; k++) PUT(hex[k]);
        } else {
            PUT((char)c);
        }
    }
    PUT(q);
#undef PUT
    out[o < cap ? o : cap - 1] = 0;
}

static void strip(const char *s, size_t n, const char **b, size_t *len) {
    while (n && isspace((unsigned char)*s)) { s++; n--; }
    while (n && isspace((unsigned char)s[n - 1])) n--;
    *b = s;
    *len = n;
}

static int all_digits(const char *s, size_t n) {
    if (!n) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i])) return 0;
    return 1;
}

/* int() of a str that .strip().isdigit() accepted */
static long long to_int(const char *s, size_t n) {
    const char *b;
    size_t len;
    strip(s, n, &b, &len);
    long long v = 0;
    for (size_t i = 0; i < len; i++) {
        v = v * 10 + (b[i] - '0');
        if (v > 1000000000000LL) v = 1000000000000LL; /* far beyond every bound checked */
    }
    return v;
}

/* parse_hostport: 'host', 'host:port', '[v6]:port' */
static int parse_hostport(const char *text, size_t tn, const char *what, char *host, size_t hcap,
                          int *port, char *err, size_t ecap) {
    char r[600];
    const char *s;
    size_t n;
    strip(text, tn, &s, &n);
    const char *h, *rest;
    size_t hn;
    if (n && s[0] == '[') {
        const char *close = memchr(s + 1, ']', n - 1);
        if (!close || close == s + 1) goto bad;
        h = s + 1;
        hn = (size_t)(close - h);
        rest = close + 1;
    } else {
        size_t i = 0;
        while (i < n && !strchr(":/@[]", s[i])) i++;
        if (i == 0) goto bad;
        h = s;
        hn = i;
        rest = s + i;
    }
    size_t rn = (size_t)(s + n - rest);
    if (rn == 0) {
        *port = DEFAULT_PORT;
    } else {
        if (rest[0] != ':') goto bad;
        const char *p = rest + 1;
        size_t pn = rn - 1;
        for (size_t i = 0; i < pn; i++)
            if (p[i] == '/' || p[i] == '@') goto bad;
        if (pn == 0) {
            repr(text, tn, r, sizeof r);
            return fail(err, ecap, "%s: %s has an empty port", what, r);
        }
        if (!all_digits(p, pn) || to_int(p, pn) < 1 || to_int(p, pn) >= 65536) {
            char pr[300];
            repr(text, tn, r, sizeof r);
            repr(p, pn, pr, sizeof pr);
            return fail(err, ecap, "%s: %s has a bad port %s", what, r, pr);
        }
        *port = (int)to_int(p, pn);
    }
    if (hn >= hcap) hn = hcap - 1;
    memcpy(host, h, hn);
    host[hn] = 0;
    return 0;
bad:
    repr(text, tn, r, sizeof r);
    return fail(err, ecap, "%s: %s is not host[:port]", what, r);
}

/* parse_device: host[:port][/gpu][@sm=N] */
static int parse_device(const char *text, size_t tn, const char *what, fcc_entry *out, char *err,
                        size_t ecap) {
    const char *raw;
    size_t rn;
    strip(text, tn, &raw, &rn);
    if (!rn) return fail(err, ecap, "%s: empty entry", what);
    char rr[600];
    repr(raw, rn, rr, sizeof rr);
    const char *at = memchr(raw, '@', rn);
    size_t restn = at ? (size_t)(at - raw) : rn;
    int sm = 0;
    if (at) {
        const char *o = at + 1, *end = raw + rn;
        for (;;) {
            const char *next = memchr(o, '@', (size_t)(end - o));
            size_t on = next ? (size_t)(next - o) : (size_t)(end - o);
            const char *eq = memchr(o, '=', on);
            const char *k, *v;
            size_t kn, vn;
            strip(o, eq ? (size_t)(eq - o) : on, &k, &kn);
            int ok = eq != NULL && kn == 2 && memcmp(k, "sm", 2) == 0;
            if (ok) {
                strip(eq + 1, on - (size_t)(eq + 1 - o), &v, &vn);
                ok = all_digits(v, vn) && to_int(v, vn) > 0;
                if (ok) sm = (int)to_int(v, vn);
            }
            if (!ok) {
                char orr[300];
                repr(o, on, orr, sizeof orr);
                return fail(err, ecap, "%s: %s: unknown option %s (expected sm=N, N>0)", what, rr,
                            orr);
            }
            if (!next) break;
            o = next + 1;
        }
    }
    const char *slash = NULL;
    for (size_t i = restn; i > 0; i--)
        if (raw[i - 1] == '/') {
            slash = raw + i - 1;
            break;
        }
    size_t hpn = slash ? (size_t)(slash - raw) : restn;
    int gpu = 0;
    if (slash) {
        const char *g;
        size_t gn;
        strip(slash + 1, restn - hpn - 1, &g, &gn);
        if (!all_digits(g, gn)) {
            char gr[300];
            repr(slash + 1, restn - hpn - 1, gr, sizeof gr);
            return fail(err, ecap, "%s: %s: GPU index %s is not a number", what, rr, gr);
        }
        long long gv = to_int(g, gn);
        gpu = gv > 0x7fffffff ? 0x7fffffff : (int)gv;
    }
    char what2[700];
    snprintf(what2, sizeof what2, "%s %s", what, rr);
    if (parse_hostport(raw, hpn, what2, out->host, sizeof out->host, &out->port, err, ecap))
        return -1;
    out->gpu = gpu;
    out->sm = sm;
    return 0;
}

static int parse_devices(const char *spec, const char *what, fcc_config *cfg, char *err,
                         size_t ecap) {
    int any = 0;
    for (const char *p = spec;;) {
        const char *c = strchr(p, ',');
        size_t n = c ? (size_t)(c - p) : strlen(p);
        const char *b;
        size_t bn;
        strip(p, n, &b, &bn);
        if (bn) any = 1;
        if (!c) break;
        p = c + 1;
    }
    if (!any) return fail(err, ecap, "%s is set but lists no device", what);
    int i = 0;
    for (const char *p = spec;; i++) {
        const char *c = strchr(p, ',');
        size_t n = c ? (size_t)(c - p) : strlen(p);
        char w[128];
        snprintf(w, sizeof w, "%s entry %d", what, i);
        fcc_entry e;
        if (parse_device(p, n, w, &e, err, ecap)) return -1;
        if (i < FC_MAX_DEVICES) cfg->devices[i] = e;
        if (!c) break;
        p = c + 1;
    }
    cfg->ndevices = i + 1;
    return 0;
}

/* Python's float(): surrounding whitespace allowed, the whole rest must be the number. */
static int py_float(const char *text, double *out) {
    const char *b;
    size_t n;
    strip(text, strlen(text), &b, &n);
    if (!n || n > 100) return -1;
    char buf[128];
    memcpy(buf, b, n);
    buf[n] = 0;
    if (buf[0] == '0' && (buf[1] == 'x' || buf[1] == 'X')) return -1; /* strtod's, not Python's */
    char *end;
    errno = 0;
    double v = strtod(buf, &end);
    if (end == buf || *end) return -1;
    *out = v;
    return 0;
}

static int seconds(const env_t *e, const char *name, double dflt, double *out, char *err,
                   size_t ecap) {
    const char *text = env_get(e, name);
    if (!text || !*text) {
        *out = dflt;
        return 0;
    }
    char r[300];
    double v;
    if (py_float(text, &v)) {
        repr(text, strlen(text), r, sizeof r);
        return fail(err, ecap, "%s=%s is not a number of seconds", name, r);
    }
    if (v <= 0) {
        repr(text, strlen(text), r, sizeof r);
        return fail(err, ecap, "%s=%s must be positive", name, r);
    }
    *out = v;
    return 0;
}

/* FARCUDA_SUBALLOC and FARCUDA_COMPRESS are the shim's (the driver layer places no allocation
 * itself and compresses nothing), checked as interposer/config.py checks them: a mistake in
 * them is the same one line whichever layer reads it. */
static int shim_flags_from_env(const env_t *e, char *err, size_t ecap) {
    const char *v = env_get(e, "FARCUDA_SUBALLOC");
    const char *b;
    size_t n;
    char r[300];
    if (v) {
        strip(v, strlen(v), &b, &n);
        if (n && !(n == 1 && (*b == '0' || *b == '1'))) {
            repr(b, n, r, sizeof r);
            return fail(err, ecap, "FARCUDA_SUBALLOC=%s is not 1 or 0", r);
        }
    }
    v = env_get(e, "FARCUDA_COMPRESS");
    if (v) {
        strip(v, strlen(v), &b, &n);
        char mode[8] = "";
        if (n < sizeof mode)
            for (size_t i = 0; i < n; i++) mode[i] = (char)tolower((unsigned char)b[i]);
        if (n >= sizeof mode ||
            (n && strcmp(mode, "auto") && strcmp(mode, "on") && strcmp(mode, "off"))) {
            repr(v, strlen(v), r, sizeof r);
            return fail(err, ecap, "FARCUDA_COMPRESS=%s is not one of auto, on, off", r);
        }
    }
    return 0;
}

static int tls_from_env(const env_t *e, fcc_config *cfg, char *err, size_t ecap) {
    const char *t = env_get(e, "FARCUDA_TLS");
    const char *b = "";
    size_t n = 0;
    if (t) strip(t, strlen(t), &b, &n);
    char flag[32];
    if (n >= sizeof flag) n = sizeof flag - 1;
    for (size_t i = 0; i < n; i++) flag[i] = (char)tolower((unsigned char)b[i]);
    flag[n] = 0;
    static const char *const ok[] = {"", "0", "1", "yes", "no", "true", "false", "on", "off"};
    int valid = 0;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) valid |= strcmp(flag, ok[i]) == 0;
    if (!valid) {
        char r[64];
        repr(flag, n, r, sizeof r);
        return fail(err, ecap, "FARCUDA_TLS=%s is not 1 or 0", r);
    }
    cfg->tls = !strcmp(flag, "1") || !strcmp(flag, "yes") || !strcmp(flag, "true") ||
               !strcmp(flag, "on");
    static const char *const vars[] = {"FARCUDA_TLS_CA", "FARCUDA_TLS_CERT", "FARCUDA_TLS_KEY"};
    char *dst[] = {cfg->tls_ca, cfg->tls_cert, cfg->tls_key};
    for (int i = 0; i < 3; i++) {
        const char *v = env_get(e, vars[i]);
        const char *p;
        size_t pn;
        if (!v) continue;
        strip(v, strlen(v), &p, &pn);
        if (!pn) continue;
        if (!cfg->tls)
            return fail(err, ecap, "%s is set but FARCUDA_TLS is not: set FARCUDA_TLS=1", vars[i]);
        char path[512];
        if (pn >= sizeof path) pn = sizeof path - 1;
        memcpy(path, p, pn);
        path[pn] = 0;
        struct stat sb;
        if (stat(path, &sb) || !S_ISREG(sb.st_mode)) {
            char r[600];
            repr(path, pn, r, sizeof r);
            return fail(err, ecap, "%s=%s: no such file", vars[i], r);
        }
        memcpy(dst[i], path, pn + 1);
    }
    if (cfg->tls_key[0] && !cfg->tls_cert[0])
        return fail(err, ecap, "FARCUDA_TLS_KEY is set without FARCUDA_TLS_CERT");
    return 0;
}

int fcc_config_parse(char *const *envp, fcc_config *cfg, char *err, size_t ecap) {
    env_t e = {envp ? envp : environ};
    memset(cfg, 0, sizeof *cfg);
    err[0] = 0;
    const char *tok = env_get(&e, "FARCUDA_TOKEN");
    if (tok && *tok) {
        snprintf(cfg->token, sizeof cfg->token, "%s", tok);
        cfg->has_token = 1;
    }
    if (seconds(&e, "FARCUDA_CONNECT_TIMEOUT", 5.0, &cfg->connect_timeout, err, ecap) ||
        seconds(&e, "FARCUDA_LIVENESS_TIMEOUT", 10.0, &cfg->liveness_timeout, err, ecap))
        return -1;
    cfg->spin_us = 200.0;
    const char *spin = env_get(&e, "FARCUDA_SPIN_US");
    if (spin) {
        const char *b;
        size_t n;
        strip(spin, strlen(spin), &b, &n);
        if (n) {
            char r[300], txt[128];
            size_t k = n < sizeof txt - 1 ? n : sizeof txt - 1;
            memcpy(txt, b, k);
            txt[k] = 0;
            repr(b, n, r, sizeof r);
            if (py_float(txt, &cfg->spin_us))
                return fail(err, ecap, "FARCUDA_SPIN_US=%s is not a number of microseconds", r);
            if (!(cfg->spin_us >= 0 && cfg->spin_us <= 1e6))
                return fail(err, ecap, "FARCUDA_SPIN_US=%s is not between 0 and 1000000", r);
        }
    }
    const char *rep = env_get(&e, "FARCUDA_REPORT");
    cfg->report = rep && *rep && strcmp(rep, "0") != 0;
    if (shim_flags_from_env(&e, err, ecap) || tls_from_env(&e, cfg, err, ecap)) return -1;
    const char *devs = env_get(&e, "FARCUDA_DEVICES");
    const char *count = env_get(&e, "FARCUDA_DEVICE_COUNT");
    const char *server = env_get(&e, "FARCUDA_SERVER");
    const char *b;
    size_t n;
    if (devs && (strip(devs, strlen(devs), &b, &n), n)) {
        if (parse_devices(devs, "FARCUDA_DEVICES", cfg, err, ecap)) return -1;
        snprintf(cfg->source, sizeof cfg->source, "FARCUDA_DEVICES");
        cfg->configured = 1;
    } else if (count && (strip(count, strlen(count), &b, &n), n)) {
        char r[300];
        repr(b, n, r, sizeof r);
        if (!all_digits(b, n) || to_int(b, n) == 0)
            return fail(err, ecap, "FARCUDA_DEVICE_COUNT=%s is not a positive number", r);
        long long k = to_int(b, n);
        char txt[32];
        snprintf(txt, sizeof txt, "%.*s", (int)(n < 20 ? n : 20), b);
        for (long long i = 0; i < k; i++) {
            char name[64];
            snprintf(name, sizeof name, "FARCUDA_DEVICE_%lld", i);
            const char *v = env_get(&e, name);
            const char *vb;
            size_t vn = 0;
            if (v) strip(v, strlen(v), &vb, &vn);
            if (!vn)
                return fail(err, ecap, "FARCUDA_DEVICE_COUNT=%s but %s is not set", txt, name);
            fcc_entry ent;
            if (parse_device(v, strlen(v), name, &ent, err, ecap)) return -1;
            if (i < FC_MAX_DEVICES) cfg->devices[i] = ent;
        }
        cfg->ndevices = (int)(k > 0x7fffffff ? 0x7fffffff : k);
        snprintf(cfg->source, sizeof cfg->source, "FARCUDA_DEVICE_COUNT");
        cfg->configured = 1;
    } else if (server && (strip(server, strlen(server), &b, &n), n)) {
        if (parse_hostport(server, strlen(server), "FARCUDA_SERVER", cfg->server_host,
                           sizeof cfg->server_host, &cfg->server_port, err, ecap))
            return -1;
        /* `farcuda run` says where it got the server from, for the messages */
        const char *origin = env_get(&e, "FARCUDA_SERVER_ORIGIN");
        const char *ob = "";
        size_t on = 0;
        if (origin) strip(origin, strlen(origin), &ob, &on);
        if (on >= sizeof cfg->source) on = sizeof cfg->source - 1;
        if (on)
            snprintf(cfg->source, sizeof cfg->source, "%.*s", (int)on, ob);
        else
            snprintf(cfg->source, sizeof cfg->source, "FARCUDA_SERVER");
        cfg->has_server = 1;
        cfg->configured = 1;
    }
    if (cfg->configured && !cfg->has_server && cfg->ndevices > FC_MAX_DEVICES)
        return fail(err, ecap, "%s: %d devices; at most 64 are supported", cfg->source,
                    cfg->ndevices);
    return 0;
}

/* ---------------- the configuration as JSON ---------------- */

static size_t json_str(char *out, size_t o, size_t cap, const char *s) {
    o += (size_t)snprintf(out + (o < cap ? o : cap), o < cap ? cap - o : 0, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            o += (size_t)snprintf(out + (o < cap ? o : cap), o < cap ? cap - o : 0, "\\%c", c);
        else if (c < 0x20)
            o += (size_t)snprintf(out + (o < cap ? o : cap), o < cap ? cap - o : 0, "\\u%04x", c);
        else
            o += (size_t)snprintf(out + (o < cap ? o : cap), o < cap ? cap - o : 0, "%c", c);
    }
    return o + (size_t)snprintf(out + (o < cap ? o : cap), o < cap ? cap - o : 0, "\"");
}

#define OUT(...) (o += (size_t)snprintf(out + (o < cap ? o : cap), o < cap ? cap - o : 0, \
                                        __VA_ARGS__))

int fcc_config_explain(const char *envblock, char *out, size_t cap) {
    char *envv[512];
    char *const *envp = NULL;
    if (envblock) {
        size_t k = 0;
        for (const char *p = envblock; *p && k < 511; p += strlen(p) + 1) envv[k++] = (char *)p;
        envv[k] = NULL;
        envp = envv;
    }
    static fcc_config cfg; /* large: not on the caller's stack */
    char err[1024];
    size_t o = 0;
    if (fcc_config_parse(envp, &cfg, err, sizeof err)) {
        OUT("{\"error\": ");
        o = json_str(out, o, cap, err);
        OUT("}");
        return o < cap ? 0 : -1;
    }
    OUT("{\"configured\": %s, \"source\": ", cfg.configured ? "true" : "false");
    o = json_str(out, o, cap, cfg.source);
    OUT(", \"devices\": ");
    if (cfg.configured && !cfg.has_server) {
        OUT("[");
        for (int i = 0; i < cfg.ndevices; i++) {
            OUT("%s[", i ? ", " : "");
            o = json_str(out, o, cap, cfg.devices[i].host);
            OUT(", %d, %d, %d]", cfg.devices[i].port, cfg.devices[i].gpu, cfg.devices[i].sm);
        }
        OUT("]");
    } else {
        OUT("null");
    }
    OUT(", \"server\": ");
    if (cfg.has_server) {
        OUT("[");
        o = json_str(out, o, cap, cfg.server_host);
        OUT(", %d]", cfg.server_port);
    } else {
        OUT("null");
    }
    OUT(", \"token\": ");
    if (cfg.has_token)
        o = json_str(out, o, cap, cfg.token);
    else
        OUT("null");
    OUT(", \"connect_timeout\": %.17g, \"liveness_timeout\": %.17g, \"spin_us\": %.17g",
        cfg.connect_timeout, cfg.liveness_timeout, cfg.spin_us);
    OUT(", \"report\": %s, \"tls\": %s", cfg.report ? "true" : "false", cfg.tls ? "true" : "false");
    const char *names[] = {"tls_ca", "tls_cert", "tls_key"};
    const char *vals[] = {cfg.tls_ca, cfg.tls_cert, cfg.tls_key};
    for (int i = 0; i < 3; i++) {
        OUT(", \"%s\": ", names[i]);
        if (vals[i][0])
            o = json_str(out, o, cap, vals[i]);
        else
            OUT("null");
    }
    OUT("}");
    return o < cap ? 0 : -1;
}
