/* The live handles this stand-in gave out. A handle is checked here before it is
 * dereferenced: programs and the runtime pass stale or made-up ones on purpose (cudart probes
 * cuCtxGetApiVersion with invalid contexts and expects CUDA_ERROR_INVALID_CONTEXT), and an
 * answer must never be a crash. Open addressing over the pointer values. */
#include <stdlib.h>

#include "fcd.h"

static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
static uintptr_t *slots;
static size_t cap, used, tombs;
#define TOMB ((uintptr_t)1)

static size_t hash(uintptr_t p) { return (size_t)((p >> 4) * 0x9E3779B97F4A7C15ULL); }

static void put(uintptr_t *s, size_t c, uintptr_t p) {
    for (size_t i = hash(p) & (c - 1);; i = (i + 1) & (c - 1))
        if (s[i] == 0 || s[i] == TOMB) {
            s[i] = p;
            return;
        }
}

void fcd_handle_add(const void *h) {
    pthread_rwlock_wrlock(&lock);
    if ((used + tombs + 1) * 2 > cap) {
        size_t nc = cap ? cap * 2 : 1024;
        while ((used + 1) * 2 > nc) nc *= 2;
        uintptr_t *ns = calloc(nc, sizeof *ns);
        if (!ns) {
            pthread_rwlock_unlock(&lock);
            return;
        }
        for (size_t i = 0; i < cap; i++)
            if (slots[i] > TOMB) put(ns, nc, slots[i]);
        free(slots);
        slots = ns;
        cap = nc;
        tombs = 0;
    }
    put(slots, cap, (uintptr_t)h);
    used++;
    pthread_rwlock_unlock(&lock);
}

static ptrdiff_t find(uintptr_t p) {
    if (!cap || p <= TOMB) return -1;
    for (size_t i = hash(p) & (cap - 1);; i = (i + 1) & (cap - 1)) {
        if (slots[i] == p) return (ptrdiff_t)i;
        if (slots[i] == 0) return -1;
    }
}

void fcd_handle_del(const void *h) {
    pthread_rwlock_wrlock(&lock);
    ptrdiff_t i = find((uintptr_t)h);
    if (i >= 0) {
        slots[i] = TOMB;
        used--;
        tombs++;
    }
    pthread_rwlock_unlock(&lock);
}

int fcd_handle_live(const void *h, uint32_t magic) {
    pthread_rwlock_rdlock(&lock);
    int live = find((uintptr_t)h) >= 0 && *(const uint32_t *)h == magic;
    pthread_rwlock_unlock(&lock);
    return live;
}
