/* Memory: allocation, host memory, and the copy and set calls.
 *
 * Device pointers are the daemon's real device addresses, inside the address window of their
 * virtual device (core/ranges.c), so a pointer says by itself whether it is device memory and of
 * which virtual device: the direction of a copy comes from its pointers.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fc.h"
#include "api.h"
#include "conn.h"
#include "launch.h"
#include "log.h"
#include "memory.h"
#include "pools.h"
#include "core/ranges.h"
#include "runtime.h"
#include "streams.h"

/* ---------------- helpers ---------------- */

/* Where a pointer lives: its virtual device, or -1 for host memory. */
static int locate(const void *p, size_t n, int *dev, int *bad) {
    fc_range r;
    *bad = 0;
    if (fcc_range_find((uint64_t)(uintptr_t)p, 1, &r) == 0) {
        *dev = r.dev;
        if ((uint64_t)(uintptr_t)p + n > r.base + r.size) *bad = 1;
        return 1;
    }
    *dev = -1;
    return 0;
}

/* The embedded Python's view of the tables (api.h): module globals it registers, the pointers
 * it asks about, and the windows it reserves when it opens a device. */
int fcx_range_add(uint64_t base, uint64_t size, int dev, int kind) {
    return fcc_range_add(base, size, dev, kind, 0);
}

int fcx_range_find(uint64_t p, int *dev, uint64_t *base, uint64_t *size, int *kind,
                   unsigned int *flags, uint64_t *devptr) {
    fc_range r;
    if (fcc_range_find(p, 1, &r) && fcc_range_find(p, 0, &r)) return -1;
    *dev = r.dev;
    *base = r.base;
    *size = r.size;
    *kind = r.kind;
    *flags = r.flags;
    *devptr = r.devptr;
    return 0;
}

int fcx_window_reserve(int dev, uint64_t size, uint64_t *base) {
    return fcc_window_reserve(dev, size, base);
}

int fcx_window_adopt(int dev, uint64_t base, uint64_t size) {
    return fcc_window_adopt(dev, base, size);
}

/* ---------------- client-side sub-allocation ----------------
 *
 * Where the daemon offers it (DEVICE_OPEN's "arena": not under a memory quota), cudaMalloc
 * calls of less than 1 MiB are placed here, in arenas of 2 MiB the daemon maps for this
 * client, exactly as the daemon packs small allocations into its own arenas: 512-byte
 * aligned, first fit. The daemon hears of each allocation and free (SUBALLOC, SUBFREE) in
 * the connection's order, ahead of any frame that uses the memory, so its pointer checks,
 * its books and what it frees when the client dies are as without sub-allocation; only the
 * round trips are gone. An arena is asked for (one round trip) when none has room. An empty
 * arena is kept while it is the only one, for the next allocation, and given back when
 * another one empties, when it stayed empty FC_ARENA_IDLE_NS, before cudaMemGetInfo, and
 * before an allocation that failed for want of memory is tried again, so that memory kept
 * here never makes a program's allocation fail or its free memory look smaller.
 *
 * cudaFree waits for the device as CUDA's does, unless nothing can be pending there
 * (fc_device_quiet): then neither a free here nor (where arenas are offered, so no quota
 * waits for it) a free of a large allocation waits for a reply. */
#define FC_ARENA_UNIT 512u
#define FC_ARENA_UNITS 4096u /* of a 2 MiB arena */
#define FC_ARENA_BELOW (1u << 20)
#define FC_ARENA_IDLE_NS 1000000000LL
#define FC_SMALL_DTOH (64u << 10) /* the daemon's C path answers copies up to this size */

typedef struct fc_arena {
    uint64_t base;
    uint32_t units, used;
    int64_t empty_since; /* 0: in use */
    uint64_t map[FC_ARENA_UNITS / 64]; /* a bit per unit, set: allocated */
} fc_arena;

typedef struct {
    pthread_mutex_t mtx;
    uint64_t offered; /* the arena size the daemon offers (0: none) */
    int n, cap;
    fc_arena **a; /* in the order they were mapped (first fit, as the daemon's) */
} fc_arenas;

static fc_arenas arenas[FC_MAX_DEVICES];
static pthread_once_t arenas_once = PTHREAD_ONCE_INIT;

static void arenas_init(void) {
    for (int i = 0; i < FC_MAX_DEVICES; i++) pthread_mutex_init(&arenas[i].mtx, NULL);
}

void fcx_set_arena(int dev, uint64_t size) {
    pthread_once(&arenas_once, arenas_init);
    if (dev < 0 || dev >= FC_MAX_DEVICES) return;
    if (size % FC_ARENA_UNIT || size / FC_ARENA_UNIT > FC_ARENA_UNITS) size = 0;
    arenas[dev].offered = size;
}

static int unit_used(const fc_arena *a, uint32_t u) { return (a->map[u / 64] >> (u % 64)) & 1; }

static void mark(fc_arena *a, uint32_t u, uint32_t n, int on) {
    for (uint32_t i = u; i < u + n; i++) {
        if (on) a->map[i / 64] |= 1ull << (i % 64);
        else a->map[i / 64] &= ~(1ull << (i % 64));
    }
}

/* the first run of n free units, or -1 */
static int64_t first_fit(const fc_arena *a, uint32_t n) {
    uint32_t run = 0, start = 0;
    for (uint32_t u = 0; u < a->units;) {
        if (run == 0 && u % 64 == 0 && a->map[u / 64] == ~0ull) {
            u += 64;
            continue;
        }
        if (unit_used(a, u)) {
            run = 0;
        } else {
            if (run++ == 0) start = u;
            if (run == n) return start;
        }
        u++;
    }
    return -1;
}

static void arena_release_locked(int dev, int i) {
    fc_arenas *t = &arenas[dev];
    fc_ARENA_RELEASE m = {t->a[i]->base};
    fc_post(fc_dev_conn(dev), FC_OP_ARENA_RELEASE, (uint16_t)dev, &m, sizeof m, NULL, 0);
    free(t->a[i]);
    memmove(t->a + i, t->a + i + 1, (size_t)(t->n - i - 1) * sizeof *t->a);
    t->n--;
}

/* Give back the empty arenas (but `keep`, and one empty less than FC_ARENA_IDLE_NS when
 * `idle_only`). */
