/* Memory pools of stream-ordered allocation, for every layer: a pool is a handle, its
 * attributes and its statistics, kept in the client (the same semantics as the runtime
 * shim's csrc/pools.c, whose callers move here when both layers share this core).
 *
 * The daemon places a stream-ordered allocation in the device's address window like any
 * other and says what it uses and what is mapped for it; it gives freed memory back at once,
 * so a pool never keeps memory of its own: its reserved bytes are what its live allocations
 * hold, and trimming has nothing to release. The CUDA runtime's and the driver's pool types
 * share one ABI (cudaMemPoolProps is CUmemPoolProps, the attribute and location numbers are
 * the same), and so do the status codes used here; `fn` names the caller's entry point in
 * the one line a refusal prints.
 *
 * Handles are never freed: a destroyed pool keeps a dead magic, and a handle passed in is
 * looked up before it is read, so a stale or made-up one is an invalid value, never a crash.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

#define POOL_MAGIC 0x4c4f4f50U
#define POOL_DEAD 0xdeadb001U

enum { ATTR_REUSE_FOLLOW = 1, ATTR_REUSE_OPPORTUNISTIC = 2, ATTR_REUSE_INTERNAL = 3,
       ATTR_RELEASE_THRESHOLD = 4, ATTR_RESERVED_CURRENT = 5, ATTR_RESERVED_HIGH = 6,
       ATTR_USED_CURRENT = 7, ATTR_USED_HIGH = 8 };
enum { LOC_DEVICE = 1, LOC_HOST = 2, LOC_HOST_NUMA = 3 };
enum { ALLOC_PINNED = 1, ALLOC_MANAGED = 2 };
enum { ACCESS_NONE = 0, ACCESS_READ = 1, ACCESS_READ_WRITE = 3 };
#define USAGE_HW_DECOMPRESS 0x2

struct mem_location { int type; int id; };
struct mem_access_desc { struct mem_location location; int flags; };
struct mem_pool_props {
    int allocType;
    int handleTypes;
    struct mem_location location;
    void *win32SecurityAttributes;
    size_t maxSize;
    unsigned short usage;
    unsigned char reserved[54];
};
_Static_assert(sizeof(struct mem_pool_props) == 88, "CUmemPoolProps is 88 bytes");

struct fc_pool {
    uint32_t magic;
    int dev;
    int is_default;
    int reuse[3];
    uint64_t release_threshold;
    uint64_t max_size;
    uint64_t used, used_high, reserved, reserved_high;
    unsigned char access[FC_MAX_DEVICES];
};

static pthread_mutex_t pool_mtx = PTHREAD_MUTEX_INITIALIZER;
static fc_pool default_pools[FC_MAX_DEVICES];
static fc_pool *current_pools[FC_MAX_DEVICES];
static fc_pool **created;
static size_t ncreated, cap_created;

static void pool_init(fc_pool *p, int dev, int is_default) {
    memset(p, 0, sizeof *p);
    p->magic = POOL_MAGIC;
    p->dev = dev;
    p->is_default = is_default;
    for (int i = 0; i < 3; i++) p->reuse[i] = 1;
}

static fc_pool *default_pool_locked(int dev) {
    fc_pool *p = &default_pools[dev];
    if (p->magic != POOL_MAGIC) pool_init(p, dev, 1);
    return p;
}

static fc_pool *current_pool_locked(int dev) {
    return current_pools[dev] ? current_pools[dev] : default_pool_locked(dev);
}

static fc_pool *lookup_locked(const void *handle) {
    uintptr_t h = (uintptr_t)handle, first = (uintptr_t)default_pools;
    if (h >= first && h < first + sizeof default_pools) {
        if ((h - first) % sizeof(fc_pool)) return NULL;
        fc_pool *p = (fc_pool *)handle;
        return p->magic == POOL_MAGIC ? p : NULL;
    }
    for (size_t i = 0; i < ncreated; i++)
        if ((uintptr_t)created[i] == h)
            return created[i]->magic == POOL_MAGIC ? created[i] : NULL;
    return NULL;
}

static int valid_device(int dev) { return dev >= 0 && dev < fcc_device_count(); }

enum { REFUSE_HOST, REFUSE_MANAGED, REFUSE_IPC, REFUSE_DECOMPRESS, REFUSE_PEER, REFUSE_COUNT };
static int refused[REFUSE_COUNT];

__attribute__((format(printf, 3, 4)))
static int refuse(int reason, const char *fn, const char *fmt, ...) {
    if (!__atomic_exchange_n(&refused[reason], 1, __ATOMIC_ACQ_REL)) {
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        fcc_log("%s: %s (returns %s)", fn, msg,
                strncmp(fn, "cuda", 4) ? "CUDA_ERROR_NOT_SUPPORTED" : "cudaErrorNotSupported");
    }
    return cudaErrorNotSupported;
}

/* ---------------- the pools of a device ---------------- */

