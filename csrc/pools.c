/* Stream-ordered allocation and memory pools: cudaMallocAsync, cudaFreeAsync, cudaMemPool*.
 *
 * Pools live in the client: a pool is a handle, its attributes and its statistics. The
 * daemon places a stream-ordered allocation in the device's address window like any other
 * (so tenant quotas, `farcuda status` and the cleanup of a dead client count it) and tells
 * what it uses and what is mapped for it; a free is an async frame that the daemon carries
 * out when the stream gets there. The daemon returns freed memory to the GPU at once: a
 * pool never keeps memory of its own, its reserved bytes are what its live allocations hold,
 * and cudaMemPoolTrimTo has nothing to release.
 *
 * Handles are never freed: a destroyed pool keeps a dead magic, and a handle the app passes
 * in is looked up in the table of pools before it is read, so a stale or made-up handle is
 * cudaErrorInvalidValue (as in CUDA), never a crash.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc.h"
#include "conn.h"
#include "log.h"
#include "pools.h"
#include "core/ranges.h"
#include "runtime.h"
#include "streams.h"

#define FC_POOL_MAGIC 0x4c4f4f50U
#define FC_POOL_DEAD 0xdeadb001U

/* CUDA 13 ABI (driver_types.h) */
enum { ATTR_REUSE_FOLLOW = 1, ATTR_REUSE_OPPORTUNISTIC = 2, ATTR_REUSE_INTERNAL = 3,
       ATTR_RELEASE_THRESHOLD = 4, ATTR_RESERVED_CURRENT = 5, ATTR_RESERVED_HIGH = 6,
       ATTR_USED_CURRENT = 7, ATTR_USED_HIGH = 8 };
enum { LOC_DEVICE = 1, LOC_HOST = 2, LOC_HOST_NUMA = 3, LOC_HOST_NUMA_CURRENT = 4 };
enum { ALLOC_PINNED = 1, ALLOC_MANAGED = 2 };
enum { ACCESS_NONE = 0, ACCESS_READ = 1, ACCESS_READ_WRITE = 3 };
#define USAGE_HW_DECOMPRESS 0x2

struct fc_pool {
    uint32_t magic;
    int dev;
    int is_default;
    int reuse[3];                   /* the cudaMemPoolReuse* attributes */
    uint64_t release_threshold;
    uint64_t max_size;              /* 0: no limit */
    uint64_t used, used_high, reserved, reserved_high;
    unsigned char access[FC_MAX_DEVICES]; /* other devices' cudaMemAccessFlags */
};

static pthread_mutex_t pool_mtx = PTHREAD_MUTEX_INITIALIZER;
static fc_pool default_pools[FC_MAX_DEVICES];
static fc_pool *current_pools[FC_MAX_DEVICES]; /* NULL: the default pool */
static fc_pool **created;
static size_t ncreated, cap_created;

static void pool_init(fc_pool *p, int dev, int is_default) {
    memset(p, 0, sizeof *p);
    p->magic = FC_POOL_MAGIC;
    p->dev = dev;
    p->is_default = is_default;
    for (int i = 0; i < 3; i++) p->reuse[i] = 1; /* CUDA's defaults: all reuse enabled */
}

/* pool_mtx held */
static fc_pool *default_pool_locked(int dev) {
    fc_pool *p = &default_pools[dev];
    if (p->magic != FC_POOL_MAGIC) pool_init(p, dev, 1);
    return p;
}

static fc_pool *current_pool_locked(int dev) {
    return current_pools[dev] ? current_pools[dev] : default_pool_locked(dev);
}

/* The live pool behind an app's handle, or NULL; pool_mtx held. */
static fc_pool *pool_lookup(const void *handle) {
    uintptr_t h = (uintptr_t)handle, first = (uintptr_t)default_pools;
    if (h >= first && h < first + sizeof default_pools) {
        if ((h - first) % sizeof(fc_pool)) return NULL;
        fc_pool *p = (fc_pool *)handle;
        return p->magic == FC_POOL_MAGIC ? p : NULL;
    }
    for (size_t i = 0; i < ncreated; i++)
        if ((uintptr_t)created[i] == h)
            return created[i]->magic == FC_POOL_MAGIC ? created[i] : NULL;
    return NULL;
}

static void account(fc_pool *p, uint64_t used, uint64_t reserved) {
    p->used += used;
    p->reserved += reserved;
    if (p->used > p->used_high) p->used_high = p->used;
    if (p->reserved > p->reserved_high) p->reserved_high = p->reserved;
}