static void arenas_trim_locked(int dev, const fc_arena *keep, int idle_only) {
    fc_arenas *t = &arenas[dev];
    int64_t now = idle_only ? fc_now_ns() : 0;
    for (int i = t->n - 1; i >= 0; i--) {
        fc_arena *a = t->a[i];
        if (a == keep || a->used || (idle_only && now - a->empty_since < FC_ARENA_IDLE_NS))
            continue;
        arena_release_locked(dev, i);
    }
}

/* Give back every empty arena of the device; 1 if there was one. */
static int arenas_trim(int dev) {
    if (dev < 0 || dev >= FC_MAX_DEVICES || !arenas[dev].offered) return 0;
    fc_arenas *t = &arenas[dev];
    pthread_mutex_lock(&t->mtx);
    int before = t->n;
    arenas_trim_locked(dev, NULL, 0);
    int any = t->n != before;
    pthread_mutex_unlock(&t->mtx);
    return any;
}

/* The arena holding ptr, or NULL (under the device's lock). */
static fc_arena *arena_of_locked(int dev, uint64_t ptr) {
    fc_arenas *t = &arenas[dev];
    for (int i = 0; i < t->n; i++)
        if (ptr - t->a[i]->base < (uint64_t)t->a[i]->units * FC_ARENA_UNIT) return t->a[i];
    return NULL;
}

enum { FC_ARENA_NONE = -1 }; /* not served here: the daemon allocates */

/* cudaMalloc of size (0 < size < 1 MiB) in an arena: a CUDA status, or FC_ARENA_NONE. */
static int arena_malloc(int dev, size_t size, uint64_t *out) {
    fc_arenas *t = &arenas[dev];
    uint32_t n = (uint32_t)((size + FC_ARENA_UNIT - 1) / FC_ARENA_UNIT);
    int st;
    pthread_mutex_lock(&t->mtx);
    fc_arena *a = NULL;
    int64_t u = -1;
    for (int i = 0; i < t->n && u < 0; i++) {
        u = first_fit(t->a[i], n);
        if (u >= 0) a = t->a[i];
    }
    if (u < 0) {
        fc_ARENA_reply rep = {0};
        st = fc_call_dev(dev, FC_OP_ARENA, NULL, 0, &rep, sizeof rep);
        if (st || rep.size != t->offered || rep.ptr % FC_ARENA_UNIT) {
            if (!st) { /* not what was offered: given back at once */
                fc_ARENA_RELEASE r = {rep.ptr};
                fc_post(fc_dev_conn(dev), FC_OP_ARENA_RELEASE, (uint16_t)dev, &r, sizeof r,
                        NULL, 0);
            }
            pthread_mutex_unlock(&t->mtx);
            /* out of memory for a whole arena, or refused: the daemon places this one (its
             * own arenas may have room), and fails it where it would without arenas */
            if (st == cudaErrorMemoryAllocation || st == cudaErrorNotSupported || !st)
                return FC_ARENA_NONE;
            return fc_sync_status(dev, st);
        }
        if (t->n == t->cap) {
            int cap = t->cap ? t->cap * 2 : 16;
            fc_arena **na = realloc(t->a, (size_t)cap * sizeof *na);
            if (!na) {
                pthread_mutex_unlock(&t->mtx);
                return cudaErrorMemoryAllocation;
            }
            t->a = na;
            t->cap = cap;
        }
        a = calloc(1, sizeof *a);
        if (!a) {
            pthread_mutex_unlock(&t->mtx);
            return cudaErrorMemoryAllocation;
        }
        a->base = rep.ptr;
        a->units = (uint32_t)(rep.size / FC_ARENA_UNIT);
        t->a[t->n++] = a;
        u = 0;
    }
    uint64_t ptr = a->base + (uint64_t)u * FC_ARENA_UNIT;
    if (fcc_range_add(ptr, size, dev, FC_RANGE_DEVICE, 0)) {
        pthread_mutex_unlock(&t->mtx);
        fc_log("cudaMalloc: 0x%llx of an arena overlaps memory already known; refusing it",
               (unsigned long long)ptr);
        return cudaErrorMemoryAllocation;
    }
    fc_SUBALLOC m = {ptr, size};
    st = fc_post(fc_dev_conn(dev), FC_OP_SUBALLOC, (uint16_t)dev, &m, sizeof m, NULL, 0);
    if (st) { /* the link failed */
        pthread_mutex_unlock(&t->mtx);
        fcc_range_remove(ptr, FC_RANGE_DEVICE, NULL);
        return st;
    }
    mark(a, (uint32_t)u, n, 1);
    a->used += n;
    a->empty_since = 0;
    arenas_trim_locked(dev, NULL, 1);
    pthread_mutex_unlock(&t->mtx);
    *out = ptr;
    return cudaSuccess;
}

/* cudaFree of rg (its range already forgotten) if it lies in an arena: a status, or
 * FC_ARENA_NONE. */
static int arena_free(int dev, const fc_range *rg) {
    fc_arenas *t = &arenas[dev];
    if (!t->offered) return FC_ARENA_NONE;
    pthread_mutex_lock(&t->mtx);
    int here = arena_of_locked(dev, rg->base) != NULL;
    pthread_mutex_unlock(&t->mtx);
    if (!here) return FC_ARENA_NONE;
    int st = fc_device_quiet(dev) ? cudaSuccess : fc_call_device_sync(dev);
    if (st) return st;
    pthread_mutex_lock(&t->mtx);
    fc_arena *a = arena_of_locked(dev, rg->base);
    if (!a) { /* the device was reset meanwhile */
        pthread_mutex_unlock(&t->mtx);
        return cudaErrorInvalidValue;
    }
    uint32_t u = (uint32_t)((rg->base - a->base) / FC_ARENA_UNIT);
    uint32_t n = (uint32_t)((rg->size + FC_ARENA_UNIT - 1) / FC_ARENA_UNIT);
    fc_SUBFREE m = {rg->base};
    st = fc_post(fc_dev_conn(dev), FC_OP_SUBFREE, (uint16_t)dev, &m, sizeof m, NULL, 0);
    mark(a, u, n, 0); /* (a failed link: the daemon frees everything anyway) */
    a->used -= n;
    if (a->used == 0) {
        a->empty_since = fc_now_ns();
        arenas_trim_locked(dev, a, 0); /* one empty arena is kept, the latest */
    } else {
        arenas_trim_locked(dev, NULL, 1);
    }
    pthread_mutex_unlock(&t->mtx);
    return st;
}