int fcc_pool_of_device(int dev, int current, void **out) {
    int st = fcc_init();
    if (st) return st;
    if (!out) return cudaErrorInvalidValue;
    if (!valid_device(dev)) return cudaErrorInvalidDevice;
    pthread_mutex_lock(&pool_mtx);
    *out = current ? current_pool_locked(dev) : default_pool_locked(dev);
    pthread_mutex_unlock(&pool_mtx);
    return cudaSuccess;
}

int fcc_pool_set_device(int dev, void *handle) {
    int st = fcc_init();
    if (st) return st;
    if (!valid_device(dev)) return cudaErrorInvalidDevice;
    pthread_mutex_lock(&pool_mtx);
    fc_pool *p = lookup_locked(handle);
    int ok = p && p->dev == dev;
    if (ok) current_pools[dev] = p->is_default ? NULL : p;
    pthread_mutex_unlock(&pool_mtx);
    return ok ? cudaSuccess : cudaErrorInvalidValue;
}

int fcc_pool_location(const void *location, int type, int *dev, const char *fn) {
    const struct mem_location *loc = location;
    if (!loc) return cudaErrorInvalidValue;
    if (type == ALLOC_MANAGED) return refuse(REFUSE_MANAGED, fn, "managed memory pools are not "
                                             "supported by farcuda");
    if (type != ALLOC_PINNED) return cudaErrorInvalidValue;
    if (loc->type == LOC_HOST || loc->type == LOC_HOST_NUMA)
        return refuse(REFUSE_HOST, fn, "pools of host memory are not supported by farcuda: the "
                      "GPU is remote");
    if (loc->type != LOC_DEVICE) return cudaErrorInvalidValue;
    if (!valid_device(loc->id)) return cudaErrorInvalidDevice;
    *dev = loc->id;
    return cudaSuccess;
}

/* ---------------- creating and destroying ---------------- */

