/* A recording stand-in for the libcuda.so.1 entry points the daemon's C path calls.
 *
 * daemon/fastpath.c is built against this library in CI (its FP_LIBCUDA names it), so that
 * its frame parsing, handle lookups and pointer checks run for real without a GPU: every call
 * it makes is recorded with its arguments (a launch with the exact parameter bytes it passed),
 * and the tests compare that with what the frames asked for. Streams and events are idle unless
 * a test marks a handle busy; a test may make the next call of one function fail.
 */
#include <stdint.h>
#include <string.h>

enum { REC_LAUNCH = 1, REC_SET_CURRENT, REC_RECORD, REC_WAIT, REC_DTOH, REC_STREAM_QUERY,
       REC_STREAM_SYNC, REC_EVENT_QUERY, REC_EVENT_SYNC, REC_CTX_SYNC, REC_HTOD, REC_KINDS };

#define CUDA_ERROR_NOT_READY 600
#define MAX_CALLS 65536
#define ARENA (16u << 20)
#define MAX_BUSY 64

typedef struct {
    int32_t fn;             /* REC_* */
    int32_t bad_extra;      /* a launch whose `extra` was not BUFFER_POINTER, BUFFER_SIZE, END */
    uint64_t a[10];         /* the arguments, as integers, in the driver's order */
    uint64_t params_off;    /* a launch: its parameter bytes in the arena */
    uint64_t params_len;
} rec_call;

static rec_call calls[MAX_CALLS];
static int ncalls;
static unsigned char arena[ARENA];
static uint64_t arena_used;
static void *busy[MAX_BUSY];
static int busy_left[MAX_BUSY]; /* queries it stays busy for (-1: until told otherwise) */
static int nbusy;
static int fail_next[REC_KINDS];

void rec_reset(void) {
    ncalls = 0;
    arena_used = 0;
    nbusy = 0;
    memset(fail_next, 0, sizeof fail_next);
}

int rec_count(void) { return ncalls; }
const rec_call *rec_get(int i) { return i >= 0 && i < ncalls ? &calls[i] : NULL; }
const unsigned char *rec_arena(void) { return arena; }

static void unbusy(int i) {
    busy[i] = busy[--nbusy];
    busy_left[i] = busy_left[nbusy];
}

/* A handle the tests treat as having work pending (NULL: the legacy stream), for the next
 * `queries` queries of it (-1: until told otherwise). */
void rec_busy_for(void *handle, int queries) {
    for (int i = 0; i < nbusy; i++)
        if (busy[i] == handle) {
            if (queries == 0) unbusy(i);
            else busy_left[i] = queries;
            return;
        }
    if (queries != 0 && nbusy < MAX_BUSY) {
        busy[nbusy] = handle;
        busy_left[nbusy++] = queries;
    }
}

void rec_busy(void *handle, int is_busy) { rec_busy_for(handle, is_busy ? -1 : 0); }

/* The next call of `fn` returns `err` (it is recorded all the same). */
void rec_fail(int fn, int err) {
    if (fn > 0 && fn < REC_KINDS) fail_next[fn] = err;
}

/* What a device-to-host copy reads at device address `addr`. */
unsigned char rec_byte_at(uint64_t addr) { return (unsigned char)(addr ^ (addr >> 8) ^ 0x5a); }

static int is_busy(void *h) { /* (a query of h: it counts) */
    for (int i = 0; i < nbusy; i++)
        if (busy[i] == h) {
            if (busy_left[i] > 0 && --busy_left[i] == 0) unbusy(i);
            return 1;
        }
    return 0;
}

static rec_call *add(int fn) {
    static rec_call overflow;
    if (ncalls == MAX_CALLS) return &overflow;
    rec_call *c = &calls[ncalls++];
    memset(c, 0, sizeof *c);
    c->fn = fn;
    return c;
}

static int result(int fn) {
    int err = fail_next[fn];
    fail_next[fn] = 0;
    return err;
}

int cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                   unsigned bz, unsigned shmem, void *stream, void **params, void **extra) {
    rec_call *c = add(REC_LAUNCH);
    uint64_t a[10] = {(uintptr_t)f, gx, gy, gz, bx, by, bz, shmem, (uintptr_t)stream,
                      (uintptr_t)params};
    memcpy(c->a, a, sizeof a);
    if (extra) {
        size_t n = 0;
        if (extra[0] != (void *)1 || extra[2] != (void *)2 || extra[4] != NULL || !extra[3]) {
            c->bad_extra = 1;
        } else {
            memcpy(&n, extra[3], sizeof n);
            if (n > ARENA - arena_used) {
                c->bad_extra = 1;
            } else {
                memcpy(arena + arena_used, extra[1], n);
                c->params_off = arena_used;
                c->params_len = n;
                arena_used += n;
            }
        }
    }
    return result(REC_LAUNCH);
}

int cuCtxSetCurrent(void *ctx) {
    add(REC_SET_CURRENT)->a[0] = (uintptr_t)ctx;
    return result(REC_SET_CURRENT);
}

int cuEventRecordWithFlags(void *ev, void *stream, unsigned flags) {
    rec_call *c = add(REC_RECORD);
    c->a[0] = (uintptr_t)ev;
    c->a[1] = (uintptr_t)stream;
    c->a[2] = flags;
    return result(REC_RECORD);
}

int cuStreamWaitEvent(void *stream, void *ev, unsigned flags) {
    rec_call *c = add(REC_WAIT);
    c->a[0] = (uintptr_t)stream;
    c->a[1] = (uintptr_t)ev;
    c->a[2] = flags;
    return result(REC_WAIT);
}

int cuMemcpyDtoHAsync_v2(void *dst, uint64_t src, size_t n, void *stream) {
    rec_call *c = add(REC_DTOH);
    c->a[0] = (uintptr_t)dst;
    c->a[1] = src;
    c->a[2] = n;
    c->a[3] = (uintptr_t)stream;
    for (size_t i = 0; i < n; i++) ((unsigned char *)dst)[i] = rec_byte_at(src + i);
    return result(REC_DTOH);
}

int cuMemcpyHtoDAsync_v2(uint64_t dst, const void *src, size_t n, void *stream) {
    rec_call *c = add(REC_HTOD);
    c->a[0] = dst;
    c->a[1] = n;
    c->a[2] = (uintptr_t)stream;
    c->a[3] = (uintptr_t)src;
    if (n <= ARENA - arena_used) { /* the bytes it copied, as a launch's parameters */
        memcpy(arena + arena_used, src, n);
        c->params_off = arena_used;
        c->params_len = n;
        arena_used += n;
    }
    return result(REC_HTOD);
}

static int query(int fn, void *h) {
    add(fn)->a[0] = (uintptr_t)h;
    int err = result(fn);
    return err ? err : (is_busy(h) ? CUDA_ERROR_NOT_READY : 0);
}

int cuStreamQuery(void *stream) { return query(REC_STREAM_QUERY, stream); }
int cuEventQuery(void *ev) { return query(REC_EVENT_QUERY, ev); }

int cuStreamSynchronize(void *stream) {
    add(REC_STREAM_SYNC)->a[0] = (uintptr_t)stream;
    return result(REC_STREAM_SYNC);
}

int cuEventSynchronize(void *ev) {
    add(REC_EVENT_SYNC)->a[0] = (uintptr_t)ev;
    return result(REC_EVENT_SYNC);
}

int cuCtxSynchronize(void) {
    add(REC_CTX_SYNC);
    return result(REC_CTX_SYNC);
}