void fc_pool_release(const fc_range *r) {
    if (!r->pool) return;
    pthread_mutex_lock(&pool_mtx);
    fc_pool *p = r->pool;
    p->used -= r->used < p->used ? r->used : p->used;
    p->reserved -= r->reserved < p->reserved ? r->reserved : p->reserved;
    pthread_mutex_unlock(&pool_mtx);
}

void fc_pools_reset_device(int dev) {
    pthread_mutex_lock(&pool_mtx);
    default_pools[dev].used = default_pools[dev].reserved = 0;
    for (size_t i = 0; i < ncreated; i++)
        if (created[i]->dev == dev) created[i]->used = created[i]->reserved = 0;
    pthread_mutex_unlock(&pool_mtx);
}

static int valid_device(int dev) { return dev >= 0 && dev < fc_ndevices; }

/* What farcuda refuses, and why: one line per reason and process; returns `status`. */
enum { REFUSE_CAPTURE, REFUSE_HOST, REFUSE_MANAGED, REFUSE_IPC, REFUSE_DECOMPRESS,
       REFUSE_PEER, REFUSE_COUNT };
static int refused[REFUSE_COUNT];

__attribute__((format(printf, 3, 4)))
static int refuse(int reason, int status, const char *fmt, ...) {
    if (!__atomic_exchange_n(&refused[reason], 1, __ATOMIC_ACQ_REL)) {
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        fc_log("%s (returns %s)", msg, status == cudaErrorNotSupported ?
               "cudaErrorNotSupported" : "cudaErrorStreamCaptureUnsupported");
    }
    return status;
}

static int refuse_capture(const char *fn) {
    return refuse(REFUSE_CAPTURE, cudaErrorStreamCaptureUnsupported, "%s: stream-ordered "
                  "allocation in a capturing stream (graph memory nodes) is not supported by "
                  "farcuda", fn);
}

/* ---------------- stream-ordered allocation ---------------- */

int fc_malloc_async(void **ptr, size_t size, const void *pool_handle, int from_pool,
                    cudaStream_t stream, int ptds) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!ptr) return cudaErrorInvalidValue;
    fc_pool *pool = NULL;
    int sdev = fc_current_device();
    if (from_pool) {
        pthread_mutex_lock(&pool_mtx);
        pool = pool_lookup(pool_handle);
        pthread_mutex_unlock(&pool_mtx);
        if (!pool) return cudaErrorInvalidValue;
        sdev = pool->dev; /* a default stream: the pool's device's */
    }
    uint32_t sid;
    if ((st = fc_stream_resolve(stream, ptds, &sdev, &sid))) return st;
    if (!pool) { /* the current pool of the stream's device */
        pthread_mutex_lock(&pool_mtx);
        pool = current_pool_locked(sdev);
        pthread_mutex_unlock(&pool_mtx);
    }
    int dev = pool->dev;
    if ((st = fc_device_ready(dev))) return st;
    if (fc_capture_of(stream, ptds, sdev))
        return refuse_capture(from_pool ? "cudaMallocFromPoolAsync" : "cudaMallocAsync");
    if (size == 0) {
        *ptr = NULL;
        return cudaSuccess;
    }
    pthread_mutex_lock(&pool_mtx);
    int over = pool->max_size && (size > pool->max_size || pool->reserved > pool->max_size - size);
    pthread_mutex_unlock(&pool_mtx);
    if (over) return cudaErrorMemoryAllocation;
    /* The allocation is made now (it needs no stream order: nothing in the stream can touch
     * it before this call returns); the stream travels for the record. */
    fc_MALLOC_ASYNC m = {size, dev == sdev ? sid : 0};
    fc_MALLOC_ASYNC_reply rep = {0};
    st = fc_call_dev(dev, FC_OP_MALLOC_ASYNC, &m, sizeof m, &rep, sizeof rep);
    if (st) return fc_sync_status(dev, st);
    fc_range rg = {rep.ptr, size, dev, FC_RANGE_ASYNC, 0, 0, pool, rep.used, rep.reserved};
    if (fcc_range_insert(&rg)) {
        fc_log("cudaMallocAsync: the server returned 0x%llx, which overlaps memory already "
               "known; refusing it", (unsigned long long)rep.ptr);
        return cudaErrorMemoryAllocation;
    }
    pthread_mutex_lock(&pool_mtx);
    account(pool, rep.used, rep.reserved);
    pthread_mutex_unlock(&pool_mtx);
    *ptr = (void *)(uintptr_t)rep.ptr;
    return cudaSuccess;
}

