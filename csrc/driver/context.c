/* Contexts: one primary context per virtual device (its context on the server), contexts made
 * with cuCtxCreate, the per-thread context stack, and the context-local storage the runtime
 * keeps its per-context state in.
 *
 * A virtual device has one context on the server. A context made with cuCtxCreate is a
 * handle of its own on this side (flags, storage, current-ness) over that same server
 * context: memory, modules and streams made in it belong to the device, as they would with a
 * shared address space. As in CUDA, the driver API makes no context current by itself: a call
 * that needs one fails with CUDA_ERROR_INVALID_CONTEXT until the program (or the runtime)
 * makes one current.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdlib.h>
#include <string.h>

#include "fcd.h"
#include "../core/core.h"

#define STACK_MAX 64

static struct fcd_ctx *primary[FC_MAX_DEVICES];
static int primary_refs[FC_MAX_DEVICES];
static unsigned int primary_flags[FC_MAX_DEVICES];
static pthread_mutex_t ctx_mtx = PTHREAD_MUTEX_INITIALIZER;
static unsigned long long next_ctx_id = 1;

static __thread CUcontext stack[STACK_MAX];
static __thread int depth;

static CUcontext new_ctx(int dev, int is_primary, unsigned int flags) {
    struct fcd_ctx *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->magic = FCD_CTX;
    c->dev = dev;
    c->primary = is_primary;
    c->flags = flags;
    c->id = __atomic_fetch_add(&next_ctx_id, 1, __ATOMIC_RELAXED);
    pthread_mutex_init(&c->mtx, NULL);
    fcd_handle_add(c);
    return c;
}

CUcontext fcd_primary(int dev) {
    pthread_mutex_lock(&ctx_mtx);
    if (!primary[dev]) primary[dev] = new_ctx(dev, 1, primary_flags[dev]);
    CUcontext c = primary[dev];
    pthread_mutex_unlock(&ctx_mtx);
    return c;
}

static int live(CUcontext c) { return c && fcd_handle_live(c, FCD_CTX); }

CUcontext fcd_current(CUresult *st) {
    CUresult e = fcd_enter();
    if (e) {
        *st = e;
        return NULL;
    }
    CUcontext c = depth ? stack[depth - 1] : NULL;
    if (!c || !live(c)) {
        *st = CUDA_ERROR_INVALID_CONTEXT;
        return NULL;
    }
    *st = CUDA_SUCCESS;
    return c;
}

CUresult fcd_current_device(int *dev) {
    CUresult st;
    *dev = -1;
    CUcontext c = fcd_current(&st);
    if (!c) return st;
    *dev = c->dev;
    return fcd_status(fcc_device_ready(c->dev));
}

/* A context argument: NULL means the current one. */
static CUresult ctx_arg(CUcontext in, CUcontext *out) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!in) {
        *out = fcd_current(&st);
        return st;
    }
    if (!live(in)) return CUDA_ERROR_INVALID_CONTEXT;
    *out = in;
    return CUDA_SUCCESS;
}

/* ---------------- primary contexts ---------------- */

FCD_EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev) {
    CUresult st = fcd_check_device(dev);
    if (st) return st;
    if (!pctx) return CUDA_ERROR_INVALID_VALUE;
    if ((st = fcd_status(fcc_device_ready(dev)))) return st;
    CUcontext c = fcd_primary(dev);
    if (!c) return CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_lock(&ctx_mtx);
    primary_refs[dev]++;
    pthread_mutex_unlock(&ctx_mtx);
    *pctx = c;
    return CUDA_SUCCESS;
}

/* The last release keeps the device's context on the server: its memory and modules stay
 * until the process ends or cuDevicePrimaryCtxReset (a program that releases and retains
 * again finds them, where CUDA would have made a new, empty context). */
FCD_EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev) {
    CUresult st = fcd_check_device(dev);
    if (st) return st;
    pthread_mutex_lock(&ctx_mtx);
    if (primary_refs[dev] <= 0) st = CUDA_ERROR_INVALID_CONTEXT;
    else primary_refs[dev]--;
    pthread_mutex_unlock(&ctx_mtx);
    return st;
}