/* cudaDeviceReset: the daemon dropped everything of the device, its arenas too */
void fc_arenas_drop_device(int dev) {
    pthread_once(&arenas_once, arenas_init);
    fc_arenas *t = &arenas[dev];
    pthread_mutex_lock(&t->mtx);
    for (int i = 0; i < t->n; i++) free(t->a[i]);
    t->n = 0;
    pthread_mutex_unlock(&t->mtx);
}

int fc_mem_get_info(size_t *free_bytes, size_t *total) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!free_bytes || !total) return cudaErrorInvalidValue;
    int dev = fc_current_device();
    if ((st = fc_device_ready(dev))) return st;
    arenas_trim(dev); /* (what an empty arena kept here holds is free memory) */
    fc_MEM_GET_INFO_reply rep = {0};
    st = fc_call_dev(dev, FC_OP_MEM_GET_INFO, NULL, 0, &rep, sizeof rep);
    if (st) return st;
    *free_bytes = (size_t)rep.free;
    *total = (size_t)rep.total;
    return cudaSuccess;
}

/* A request that allocates: once more after giving back the empty arenas, if it failed for
 * want of memory while some were kept. */
static int alloc_call(int dev, uint16_t op, const void *fixed, size_t flen, void *rep,
                      size_t cap) {
    int st = fc_call_dev(dev, op, fixed, flen, rep, cap);
    if (st == cudaErrorMemoryAllocation && arenas_trim(dev))
        st = fc_call_dev(dev, op, fixed, flen, rep, cap);
    return st;
}

/* ---------------- allocation ---------------- */

int fc_malloc(void **ptr, size_t size) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!ptr) return cudaErrorInvalidValue;
    int dev = fc_current_device();
    st = fc_device_ready(dev);
    if (st) return st;
    if (size == 0) {
        *ptr = NULL;
        return cudaSuccess;
    }
    if (size < FC_ARENA_BELOW && arenas[dev].offered) {
        uint64_t p = 0;
        st = arena_malloc(dev, size, &p);
        if (st != FC_ARENA_NONE) {
            if (!st) *ptr = (void *)(uintptr_t)p;
            return fc_sync_status(dev, st);
        }
    }
    fc_MALLOC m = {size, 0};
    fc_MALLOC_reply rep = {0};
    st = alloc_call(dev, FC_OP_MALLOC, &m, sizeof m, &rep, sizeof rep);
    if (st) return fc_sync_status(dev, st);
    if (fcc_range_add(rep.ptr, size, dev, FC_RANGE_DEVICE, 0)) {
        fc_log("cudaMalloc: the server returned 0x%llx, which overlaps memory already known; "
               "refusing it", (unsigned long long)rep.ptr);
        return cudaErrorMemoryAllocation;
    }
    *ptr = (void *)(uintptr_t)rep.ptr;
    return cudaSuccess;
}

int fc_malloc_pitch(void **ptr, size_t *pitch, size_t width, size_t height) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!ptr || !pitch) return cudaErrorInvalidValue;
    int dev = fc_current_device();
    st = fc_device_ready(dev);
    if (st) return st;
    if (width == 0 || height == 0) {
        *ptr = NULL;
        *pitch = 0;
        return cudaSuccess;
    }
    fc_MALLOC_PITCH m = {width, height};
    fc_MALLOC_PITCH_reply rep = {0};
    st = alloc_call(dev, FC_OP_MALLOC_PITCH, &m, sizeof m, &rep, sizeof rep);
    if (st) return fc_sync_status(dev, st);
    if (fcc_range_add(rep.ptr, rep.pitch * height, dev, FC_RANGE_DEVICE, 0))
        return cudaErrorMemoryAllocation;
    *ptr = (void *)(uintptr_t)rep.ptr;
    *pitch = rep.pitch;
    return cudaSuccess;
}

/* cudaMalloc3D: linear memory of depth slices of height rows, as cudaMallocPitch makes it */
int fc_malloc3d(struct fc_pitched_ptr *out, struct fc_extent e) {
    if (!out) return cudaErrorInvalidValue;
    size_t rows, pitch = 0;
    if (__builtin_mul_overflow(e.height, e.depth, &rows)) return cudaErrorMemoryAllocation;
    void *ptr = NULL;
    int st = fc_malloc_pitch(&ptr, &pitch, e.width, rows);
    if (st) return st;
    *out = (struct fc_pitched_ptr){ptr, pitch, e.width, e.height};
    return cudaSuccess;
}

int fc_free(void *ptr) {
    int st = fc_ensure_init();
    if (st) return st;
    int dev = fc_current_device();
    if (ptr == NULL) /* the classic way to create the context */
        return fc_device_ready(dev);
    /* cudaMalloc'd memory, or a stream-ordered allocation (freed with the device idle: CUDA
     * leaves it to the program to have finished with it; farcuda makes sure of it) */
    fc_range rg;
    if (fcc_range_find((uint64_t)(uintptr_t)ptr, 1, &rg) || rg.base != (uint64_t)(uintptr_t)ptr ||
        (rg.kind != FC_RANGE_DEVICE && rg.kind != FC_RANGE_ASYNC))
        return cudaErrorInvalidValue;
    dev = rg.dev;
    st = fc_device_ready(dev);
    if (st) return st;
    /* Forget the range first: once the daemon frees it, another thread's cudaMalloc may get
     * the same address back. */
    if (fcc_range_remove(rg.base, rg.kind, NULL)) return cudaErrorInvalidValue;
    if (rg.kind == FC_RANGE_DEVICE && (st = arena_free(dev, &rg)) != FC_ARENA_NONE) {
        if (st) fcc_range_insert(&rg);
        return fc_sync_status(dev, st);
    }
    fc_FREE m = {rg.base};
    /* nothing to wait for; and no quota, whose verdicts on other clients' allocations must see
     * this free first (the daemon offers arenas only then) */
    if (rg.kind == FC_RANGE_DEVICE && arenas[dev].offered && fc_device_quiet(dev))
        st = fc_post(fc_dev_conn(dev), FC_OP_FREE, (uint16_t)dev, &m, sizeof m, NULL, 0);
    else
        st = fc_call_syncing(dev, FC_OP_FREE, &m, sizeof m); /* (it waits for the device) */
    if (st != cudaSuccess && st != cudaErrorInvalidValue)
        fcc_range_insert(&rg);
    else
        fc_pool_release(&rg);
    return fc_sync_status(dev, st);
}

/* ---------------- host memory ---------------- */