/* Free in the stream's order, without waiting: the daemon frees when the stream gets there,
 * so work queued before it still sees the memory; errors surface at a later call. Memory
 * from cudaMalloc may be freed this way too, as in CUDA. */
int fc_free_async(void *ptr, cudaStream_t stream, int ptds) {
    int st = fc_ensure_init();
    if (st) return st;
    uint64_t p = (uint64_t)(uintptr_t)ptr;
    fc_range rg;
    if (!ptr || fcc_range_find(p, 1, &rg) || rg.base != p ||
        (rg.kind != FC_RANGE_DEVICE && rg.kind != FC_RANGE_ASYNC))
        return cudaErrorInvalidValue;
    int sdev = rg.dev; /* a default stream: the memory's device's, as for copies */
    uint32_t sid;
    if ((st = fc_stream_resolve(stream, ptds, &sdev, &sid))) return st;
    if ((st = fc_device_ready(rg.dev))) return st;
    if (sdev != rg.dev && (st = fc_device_ready(sdev))) return st;
    if (fc_capture_of(stream, ptds, sdev)) return refuse_capture("cudaFreeAsync");
    /* Forget it first: once the daemon frees it, the address may come back to anyone. */
    if (fcc_range_remove(p, rg.kind, NULL)) return cudaErrorInvalidValue; /* freed meanwhile */
    fc_pool_release(&rg);
    int fdev = sdev;
    if (fc_devices[sdev].server != fc_devices[rg.dev].server) {
        /* The stream lives on another server, whose order the memory's server cannot see:
         * wait for the stream here, then free in the order of the memory's device. */
        fc_STREAM_SYNC w = {sid};
        st = fc_sync_status(sdev, fc_call_dev(sdev, FC_OP_STREAM_SYNC, &w, sizeof w, NULL, 0));
        fdev = rg.dev;
        sid = 0;
    }
    fc_FREE_ASYNC m = {p, sid};
    fc_conn *c = fc_dev_conn(fdev);
    if (c->dead) return c->dead_status;
    char *q = fc_post_begin(c, FC_OP_FREE_ASYNC, (uint16_t)fdev, sizeof m);
    if (!q) return cudaErrorMemoryAllocation;
    fc_FREE_ASYNC_set_mem_vdev((fc_hdr *)q - 1, (uint16_t)rg.dev);
    memcpy(q, &m, sizeof m);
    fc_post_commit(c);
    return st ? st : fc_device_status(fdev);
}

/* ---------------- pools of a device ---------------- */

int fc_device_pool(void **out, int dev, int current) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!out) return cudaErrorInvalidValue;
    if (!valid_device(dev)) return cudaErrorInvalidDevice;
    pthread_mutex_lock(&pool_mtx);
    *out = current ? current_pool_locked(dev) : default_pool_locked(dev);
    pthread_mutex_unlock(&pool_mtx);
    return cudaSuccess;
}

int fc_set_device_pool(int dev, void *handle) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!valid_device(dev)) return cudaErrorInvalidDevice;
    pthread_mutex_lock(&pool_mtx);
    fc_pool *p = pool_lookup(handle);
    if (p && p->dev == dev) current_pools[dev] = p->is_default ? NULL : p;
    pthread_mutex_unlock(&pool_mtx);
    return p && p->dev == dev ? cudaSuccess : cudaErrorInvalidValue; /* a pool of this device */
}

/* The device a (location, allocation type) of the cudaMem*MemPool calls names. */
static int location_device(const struct fc_mem_location *loc, int type, int *dev,
                           const char *fn) {
    if (!loc) return cudaErrorInvalidValue;
    if (type == ALLOC_MANAGED)
        return refuse(REFUSE_MANAGED, cudaErrorNotSupported, "%s: managed memory pools are not "
                      "supported by farcuda", fn);
    if (type != ALLOC_PINNED) return cudaErrorInvalidValue;
    if (loc->type == LOC_HOST || loc->type == LOC_HOST_NUMA)
        return refuse(REFUSE_HOST, cudaErrorNotSupported, "%s: pools of host memory are not "
                      "supported by farcuda: the GPU is remote", fn);
    if (loc->type != LOC_DEVICE) return cudaErrorInvalidValue;
    if (!valid_device(loc->id)) return cudaErrorInvalidDevice;
    *dev = loc->id;
    return cudaSuccess;
}

