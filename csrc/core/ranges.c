/* A layer's tables of device and host memory, and the address windows of the virtual devices
 * (ranges.h). The runtime shim and the client core are each built with this file and keep a
 * table each; when both are loaded they ask each other about pointers they do not know.
 *
 * Device pointers are the daemon's real device addresses. Each virtual device allocates inside
 * its own address window, which the client reserves in its own address space with PROT_NONE
 * (no host allocation can ever land there) and the daemon maps at the same addresses, so a
 * pointer says by itself whether it is device memory and of which virtual device. The tables
 * are sorted arrays under one reader-writer lock: lookups (every copy, every launch with
 * mapped memory about) far outnumber changes.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "ranges.h"
#include "../runtime.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

typedef struct {
    fc_range *v;
    size_t n, cap;
} range_table;

static range_table dev_ranges, host_ranges;
static pthread_rwlock_t ranges_lock = PTHREAD_RWLOCK_INITIALIZER;

/* Mapped (zero-copy) host memory the app holds: while there is any, launches look for it in
 * their pointer arguments (with unified addressing a program may pass such a host pointer to
 * a kernel directly, which a remote GPU could only fault on). Counted as the host table
 * changes. */
static int mapped_count;

static range_table *table_for(int kind) {
    return kind == FC_RANGE_HOST ? &host_ranges : &dev_ranges;
}