enum { HOST_PORTABLE = 1, HOST_MAPPED = FC_HOST_MAPPED, HOST_WRITECOMBINED = 4, HOST_OWNED = 0x100 };

int fc_host_alloc(void **ptr, size_t size, unsigned int flags) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!ptr) return cudaErrorInvalidValue;
    if (flags & ~7u) return cudaErrorInvalidValue;
    if (size == 0) {
        *ptr = NULL;
        return cudaSuccess;
    }
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t len = (size + page - 1) / page * page;
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return cudaErrorMemoryAllocation;
    if (fcc_range_add((uint64_t)(uintptr_t)p, size, fc_current_device(), FC_RANGE_HOST,
                     flags | HOST_OWNED)) {
        munmap(p, len);
        return cudaErrorMemoryAllocation;
    }
    *ptr = p;
    return cudaSuccess;
}

int fc_free_host(void *ptr) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!ptr) return cudaSuccess;
    fc_range r;
    if (fcc_range_find((uint64_t)(uintptr_t)ptr, 0, &r) || r.base != (uint64_t)(uintptr_t)ptr ||
        !(r.flags & HOST_OWNED))
        return cudaErrorInvalidValue;
    fc_wait_async_all(); /* copies into it still on their way (CUDA synchronizes here too) */
    fcc_range_remove(r.base, FC_RANGE_HOST, NULL);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    munmap(ptr, (r.size + page - 1) / page * page);
    return cudaSuccess;
}

int fc_host_register(void *ptr, size_t size, unsigned int flags) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!ptr || size == 0 || (flags & ~0xfu)) return cudaErrorInvalidValue;
    if (fcc_range_add((uint64_t)(uintptr_t)ptr, size, fc_current_device(), FC_RANGE_HOST,
                     flags & 0x3u))
        return cudaErrorHostMemoryAlreadyRegistered;
    return cudaSuccess;
}

int fc_host_unregister(void *ptr) {
    int st = fc_ensure_init();
    if (st) return st;
    fc_range r;
    if (!ptr || fcc_range_find((uint64_t)(uintptr_t)ptr, 0, &r) ||
        r.base != (uint64_t)(uintptr_t)ptr || (r.flags & HOST_OWNED))
        return cudaErrorHostMemoryNotRegistered;
    fc_wait_async_all();
    fcc_range_remove(r.base, FC_RANGE_HOST, NULL);
    return cudaSuccess;
}

int fc_host_get_flags(unsigned int *flags, void *ptr) {
    int st = fc_ensure_init();
    if (st) return st;
    fc_range r;
    if (!flags || fcc_range_find((uint64_t)(uintptr_t)ptr, 0, &r))
        return cudaErrorInvalidValue;
    *flags = r.flags & 0xffu;
    return cudaSuccess;
}

static int mapped_notice;
int fc_host_get_device_pointer(void **pDevice, void *pHost, unsigned int flags) {
    (void)flags;
    int st = fc_ensure_init();
    if (st) return st;
    if (!pDevice || fcc_range_find((uint64_t)(uintptr_t)pHost, 0, NULL))
        return cudaErrorInvalidValue;
    /* Zero-copy access of client memory from a remote GPU cannot be coherent: refuse it. */
    if (!__atomic_exchange_n(&mapped_notice, 1, __ATOMIC_ACQ_REL))
        fc_log("cudaHostGetDevicePointer: mapped (zero-copy) host memory is not supported by "
               "farcuda (returns cudaErrorNotSupported)");
    return cudaErrorNotSupported;
}

/* ---------------- copies ---------------- */

/* The stream and device a copy runs on: the stream's, checked against the memory's device. */
static int copy_stream(cudaStream_t stream, int ptds, int mem_dev, uint32_t *sid) {
    int sdev = mem_dev;
    int st = fc_stream_resolve(stream, ptds, &sdev, sid);
    if (st) return st;
    return cudaSuccess;
}

static int htod(int dev, uint64_t dst, const void *src, size_t n, uint32_t sid, int async) {
    int st = fc_device_ready(dev);
    if (st) return st;
    if (fcc_range_find((uint64_t)(uintptr_t)src, 0, NULL) == 0) fc_wait_callbacks(dev);
    fc_MEMCPY_HTOD m = {dst, sid, 0};
    st = fc_send_htod(fc_dev_conn(dev), (uint16_t)dev, FC_OP_MEMCPY_HTOD, &m, sizeof m, 0, src, n,
                      !async);
    if (async) return st ? st : fc_device_status(dev);
    return fc_sync_status(dev, st);
}

static int dtoh(int dev, void *dst, uint64_t src, size_t n, uint32_t sid) {
    int st = fc_device_ready(dev);
    if (st) return st;
    fc_conn *c = fc_dev_conn(dev);
    fc_MEMCPY_DTOH m = {src, n, sid, 0};
    if (n > FC_SMALL_DTOH && fc_compressing(c, dev, n) && fc_lz4_available())
        m.flags = FC_MEMCPY_DTOH_COMPRESSED; /* (smaller ones stay on the daemon's C path) */
    fc_req r;
    fc_req_init(&r, NULL, 0);
    r.bulk = dst;
    r.bulk_cap = n;
    st = fc_call(c, FC_OP_MEMCPY_DTOH, (uint16_t)dev, &m, sizeof m, NULL, 0, &r);
    if (st == cudaSuccess && r.bulk_len != n) st = cudaErrorUnknown;
    return fc_sync_status(dev, st);
}

/* Into pinned memory, an async copy returns at once, as in CUDA: the bytes land when the
 * daemon sends them, and it sends them before it answers any synchronization that covers the
 * copy (stream, event or device synchronization, a query that reports completion, a host
 * callback later in the stream). Larger copies stay synchronous: the daemon stages a pending
 * result whole, in one slot. */
static int dtoh_async(int dev, void *dst, uint64_t src, size_t n, uint32_t sid) {
    int st = fc_device_ready(dev);
    if (st) return st;
    fc_req *r = calloc(1, sizeof *r);
    if (!r) return cudaErrorMemoryAllocation;
    r->bulk = dst;
    r->bulk_cap = n;
    fc_MEMCPY_DTOH m = {src, n, sid, FC_MEMCPY_DTOH_DEFERRED};
    st = fc_post_req(fc_dev_conn(dev), FC_OP_MEMCPY_DTOH, (uint16_t)dev, &m, sizeof m, r, n);
    return st ? st : fc_device_status(dev);
}