int fc_mem_get_pool(void **out, const struct fc_mem_location *loc, int type, int current,
                    const char *fn) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!out) return cudaErrorInvalidValue;
    int dev;
    if ((st = location_device(loc, type, &dev, fn))) return st;
    return fc_device_pool(out, dev, current);
}

int fc_mem_set_pool(struct fc_mem_location *location, int type, void *pool) {
    int st = fc_ensure_init();
    if (st) return st;
    int dev;
    if ((st = location_device(location, type, &dev, "cudaMemSetMemPool"))) return st;
    return fc_set_device_pool(dev, pool);
}

/* ---------------- creating and destroying pools ---------------- */

int fc_pool_create(void **out, const struct fc_mem_pool_props *props) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!out || !props) return cudaErrorInvalidValue;
    for (size_t i = 0; i < sizeof props->reserved; i++)
        if (props->reserved[i]) return cudaErrorInvalidValue;
    if (props->win32SecurityAttributes) return cudaErrorInvalidValue;
    if (props->usage & ~USAGE_HW_DECOMPRESS) return cudaErrorInvalidValue;
    int dev;
    if ((st = location_device(&props->location, props->allocType, &dev, "cudaMemPoolCreate")))
        return st;
    if (props->handleTypes)
        return refuse(REFUSE_IPC, cudaErrorNotSupported, "cudaMemPoolCreate: pools with "
                      "shareable (IPC) handle types are not supported by farcuda");
    if (props->usage)
        return refuse(REFUSE_DECOMPRESS, cudaErrorNotSupported, "cudaMemPoolCreate: pools for "
                      "hardware decompression are not supported by farcuda");
    fc_pool *p = malloc(sizeof *p);
    if (!p) return cudaErrorMemoryAllocation;
    pool_init(p, dev, 0);
    p->max_size = props->maxSize;
    pthread_mutex_lock(&pool_mtx);
    if (ncreated == cap_created) {
        size_t cap = cap_created ? cap_created * 2 : 16;
        fc_pool **v = realloc(created, cap * sizeof *v);
        if (!v) {
            pthread_mutex_unlock(&pool_mtx);
            free(p);
            return cudaErrorMemoryAllocation;
        }
        created = v;
        cap_created = cap;
    }
    created[ncreated++] = p;
    pthread_mutex_unlock(&pool_mtx);
    *out = p;
    return cudaSuccess;
}

/* Allocations still out keep their pool's record (the struct is never freed) and are freed as
 * usual; the device's current pool falls back to its default one, as in CUDA. */
int fc_pool_destroy(void *pool) {
    int st = fc_ensure_init();
    if (st) return st;
    pthread_mutex_lock(&pool_mtx);
    fc_pool *p = pool_lookup(pool);
    if (p && !p->is_default) {
        p->magic = FC_POOL_DEAD;
        if (current_pools[p->dev] == p) current_pools[p->dev] = NULL;
    }
    pthread_mutex_unlock(&pool_mtx);
    /* a default pool cannot be destroyed */
    return p && !p->is_default ? cudaSuccess : cudaErrorInvalidValue;
}

/* The daemon gives freed memory back at once: there is never anything cached to trim. */
int fc_pool_trim(void *pool, size_t minBytesToKeep) {
    (void)minBytesToKeep;
    int st = fc_ensure_init();
    if (st) return st;
    pthread_mutex_lock(&pool_mtx);
    fc_pool *p = pool_lookup(pool);
    pthread_mutex_unlock(&pool_mtx);
    return p ? cudaSuccess : cudaErrorInvalidValue;
}

/* ---------------- attributes ---------------- */

int fc_pool_set_attr(void *pool, int attr, const void *value) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!value) return cudaErrorInvalidValue;
    pthread_mutex_lock(&pool_mtx);
    fc_pool *p = pool_lookup(pool);
    st = p ? cudaSuccess : cudaErrorInvalidValue;
    if (p) {
        switch (attr) {
        case ATTR_REUSE_FOLLOW: case ATTR_REUSE_OPPORTUNISTIC: case ATTR_REUSE_INTERNAL:
            /* kept and reported; every free is reused as soon as it happened anyway */
            p->reuse[attr - ATTR_REUSE_FOLLOW] = *(const int *)value;
            break;
        case ATTR_RELEASE_THRESHOLD:
            /* kept and reported; nothing is held to release (see the top of this file) */
            p->release_threshold = *(const uint64_t *)value;
            break;
        case ATTR_RESERVED_HIGH: /* high watermarks can only be reset, to the current value */
            if (*(const uint64_t *)value) st = cudaErrorInvalidValue;
            else p->reserved_high = p->reserved;
            break;
        case ATTR_USED_HIGH:
            if (*(const uint64_t *)value) st = cudaErrorInvalidValue;
            else p->used_high = p->used;
            break;
        default: /* the current amounts are read-only */
            st = cudaErrorInvalidValue;
        }
    }
    pthread_mutex_unlock(&pool_mtx);
    return st;
}

