/* A small JSON reader for the daemon's cold replies (GPU_INFO, DEVICE_OPEN, module layouts).
 * The whole document becomes one tree of nodes; malformed input gives NULL, never a crash:
 * the daemon is trusted to be a farcuda daemon, not to be well-behaved. Depth is bounded. */
#include <stdlib.h>
#include <string.h>

#include "core.h"

enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct fcc_json {
    int type;
    double num;
    char *str;           /* J_STR */
    size_t n, cap;       /* members of J_ARR / J_OBJ */
    char **keys;         /* J_OBJ */
    struct fcc_json **items;
};

typedef struct {
    const char *p, *end;
    int depth;
} parser;

static void ws(parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\t' || *ps->p == '\r'))
        ps->p++;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static char *parse_string(parser *ps) {
    if (ps->p >= ps->end || *ps->p != '"') return NULL;
    ps->p++;
    size_t cap = 16, n = 0;
    char *s = malloc(cap);
    if (!s) return NULL;
    while (ps->p < ps->end && *ps->p != '"') {
        unsigned c = (unsigned char)*ps->p++;
        if (c == '\\') {
            if (ps->p >= ps->end) goto bad;
            char e = *ps->p++;
            switch (e) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u': {
                if (ps->end - ps->p < 4) goto bad;
                unsigned v = 0;
                for (int i = 0; i < 4; i++) {
                    int h = hexval(ps->p[i]);
                    if (h < 0) goto bad;
                    v = v * 16 + (unsigned)h;
                }
                ps->p += 4;
                c = v < 0x80 ? v : '?'; /* the replies we read hold ASCII */
                break;
            }
            default: c = (unsigned char)e;
            }
        }
        if (n + 2 > cap) {
            cap *= 2;
            char *t = realloc(s, cap);
            if (!t) goto bad;
            s = t;
        }
        s[n++] = (char)c;
    }
    if (ps->p >= ps->end) goto bad;
    ps->p++;
    s[n] = 0;
    return s;
bad:
    free(s);
    return NULL;
}

static fcc_json *value(parser *ps);

static int append(fcc_json *j, char *key, fcc_json *item) {
    if (j->n == j->cap) {
        size_t cap = j->cap ? j->cap * 2 : 4;
        fcc_json **it = realloc(j->items, cap * sizeof *it);
        if (!it) return -1;
        j->items = it;
        if (j->type == J_OBJ) {
            char **k = realloc(j->keys, cap * sizeof *k);
            if (!k) return -1;
            j->keys = k;
        }
        j->cap = cap;
    }
    if (j->type == J_OBJ) j->keys[j->n] = key;
    j->items[j->n++] = item;
    return 0;
}

static fcc_json *value(parser *ps) {
    ws(ps);
    if (ps->p >= ps->end || ++ps->depth > 64) return NULL;
    fcc_json *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    char c = *ps->p;
    if (c == '{' || c == '[') {
        j->type = c == '{' ? J_OBJ : J_ARR;
        ps->p++;
        ws(ps);
        if (ps->p < ps->end && *ps->p == (c == '{' ? '}' : ']')) {
            ps->p++;
            goto done;
        }
        for (;;) {
            char *key = NULL;
            if (j->type == J_OBJ) {
                ws(ps);
                if (!(key = parse_string(ps))) goto bad;
                ws(ps);
                if (ps->p >= ps->end || *ps->p != ':') { free(key); goto bad; }
                ps->p++;
            }
            fcc_json *item = value(ps);
            if (!item || append(j, key, item)) {
                free(key);
                fcc_json_free(item);
                goto bad;
            }
            ws(ps);
            if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
            if (ps->p < ps->end && *ps->p == (j->type == J_OBJ ? '}' : ']')) { ps->p++; break; }
            goto bad;
        }
    } else if (c == '"') {
        j->type = J_STR;
        if (!(j->str = parse_string(ps))) goto bad;
    } else if (ps->end - ps->p >= 4 && !memcmp(ps->p, "null", 4)) {
        j->type = J_NULL;
        ps->p += 4;
    } else if (ps->end - ps->p >= 4 && !memcmp(ps->p, "true", 4)) {
        j->type = J_BOOL;
        j->num = 1;
        ps->p += 4;
    } else if (ps->end - ps->p >= 5 && !memcmp(ps->p, "false", 5)) {
        j->type = J_BOOL;
        ps->p += 5;
    } else {
        char buf[64];
        size_t k = 0;
        while (ps->p + k < ps->end && k < sizeof buf - 1 && strchr("+-0123456789.eE", ps->p[k]))
            k++;
        if (!k) goto bad;
        memcpy(buf, ps->p, k);
        buf[k] = 0;
        char *endp;
        j->type = J_NUM;
        j->num = strtod(buf, &endp);
        if (endp != buf + k) goto bad;
        ps->p += k;
    }
done:
    ps->depth--;
    return j;
bad:
    fcc_json_free(j);
    return NULL;
}

fcc_json *fcc_json_parse(const char *text, size_t n) {
    parser ps = {text, text + n, 0};
    fcc_json *j = value(&ps);
    if (!j) return NULL;
    ws(&ps);
    if (ps.p != ps.end) {
        fcc_json_free(j);
        return NULL;
    }
    return j;
}

void fcc_json_free(fcc_json *j) {
    if (!j) return;
    for (size_t i = 0; i < j->n; i++) {
        if (j->keys) free(j->keys[i]);
        fcc_json_free(j->items[i]);
    }
    free(j->keys);
    free(j->items);
    free(j->str);
    free(j);
}

const fcc_json *fcc_json_get(const fcc_json *obj, const char *key) {
    if (!obj || obj->type != J_OBJ) return NULL;
    for (size_t i = 0; i < obj->n; i++)
        if (!strcmp(obj->keys[i], key)) return obj->items[i];
    return NULL;
}

const fcc_json *fcc_json_at(const fcc_json *arr, size_t i) {
    if (!arr || (arr->type != J_ARR && arr->type != J_OBJ) || i >= arr->n) return NULL;
    return arr->items[i];
}

size_t fcc_json_len(const fcc_json *j) {
    return j && (j->type == J_ARR || j->type == J_OBJ) ? j->n : 0;
}

const char *fcc_json_key(const fcc_json *obj, size_t i) {
    return obj && obj->type == J_OBJ && i < obj->n ? obj->keys[i] : NULL;
}

const fcc_json *fcc_json_value(const fcc_json *obj, size_t i) { return fcc_json_at(obj, i); }

int fcc_json_is_null(const fcc_json *j) { return !j || j->type == J_NULL; }

double fcc_json_num(const fcc_json *j, double dflt) {
    return j && (j->type == J_NUM || j->type == J_BOOL) ? j->num : dflt;
}

const char *fcc_json_str(const fcc_json *j) { return j && j->type == J_STR ? j->str : NULL; }