static int pinned(const void *p, size_t n) {
    fc_range r;
    return fcc_range_find((uint64_t)(uintptr_t)p, 0, &r) == 0 &&
           (uint64_t)(uintptr_t)p + n <= r.base + r.size;
}

static int dtod(int dev, uint64_t dst, uint64_t src, size_t n, uint32_t sid) {
    int st = fc_device_ready(dev);
    if (st) return st;
    fc_MEMCPY_DTOD m = {dst, src, n, sid, 0};
    st = fc_post(fc_dev_conn(dev), FC_OP_MEMCPY_DTOD, (uint16_t)dev, &m, sizeof m, NULL, 0);
    return st ? st : fc_device_status(dev);
}

/* A copy between two virtual devices: on the server when both live in the same session,
 * otherwise staged through this process. */
static int peer_copy(int ddev, uint64_t dst, int sdev, uint64_t src, size_t n, uint32_t sid,
                     int async) {
    int st = fc_device_ready(ddev);
    if (!st) st = fc_device_ready(sdev);
    if (st) return st;
    if (fc_devices[ddev].server == fc_devices[sdev].server) {
        fc_MEMCPY_PEER m = {dst, (uint32_t)ddev, (uint32_t)sdev, src, n, sid, 0};
        if (async) {
            st = fc_post(fc_dev_conn(sdev), FC_OP_MEMCPY_PEER, (uint16_t)sdev, &m, sizeof m, NULL, 0);
            return st ? st : fc_device_status(sdev);
        }
        st = fc_call_dev(sdev, FC_OP_MEMCPY_PEER, &m, sizeof m, NULL, 0);
        return fc_sync_status(sdev, st);
    }
    size_t chunk = n < (64u << 20) ? n : (64u << 20);
    char *tmp = malloc(chunk);
    if (!tmp) return cudaErrorMemoryAllocation;
    for (size_t off = 0; off < n && !st; off += chunk) {
        size_t k = n - off < chunk ? n - off : chunk;
        st = dtoh(sdev, tmp, src + off, k, 0);
        if (!st) st = htod(ddev, dst + off, tmp, k, 0, 0);
    }
    free(tmp);
    return st;
}

/* Which side of a copy is device memory (and whose), checked against its direction: an
 * explicit direction must name device memory where it says so; host memory named as host
 * may still be device memory (unified addressing decides, as in CUDA). */
static int copy_sides(const void *dst, size_t dspan, const void *src, size_t sspan, int kind,
                      int *ddev, int *d_is_dev, int *sdev, int *s_is_dev) {
    int dbad, sbad;
    *d_is_dev = locate(dst, dspan, ddev, &dbad);
    *s_is_dev = locate(src, sspan, sdev, &sbad);
    if ((kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice) && !*d_is_dev)
        return cudaErrorInvalidValue;
    if ((kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice) && !*s_is_dev)
        return cudaErrorInvalidValue;
    if ((*d_is_dev && dbad) || (*s_is_dev && sbad)) return cudaErrorInvalidValue;
    return cudaSuccess;
}

/* A copy into a capturing stream becomes a node of the graph. Host memory is not read now:
 * the daemon captures a host node that fetches (or delivers) the bytes at each replay. */
static int captured_copy(fc_capture *cap, void *dst, const void *src, size_t n, int d_is_dev,
                         int s_is_dev, int ddev, int sdev, uint32_t sid) {
    int st;
    if (d_is_dev && s_is_dev) {
        if (ddev != sdev) return cudaErrorStreamCaptureUnsupported;
        st = dtod(ddev, (uint64_t)(uintptr_t)dst, (uint64_t)(uintptr_t)src, n, sid);
    } else if (d_is_dev || s_is_dev) {
        int dev = d_is_dev ? ddev : sdev;
        if ((st = fc_device_ready(dev))) return st;
        uint32_t node = fc_hostnode_add(dev, d_is_dev ? (void *)src : dst, n, d_is_dev);
        if (!node) return cudaErrorMemoryAllocation;
        fc_req r;
        fc_req_init(&r, NULL, 0);
        if (d_is_dev) {
            fc_CAPTURE_HTOD m = {(uint64_t)(uintptr_t)dst, n, sid, node};
            st = fc_call(fc_dev_conn(dev), FC_OP_CAPTURE_HTOD, (uint16_t)dev, &m, sizeof m, NULL, 0,
                         &r);
        } else {
            fc_CAPTURE_DTOH m = {(uint64_t)(uintptr_t)src, n, sid, node};
            st = fc_call(fc_dev_conn(dev), FC_OP_CAPTURE_DTOH, (uint16_t)dev, &m, sizeof m, NULL, 0,
                         &r);
        }
    } else {
        return cudaErrorStreamCaptureUnsupported; /* host to host: nothing for the GPU */
    }
    if (!st) fc_capture_node(cap, FC_NODE_MEMCPY);
    return st;
}

int fc_memcpy_impl(void *dst, const void *src, size_t n, int kind, cudaStream_t stream,
                   int async, int ptds) {
    int st = fc_ensure_init();
    if (st) return st;
    if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault)
        return cudaErrorInvalidMemcpyDirection;
    if (n == 0) return cudaSuccess;
    if (!dst || !src) return cudaErrorInvalidValue;
    int ddev, sdev, d_is_dev, s_is_dev;
    if ((st = copy_sides(dst, n, src, n, kind, &ddev, &d_is_dev, &sdev, &s_is_dev))) return st;
    uint32_t sid = 0;
    int mem_dev = d_is_dev ? ddev : (s_is_dev ? sdev : fc_current_device());
    st = copy_stream(stream, ptds, mem_dev, &sid);
    if (st) return st;
    fc_capture *cap = fc_capture_of(stream, ptds, mem_dev);
    if (cap) return captured_copy(cap, dst, src, n, d_is_dev, s_is_dev, ddev, sdev, sid);
    if (d_is_dev && s_is_dev) {
        if (ddev == sdev) return dtod(ddev, (uint64_t)(uintptr_t)dst, (uint64_t)(uintptr_t)src, n, sid);
        return peer_copy(ddev, (uint64_t)(uintptr_t)dst, sdev, (uint64_t)(uintptr_t)src, n, sid,
                         async);
    }
    if (d_is_dev) return htod(ddev, (uint64_t)(uintptr_t)dst, src, n, sid, async);
    if (s_is_dev) {
        if (async && n <= FC_PIECE && pinned(dst, n))
            return dtoh_async(sdev, dst, (uint64_t)(uintptr_t)src, n, sid);
        return dtoh(sdev, dst, (uint64_t)(uintptr_t)src, n, sid);
    }
    memmove(dst, src, n);
    return cudaSuccess;
}