int fc_pool_get_attr(void *pool, int attr, void *value) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!value) return cudaErrorInvalidValue;
    pthread_mutex_lock(&pool_mtx);
    fc_pool *p = pool_lookup(pool);
    st = p ? cudaSuccess : cudaErrorInvalidValue;
    if (p) {
        switch (attr) {
        case ATTR_REUSE_FOLLOW: case ATTR_REUSE_OPPORTUNISTIC: case ATTR_REUSE_INTERNAL:
            *(int *)value = p->reuse[attr - ATTR_REUSE_FOLLOW];
            break;
        case ATTR_RELEASE_THRESHOLD: *(uint64_t *)value = p->release_threshold; break;
        case ATTR_RESERVED_CURRENT: *(uint64_t *)value = p->reserved; break;
        case ATTR_RESERVED_HIGH: *(uint64_t *)value = p->reserved_high; break;
        case ATTR_USED_CURRENT: *(uint64_t *)value = p->used; break;
        case ATTR_USED_HIGH: *(uint64_t *)value = p->used_high; break;
        default: st = cudaErrorInvalidValue;
        }
    }
    pthread_mutex_unlock(&pool_mtx);
    return st;
}

/* ---------------- access from other devices ---------------- */

/* The owning device always has read/write access. Another virtual device can reach a pool's
 * memory only when it is the same GPU of the same server (the same daemon session maps it for
 * that GPU): such access is granted and recorded; any other is refused, never pretended. */
static int same_gpu(int a, int b) {
    return fc_devices[a].server == fc_devices[b].server && fc_devices[a].gpu == fc_devices[b].gpu;
}

int fc_pool_set_access(void *pool, const struct fc_mem_access_desc *descs, size_t count) {
    int st = fc_ensure_init();
    if (st) return st;
    if (count && !descs) return cudaErrorInvalidValue;
    pthread_mutex_lock(&pool_mtx);
    fc_pool *p = pool_lookup(pool);
    int dev = p ? p->dev : -1;
    pthread_mutex_unlock(&pool_mtx);
    if (!p) return cudaErrorInvalidValue;
    for (size_t i = 0; i < count; i++) { /* all or nothing: check every descriptor first */
        const struct fc_mem_access_desc *d = &descs[i];
        int f = d->flags;
        if (d->location.type != LOC_DEVICE) return cudaErrorInvalidValue;
        if (!valid_device(d->location.id)) return cudaErrorInvalidDevice;
        if (f != ACCESS_NONE && f != ACCESS_READ && f != ACCESS_READ_WRITE)
            return cudaErrorInvalidValue;
        if (d->location.id == dev) { /* the owner's access cannot change (CUDA's answer) */
            if (f != ACCESS_READ_WRITE) return cudaErrorInvalidDevice;
        } else if (f != ACCESS_NONE && !same_gpu(dev, d->location.id)) {
            return refuse(REFUSE_PEER, cudaErrorNotSupported, "cudaMemPoolSetAccess: access to "
                          "a pool's memory from another GPU is not supported by farcuda");
        }
    }
    pthread_mutex_lock(&pool_mtx);
    for (size_t i = 0; i < count; i++)
        if (descs[i].location.id != dev)
            p->access[descs[i].location.id] = (unsigned char)descs[i].flags;
    pthread_mutex_unlock(&pool_mtx);
    return cudaSuccess;
}

int fc_pool_get_access(int *flags, void *pool, const struct fc_mem_location *loc) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!flags || !loc) return cudaErrorInvalidValue;
    pthread_mutex_lock(&pool_mtx);
    fc_pool *p = pool_lookup(pool);
    int dev = p ? p->dev : -1, f = 0;
    if (p && loc->type == LOC_DEVICE && valid_device(loc->id))
        f = loc->id == dev ? ACCESS_READ_WRITE : p->access[loc->id];
    pthread_mutex_unlock(&pool_mtx);
    if (!p || loc->type != LOC_DEVICE) return cudaErrorInvalidValue;
    if (!valid_device(loc->id)) return cudaErrorInvalidDevice;
    *flags = f;
    return cudaSuccess;
}

