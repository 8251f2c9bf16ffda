/* cuGetExportTable: the undocumented tables the CUDA runtime and libraries ask the driver for,
 * by UUID (the 16 bytes in the order they are passed, printed as one usually prints a UUID).
 *
 * What each slot does is known only from public descriptions: ZLUDA's dark_api (vosen/ZLUDA,
 * dark_api/src/lib.rs and zluda/src/impl/driver.rs) and Cricket's
 * cpu/cpu-client-driver-hidden.c (RWTH-ACS/cricket); the table sizes (the first word of a
 * table, in bytes) are those a real driver 580 reports. A slot nobody has described is filled
 * with a function that names itself on stderr and returns CUDA_ERROR_NOT_SUPPORTED, never a
 * null pointer; a UUID not listed here is refused with CUDA_ERROR_INVALID_VALUE (what the real
 * driver answers for a table it does not have) and named once on stderr.
 *
 * 6bd5fb6c-5bf4-e74a-8987-d93912fd9df9  the runtime interface: primary context of a device
 *                                       (slot 2), modules from a fat binary (1, 6, 8)
 * a094798c-2e74-2e74-93f2-0800200c0a66  tools runtime callback hooks: two buffers (2, 6)
 * 42d85a81-23f6-cb47-8298-f6e78a3aecdc  tools thread-local storage (mandatory: the runtime
 *                                       aborts without it); slot 2, the current context,
 *                                       is called by cuBLAS
 * c693336e-1121-df11-a8c3-68f355d89593  context-local storage: put, delete, get
 * 263e8860-7cd2-6143-92f6-bbd5006dfa7e  context checks (2: context_check, 3: always 0)
 * d4082055-bde6-704b-8d34-ba123c66e1f2  the runtime's integrity check of the driver (1)
 * f8cff951-2146-8b4e-b9e2-fb469e7c0dd9  the driver's error log: the runtime logs its API
 *                                       errors to slot 1 (seen with CUDA 13.0)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fcd.h"
#include "../core/core.h"

CUresult fcd_cls_put(CUcontext ctx, void *key, void *value,
                     void (*dtor)(CUcontext, void *, void *));
CUresult fcd_cls_delete(CUcontext ctx, void *key);
CUresult fcd_cls_get(void **value, CUcontext ctx, void *key);
int fcd_driver_version(void);
int fcd_attr(int dev, int attr);
CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev);
CUresult cuCtxGetCurrent(CUcontext *pctx);
CUresult cuStreamGetId(CUstream s, unsigned long long *id);
CUresult cuCtxGetId(CUcontext ctx, unsigned long long *id);

/* ---------------- slots nobody has described ---------------- */

typedef struct { const char *table; int slot; int seen; } unknown_slot;

static CUresult unknown_slot_called(unknown_slot *u) {
    fcd_note_once(&u->seen, "export table %s slot %d: called, but farcuda does not know what it "
                  "does (returns CUDA_ERROR_NOT_SUPPORTED)", u->table, u->slot);
    return CUDA_ERROR_NOT_SUPPORTED;
}

/* One function per slot, so that each can name itself. */
#define UNKNOWN(tab, tname, n)                                                                  \
    static unknown_slot u_##tab##_##n = {tname, n, 0};                                        \
    static CUresult x_##tab##_##n(void) { return unknown_slot_called(&u_##tab##_##n); }

/* ---------------- 6bd5fb6c: the runtime interface ---------------- */

#define RT "6bd5fb6c-5bf4-e74a-8987-d93912fd9df9"

/* A module from the runtime's registered fat binary: the wrapper ({magic 0x466243B1, version,
 * data, ...}) or the container itself. */
static CUresult module_from_fatbin(CUmodule *module, const void *fatbin) {
    if (!module || !fatbin) return CUDA_ERROR_INVALID_VALUE;
    const uint32_t *w = fatbin;
    const void *data = fatbin;
    if (w[0] == 0x466243B1u) memcpy(&data, (const char *)fatbin + 8, sizeof data);
    if (!data) return CUDA_ERROR_INVALID_IMAGE;
    uint32_t magic;
    uint16_t hsize;
    uint64_t size;
    memcpy(&magic, data, 4);
    memcpy(&hsize, (const char *)data + 6, 2);
    memcpy(&size, (const char *)data + 8, 8);
    if (magic != 0xBA55ED50u || hsize < 16 || size > (1ull << 32)) return CUDA_ERROR_INVALID_IMAGE;
    return fcd_module_from_image(data, hsize + size, 0, module);
}