int fc_memcpy2d_impl(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                     size_t height, int kind, cudaStream_t stream, int async, int ptds) {
    int st = fc_ensure_init();
    if (st) return st;
    if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault)
        return cudaErrorInvalidMemcpyDirection;
    if (width == 0 || height == 0) return cudaSuccess;
    if (width > dpitch || width > spitch) return cudaErrorInvalidPitchValue;
    if (!dst || !src) return cudaErrorInvalidValue;
    size_t dspan = (height - 1) * dpitch + width, sspan = (height - 1) * spitch + width;
    int ddev, sdev, d_is_dev, s_is_dev;
    if ((st = copy_sides(dst, dspan, src, sspan, kind, &ddev, &d_is_dev, &sdev, &s_is_dev)))
        return st;
    uint32_t sid = 0;
    int mem_dev = d_is_dev ? ddev : (s_is_dev ? sdev : fc_current_device());
    st = copy_stream(stream, ptds, mem_dev, &sid);
    if (st) return st;
    uint64_t d = (uint64_t)(uintptr_t)dst, s = (uint64_t)(uintptr_t)src;
    fc_capture *cap = fc_capture_of(stream, ptds, mem_dev);
    if (cap) {
        if (!(d_is_dev && s_is_dev && ddev == sdev)) {
            fc_log("2D copies between host memory and a capturing stream are not supported by "
                   "farcuda (cudaErrorStreamCaptureUnsupported)");
            return cudaErrorStreamCaptureUnsupported;
        }
        fc_capture_node(cap, FC_NODE_MEMCPY);
    }
    if (d_is_dev && s_is_dev) {
        if (ddev != sdev) { /* rare: row by row through the peer path */
            for (size_t y = 0; y < height && !st; y++)
                st = peer_copy(ddev, d + y * dpitch, sdev, s + y * spitch, width, sid, async);
            return st;
        }
        if ((st = fc_device_ready(ddev))) return st;
        fc_MEMCPY2D_DTOD m = {d, dpitch, s, spitch, width, height, sid, 0};
        st = fc_post(fc_dev_conn(ddev), FC_OP_MEMCPY2D_DTOD, (uint16_t)ddev, &m, sizeof m, NULL, 0);
        return st ? st : fc_device_status(ddev);
    }
    if (d_is_dev) {
        if ((st = fc_device_ready(ddev))) return st;
        /* whole rows per frame, packed tightly */
        size_t rows = FC_PIECE / width ? FC_PIECE / width : 1;
        char *tmp = spitch == width ? NULL : malloc(rows * width);
        if (spitch != width && !tmp) return cudaErrorMemoryAllocation;
        for (size_t y = 0; y < height && !st; y += rows) {
            size_t k = height - y < rows ? height - y : rows;
            const char *rowsrc = (const char *)src + y * spitch;
            if (tmp) {
                for (size_t i = 0; i < k; i++) memcpy(tmp + i * width, rowsrc + i * spitch, width);
                rowsrc = tmp;
            }
            fc_MEMCPY2D_HTOD m = {d + y * dpitch, dpitch, width, k, sid, 0};
            int last = y + k >= height;
            if (last && !async) {
                fc_req r;
                fc_req_init(&r, NULL, 0);
                st = fc_call(fc_dev_conn(ddev), FC_OP_MEMCPY2D_HTOD, (uint16_t)ddev, &m, sizeof m,
                             rowsrc, k * width, &r);
                st = fc_sync_status(ddev, st);
            } else {
                st = fc_post(fc_dev_conn(ddev), FC_OP_MEMCPY2D_HTOD, (uint16_t)ddev, &m, sizeof m,
                             rowsrc, k * width);
            }
        }
        free(tmp);
        return st ? st : (async ? fc_device_status(ddev) : cudaSuccess);
    }
    if (s_is_dev) {
        if ((st = fc_device_ready(sdev))) return st;
        fc_MEMCPY2D_DTOH m = {s, spitch, width, height, sid, 0};
        fc_req r;
        fc_req_init(&r, NULL, 0);
        r.bulk = dst;
        r.bulk_cap = width * height;
        r.row_width = width;
        r.row_pitch = dpitch;
        st = fc_call(fc_dev_conn(sdev), FC_OP_MEMCPY2D_DTOH, (uint16_t)sdev, &m, sizeof m, NULL, 0,
                     &r);
        if (st == cudaSuccess && r.bulk_len != width * height) st = cudaErrorUnknown;
        return fc_sync_status(sdev, st);
    }
    for (size_t y = 0; y < height; y++)
        memmove((char *)dst + y * dpitch, (const char *)src + y * spitch, width);
    return cudaSuccess;
}

int fc_memset_impl(void *dst, int value, size_t n, cudaStream_t stream, int async, int ptds) {
    (void)async;
    int st = fc_ensure_init();
    if (st) return st;
    if (n == 0) return cudaSuccess;
    int dev, bad;
    if (!locate(dst, n, &dev, &bad) || bad) return cudaErrorInvalidValue;
    uint32_t sid = 0;
    st = copy_stream(stream, ptds, dev, &sid);
    if (st) return st;
    if ((st = fc_device_ready(dev))) return st;
    fc_capture_node(fc_capture_of(stream, ptds, dev), FC_NODE_MEMSET);
    fc_MEMSET m = {(uint64_t)(uintptr_t)dst, n, (uint32_t)(value & 0xff), sid, 1};
    st = fc_post(fc_dev_conn(dev), FC_OP_MEMSET, (uint16_t)dev, &m, sizeof m, NULL, 0);
    return st ? st : fc_device_status(dev);
}

int fc_memset2d_impl(void *dst, size_t pitch, int value, size_t width, size_t height,
                     cudaStream_t stream, int ptds) {
    int st = fc_ensure_init();
    if (st) return st;
    if (width == 0 || height == 0) return cudaSuccess;
    if (width > pitch) return cudaErrorInvalidValue;
    int dev, bad;
    if (!locate(dst, (height - 1) * pitch + width, &dev, &bad) || bad)
        return cudaErrorInvalidValue;
    uint32_t sid = 0;
    st = copy_stream(stream, ptds, dev, &sid);
    if (st) return st;
    if ((st = fc_device_ready(dev))) return st;
    fc_capture_node(fc_capture_of(stream, ptds, dev), FC_NODE_MEMSET);
    fc_MEMSET2D m = {(uint64_t)(uintptr_t)dst, pitch, width, height, (uint32_t)(value & 0xff), sid};
    st = fc_post(fc_dev_conn(dev), FC_OP_MEMSET2D, (uint16_t)dev, &m, sizeof m, NULL, 0);
    return st ? st : fc_device_status(dev);
}