int fcc_pool_create(void **out, const void *properties, const char *fn) {
    int st = fcc_init();
    if (st) return st;
    const struct mem_pool_props *props = properties;
    if (!out || !props) return cudaErrorInvalidValue;
    for (size_t i = 0; i < sizeof props->reserved; i++)
        if (props->reserved[i]) return cudaErrorInvalidValue;
    if (props->win32SecurityAttributes || (props->usage & ~USAGE_HW_DECOMPRESS))
        return cudaErrorInvalidValue;
    int dev;
    if ((st = fcc_pool_location(&props->location, props->allocType, &dev, fn))) return st;
    if (props->handleTypes)
        return refuse(REFUSE_IPC, fn, "pools with shareable (IPC) handle types are not "
                      "supported by farcuda");
    if (props->usage)
        return refuse(REFUSE_DECOMPRESS, fn, "pools for hardware decompression are not "
                      "supported by farcuda");
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

/* Allocations still out keep their pool's record and are freed as usual; the device's
 * current pool falls back to its default one, as in CUDA. A default pool cannot go. */
int fcc_pool_destroy(void *handle) {
    int st = fcc_init();
    if (st) return st;
    pthread_mutex_lock(&pool_mtx);
    fc_pool *p = lookup_locked(handle);
    int ok = p && !p->is_default;
    if (ok) {
        p->magic = POOL_DEAD;
        if (current_pools[p->dev] == p) current_pools[p->dev] = NULL;
    }
    pthread_mutex_unlock(&pool_mtx);
    return ok ? cudaSuccess : cudaErrorInvalidValue;
}

int fcc_pool_trim(void *handle) {
    int st = fcc_init();
    if (st) return st;
    pthread_mutex_lock(&pool_mtx);
    fc_pool *p = lookup_locked(handle);
    pthread_mutex_unlock(&pool_mtx);
    return p ? cudaSuccess : cudaErrorInvalidValue; /* nothing is ever cached to trim */
}

/* ---------------- attributes ---------------- */

int fcc_pool_set_attr(void *handle, int attr, const void *value) {
    int st = fcc_init();
    if (st) return st;
    if (!value) return cudaErrorInvalidValue;
    pthread_mutex_lock(&pool_mtx);
    fc_pool *p = lookup_locked(handle);
    st = p ? cudaSuccess : cudaErrorInvalidValue;
    if (p) {
        switch (attr) {
        case ATTR_REUSE_FOLLOW: case ATTR_REUSE_OPPORTUNISTIC: case ATTR_REUSE_INTERNAL:
            p->reuse[attr - ATTR_REUSE_FOLLOW] = *(const int *)value; /* kept and reported */
            break;
        case ATTR_RELEASE_THRESHOLD:
            p->release_threshold = *(const uint64_t *)value; /* nothing is held to release */
            break;
        case ATTR_RESERVED_HIGH: /* high watermarks are reset only, to the current value */
            if (*(const uint64_t *)value) st = cudaErrorInvalidValue;
            else p->reserved_high = p->reserved;
            break;
        case ATTR_USED_HIGH:
            if (*(const uint64_t *)value) st = cudaErrorInvalidValue;
            else p->used_high = p->used;
            break;
        default:
            st = cudaErrorInvalidValue;
        }
    }
    pthread_mutex_unlock(&pool_mtx);
    return st;
}

int fcc_pool_get_attr(void *handle, int attr, void *value) {
    int st = fcc_init();
    if (st) return st;
    if (!value) return cudaErrorInvalidValue;
    pthread_mutex_lock(&pool_mtx);
    fc_pool *p = lookup_locked(handle);
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

static int same_gpu(int a, int b) {
    return fc_devices[a].server == fc_devices[b].server && fc_devices[a].gpu == fc_devices[b].gpu;
}

int fcc_pool_set_access(void *handle, const void *descriptors, size_t count, const char *fn) {
    int st = fcc_init();
    if (st) return st;
    const struct mem_access_desc *descs = descriptors;
    if (count && !descs) return cudaErrorInvalidValue;
    pthread_mutex_lock(&pool_mtx);
    fc_pool *p = lookup_locked(handle);
    int dev = p ? p->dev : -1;
    pthread_mutex_unlock(&pool_mtx);
    if (!p) return cudaErrorInvalidValue;
    for (size_t i = 0; i < count; i++) { /* all or nothing: every descriptor checked first */
        int f = descs[i].flags, id = descs[i].location.id;
        if (descs[i].location.type != LOC_DEVICE) return cudaErrorInvalidValue;
        if (!valid_device(id)) return cudaErrorInvalidDevice;
        if (f != ACCESS_NONE && f != ACCESS_READ && f != ACCESS_READ_WRITE)
            return cudaErrorInvalidValue;
        if (id == dev) {
            if (f != ACCESS_READ_WRITE) return cudaErrorInvalidDevice;
        } else if (f != ACCESS_NONE && !same_gpu(dev, id)) {
            return refuse(REFUSE_PEER, fn, "access to a pool's memory from another GPU is not "
                          "supported by farcuda");
        }
    }
    pthread_mutex_lock(&pool_mtx);
    for (size_t i = 0; i < count; i++)
        if (descs[i].location.id != dev)
            p->access[descs[i].location.id] = (unsigned char)descs[i].flags;
    pthread_mutex_unlock(&pool_mtx);
    return cudaSuccess;
}

int fcc_pool_get_access(int *flags, void *handle, const void *location) {
    int st = fcc_init();
    if (st) return st;
    const struct mem_location *loc = location;
    if (!flags || !loc) return cudaErrorInvalidValue;
    pthread_mutex_lock(&pool_mtx);
    fc_pool *p = lookup_locked(handle);
    int dev = p ? p->dev : -1, f = 0;
    if (p && loc->type == LOC_DEVICE && valid_device(loc->id))
        f = loc->id == dev ? ACCESS_READ_WRITE : p->access[loc->id];
    pthread_mutex_unlock(&pool_mtx);
    if (!p || loc->type != LOC_DEVICE) return cudaErrorInvalidValue;
    if (!valid_device(loc->id)) return cudaErrorInvalidDevice;
    *flags = f;
    return cudaSuccess;
}

/* ---------------- allocations ---------------- */

/* The pool an allocation comes from (NULL handle: the current pool of `dev`), checked
 * against its size limit; *dev is the pool's device on return. */
int fcc_pool_for_alloc(void *handle, int *dev, size_t size, fc_pool **out) {
    pthread_mutex_lock(&pool_mtx);
    fc_pool *p = handle ? lookup_locked(handle) : current_pool_locked(*dev);
    int over = p && p->max_size && (size > p->max_size || p->reserved > p->max_size - size);
    pthread_mutex_unlock(&pool_mtx);
    if (!p) return cudaErrorInvalidValue;
    if (over) return cudaErrorMemoryAllocation;
    *dev = p->dev;
    *out = p;
    return cudaSuccess;
}

void fcc_pool_account(fc_pool *p, uint64_t used, uint64_t reserved) {
    pthread_mutex_lock(&pool_mtx);
    p->used += used;
    p->reserved += reserved;
    if (p->used > p->used_high) p->used_high = p->used;
    if (p->reserved > p->reserved_high) p->reserved_high = p->reserved;
    pthread_mutex_unlock(&pool_mtx);
}

void fcc_pool_release(const fc_range *r) {
    if (!r->pool) return;
    pthread_mutex_lock(&pool_mtx);
    fc_pool *p = r->pool;
    p->used -= r->used < p->used ? r->used : p->used;
    p->reserved -= r->reserved < p->reserved ? r->reserved : p->reserved;
    pthread_mutex_unlock(&pool_mtx);
}

void fcc_pools_reset_device(int dev) {
    pthread_mutex_lock(&pool_mtx);
    default_pools[dev].used = default_pools[dev].reserved = 0;
    for (size_t i = 0; i < ncreated; i++)
        if (created[i]->dev == dev) created[i]->used = created[i]->reserved = 0;
    pthread_mutex_unlock(&pool_mtx);
}