static CUresult rt_module_from_cubin(CUmodule *module, const void *wrapper) {
    return module_from_fatbin(module, wrapper);
}

static CUresult rt_primary_ctx(CUcontext *pctx, CUdevice dev) {
    if (!pctx) return CUDA_ERROR_INVALID_VALUE;
    return cuDevicePrimaryCtxRetain(pctx, dev);
}

static int rt_ext_notice;

static CUresult rt_module_from_cubin_ext1(CUmodule *module, const void *wrapper, void *a3,
                                          void *a4, unsigned a5) {
    if (a3 || a4 || a5) {
        fcd_note_once(&rt_ext_notice, "export table " RT ": a module load with options farcuda "
                      "does not know (returns CUDA_ERROR_NOT_SUPPORTED)");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    return module_from_fatbin(module, wrapper);
}

static CUresult rt_module_from_cubin_ext2(const void *fatbin, CUmodule *module, void *a3,
                                          void *a4, unsigned a5) {
    return rt_module_from_cubin_ext1(module, fatbin, a3, a4, a5);
}

UNKNOWN(rt, RT, 3)
UNKNOWN(rt, RT, 4)
UNKNOWN(rt, RT, 5)
UNKNOWN(rt, RT, 7)
UNKNOWN(rt, RT, 9)
UNKNOWN(rt, RT, 10)
UNKNOWN(rt, RT, 11)
UNKNOWN(rt, RT, 12)

static const void *rt_table[13] = {
    (void *)(uintptr_t)0x68, (void *)rt_module_from_cubin, (void *)rt_primary_ctx,
    (void *)x_rt_3, (void *)x_rt_4, (void *)x_rt_5, (void *)rt_module_from_cubin_ext1,
    (void *)x_rt_7, (void *)rt_module_from_cubin_ext2, (void *)x_rt_9, (void *)x_rt_10,
    (void *)x_rt_11, (void *)x_rt_12,
};

/* ---------------- a094798c: tools runtime callback hooks ---------------- */

#define HOOKS "a094798c-2e74-2e74-93f2-0800200c0a66"

/* Two buffers the runtime keeps tool callback state in; zeroed, larger than the size given
 * (ZLUDA reports 1024 and 14, in 32-bit words, and the runtime writes within them). */
static uint64_t hook_buf1[2048], hook_buf2[64];

static void hooks_buffer1(void **ptr, size_t *size) {
    if (ptr) *ptr = hook_buf1;
    if (size) *size = 1024;
}

static void hooks_buffer2(void **ptr, size_t *size) {
    if (ptr) *ptr = hook_buf2;
    if (size) *size = 14;
}

UNKNOWN(hooks, HOOKS, 1)
UNKNOWN(hooks, HOOKS, 3)
UNKNOWN(hooks, HOOKS, 4)
UNKNOWN(hooks, HOOKS, 5)

static const void *hooks_table[7] = {
    (void *)(uintptr_t)0x38, (void *)x_hooks_1, (void *)hooks_buffer1, (void *)x_hooks_3,
    (void *)x_hooks_4, (void *)x_hooks_5, (void *)hooks_buffer2,
};

/* ---------------- 42d85a81: tools thread-local storage ---------------- */

#define TLS "42d85a81-23f6-cb47-8298-f6e78a3aecdc"
UNKNOWN(tls, TLS, 1)

/* Slot 2: the calling thread's current context, written to its one argument (cuBLAS asks
 * before it uses the cuBLAS-Lt table 21318c60; the object it gets from a real driver is the
 * one the context checks of 263e8860 are given). */
static CUresult tls_current_context(CUcontext *out) {
    if (!out) return CUDA_ERROR_INVALID_VALUE;
    return cuCtxGetCurrent(out);
}

static const void *tls_table[3] = {(void *)(uintptr_t)0x18, (void *)x_tls_1,
                                   (void *)tls_current_context};

/* ---------------- c693336e: context-local storage ---------------- */

#define CLS "c693336e-1121-df11-a8c3-68f355d89593"
UNKNOWN(cls, CLS, 3)
/* No size word: the first slot is a function, as in the real driver. */
static const void *cls_table[4] = {(void *)fcd_cls_put, (void *)fcd_cls_delete,
                                   (void *)fcd_cls_get, (void *)x_cls_3};

/* ---------------- 263e8860: context checks ---------------- */

#define CHECKS "263e8860-7cd2-6143-92f6-bbd5006dfa7e"

static CUresult checks_context(CUcontext ctx, uint32_t *result1, const void **result2) {
    (void)ctx;
    (void)result2; /* left as the caller set it, as a real driver does */
    if (result1) *result1 = 0;
    return CUDA_SUCCESS;
}

static uint32_t checks_fn3(void) { return 0; }

UNKNOWN(checks, CHECKS, 1)
UNKNOWN(checks, CHECKS, 4)
UNKNOWN(checks, CHECKS, 5)
UNKNOWN(checks, CHECKS, 6)
UNKNOWN(checks, CHECKS, 7)
UNKNOWN(checks, CHECKS, 8)
UNKNOWN(checks, CHECKS, 9)
UNKNOWN(checks, CHECKS, 10)
UNKNOWN(checks, CHECKS, 11)
UNKNOWN(checks, CHECKS, 12)
UNKNOWN(checks, CHECKS, 13)
UNKNOWN(checks, CHECKS, 14)

static const void *checks_table[15] = {
    (void *)(uintptr_t)0x78, (void *)x_checks_1, (void *)checks_context, (void *)checks_fn3,
    (void *)x_checks_4, (void *)x_checks_5, (void *)x_checks_6, (void *)x_checks_7,
    (void *)x_checks_8, (void *)x_checks_9, (void *)x_checks_10, (void *)x_checks_11,
    (void *)x_checks_12, (void *)x_checks_13, (void *)x_checks_14,
};

/* ---------------- d4082055: the integrity check ---------------- */

#define INTEGRITY "d4082055-bde6-704b-8d34-ba123c66e1f2"

/* The driver's answer to the runtime's integrity check of it, as ZLUDA describes it: for
 * check versions ending in 0 and 1 two fixed values, else HMAC-MD2 under a fixed key over
 * the driver version, the check version, this process and thread, the addresses of this
 * table, of the runtime interface table and of this function, the time the runtime passed,
 * and every device's UUID and PCI location. The runtime computes the same and refuses a
 * driver whose answer differs (cudaErrorSoftwareValidityNotEstablished). */
static const unsigned char integrity_key[16] = {0x14, 0x6A, 0xDD, 0xAE, 0x53, 0xA9, 0xA7, 0x52,
                                                0xAA, 0x08, 0x41, 0x36, 0x0B, 0xF5, 0x5A, 0x9F};
static const void *integrity_table[3];

static CUresult integrity_check(uint32_t version, uint64_t unix_seconds, uint64_t result[2]);

static CUresult integrity_check(uint32_t version, uint64_t unix_seconds, uint64_t result[2]) {
    if (!result) return CUDA_ERROR_INVALID_VALUE;
    if (fcd_tracing()) fcc_log("trace: integrity check, version %u", version);
    if (version % 10 == 0) {
        result[0] = 0x3341181C03CB675CULL;
        result[1] = 0x8ED383AA1F4CD1E8ULL;
        return CUDA_SUCCESS;
    }
    if (version % 10 == 1) {
        result[0] = 0x1841181C03CB675CULL;
        result[1] = 0x8ED383AA1F4CD1E8ULL;
        return CUDA_SUCCESS;
    }
    struct __attribute__((packed)) {
        uint32_t driver_version, version, process, thread;
        const void *runtime_table, *integrity_table, *fn;
        uint64_t unix_seconds;
    } in = {(uint32_t)fcd_driver_version(), version, (uint32_t)getpid(),
            (uint32_t)pthread_self(), rt_table, integrity_table,
            (const void *)integrity_check, unix_seconds};
    unsigned char k[16], inner[16], outer[16];
    fcc_md2 m;
    fcc_md2_init(&m);
    for (int i = 0; i < 16; i++) k[i] = integrity_key[i] ^ 0x36;
    fcc_md2_update(&m, k, 16);
    fcc_md2_update(&m, &in, sizeof in);
    int n = fcc_device_count();
    for (int d = 0; d < n; d++) {
        const fcc_gpu_info *info;
        struct __attribute__((packed)) { unsigned char uuid[16]; int32_t domain, bus, device; } h;
        memset(&h, 0, sizeof h);
        if (fcc_device_info(d, &info) == 0) {
            memcpy(h.uuid, info->uuid, 16);
            h.domain = fcd_attr(d, 50);
            h.bus = fcd_attr(d, 33);
            h.device = fcd_attr(d, 34);
        }
        fcc_md2_update(&m, &h, sizeof h);
    }
    fcc_md2_final(&m, inner);
    fcc_md2_init(&m);
    for (int i = 0; i < 16; i++) k[i] = integrity_key[i] ^ 0x5c;
    fcc_md2_update(&m, k, 16);
    fcc_md2_update(&m, inner, 16);
    fcc_md2_final(&m, outer);
    memcpy(result, outer, 16);
    return CUDA_SUCCESS;
}

UNKNOWN(integrity, INTEGRITY, 2)
static const void *integrity_table[3] = {(void *)(uintptr_t)0x18, (void *)integrity_check,
                                         (void *)x_integrity_2};

/* ---------------- f8cff951: the driver's error log ---------------- */

#define F8 "f8cff951-2146-8b4e-b9e2-fb469e7c0dd9"

/* The runtime logs the errors of its API calls here, as (component, NULL, printf format,
 * arguments...), e.g. ("CUDA", NULL, "Invalid device number %d provided, ..."): the
 * driver's error log, which programs read with cuLogs*. farcuda keeps no such log (cuLogs*
 * are not supported): the entry is accepted and dropped, as a driver with no log consumer
 * would. */
static CUresult log_entry(const char *component, void *unused, const char *format) {
    (void)component; (void)unused; (void)format;
    return CUDA_SUCCESS;
}

UNKNOWN(f8, F8, 2)
static const void *f8_table[3] = {(void *)(uintptr_t)0x18, (void *)log_entry, (void *)x_f8_2};

/* ---------------- 21318c60: asked for by cuBLAS-Lt and cuFFT ---------------- */

#define LT "21318c60-9714-3248-8ca6-41ff7324c8f2"

/* 92 slots behind the size word (0x2e8), as in driver 580. Three are known:
 * - slot 4 (context, unsigned long long *): the context's id. cuFFT keys the kernels of a
 *   plan by it (it compares it with the id it kept when it made the plan); a real driver 580
 *   gives 1 for the first context of a process, as cuCtxGetId does.
 * - slot 51 (context, stream, stream *, per-thread): the stream a handle stands for, the
 *   special handles (0, CU_STREAM_LEGACY, CU_STREAM_PER_THREAD) included; the last argument
 *   is 1 when the handle is CU_STREAM_PER_THREAD.
 * - slot 39 (context, stream, unsigned long long *): that stream's id.
 * cuBLAS-Lt's own workspace (when the application gives it none) is kept per stream: it asks
 * slot 51 then slot 39 for the key of the stream a matmul is enqueued on. The others name
 * themselves. */
static CUresult lt_context_id(CUcontext ctx, unsigned long long *out) {
    if (!out) return CUDA_ERROR_INVALID_VALUE;
    return cuCtxGetId(ctx, out);
}

static CUresult lt_stream_of(CUcontext ctx, CUstream s, CUstream *out, int per_thread) {
    (void)ctx;
    if (!out) return CUDA_ERROR_INVALID_VALUE;
    if (s == CU_STREAM_PER_THREAD || (s == NULL && per_thread)) s = CU_STREAM_PER_THREAD;
    else if (s == NULL) s = CU_STREAM_LEGACY;
    unsigned long long id;
    CUresult st = cuStreamGetId(s, &id); /* the handle is live and its device ready */
    if (st) return st;
    *out = s;
    return CUDA_SUCCESS;
}

static CUresult lt_stream_id(CUcontext ctx, CUstream s, unsigned long long *id) {
    (void)ctx;
    if (!id) return CUDA_ERROR_INVALID_VALUE;
    return cuStreamGetId(s, id);
}

#define UNKNOWN_TENS(tab, tname, d)                                                            \
    UNKNOWN(tab, tname, d##0) UNKNOWN(tab, tname, d##1) UNKNOWN(tab, tname, d##2)            \
    UNKNOWN(tab, tname, d##3) UNKNOWN(tab, tname, d##4) UNKNOWN(tab, tname, d##5)            \
    UNKNOWN(tab, tname, d##6) UNKNOWN(tab, tname, d##7) UNKNOWN(tab, tname, d##8)            \
    UNKNOWN(tab, tname, d##9)
#define SLOT_TENS(tab, d)                                                                      \
    (void *)x_##tab##_##d##0, (void *)x_##tab##_##d##1, (void *)x_##tab##_##d##2,             \
    (void *)x_##tab##_##d##3, (void *)x_##tab##_##d##4, (void *)x_##tab##_##d##5,             \
    (void *)x_##tab##_##d##6, (void *)x_##tab##_##d##7, (void *)x_##tab##_##d##8,             \
    (void *)x_##tab##_##d##9

UNKNOWN(lt, LT, 1)
UNKNOWN(lt, LT, 2)
UNKNOWN(lt, LT, 3)
UNKNOWN(lt, LT, 5)
UNKNOWN(lt, LT, 6)
UNKNOWN(lt, LT, 7)
UNKNOWN(lt, LT, 8)
UNKNOWN(lt, LT, 9)
UNKNOWN_TENS(lt, LT, 1)
UNKNOWN_TENS(lt, LT, 2)
UNKNOWN(lt, LT, 30)
UNKNOWN(lt, LT, 31)
UNKNOWN(lt, LT, 32)
UNKNOWN(lt, LT, 33)
UNKNOWN(lt, LT, 34)
UNKNOWN(lt, LT, 35)
UNKNOWN(lt, LT, 36)
UNKNOWN(lt, LT, 37)
UNKNOWN(lt, LT, 38)
UNKNOWN_TENS(lt, LT, 4)
UNKNOWN(lt, LT, 50)
UNKNOWN(lt, LT, 52)
UNKNOWN(lt, LT, 53)
UNKNOWN(lt, LT, 54)
UNKNOWN(lt, LT, 55)
UNKNOWN(lt, LT, 56)
UNKNOWN(lt, LT, 57)
UNKNOWN(lt, LT, 58)
UNKNOWN(lt, LT, 59)
UNKNOWN_TENS(lt, LT, 6)
UNKNOWN_TENS(lt, LT, 7)
UNKNOWN_TENS(lt, LT, 8)
UNKNOWN(lt, LT, 90)
UNKNOWN(lt, LT, 91)
UNKNOWN(lt, LT, 92)

static const void *lt_table[93] = {
    (void *)(uintptr_t)0x2e8, (void *)x_lt_1, (void *)x_lt_2, (void *)x_lt_3,
    (void *)lt_context_id, (void *)x_lt_5, (void *)x_lt_6, (void *)x_lt_7, (void *)x_lt_8,
    (void *)x_lt_9, SLOT_TENS(lt, 1), SLOT_TENS(lt, 2), (void *)x_lt_30, (void *)x_lt_31,
    (void *)x_lt_32, (void *)x_lt_33, (void *)x_lt_34, (void *)x_lt_35, (void *)x_lt_36,
    (void *)x_lt_37, (void *)x_lt_38, (void *)lt_stream_id, SLOT_TENS(lt, 4), (void *)x_lt_50,
    (void *)lt_stream_of, (void *)x_lt_52, (void *)x_lt_53, (void *)x_lt_54, (void *)x_lt_55,
    (void *)x_lt_56, (void *)x_lt_57, (void *)x_lt_58, (void *)x_lt_59, SLOT_TENS(lt, 6),
    SLOT_TENS(lt, 7), SLOT_TENS(lt, 8), (void *)x_lt_90, (void *)x_lt_91, (void *)x_lt_92,
};

/* ---------------- 6e163fbe: asked for by cuFFT ---------------- */

#define FFT "6e163fbe-b958-444d-835c-e182aff1991e"

/* 98 slots behind the size word (0x318), as in driver 580. cuFFT asks for it with 21318c60
 * and refuses to make plans without both; of its slots it calls only slot 7 (context, module,
 * callback, user data), to find the kernel of a module it made itself without knowing the
 * kernel's name: the callback gets (user data, function) for each function of the module,
 * and the slot returns 1 (0: it failed). The others name themselves. */
static int fft_each_function(CUcontext ctx, CUmodule m, void (*each)(void *, CUfunction),
                             void *user) {
    (void)ctx;
    return fcd_module_each_function(m, each, user) == CUDA_SUCCESS;
}

UNKNOWN(fft, FFT, 1)
UNKNOWN(fft, FFT, 2)
UNKNOWN(fft, FFT, 3)
UNKNOWN(fft, FFT, 4)
UNKNOWN(fft, FFT, 5)
UNKNOWN(fft, FFT, 6)
UNKNOWN(fft, FFT, 8)
UNKNOWN(fft, FFT, 9)
UNKNOWN_TENS(fft, FFT, 1)
UNKNOWN_TENS(fft, FFT, 2)
UNKNOWN_TENS(fft, FFT, 3)
UNKNOWN_TENS(fft, FFT, 4)
UNKNOWN_TENS(fft, FFT, 5)
UNKNOWN_TENS(fft, FFT, 6)
UNKNOWN_TENS(fft, FFT, 7)
UNKNOWN_TENS(fft, FFT, 8)
UNKNOWN(fft, FFT, 90)
UNKNOWN(fft, FFT, 91)
UNKNOWN(fft, FFT, 92)
UNKNOWN(fft, FFT, 93)
UNKNOWN(fft, FFT, 94)
UNKNOWN(fft, FFT, 95)
UNKNOWN(fft, FFT, 96)
UNKNOWN(fft, FFT, 97)
UNKNOWN(fft, FFT, 98)

static const void *fft_table[99] = {
    (void *)(uintptr_t)0x318, (void *)x_fft_1, (void *)x_fft_2, (void *)x_fft_3,
    (void *)x_fft_4, (void *)x_fft_5, (void *)x_fft_6, (void *)fft_each_function,
    (void *)x_fft_8, (void *)x_fft_9, SLOT_TENS(fft, 1), SLOT_TENS(fft, 2), SLOT_TENS(fft, 3),
    SLOT_TENS(fft, 4), SLOT_TENS(fft, 5), SLOT_TENS(fft, 6), SLOT_TENS(fft, 7),
    SLOT_TENS(fft, 8), (void *)x_fft_90, (void *)x_fft_91, (void *)x_fft_92, (void *)x_fft_93,
    (void *)x_fft_94, (void *)x_fft_95, (void *)x_fft_96, (void *)x_fft_97, (void *)x_fft_98,
};

/* ---------------- the UUIDs ---------------- */

typedef struct {
    const char *uuid;
    const void *const *table;
    const char *refusal;  /* known to be asked for, contents undescribed: refused */
} export_table;

static const export_table tables[] = {
    {RT, rt_table, NULL},
    {HOOKS, hooks_table, NULL},
    {TLS, tls_table, NULL},
    {CLS, cls_table, NULL},
    {CHECKS, checks_table, NULL},
    {INTEGRITY, integrity_table, NULL},
    {F8, f8_table, NULL},
    {LT, lt_table, NULL},
    {FFT, fft_table, NULL},
    /* asked for by CUDA libraries (PyTorch's and CuPy's), with no public description */
    {"69a28e9f-2449-8b47-b030-c5da330ea4e9", NULL, "asked for by PyTorch's CUDA libraries"},
    {"da9151d3-3ae6-cc41-a5c0-4f26d533e328", NULL, "asked for by NVRTC"},
};

static void uuid_text(const CUuuid *id, char out[37]) {
    const unsigned char *b = id->bytes;
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
             b[13], b[14], b[15]);
}

static pthread_mutex_t seen_mtx = PTHREAD_MUTEX_INITIALIZER;
static char seen[32][37];
static int nseen;

static int first_time(const char *u) {
    pthread_mutex_lock(&seen_mtx);
    for (int i = 0; i < nseen; i++)
        if (!strcmp(seen[i], u)) {
            pthread_mutex_unlock(&seen_mtx);
            return 0;
        }
    if (nseen < 32) snprintf(seen[nseen++], 37, "%s", u);
    pthread_mutex_unlock(&seen_mtx);
    return 1;
}

CUresult fcd_get_export_table(const void **table, const CUuuid *id) {
    char u[37];
    uuid_text(id, u);
    if (fcd_tracing()) fcc_log("trace: cuGetExportTable %s", u);
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        if (strcmp(tables[i].uuid, u)) continue;
        if (tables[i].table) {
            *table = tables[i].table;
            return CUDA_SUCCESS;
        }
        if (first_time(u))
            fcc_log("cuGetExportTable: table %s (%s) is not known to farcuda (returns "
                    "CUDA_ERROR_NOT_SUPPORTED)", u, tables[i].refusal);
        *table = NULL;
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    if (first_time(u))
        fcc_log("cuGetExportTable: unknown table %s (returns CUDA_ERROR_INVALID_VALUE)", u);
    *table = NULL;
    return CUDA_ERROR_INVALID_VALUE;
}