/* ---------------- the copy and set nodes of graphs built node by node ---------------- */

/* Which side of a copy node is device memory (its device, else -1), checked as a copy checks
 * its sides: graphs.c checks a node when it is added, as CUDA does. */
int fc_copy_node_sides(const void *dst, size_t dspan, const void *src, size_t sspan, int kind,
                       int *ddev, int *sdev) {
    int d_is_dev, s_is_dev;
    int st = copy_sides(dst, dspan, src, sspan, kind, ddev, &d_is_dev, sdev, &s_is_dev);
    if (!d_is_dev) *ddev = -1;
    if (!s_is_dev) *sdev = -1;
    return st;
}

/* The virtual device of the device memory [p, p + n), or -1 where it is none. */
int fc_device_of(const void *p, size_t n) {
    int dev, bad;
    return locate(p, n, &dev, &bad) && !bad ? dev : -1;
}

/* A set node (cudaMemsetParams): bytes as cudaMemset(2D)Async sets them; wider elements one
 * MEMSET of elem-byte elements per row, in the stream's order (as the driver layer's
 * cuMemsetD2D16/32 do). */
int fc_memset_elems(void *dst, size_t pitch, unsigned int value, unsigned int elem,
                    size_t width, size_t height, cudaStream_t stream) {
    if (elem == 1)
        return height == 1 ? fc_memset_impl(dst, (int)value, width, stream, 1, 0)
                           : fc_memset2d_impl(dst, pitch, (int)value, width, height, stream, 0);
    int st = fc_ensure_init();
    if (st) return st;
    if (elem != 2 && elem != 4) return cudaErrorInvalidValue;
    if (width == 0 || height == 0) return cudaSuccess;
    size_t row = width * elem;
    if (height > 1 && pitch < row) return cudaErrorInvalidValue;
    int dev, bad;
    if ((uintptr_t)dst % elem || (height > 1 && pitch % elem) ||
        !locate(dst, (height - 1) * pitch + row, &dev, &bad) || bad)
        return cudaErrorInvalidValue;
    uint32_t sid = 0;
    if ((st = copy_stream(stream, 0, dev, &sid))) return st;
    if ((st = fc_device_ready(dev))) return st;
    fc_capture *cap = fc_capture_of(stream, 0, dev);
    for (size_t y = 0; y < height && !st; y++) {
        fc_capture_node(cap, FC_NODE_MEMSET);
        fc_MEMSET m = {(uint64_t)(uintptr_t)dst + y * pitch, row, value, sid, elem};
        st = fc_post(fc_dev_conn(dev), FC_OP_MEMSET, (uint16_t)dev, &m, sizeof m, NULL, 0);
    }
    return st ? st : fc_device_status(dev);
}

/* ---------------- 3D copies and sets of linear memory ---------------- */

/* The address of a position in a pitched allocation (x in bytes; slices ysize rows apart),
 * or 0 when it does not fit in an address. */
static uint64_t pitched_at(const struct fc_pitched_ptr *p, const struct fc_pos *pos) {
    uint64_t row, off, at;
    if (__builtin_mul_overflow((uint64_t)pos->z, (uint64_t)p->ysize, &row) ||
        __builtin_add_overflow(row, (uint64_t)pos->y, &row) ||
        __builtin_mul_overflow(row, (uint64_t)p->pitch, &off) ||
        __builtin_add_overflow(off, (uint64_t)pos->x, &off) ||
        __builtin_add_overflow((uint64_t)(uintptr_t)p->ptr, off, &at))
        return 0;
    return at;
}

/* The slices of a 3D operation lie back to back on a side when each is exactly as high as
 * the operation: then the whole box is one 2D operation of height * depth rows. */
static int slices_contiguous(const struct fc_pitched_ptr *p, const struct fc_extent *e) {
    return e->depth == 1 || p->ysize == e->height;
}

static int array_notice;

/* The checks of cudaMemcpy3DParms that CUDA makes of a copy and of a copy node alike: what is
 * copied (linear memory; arrays are refused, once said on stderr under fn's name) and which
 * way ... */
int fc_memcpy3d_check_kind(const struct fc_memcpy3d_parms *p, const char *fn, int *said) {
    if (!p) return cudaErrorInvalidValue;
    if ((p->srcArray && p->srcPtr.ptr) || (p->dstArray && p->dstPtr.ptr))
        return cudaErrorInvalidValue; /* an array or a pointer, not both */
    if (p->srcArray || p->dstArray) {
        if (!__atomic_exchange_n(said, 1, __ATOMIC_ACQ_REL))
            fc_log("%s: CUDA arrays are not supported by farcuda; copies of linear memory are "
                   "(cudaErrorNotSupported)", fn);
        return cudaErrorNotSupported;
    }
    if (p->kind < cudaMemcpyHostToHost || p->kind > cudaMemcpyDefault)
        return cudaErrorInvalidMemcpyDirection;
    return cudaSuccess;
}

/* ... and, for a box that is not empty, that it lies inside both pitched pointers */
int fc_memcpy3d_check_box(const struct fc_memcpy3d_parms *p) {
    const struct fc_extent *e = &p->extent;
    if (e->width > p->srcPtr.pitch || e->width > p->dstPtr.pitch)
        return cudaErrorInvalidPitchValue;
    if (p->srcPos.x > p->srcPtr.pitch - e->width || p->dstPos.x > p->dstPtr.pitch - e->width)
        return cudaErrorInvalidValue;
    /* more than one slice: each row of the box lies inside its slice */
    if (e->depth > 1 &&
        (e->height > p->srcPtr.ysize || p->srcPos.y > p->srcPtr.ysize - e->height ||
         e->height > p->dstPtr.ysize || p->dstPos.y > p->dstPtr.ysize - e->height))
        return cudaErrorInvalidValue;
    return cudaSuccess;
}