FCD_EXPORT CUresult cuDevicePrimaryCtxRelease(CUdevice dev) {
    return cuDevicePrimaryCtxRelease_v2(dev);
}

FCD_EXPORT CUresult cuDevicePrimaryCtxSetFlags_v2(CUdevice dev, unsigned int flags) {
    CUresult st = fcd_check_device(dev);
    if (st) return st;
    /* scheduling (0x7), CU_CTX_MAP_HOST (0x8), CU_CTX_LMEM_RESIZE_TO_MAX (0x10),
     * CU_CTX_COREDUMP_ENABLE (0x20), CU_CTX_USER_COREDUMP_ENABLE (0x40),
     * CU_CTX_SYNC_MEMOPS (0x80) */
    if ((flags & 0x7) == 3 || (flags & 0x7) > 4 || (flags & ~0xffu)) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&ctx_mtx);
    primary_flags[dev] = flags;
    if (primary[dev]) primary[dev]->flags = flags;
    pthread_mutex_unlock(&ctx_mtx);
    return fcd_status(fcc_device_set_flags(dev, flags & 0x1f));
}

FCD_EXPORT CUresult cuDevicePrimaryCtxSetFlags(CUdevice dev, unsigned int flags) {
    return cuDevicePrimaryCtxSetFlags_v2(dev, flags);
}

FCD_EXPORT CUresult cuDevicePrimaryCtxGetState(CUdevice dev, unsigned int *flags, int *active) {
    CUresult st = fcd_check_device(dev);
    if (st) return st;
    if (!flags || !active) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&ctx_mtx);
    *flags = primary_flags[dev];
    *active = primary_refs[dev] > 0;
    pthread_mutex_unlock(&ctx_mtx);
    return CUDA_SUCCESS;
}

void fcd_ctx_reset_cls(CUcontext ctx) {
    pthread_mutex_lock(&ctx->mtx);
    fcd_cls *list = ctx->cls;
    ctx->cls = NULL;
    pthread_mutex_unlock(&ctx->mtx);
    while (list) {
        fcd_cls *next = list->next;
        if (list->dtor) list->dtor(ctx, list->key, list->value);
        free(list);
        list = next;
    }
}

void fcd_device_forget(int dev); /* memory.c: the device's memory is gone */
void fcd_modules_forget(int dev); /* module.c: and its modules */

FCD_EXPORT CUresult cuDevicePrimaryCtxReset_v2(CUdevice dev) {
    CUresult st = fcd_check_device(dev);
    if (st) return st;
    CUcontext c = fcd_primary(dev);
    if (c) fcd_ctx_reset_cls(c);
    if (__atomic_load_n(&fc_devices[dev].opened, __ATOMIC_ACQUIRE) == 1) {
        st = fcd_status(fcc_call(dev, FC_OP_DEVICE_RESET, NULL, 0, NULL, 0, NULL, 0, NULL, NULL));
        fcd_device_forget(dev);
        fcd_modules_forget(dev);
    }
    pthread_mutex_lock(&ctx_mtx);
    primary_refs[dev] = 0;
    primary_flags[dev] = 0;
    if (c) c->flags = 0;
    pthread_mutex_unlock(&ctx_mtx);
    return st;
}

FCD_EXPORT CUresult cuDevicePrimaryCtxReset(CUdevice dev) { return cuDevicePrimaryCtxReset_v2(dev); }

/* ---------------- the context stack ---------------- */

FCD_EXPORT CUresult cuCtxSetCurrent(CUcontext ctx) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (ctx && !live(ctx)) return CUDA_ERROR_INVALID_CONTEXT;
    if (!ctx) {
        if (depth) depth--;
        return CUDA_SUCCESS;
    }
    if (depth) stack[depth - 1] = ctx;
    else stack[depth++] = ctx;
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuCtxGetCurrent(CUcontext *pctx) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!pctx) return CUDA_ERROR_INVALID_VALUE;
    *pctx = depth ? stack[depth - 1] : NULL;
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuCtxPushCurrent_v2(CUcontext ctx) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!live(ctx)) return CUDA_ERROR_INVALID_CONTEXT;
    if (depth == STACK_MAX) return CUDA_ERROR_OUT_OF_MEMORY;
    stack[depth++] = ctx;
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuCtxPushCurrent(CUcontext ctx) { return cuCtxPushCurrent_v2(ctx); }