/* index of the last range with base <= p, or -1 */
static ptrdiff_t lower(const range_table *t, uint64_t p) {
    ptrdiff_t lo = 0, hi = (ptrdiff_t)t->n - 1, ans = -1;
    while (lo <= hi) {
        ptrdiff_t mid = (lo + hi) / 2;
        if (t->v[mid].base <= p) {
            ans = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    return ans;
}

int fcc_range_add(uint64_t base, uint64_t size, int dev, int kind, unsigned int flags) {
    fc_range r = {base, size, dev, kind, flags, 0, NULL, 0, 0};
    return fcc_range_insert(&r);
}

int fcc_range_insert(const fc_range *rp) {
    fc_range r = *rp;
    uint64_t base = r.base, size = r.size;
    int kind = r.kind;
    range_table *t = table_for(kind);
    pthread_rwlock_wrlock(&ranges_lock);
    ptrdiff_t i = lower(t, base);
    if ((i >= 0 && t->v[i].base + t->v[i].size > base) ||
        ((size_t)(i + 1) < t->n && t->v[i + 1].base < base + (size ? size : 1))) {
        int same_symbol = i >= 0 && t->v[i].base == base && kind == FC_RANGE_SYMBOL &&
                          t->v[i].kind == FC_RANGE_SYMBOL;
        pthread_rwlock_unlock(&ranges_lock);
        return same_symbol ? 0 : -1; /* a global seen again (another module load) is fine */
    }
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        fc_range *v = realloc(t->v, cap * sizeof *v);
        if (!v) {
            pthread_rwlock_unlock(&ranges_lock);
            return -2;
        }
        t->v = v;
        t->cap = cap;
    }
    memmove(&t->v[i + 2], &t->v[i + 1], (t->n - (size_t)(i + 1)) * sizeof *t->v);
    t->v[i + 1] = r;
    t->n++;
    if (kind == FC_RANGE_HOST && (r.flags & FC_HOST_MAPPED))
        __atomic_add_fetch(&mapped_count, 1, __ATOMIC_ACQ_REL);
    pthread_rwlock_unlock(&ranges_lock);
    return 0;
}

int fcc_range_remove(uint64_t base, int kind, fc_range *out) {
    range_table *t = table_for(kind);
    pthread_rwlock_wrlock(&ranges_lock);
    ptrdiff_t i = lower(t, base);
    if (i < 0 || t->v[i].base != base || (kind != FC_RANGE_HOST && t->v[i].kind != kind)) {
        pthread_rwlock_unlock(&ranges_lock);
        return -1;
    }
    if (out) *out = t->v[i];
    if (kind == FC_RANGE_HOST && (t->v[i].flags & FC_HOST_MAPPED))
        __atomic_sub_fetch(&mapped_count, 1, __ATOMIC_ACQ_REL);
    memmove(&t->v[i], &t->v[i + 1], (t->n - (size_t)i - 1) * sizeof *t->v);
    t->n--;
    pthread_rwlock_unlock(&ranges_lock);
    return 0;
}

/* this layer's own ranges only */
int fcc_range_find_own(uint64_t p, int want_device, fc_range *out) {
    range_table *t = want_device ? &dev_ranges : &host_ranges;
    pthread_rwlock_rdlock(&ranges_lock);
    ptrdiff_t i = lower(t, p);
    int found = i >= 0 && p < t->v[i].base + (t->v[i].size ? t->v[i].size : 1);
    if (found && out) *out = t->v[i];
    pthread_rwlock_unlock(&ranges_lock);
    return found ? 0 : -1;
}

/* The memory of the other layer of the process, when both share one session: found, and
 * valid on the wire (one session, one window per device), but freed only by the layer that
 * allocated it (its pool is not this layer's to look at). */
static int (*_Atomic other_find)(uint64_t p, int want_device, fc_range *out);

void fcc_ranges_join(int (*find)(uint64_t p, int want_device, fc_range *out)) {
    other_find = find;
}

int fcc_range_find(uint64_t p, int want_device, fc_range *out) {
    if (fcc_range_find_own(p, want_device, out) == 0) return 0;
    int (*find)(uint64_t, int, fc_range *) = other_find;
    fc_range r;
    if (!find || find(p, want_device, &r)) return -1;
    r.pool = NULL;
    r.used = r.reserved = 0;
    if (out) *out = r;
    return 0;
}

int fcc_mapped_pointer(uint64_t v) {
    if (!__atomic_load_n(&mapped_count, __ATOMIC_ACQUIRE)) return 0;
    fc_range r;
    return fcc_range_find(v, 0, &r) == 0 && (r.flags & FC_HOST_MAPPED);
}

/* A device's memory is gone (its context was reset): forget every range of it. */
void fcc_range_drop_device(int dev) {
    pthread_rwlock_wrlock(&ranges_lock);
    size_t k = 0;
    for (size_t i = 0; i < dev_ranges.n; i++)
        if (dev_ranges.v[i].dev != dev) dev_ranges.v[k++] = dev_ranges.v[i];
    dev_ranges.n = k;
    pthread_rwlock_unlock(&ranges_lock);
}

#define WINDOW_FIRST 0x200000000000ULL /* 32 TiB: far from the heap, the binary and mmap */
#define WINDOW_STRIDE 0x4000000000ULL  /* 256 GiB per slot */

int fcc_window_reserve(int dev, uint64_t size, uint64_t *base) {
    if (size > WINDOW_STRIDE) size = WINDOW_STRIDE;
    for (int slot = 0; slot < 256; slot++) {
        uint64_t want = WINDOW_FIRST + (uint64_t)slot * WINDOW_STRIDE;
        void *p = mmap((void *)want, size, PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
        if (p == MAP_FAILED) continue;
        if ((uint64_t)p != want) { /* old kernels ignore MAP_FIXED_NOREPLACE: treat as taken */
            munmap(p, size);
            continue;
        }
        fc_devices[dev].win_base = want;
        fc_devices[dev].win_size = size;
        *base = want;
        return 0;
    }
    return -1;
}

/* The daemon could not map at our window and chose another base: reserve that one instead. */
int fcc_window_adopt(int dev, uint64_t base, uint64_t size) {
    fc_device *d = &fc_devices[dev];
    if (d->win_base == base && d->win_size == size) return 0;
    if (d->win_size) munmap((void *)d->win_base, d->win_size);
    d->win_base = d->win_size = 0;
    void *p = mmap((void *)base, size, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
    if (p == MAP_FAILED || (uint64_t)p != base) {
        if (p != MAP_FAILED) munmap(p, size);
        return -1;
    }
    d->win_base = base;
    d->win_size = size;
    return 0;
}