/* cudaMemcpy3D(Async) of linear memory: one 2D copy when the slices lie back to back on both
 * sides, else one per slice, in the stream's order. CUDA arrays cannot be made with farcuda,
 * so a copy that names one is refused. */
int fc_memcpy3d_impl(const struct fc_memcpy3d_parms *p, cudaStream_t stream, int async,
                     int ptds) {
    int st = fc_ensure_init();
    if (st) return st;
    if ((st = fc_memcpy3d_check_kind(p, "cudaMemcpy3D", &array_notice))) return st;
    const struct fc_extent *e = &p->extent;
    if (e->width == 0 || e->height == 0 || e->depth == 0) return cudaSuccess;
    if ((st = fc_memcpy3d_check_box(p))) return st;
    uint64_t d = pitched_at(&p->dstPtr, &p->dstPos), s = pitched_at(&p->srcPtr, &p->srcPos);
    if (!d || !s) return cudaErrorInvalidValue;
    size_t dp = p->dstPtr.pitch, sp = p->srcPtr.pitch;
    if (slices_contiguous(&p->dstPtr, e) && slices_contiguous(&p->srcPtr, e)) {
        size_t rows;
        if (__builtin_mul_overflow(e->height, e->depth, &rows)) return cudaErrorInvalidValue;
        return fc_memcpy2d_impl((void *)(uintptr_t)d, dp, (const void *)(uintptr_t)s, sp,
                                e->width, rows, p->kind, stream, async, ptds);
    }
    uint64_t dslice = (uint64_t)p->dstPtr.ysize * dp, sslice = (uint64_t)p->srcPtr.ysize * sp;
    for (size_t z = 0; z < e->depth; z++) {
        st = fc_memcpy2d_impl((void *)(uintptr_t)(d + z * dslice), dp,
                              (const void *)(uintptr_t)(s + z * sslice), sp, e->width, e->height,
                              p->kind, stream, async, ptds);
        if (st) return st;
    }
    return cudaSuccess;
}

/* cudaMemset3D(Async): as the 3D copies, one 2D set or one per slice. */
int fc_memset3d_impl(struct fc_pitched_ptr p, int value, struct fc_extent e,
                     cudaStream_t stream, int ptds) {
    int st = fc_ensure_init();
    if (st) return st;
    if (e.width == 0 || e.height == 0 || e.depth == 0) return cudaSuccess;
    if (e.depth > 1 && e.height > p.ysize) return cudaErrorInvalidValue;
    if (slices_contiguous(&p, &e)) {
        size_t rows;
        if (__builtin_mul_overflow(e.height, e.depth, &rows)) return cudaErrorInvalidValue;
        return fc_memset2d_impl(p.ptr, p.pitch, value, e.width, rows, stream, ptds);
    }
    uint64_t slice = (uint64_t)p.ysize * p.pitch;
    for (size_t z = 0; z < e.depth; z++) {
        st = fc_memset2d_impl((char *)p.ptr + z * slice, p.pitch, value, e.width, e.height,
                              stream, ptds);
        if (st) return st;
    }
    return cudaSuccess;
}

/* ---------------- exported copy and set calls ---------------- */

int fc_memcpy_peer(void *dst, int ddev, const void *src, int sdev, size_t n,
                   cudaStream_t stream, int async) {
    int st = fc_ensure_init();
    if (st) return st;
    if (ddev < 0 || ddev >= fc_ndevices || sdev < 0 || sdev >= fc_ndevices)
        return cudaErrorInvalidDevice;
    if (n == 0) return cudaSuccess;
    int dd, sd, dbad, sbad;
    if (!locate(dst, n, &dd, &dbad) || !locate(src, n, &sd, &sbad) || dbad || sbad ||
        dd != ddev || sd != sdev)
        return cudaErrorInvalidValue;
    uint32_t sid = 0;
    st = copy_stream(stream, 0, sdev, &sid);
    if (st) return st;
    if (ddev == sdev) return dtod(ddev, (uint64_t)(uintptr_t)dst, (uint64_t)(uintptr_t)src, n, sid);
    return peer_copy(ddev, (uint64_t)(uintptr_t)dst, sdev, (uint64_t)(uintptr_t)src, n, sid,
                     async);
}

/* ---------------- symbols ---------------- */

static int symbol_target(const void *symbol, size_t count, size_t offset, uint64_t *addr) {
    int st = fc_ensure_init();
    if (st) return st;
    fc_var *v = fc_var_by_host(symbol);
    if (!v) return cudaErrorInvalidSymbol;
    int dev = fc_current_device();
    if ((st = fc_device_ready(dev))) return st;
    if ((st = fc_var_address(v, dev, addr))) return st;
    if (offset > v->size || count > v->size - offset) return cudaErrorInvalidValue;
    *addr += offset;
    return cudaSuccess;
}

int fc_to_symbol(const void *symbol, const void *src, size_t count, size_t offset, int kind,
                 cudaStream_t s, int async, int ptds) {
    uint64_t a;
    int st = symbol_target(symbol, count, offset, &a);
    if (st) return st;
    if (kind != cudaMemcpyHostToDevice && kind != cudaMemcpyDeviceToDevice &&
        kind != cudaMemcpyDefault)
        return cudaErrorInvalidMemcpyDirection;
    return fc_memcpy_impl((void *)(uintptr_t)a, src, count, kind, s, async, ptds);
}

int fc_from_symbol(void *dst, const void *symbol, size_t count, size_t offset, int kind,
                   cudaStream_t s, int async, int ptds) {
    uint64_t a;
    int st = symbol_target(symbol, count, offset, &a);
    if (st) return st;
    if (kind != cudaMemcpyDeviceToHost && kind != cudaMemcpyDeviceToDevice &&
        kind != cudaMemcpyDefault)
        return cudaErrorInvalidMemcpyDirection;
    return fc_memcpy_impl(dst, (void *)(uintptr_t)a, count, kind, s, async, ptds);
}

int fc_symbol_address(void **devPtr, const void *symbol) {
    if (!devPtr) return cudaErrorInvalidValue;
    uint64_t a;
    int st = symbol_target(symbol, 0, 0, &a);
    if (st) return st;
    *devPtr = (void *)(uintptr_t)a;
    return cudaSuccess;
}

int fc_symbol_size(size_t *size, const void *symbol) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!size) return cudaErrorInvalidValue;
    fc_var *v = fc_var_by_host(symbol);
    if (!v) return cudaErrorInvalidSymbol;
    *size = v->size;
    return cudaSuccess;
}