FCD_EXPORT CUresult cuCtxPopCurrent_v2(CUcontext *pctx) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!depth) return CUDA_ERROR_INVALID_CONTEXT;
    CUcontext c = stack[--depth];
    if (pctx) *pctx = c;
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuCtxPopCurrent(CUcontext *pctx) { return cuCtxPopCurrent_v2(pctx); }

/* ---------------- contexts of cuCtxCreate ---------------- */

FCD_EXPORT CUresult cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev) {
    CUresult st = fcd_check_device(dev);
    if (st) return st;
    if (!pctx) return CUDA_ERROR_INVALID_VALUE;
    if ((st = fcd_status(fcc_device_ready(dev)))) return st;
    CUcontext c = new_ctx(dev, 0, flags);
    if (!c) return CUDA_ERROR_OUT_OF_MEMORY;
    if (depth == STACK_MAX) {
        fcd_handle_del(c);
        free(c);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    stack[depth++] = c;
    *pctx = c;
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuCtxCreate(CUcontext *pctx, unsigned int flags, CUdevice dev) {
    return cuCtxCreate_v2(pctx, flags, dev);
}

static int affinity_notice;

FCD_EXPORT CUresult cuCtxCreate_v3(CUcontext *pctx, void *params, int n, unsigned int flags,
                                   CUdevice dev) {
    if (params && n > 0) {
        fcd_note_once(&affinity_notice, "cuCtxCreate: execution affinity and CIG parameters "
                      "are not supported by farcuda (returns CUDA_ERROR_NOT_SUPPORTED)");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    return cuCtxCreate_v2(pctx, flags, dev);
}

/* CUctxCreateParams: { CUexecAffinityParam *execAffinityParams; int numExecAffinityParams;
 * CUctxCigParam *cigParams; } */
FCD_EXPORT CUresult cuCtxCreate_v4(CUcontext *pctx, void *params, unsigned int flags,
                                   CUdevice dev) {
    if (params) {
        struct { void *aff; int naff; void *cig; } *p = params;
        if ((p->aff && p->naff > 0) || p->cig) return cuCtxCreate_v3(pctx, p, 1, flags, dev);
    }
    return cuCtxCreate_v2(pctx, flags, dev);
}

FCD_EXPORT CUresult cuCtxDestroy_v2(CUcontext ctx) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!live(ctx)) return CUDA_ERROR_INVALID_CONTEXT;
    if (ctx->primary) return CUDA_ERROR_INVALID_CONTEXT;
    fcd_ctx_reset_cls(ctx);
    for (int i = 0; i < depth; i++) /* gone from this thread's stack */
        if (stack[i] == ctx) {
            memmove(&stack[i], &stack[i + 1], (size_t)(depth - i - 1) * sizeof stack[0]);
            depth--;
            i--;
        }
    fcd_handle_del(ctx);
    ctx->magic = 0;
    /* not freed: another thread may still hold it on its stack; it is no longer live */
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuCtxDestroy(CUcontext ctx) { return cuCtxDestroy_v2(ctx); }

/* ---------------- queries ---------------- */

FCD_EXPORT CUresult cuCtxGetDevice(CUdevice *dev) {
    CUresult st;
    CUcontext c = fcd_current(&st);
    if (!c) return st;
    if (!dev) return CUDA_ERROR_INVALID_VALUE;
    *dev = c->dev;
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuCtxGetDevice_v2(CUdevice *dev, CUcontext ctx) {
    CUcontext c;
    CUresult st = ctx_arg(ctx, &c);
    if (st) return st;
    if (!dev) return CUDA_ERROR_INVALID_VALUE;
    *dev = c->dev;
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuCtxGetApiVersion(CUcontext ctx, unsigned int *version) {
    CUcontext c;
    CUresult st = ctx_arg(ctx, &c);
    if (st) return st;
    if (!version) return CUDA_ERROR_INVALID_VALUE;
    *version = 3020; /* contexts have the v2 (64-bit device pointer) API since CUDA 3.2 */
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuCtxGetFlags(unsigned int *flags) {
    CUresult st;
    CUcontext c = fcd_current(&st);
    if (!c) return st;
    if (!flags) return CUDA_ERROR_INVALID_VALUE;
    *flags = c->flags | 0x8; /* CU_CTX_MAP_HOST: always on, and a real driver says so */
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuCtxSetFlags(unsigned int flags) {
    CUresult st;
    CUcontext c = fcd_current(&st);
    if (!c) return st;
    if (flags & ~0xffu) return CUDA_ERROR_INVALID_VALUE;
    c->flags = flags;
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuCtxGetId(CUcontext ctx, unsigned long long *id) {
    CUcontext c;
    CUresult st = ctx_arg(ctx, &c);
    if (st) return st;
    if (!id) return CUDA_ERROR_INVALID_VALUE;
    *id = c->id;
    return CUDA_SUCCESS;
}

static CUresult sync_dev(int dev) {
    CUresult st = fcd_status(fcc_device_ready(dev));
    if (st) return st;
    return fcd_status(fcc_sync_status(dev, fcc_call(dev, FC_OP_DEVICE_SYNC, NULL, 0, NULL, 0,
                                                    NULL, 0, NULL, NULL)));
}

FCD_EXPORT CUresult cuCtxSynchronize(void) {
    CUresult st;
    CUcontext c = fcd_current(&st);
    if (!c) return st;
    return sync_dev(c->dev);
}

FCD_EXPORT CUresult cuCtxSynchronize_v2(CUcontext ctx) {
    CUcontext c;
    CUresult st = ctx_arg(ctx, &c);
    if (st) return st;
    return sync_dev(c->dev);
}

FCD_EXPORT CUresult cuCtxGetLimit(size_t *value, int limit) {
    int dev;
    CUresult st = fcd_current_device(&dev);
    if (st) return st;
    if (!value || limit < 0 || limit > 6) return CUDA_ERROR_INVALID_VALUE;
    fc_GET_LIMIT m = {(uint32_t)limit};
    fc_GET_LIMIT_reply rep = {0};
    st = fcd_status(fcc_call(dev, FC_OP_GET_LIMIT, &m, sizeof m, NULL, 0, &rep, sizeof rep, NULL,
                             NULL));
    if (!st) *value = rep.value;
    return st;
}

FCD_EXPORT CUresult cuCtxSetLimit(int limit, size_t value) {
    int dev;
    CUresult st = fcd_current_device(&dev);
    if (st) return st;
    if (limit < 0 || limit > 6) return CUDA_ERROR_INVALID_VALUE;
    fc_SET_LIMIT m = {(uint32_t)limit, 0, value};
    return fcd_status(fcc_call(dev, FC_OP_SET_LIMIT, &m, sizeof m, NULL, 0, NULL, 0, NULL, NULL));
}

static int cache_config[FC_MAX_DEVICES];

FCD_EXPORT CUresult cuCtxGetCacheConfig(int *config) {
    int dev;
    CUresult st = fcd_current_device(&dev);
    if (st) return st;
    if (!config) return CUDA_ERROR_INVALID_VALUE;
    *config = cache_config[dev];
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuCtxSetCacheConfig(int config) {
    int dev;
    CUresult st = fcd_current_device(&dev);
    if (st) return st;
    if (config < 0 || config > 3) return CUDA_ERROR_INVALID_VALUE;
    cache_config[dev] = config;
    fc_SET_CACHE_CONFIG m = {(uint32_t)config};
    return fcd_status(fcc_post(dev, FC_OP_SET_CACHE_CONFIG, &m, sizeof m, NULL, 0));
}

/* Shared memory bank size: fixed at four bytes on every GPU since Maxwell; the setting is
 * accepted and ignored, as the real driver does. */
FCD_EXPORT CUresult cuCtxGetSharedMemConfig(int *config) {
    int dev;
    CUresult st = fcd_current_device(&dev);
    if (st) return st;
    if (!config) return CUDA_ERROR_INVALID_VALUE;
    *config = 1; /* CU_SHARED_MEM_CONFIG_FOUR_BYTE_BANK_SIZE */
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuCtxSetSharedMemConfig(int config) {
    int dev;
    CUresult st = fcd_current_device(&dev);
    if (st) return st;
    return config >= 0 && config <= 2 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

FCD_EXPORT CUresult cuCtxGetStreamPriorityRange(int *least, int *greatest) {
    int dev;
    CUresult st = fcd_current_device(&dev);
    if (st) return st;
    int l = 0, g = 0;
    if ((st = fcd_status(fcc_device_priorities(dev, &l, &g)))) return st;
    if (least) *least = l;
    if (greatest) *greatest = g;
    return CUDA_SUCCESS;
}

/* Peer access between contexts: possible between virtual devices of one physical GPU. */
FCD_EXPORT CUresult cuCtxEnablePeerAccess(CUcontext peer, unsigned int flags) {
    CUresult st;
    CUcontext c = fcd_current(&st);
    if (!c) return st;
    if (!live(peer)) return CUDA_ERROR_INVALID_CONTEXT;
    if (flags) return CUDA_ERROR_INVALID_VALUE;
    int a = c->dev, b = peer->dev;
    if (a == b || fc_devices[a].server != fc_devices[b].server ||
        fc_devices[a].gpu != fc_devices[b].gpu)
        return 217; /* CUDA_ERROR_PEER_ACCESS_UNSUPPORTED */
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuCtxDisablePeerAccess(CUcontext peer) {
    CUresult st;
    CUcontext c = fcd_current(&st);
    if (!c) return st;
    return live(peer) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_CONTEXT;
}

/* ---------------- context-local storage (export table c693336e) ---------------- */

/* The runtime keeps its per-context state under its own keys; NULL (and the all-ones
 * handle some callers pass) mean the current context. */
static CUresult cls_ctx(CUcontext in, CUcontext *out) {
    if (in == (CUcontext)(intptr_t)-1) in = NULL;
    return ctx_arg(in, out);
}

CUresult fcd_cls_put(CUcontext ctx, void *key, void *value,
                     void (*dtor)(CUcontext, void *, void *));
CUresult fcd_cls_put(CUcontext ctx, void *key, void *value,
                     void (*dtor)(CUcontext, void *, void *)) {
    CUcontext c;
    CUresult st = cls_ctx(ctx, &c);
    if (st) return st;
    pthread_mutex_lock(&c->mtx);
    fcd_cls *e = c->cls;
    while (e && e->key != key) e = e->next;
    if (!e && (e = calloc(1, sizeof *e))) {
        e->key = key;
        e->next = c->cls;
        c->cls = e;
    }
    if (e) {
        e->value = value;
        e->dtor = dtor;
    }
    pthread_mutex_unlock(&c->mtx);
    return e ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

CUresult fcd_cls_delete(CUcontext ctx, void *key);
CUresult fcd_cls_delete(CUcontext ctx, void *key) {
    CUcontext c;
    CUresult st = cls_ctx(ctx, &c);
    if (st) return st;
    pthread_mutex_lock(&c->mtx);
    fcd_cls **pp = &c->cls, *e;
    while ((e = *pp) && e->key != key) pp = &e->next;
    if (e) *pp = e->next;
    pthread_mutex_unlock(&c->mtx);
    free(e);
    return e ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

CUresult fcd_cls_get(void **value, CUcontext ctx, void *key);
CUresult fcd_cls_get(void **value, CUcontext ctx, void *key) {
    CUcontext c;
    CUresult st = cls_ctx(ctx, &c);
    if (st) return st;
    if (!value) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&c->mtx);
    fcd_cls *e = c->cls;
    while (e && e->key != key) e = e->next;
    if (e) *value = e->value;
    pthread_mutex_unlock(&c->mtx);
    return e ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}
