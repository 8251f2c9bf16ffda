/* Modules, libraries, functions and kernels, and launches.
 *
 * An image (fat binary, cubin or PTX) is copied and hashed (SHA-256) when the program hands
 * it over; it is sent to a device's server when first needed there. The server keeps the
 * images it was sent in a cache keyed by that hash, so the client first asks by hash and sends
 * the bytes only when the server has not got them: a library's fat binary crosses the link
 * once per server, not once per process. Small images go with the first request.
 *
 * Functions are looked up by name on the server, which answers with the parameter layout
 * (offset and size of each parameter): a launch packs kernelParams into one buffer of the
 * ABI layout and queues it, without waiting for the server. A CUkernel (of a library) is
 * context-independent: it is resolved on each device it is launched on.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fcd.h"
#include "../core/core.h"

#define INLINE_IMAGE (64u << 10) /* images up to this size go with the first request */

static pthread_mutex_t modules_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct fcd_module *modules;

/* ---------------- images ---------------- */

static uint64_t rd64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
static uint32_t rd32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static uint16_t rd16(const unsigned char *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

/* The length of an image the program passed without one; 0 when it is no image we know. */
static size_t image_size(const void *image, const void **start) {
    const unsigned char *p = image;
    *start = image;
    if (rd32(p) == 0x466243B1u) { /* a fat binary wrapper: {magic, version, data, ...} */
        const void *data;
        memcpy(&data, p + 8, sizeof data);
        if (!data) return 0;
        return image_size(data, start);
    }
    if (rd32(p) == 0xBA55ED50u) { /* a fat binary: u32 magic, u16 version, u16 hsize, u64 */
        uint16_t hsize = rd16(p + 6);
        uint64_t size = rd64(p + 8);
        if (hsize < 16 || size > (1ull << 32)) return 0;
        return hsize + size;
    }
    if (p[0] == 0x7f && p[1] == 'E' && p[2] == 'L' && p[3] == 'F') {
        if (p[4] != 2) return 0; /* ELF64 only */
        uint64_t phoff = rd64(p + 0x20), shoff = rd64(p + 0x28);
        uint16_t phent = rd16(p + 0x36), phnum = rd16(p + 0x38);
        uint16_t shent = rd16(p + 0x3A), shnum = rd16(p + 0x3C);
        uint64_t end = 64;
        if (phoff + (uint64_t)phent * phnum > end) end = phoff + (uint64_t)phent * phnum;
        if (shoff + (uint64_t)shent * shnum > end) end = shoff + (uint64_t)shent * shnum;
        if (shent >= 64 && shnum < 65535) {
            for (unsigned i = 0; i < shnum; i++) {
                const unsigned char *sh = p + shoff + (uint64_t)i * shent;
                if (rd32(sh + 4) == 8) continue; /* SHT_NOBITS */
                uint64_t e = rd64(sh + 0x18) + rd64(sh + 0x20);
                if (e > end) end = e;
            }
        }
        return end > (1ull << 32) ? 0 : (size_t)end;
    }
    /* PTX: text, starting with a comment or a directive */
    size_t n = strnlen((const char *)p, 1u << 30);
    for (size_t i = 0; i < n; i++) {
        if (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r') continue;
        if (p[i] == '/' || p[i] == '.') return n + 1;
        break;
    }
    return 0;
}

static struct fcd_module *module_new(const void *image, size_t size, int library) {
    struct fcd_module *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->image = malloc(size);
    if (!m->image) {
        free(m);
        return NULL;
    }
    memcpy(m->image, image, size);
    m->image_size = size;
    m->magic = FCD_MODULE;
    m->id = fcc_new_id();
    m->library = library;
    fcc_sha256_digest(m->image, size, m->hash);
    pthread_mutex_init(&m->mtx, NULL);
    fcd_handle_add(m);
    pthread_mutex_lock(&modules_mtx);
    m->next_module = modules;
    modules = m;
    pthread_mutex_unlock(&modules_mtx);
    return m;
}

/* Load the module into a device's context (once). */
static CUresult load_on(struct fcd_module *m, int dev) {
    if (__atomic_load_n(&m->loaded, __ATOMIC_ACQUIRE) & (1ull << dev)) return CUDA_SUCCESS;
    CUresult st = fcd_status(fcc_device_ready(dev));
    if (st) return st;
    pthread_mutex_lock(&m->mtx);
    if (!(m->loaded & (1ull << dev))) {
        fc_MODULE_IMAGE msg = {m->id, 0, m->image_size, {0}};
        memcpy(msg.hash, m->hash, 32);
        char *why = NULL;
        size_t wn = 0;
        int inline_ = m->image_size <= INLINE_IMAGE;
        int e = fcc_call(dev, FC_OP_MODULE_IMAGE, &msg, sizeof msg, inline_ ? m->image : NULL,
                         inline_ ? m->image_size : 0, NULL, 0, &why, &wn);
        if (e == cudaErrorSymbolNotFound && !inline_) { /* not in the server's cache: send it */
            free(why);
            why = NULL;
            e = fcc_call(dev, FC_OP_MODULE_IMAGE, &msg, sizeof msg, m->image, m->image_size, NULL,
                         0, &why, &wn);
        }
        if (e && why && wn) fcc_log("loading a module on device %d: %.*s", dev, (int)wn, why);
        free(why);
        st = fcd_status(e);
        if (!st) __atomic_or_fetch(&m->loaded, 1ull << dev, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&m->mtx);
    return st;
}

CUresult fcd_module_from_image(const void *image, size_t size, int library, CUmodule *out) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!out || !image) return CUDA_ERROR_INVALID_VALUE;
    const void *start;
    size_t n = image_size(image, &start);
    if (!n || (size && n > size)) return CUDA_ERROR_INVALID_IMAGE;
    int dev = -1;
    if (!library && (st = fcd_current_device(&dev))) return st;
    struct fcd_module *m = module_new(start, n, library);
    if (!m) return CUDA_ERROR_OUT_OF_MEMORY;
    if (!library && (st = load_on(m, dev))) {
        fcd_handle_del(m);
        free(m->image);
        free(m);
        return st;
    }
    *out = m;
    return CUDA_SUCCESS;
}

static CUresult read_file(const char *path, char **data, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return CUDA_ERROR_FILE_NOT_FOUND;
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap + 1);
    size_t k;
    while (b && (k = fread(b + len, 1, cap - len, f)) > 0) {
        len += k;
        if (len == cap) {
            char *nb = realloc(b, cap * 2 + 1);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (!b) return CUDA_ERROR_OUT_OF_MEMORY;
    b[len] = 0; /* PTX files are text without a terminating NUL */
    *data = b;
    *n = len + 1;
    return CUDA_SUCCESS;
}

/* ---------------- modules ---------------- */

FCD_EXPORT CUresult cuModuleLoadData(CUmodule *module, const void *image) {
    return fcd_module_from_image(image, 0, 0, module);
}

FCD_EXPORT CUresult cuModuleLoadDataEx(CUmodule *module, const void *image, unsigned int n,
                                       int *options, void **values) {
    /* JIT options: the server's driver compiles; its logs are not brought back (the log
     * buffers are left empty) */
    for (unsigned int i = 0; options && values && i < n; i++) {
        if ((options[i] == 3 || options[i] == 5) && values[i]) /* INFO/ERROR_LOG_BUFFER */
            *(char *)values[i] = 0;
    }
    return fcd_module_from_image(image, 0, 0, module);
}

FCD_EXPORT CUresult cuModuleLoadFatBinary(CUmodule *module, const void *fatCubin) {
    return fcd_module_from_image(fatCubin, 0, 0, module);
}

FCD_EXPORT CUresult cuModuleLoad(CUmodule *module, const char *fname) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!module || !fname) return CUDA_ERROR_INVALID_VALUE;
    char *data;
    size_t n;
    if ((st = read_file(fname, &data, &n))) return st;
    st = fcd_module_from_image(data, n, 0, module);
    free(data);
    return st;
}

static void module_free(struct fcd_module *m) {
    fcd_handle_del(m);
    for (uint64_t bits = m->loaded; bits;) {
        int dev = __builtin_ctzll(bits);
        bits &= bits - 1;
        fc_MODULE_UNLOAD u = {m->id};
        fcc_post(dev, FC_OP_MODULE_UNLOAD, &u, sizeof u, NULL, 0);
    }
    for (struct fcd_func *f = m->funcs, *next; f; f = next) {
        next = f->next;
        fcd_handle_del(f);
        f->magic = 0;
        /* not freed: a launch racing with the unload must find a dead handle, not freed
         * memory */
    }
    m->magic = 0;
    free(m->image);
    m->image = NULL;
    free(m->names);
    m->names = NULL;
}

FCD_EXPORT CUresult cuModuleUnload(CUmodule m) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!fcd_handle_live(m, FCD_MODULE) || m->library) return CUDA_ERROR_INVALID_HANDLE;
    module_free(m);
    return CUDA_SUCCESS;
}

/* cuDevicePrimaryCtxReset: what the device had loaded is gone. */
void fcd_modules_forget(int dev);
void fcd_modules_forget(int dev) {
    /* they load again on their next use there */
    pthread_mutex_lock(&modules_mtx);
    for (struct fcd_module *m = modules; m; m = m->next_module) {
        pthread_mutex_lock(&m->mtx);
        m->loaded &= ~(1ull << dev);
        for (struct fcd_func *f = m->funcs; f; f = f->next) f->resolved &= ~(1ull << dev);
        pthread_mutex_unlock(&m->mtx);
    }
    pthread_mutex_unlock(&modules_mtx);
}

/* A forked child has a session of its own: none of the parent's modules is loaded in it. */
static void forget_all_modules(void) {
    /* the child's only thread: no lock (one held at the fork by another thread stays held) */
    pthread_mutex_init(&modules_mtx, NULL);
    for (struct fcd_module *m = modules; m; m = m->next_module) {
        pthread_mutex_init(&m->mtx, NULL);
        m->loaded = 0;
        for (struct fcd_func *f = m->funcs; f; f = f->next) f->resolved = 0;
    }
}

__attribute__((constructor)) static void modules_at_fork(void) {
    pthread_atfork(NULL, NULL, forget_all_modules);
}

/* 0: eager, 1: lazy (the default) */
FCD_EXPORT CUresult cuModuleGetLoadingMode(int *mode) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!mode) return CUDA_ERROR_INVALID_VALUE;
    const char *e = getenv("CUDA_MODULE_LOADING");
    *mode = e && !strcmp(e, "EAGER") ? 1 : 2; /* CU_MODULE_EAGER_LOADING, CU_MODULE_LAZY_LOADING */
    return CUDA_SUCCESS;
}

/* ---------------- functions ---------------- */

/* The function's layout on a device: asked of the server once per device. */
static CUresult resolve_on(struct fcd_func *f, int dev) {
    CUresult st = load_on(f->module, dev);
    if (st) return st;
    uint64_t bit = 1ull << dev;
    if (__atomic_load_n(&f->resolved, __ATOMIC_ACQUIRE) & bit) return CUDA_SUCCESS;
    fc_MODULE_FUNCTION m = {f->module->id, f->id};
    char *bulk = NULL;
    size_t n = 0;
    int e = fcc_call(dev, FC_OP_MODULE_FUNCTION, &m, sizeof m, f->name, strlen(f->name), NULL, 0,
                     &bulk, &n);
    if (e) {
        free(bulk);
        return fcd_status(e);
    }
    fcc_json *j = bulk ? fcc_json_parse(bulk, n) : NULL;
    free(bulk);
    const fcc_json *params = fcc_json_get(j, "params");
    if (!j || !params) {
        fcc_json_free(j);
        return CUDA_ERROR_UNKNOWN;
    }
    pthread_mutex_lock(&f->module->mtx);
    if (!f->params) {
        size_t np = fcc_json_len(params);
        f->params = calloc(np ? np : 1, sizeof *f->params);
        for (size_t i = 0; f->params && i < np; i++) {
            const fcc_json *p = fcc_json_at(params, i);
            f->params[i].offset = (uint32_t)fcc_json_num(fcc_json_at(p, 0), 0);
            f->params[i].size = (uint32_t)fcc_json_num(fcc_json_at(p, 1), 0);
        }
        f->nparams = (uint32_t)np;
        f->param_size = (uint32_t)fcc_json_num(fcc_json_get(j, "param_size"), 0);
        f->max_threads = (int)fcc_json_num(fcc_json_get(j, "max_threads"), 1024);
        f->max_dyn_smem = (uint32_t)fcc_json_num(fcc_json_get(j, "max_dyn_smem"), 49152);
    }
    pthread_mutex_unlock(&f->module->mtx);
    fcc_json_free(j);
    if (!f->params) return CUDA_ERROR_OUT_OF_MEMORY;
    __atomic_or_fetch(&f->resolved, bit, __ATOMIC_RELEASE);
    return CUDA_SUCCESS;
}

/* The function or kernel of that name in the module (one handle per name). */
static CUresult get_func(struct fcd_module *m, const char *name, int kernel, int dev,
                         struct fcd_func **out) {
    pthread_mutex_lock(&m->mtx);
    struct fcd_func *f = m->funcs;
    while (f && (strcmp(f->name, name) || f->kernel != kernel)) f = f->next;
    if (!f && (f = calloc(1, sizeof *f))) {
        f->magic = FCD_FUNC;
        f->id = fcc_new_kernel_id();
        f->module = m;
        f->name = strdup(name);
        f->kernel = kernel;
        f->dev = dev;
        f->next = m->funcs;
        m->funcs = f;
        fcd_handle_add(f);
    }
    pthread_mutex_unlock(&m->mtx);
    if (!f || !f->name) return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult st = resolve_on(f, dev);
    if (st) return st == CUDA_ERROR_NOT_FOUND ? CUDA_ERROR_NOT_FOUND : st;
    *out = f;
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuModuleGetFunction(CUfunction *hfunc, CUmodule m, const char *name) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!hfunc || !name) return CUDA_ERROR_INVALID_VALUE;
    if (!fcd_handle_live(m, FCD_MODULE)) return CUDA_ERROR_INVALID_HANDLE;
    int dev = __builtin_ctzll(m->loaded | (1ull << 63));
    if (m->library && (st = fcd_current_device(&dev))) return st;
    return get_func(m, name, 0, dev, hfunc);
}

FCD_EXPORT CUresult cuModuleGetGlobal_v2(CUdeviceptr *dptr, size_t *bytes, CUmodule m,
                                         const char *name) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!name) return CUDA_ERROR_INVALID_VALUE;
    if (!fcd_handle_live(m, FCD_MODULE)) return CUDA_ERROR_INVALID_HANDLE;
    int dev = __builtin_ctzll(m->loaded | (1ull << 63));
    if ((m->library || dev == 63) && (st = fcd_current_device(&dev))) return st;
    if ((st = load_on(m, dev))) return st;
    fc_MODULE_GLOBAL msg = {m->id};
    fc_MODULE_GLOBAL_reply rep = {0};
    st = fcd_status(fcc_call(dev, FC_OP_MODULE_GLOBAL, &msg, sizeof msg, name, strlen(name), &rep,
                             sizeof rep, NULL, NULL));
    if (st) return st;
    fcc_range_add(rep.addr, rep.size, dev, FC_RANGE_SYMBOL, 0);
    if (dptr) *dptr = rep.addr;
    if (bytes) *bytes = rep.size;
    return CUDA_SUCCESS;
}

/* The names of the module's functions on a device, NUL-separated (asked of the server once:
 * a module's functions do not change). */
static CUresult names_on(struct fcd_module *m, int dev, const char **names, size_t *n) {
    CUresult st = load_on(m, dev);
    if (st) return st;
    pthread_mutex_lock(&m->mtx);
    int have = m->names != NULL;
    pthread_mutex_unlock(&m->mtx);
    if (!have) {
        fc_MODULE_NAMES msg = {m->id};
        char *bulk = NULL;
        size_t len = 0;
        st = fcd_status(fcc_call(dev, FC_OP_MODULE_NAMES, &msg, sizeof msg, NULL, 0, NULL, 0,
                                 &bulk, &len));
        if (st) {
            free(bulk);
            return st;
        }
        if (len && bulk[len - 1]) { /* not ended by a NUL: not an answer we can read */
            free(bulk);
            return CUDA_ERROR_UNKNOWN;
        }
        pthread_mutex_lock(&m->mtx);
        if (!m->names) {
            m->names = bulk ? bulk : calloc(1, 1);
            m->names_size = len;
            bulk = NULL;
        }
        pthread_mutex_unlock(&m->mtx);
        free(bulk);
        if (!m->names) return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *names = m->names;
    *n = m->names_size;
    return CUDA_SUCCESS;
}

static unsigned count_names(const char *names, size_t n) {
    unsigned c = 0;
    for (size_t i = 0; i < n; i++) c += names[i] == 0;
    return c;
}

/* Up to `max` function (kernel: 1) handles of the module, in the server's order; calls `each`
 * with every one when it is given. */
static CUresult enumerate(struct fcd_module *m, int kernel, int dev, CUfunction *out,
                          unsigned max, void (*each)(void *, CUfunction), void *user) {
    const char *names;
    size_t n;
    CUresult st = names_on(m, dev, &names, &n);
    if (st) return st;
    unsigned k = 0;
    for (size_t i = 0; i < n && k < max; i += strlen(names + i) + 1, k++) {
        struct fcd_func *f;
        if ((st = get_func(m, names + i, kernel, dev, &f))) return st;
        if (out) out[k] = f;
        if (each) each(user, f);
    }
    return CUDA_SUCCESS;
}

static CUresult module_dev(CUmodule m, int *dev) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!fcd_handle_live(m, FCD_MODULE)) return CUDA_ERROR_INVALID_HANDLE;
    *dev = __builtin_ctzll(m->loaded | (1ull << 63));
    if ((m->library || *dev == 63) && (st = fcd_current_device(dev))) return st;
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuModuleGetFunctionCount(unsigned int *count, CUmodule m) {
    int dev;
    CUresult st = module_dev(m, &dev);
    if (st) return st;
    if (!count) return CUDA_ERROR_INVALID_VALUE;
    const char *names;
    size_t n;
    if ((st = names_on(m, dev, &names, &n))) return st;
    *count = count_names(names, n);
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuModuleEnumerateFunctions(CUfunction *functions, unsigned int num,
                                               CUmodule m) {
    int dev;
    CUresult st = module_dev(m, &dev);
    if (st) return st;
    if (!functions || !num) return CUDA_ERROR_INVALID_VALUE;
    return enumerate(m, 0, dev, functions, num, NULL, NULL);
}

FCD_EXPORT CUresult cuLibraryGetKernelCount(unsigned int *count, CUlibrary lib) {
    if (fcd_handle_live(lib, FCD_MODULE) && !lib->library) return CUDA_ERROR_INVALID_HANDLE;
    return cuModuleGetFunctionCount(count, lib);
}

FCD_EXPORT CUresult cuLibraryEnumerateKernels(CUkernel *kernels, unsigned int num,
                                              CUlibrary lib) {
    int dev;
    CUresult st = module_dev(lib, &dev);
    if (st) return st;
    if (!lib->library) return CUDA_ERROR_INVALID_HANDLE;
    if (!kernels || !num) return CUDA_ERROR_INVALID_VALUE;
    return enumerate(lib, 1, dev, kernels, num, NULL, NULL);
}

/* Every function of a module, handed to `each` (export table 6e163fbe, slot 7: how cuFFT
 * finds the one kernel of a module it made without knowing the kernel's name). */
CUresult fcd_module_each_function(CUmodule m, void (*each)(void *, CUfunction), void *user) {
    int dev;
    CUresult st = module_dev(m, &dev);
    if (st) return st;
    if (!each) return CUDA_ERROR_INVALID_VALUE;
    return enumerate(m, 0, dev, NULL, ~0u, each, user);
}

/* ---------------- libraries ---------------- */

FCD_EXPORT CUresult cuLibraryLoadData(CUlibrary *library, const void *code, void **jitOptions,
                                      void **jitValues, unsigned int numJitOptions,
                                      void **libOptions, void **libValues,
                                      unsigned int numLibOptions) {
    (void)jitOptions; (void)jitValues; (void)numJitOptions;
    (void)libOptions; (void)libValues; (void)numLibOptions;
    return fcd_module_from_image(code, 0, 1, library);
}

FCD_EXPORT CUresult cuLibraryLoadFromFile(CUlibrary *library, const char *fileName,
                                          void **jitOptions, void **jitValues,
                                          unsigned int numJitOptions, void **libOptions,
                                          void **libValues, unsigned int numLibOptions) {
    (void)jitOptions; (void)jitValues; (void)numJitOptions;
    (void)libOptions; (void)libValues; (void)numLibOptions;
    CUresult st = fcd_enter();
    if (st) return st;
    if (!library || !fileName) return CUDA_ERROR_INVALID_VALUE;
    char *data;
    size_t n;
    if ((st = read_file(fileName, &data, &n))) return st;
    st = fcd_module_from_image(data, n, 1, library);
    free(data);
    return st;
}

FCD_EXPORT CUresult cuLibraryUnload(CUlibrary lib) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!fcd_handle_live(lib, FCD_MODULE) || !lib->library) return CUDA_ERROR_INVALID_HANDLE;
    module_free(lib);
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuLibraryGetKernel(CUkernel *pKernel, CUlibrary lib, const char *name) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!pKernel || !name) return CUDA_ERROR_INVALID_VALUE;
    if (!fcd_handle_live(lib, FCD_MODULE)) return CUDA_ERROR_INVALID_HANDLE;
    int dev;
    if ((st = fcd_current_device(&dev))) return st;
    return get_func(lib, name, 1, dev, pKernel);
}

FCD_EXPORT CUresult cuLibraryGetModule(CUmodule *pMod, CUlibrary lib) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!pMod) return CUDA_ERROR_INVALID_VALUE;
    if (!fcd_handle_live(lib, FCD_MODULE)) return CUDA_ERROR_INVALID_HANDLE;
    int dev;
    if ((st = fcd_current_device(&dev)) || (st = load_on(lib, dev))) return st;
    *pMod = lib;
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuLibraryGetGlobal(CUdeviceptr *dptr, size_t *bytes, CUlibrary lib,
                                       const char *name) {
    return cuModuleGetGlobal_v2(dptr, bytes, lib, name);
}

FCD_EXPORT CUresult cuKernelGetFunction(CUfunction *pFunc, CUkernel kernel) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!pFunc) return CUDA_ERROR_INVALID_VALUE;
    if (!fcd_handle_live(kernel, FCD_FUNC)) return CUDA_ERROR_INVALID_HANDLE;
    int dev;
    if ((st = fcd_current_device(&dev)) || (st = resolve_on(kernel, dev))) return st;
    *pFunc = kernel; /* the same handle: a function of the current context */
    return CUDA_SUCCESS;
}

/* ---------------- function attributes ---------------- */

/* The function handle and the device its attributes are asked on. */
static CUresult func_dev(CUfunction f, int want_dev, int *dev) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!fcd_handle_live(f, FCD_FUNC)) return CUDA_ERROR_INVALID_HANDLE;
    if (want_dev >= 0) {
        if ((st = fcd_check_device(want_dev))) return st;
        *dev = want_dev;
    } else if (f->kernel) {
        if ((st = fcd_current_device(dev))) return st;
    } else {
        *dev = f->dev;
    }
    return resolve_on(f, *dev);
}

/* What the program set changes the answers: ask again. */
static void forget_answers(CUfunction f, int dev) {
    pthread_mutex_lock(&f->module->mtx);
    free(f->attrs[dev]);
    f->attrs[dev] = NULL;
    for (fcd_answer **pp = &f->answers, *a; (a = *pp);) {
        if (a->dev == dev) {
            *pp = a->next;
            free(a);
        } else {
            pp = &a->next;
        }
    }
    pthread_mutex_unlock(&f->module->mtx);
}

/* A cached answer to an occupancy query (the request's bytes are the key). */
static int answer_get(CUfunction f, int dev, uint16_t op, const void *key, size_t n,
                      int64_t *value) {
    int found = 0;
    pthread_mutex_lock(&f->module->mtx);
    for (fcd_answer *a = f->answers; a && !found; a = a->next)
        if (a->dev == dev && a->op == op && a->n == n && !memcmp(a->key, key, n)) {
            *value = a->value;
            found = 1;
        }
    pthread_mutex_unlock(&f->module->mtx);
    return found;
}

static void answer_put(CUfunction f, int dev, uint16_t op, const void *key, size_t n,
                       int64_t value) {
    fcd_answer *a = n <= sizeof a->key ? calloc(1, sizeof *a) : NULL;
    if (!a) return;
    *a = (fcd_answer){dev, op, n, {0}, value, NULL};
    memcpy(a->key, key, n);
    pthread_mutex_lock(&f->module->mtx);
    a->next = f->answers;
    f->answers = a;
    pthread_mutex_unlock(&f->module->mtx);
}

static const char *const attr_fields[] = {
    "maxThreadsPerBlock", "sharedSizeBytes", "constSizeBytes", "localSizeBytes", "numRegs",
    "ptxVersion", "binaryVersion", "cacheModeCA", "maxDynamicSharedSizeBytes",
    "preferredShmemCarveout", "clusterDimMustBeSet", "requiredClusterWidth",
    "requiredClusterHeight", "requiredClusterDepth", "nonPortableClusterSizeAllowed",
    "clusterSchedulingPolicyPreference"};

static CUresult get_attr(int *value, int attrib, CUfunction f, int want_dev) {
    int dev;
    CUresult st = func_dev(f, want_dev, &dev);
    if (st) return st;
    if (!value || attrib < 0 || attrib > 15) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&f->module->mtx);
    char *cached = f->attrs[dev] ? strdup(f->attrs[dev]) : NULL;
    pthread_mutex_unlock(&f->module->mtx);
    if (!cached) { /* asked once per device: they change only when the program sets one */
        fc_FUNC_ATTRS m = {f->id};
        char *bulk = NULL;
        size_t n = 0;
        st = fcd_status(fcc_call(dev, FC_OP_FUNC_ATTRS, &m, sizeof m, NULL, 0, NULL, 0, &bulk,
                                 &n));
        if (st || !bulk) {
            free(bulk);
            return st ? st : CUDA_ERROR_UNKNOWN;
        }
        cached = strndup(bulk, n);
        free(bulk);
        pthread_mutex_lock(&f->module->mtx);
        if (!f->attrs[dev] && cached) f->attrs[dev] = strdup(cached);
        pthread_mutex_unlock(&f->module->mtx);
    }
    fcc_json *j = cached ? fcc_json_parse(cached, strlen(cached)) : NULL;
    free(cached);
    if (!j) return CUDA_ERROR_UNKNOWN;
    *value = (int)fcc_json_num(fcc_json_get(j, attr_fields[attrib]), 0);
    fcc_json_free(j);
    return CUDA_SUCCESS;
}

static CUresult set_attr(CUfunction f, int attrib, int value, int want_dev) {
    int dev;
    CUresult st = func_dev(f, want_dev, &dev);
    if (st) return st;
    if (attrib < 8 || attrib > 15) return CUDA_ERROR_INVALID_VALUE; /* the settable ones */
    fc_FUNC_SET_ATTR m = {f->id, (uint32_t)attrib, value};
    st = fcd_status(fcc_call(dev, FC_OP_FUNC_SET_ATTR, &m, sizeof m, NULL, 0, NULL, 0, NULL,
                             NULL));
    if (!st && attrib == 8) f->max_dyn_smem = (uint32_t)value;
    forget_answers(f, dev);
    return st;
}

FCD_EXPORT CUresult cuFuncGetAttribute(int *value, int attrib, CUfunction f) {
    return get_attr(value, attrib, f, -1);
}
FCD_EXPORT CUresult cuFuncSetAttribute(CUfunction f, int attrib, int value) {
    return set_attr(f, attrib, value, -1);
}
FCD_EXPORT CUresult cuKernelGetAttribute(int *value, int attrib, CUkernel k, CUdevice dev) {
    return get_attr(value, attrib, k, dev);
}
FCD_EXPORT CUresult cuKernelSetAttribute(int attrib, int value, CUkernel k, CUdevice dev) {
    return set_attr(k, attrib, value, dev);
}

static CUresult cache_config(CUfunction f, int config, int want_dev) {
    int dev;
    CUresult st = func_dev(f, want_dev, &dev);
    if (st) return st;
    if (config < 0 || config > 3) return CUDA_ERROR_INVALID_VALUE;
    fc_FUNC_SET_ATTR m = {f->id, 1000, config};
    st = fcd_status(fcc_call(dev, FC_OP_FUNC_SET_ATTR, &m, sizeof m, NULL, 0, NULL, 0, NULL,
                             NULL));
    forget_answers(f, dev);
    return st;
}

FCD_EXPORT CUresult cuFuncSetCacheConfig(CUfunction f, int config) {
    return cache_config(f, config, -1);
}
FCD_EXPORT CUresult cuKernelSetCacheConfig(CUkernel k, int config, CUdevice dev) {
    return cache_config(k, config, dev);
}

FCD_EXPORT CUresult cuFuncGetName(const char **name, CUfunction f) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!name) return CUDA_ERROR_INVALID_VALUE;
    if (!fcd_handle_live(f, FCD_FUNC)) return CUDA_ERROR_INVALID_HANDLE;
    *name = f->name;
    return CUDA_SUCCESS;
}
FCD_EXPORT CUresult cuKernelGetName(const char **name, CUkernel k) { return cuFuncGetName(name, k); }

FCD_EXPORT CUresult cuFuncGetParamInfo(CUfunction f, size_t index, size_t *offset, size_t *size) {
    int dev;
    CUresult st = func_dev(f, -1, &dev);
    if (st) return st;
    if (index >= f->nparams) return CUDA_ERROR_INVALID_VALUE;
    if (offset) *offset = f->params[index].offset;
    if (size) *size = f->params[index].size;
    return CUDA_SUCCESS;
}
FCD_EXPORT CUresult cuKernelGetParamInfo(CUkernel k, size_t index, size_t *offset, size_t *size) {
    return cuFuncGetParamInfo(k, index, offset, size);
}

FCD_EXPORT CUresult cuFuncGetModule(CUmodule *m, CUfunction f) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!m) return CUDA_ERROR_INVALID_VALUE;
    if (!fcd_handle_live(f, FCD_FUNC)) return CUDA_ERROR_INVALID_HANDLE;
    *m = f->module;
    return CUDA_SUCCESS;
}

/* Functions are loaded when they are looked up. */
FCD_EXPORT CUresult cuFuncIsLoaded(int *state, CUfunction f) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!state) return CUDA_ERROR_INVALID_VALUE;
    if (!fcd_handle_live(f, FCD_FUNC)) return CUDA_ERROR_INVALID_HANDLE;
    *state = 1; /* CU_FUNCTION_LOADED */
    return CUDA_SUCCESS;
}
FCD_EXPORT CUresult cuFuncLoad(CUfunction f) {
    int dev;
    return func_dev(f, -1, &dev);
}

/* ---------------- launches ---------------- */

/* The launch's device and stream: a CUfunction runs where it was loaded, a CUkernel on the
 * device of the stream (else of the current context). */
static CUresult launch_target(CUfunction f, CUstream s, int ptds, int *dev, uint32_t *sid) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!fcd_handle_live(f, FCD_FUNC)) return CUDA_ERROR_INVALID_HANDLE;
    *dev = f->kernel ? -1 : f->dev;
    if ((st = fcd_stream_resolve(s, ptds, dev, sid)))
        return st == CUDA_ERROR_INVALID_VALUE ? CUDA_ERROR_INVALID_HANDLE : st;
    return resolve_on(f, *dev);
}

static CUresult pack(CUfunction f, void **params, void **extra, char *buf) {
    if (params) {
        memset(buf, 0, f->param_size); /* padding between parameters: zeros, not our stack */
        for (uint32_t i = 0; i < f->nparams; i++) {
            if (!params[i]) return CUDA_ERROR_INVALID_VALUE;
            memcpy(buf + f->params[i].offset, params[i], f->params[i].size);
        }
        return CUDA_SUCCESS;
    }
    if (!extra) return f->nparams ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
    void *ptr = NULL;
    size_t *size = NULL;
    for (int i = 0; extra[i] != CU_LAUNCH_PARAM_END && i < 64; i += 2) {
        if (extra[i] == CU_LAUNCH_PARAM_BUFFER_POINTER) ptr = extra[i + 1];
        else if (extra[i] == CU_LAUNCH_PARAM_BUFFER_SIZE) size = extra[i + 1];
        else return CUDA_ERROR_INVALID_VALUE;
    }
    if (!ptr || !size || *size < f->param_size) return CUDA_ERROR_INVALID_VALUE;
    memcpy(buf, ptr, f->param_size);
    return CUDA_SUCCESS;
}

/* The packed parameter buffer of a launch of f (for a kernel node of a graph), malloc'd. */
CUresult fcd_pack_params(CUfunction f, void **params, void **extra, char **out, size_t *n) {
    if (!fcd_handle_live(f, FCD_FUNC)) return CUDA_ERROR_INVALID_HANDLE;
    char *buf = malloc(f->param_size + 1);
    if (!buf) return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult st = pack(f, params, extra, buf);
    if (st) {
        free(buf);
        return st;
    }
    *out = buf;
    *n = f->param_size;
    return CUDA_SUCCESS;
}

static CUresult check_dims(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                           unsigned by, unsigned bz) {
    if (!gx || !gy || !gz || !bx || !by || !bz) return CUDA_ERROR_INVALID_VALUE;
    if ((unsigned long long)bx * by * bz > (unsigned long long)f->max_threads)
        return CUDA_ERROR_INVALID_VALUE;
    return CUDA_SUCCESS;
}

/* A configuration the driver may refuse (a grid or block past the device's limits, more
 * dynamic shared memory than the function may use, a cooperative or cluster launch): sent as
 * a request and answered, so that the refusal comes back from this call, as from a real
 * driver, and not from a later one. */
static int doubtful(CUfunction f, int dev, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                    unsigned by, unsigned bz, unsigned shmem) {
    int fcd_attr(int dev, int attr);
    /* CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X..Z (2-4), MAX_GRID_DIM_X..Z (5-7) */
    return bx > (unsigned)fcd_attr(dev, 2) || by > (unsigned)fcd_attr(dev, 3) ||
           bz > (unsigned)fcd_attr(dev, 4) || gx > (unsigned)fcd_attr(dev, 5) ||
           gy > (unsigned)fcd_attr(dev, 6) || gz > (unsigned)fcd_attr(dev, 7) ||
           shmem > f->max_dyn_smem;
}

static CUresult launch(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                       unsigned by, unsigned bz, unsigned shmem, CUstream s, void **params,
                       void **extra, int ptds, uint32_t flags) {
    int dev;
    uint32_t sid;
    CUresult st = launch_target(f, s, ptds, &dev, &sid);
    if (st) return st;
    if ((st = check_dims(f, gx, gy, gz, bx, by, bz))) return st;
    if (params && extra) return CUDA_ERROR_INVALID_VALUE;
    char small[4096], *buf = f->param_size <= sizeof small ? small : malloc(f->param_size);
    if (!buf) return CUDA_ERROR_OUT_OF_MEMORY;
    if ((st = pack(f, params, extra, buf))) {
        if (buf != small) free(buf);
        return st;
    }
    if (flags || doubtful(f, dev, gx, gy, gz, bx, by, bz, shmem)) {
        fc_LAUNCH m = {f->id, sid, {gx, gy, gz}, {bx, by, bz}, shmem, flags};
        int e = fcc_call(dev, FC_OP_LAUNCH, &m, sizeof m, buf, f->param_size, NULL, 0, NULL,
                         NULL);
        if (buf != small) free(buf);
        if (!e) fcd_capture_node(fcd_capture_of(s), 0);
        return fcd_status(fcc_sync_status(dev, e));
    }
    fc_conn *c = fcc_dev_conn(dev);
    char *p = fc_post_begin(c, FC_OP_LAUNCH, (uint16_t)dev, sizeof(fc_LAUNCH) + f->param_size);
    if (p) {
        fc_LAUNCH m = {f->id, sid, {gx, gy, gz}, {bx, by, bz}, shmem, flags};
        memcpy(p, &m, sizeof m);
        memcpy(p + sizeof m, buf, f->param_size);
        fc_post_commit(c);
    }
    if (buf != small) free(buf);
    if (!p) return c->dead ? fcd_status(c->dead_status) : CUDA_ERROR_OUT_OF_MEMORY;
    fcd_capture_node(fcd_capture_of(s), 0); /* CU_GRAPH_NODE_TYPE_KERNEL */
    return fcd_status(fcc_device_status(dev));
}

FCD_EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz,
                                   unsigned bx, unsigned by, unsigned bz, unsigned shmem,
                                   CUstream s, void **params, void **extra) {
    return launch(f, gx, gy, gz, bx, by, bz, shmem, s, params, extra, 0, 0);
}
FCD_EXPORT CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned gx, unsigned gy, unsigned gz,
                                        unsigned bx, unsigned by, unsigned bz, unsigned shmem,
                                        CUstream s, void **params, void **extra) {
    return launch(f, gx, gy, gz, bx, by, bz, shmem, s, params, extra, 1, 0);
}
FCD_EXPORT CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz,
                                              unsigned bx, unsigned by, unsigned bz,
                                              unsigned shmem, CUstream s, void **params) {
    return launch(f, gx, gy, gz, bx, by, bz, shmem, s, params, NULL, 0, 1);
}
FCD_EXPORT CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned gx, unsigned gy,
                                                   unsigned gz, unsigned bx, unsigned by,
                                                   unsigned bz, unsigned shmem, CUstream s,
                                                   void **params) {
    return launch(f, gx, gy, gz, bx, by, bz, shmem, s, params, NULL, 1, 1);
}

static CUresult launch_ex(const CUlaunchConfig *cfg, CUfunction f, void **params, void **extra,
                          int ptds) {
    if (!cfg) return CUDA_ERROR_INVALID_VALUE;
    int dev;
    uint32_t sid;
    CUresult st = launch_target(f, cfg->hStream, ptds, &dev, &sid);
    if (st) return st;
    if ((st = check_dims(f, cfg->gridDimX, cfg->gridDimY, cfg->gridDimZ, cfg->blockDimX,
                         cfg->blockDimY, cfg->blockDimZ)))
        return st;
    if ((params && extra) || (cfg->numAttrs && !cfg->attrs) || cfg->numAttrs > 64)
        return CUDA_ERROR_INVALID_VALUE;
    size_t alen = (size_t)cfg->numAttrs * sizeof(CUlaunchAttribute);
    char *tmp = malloc(alen + f->param_size + 1);
    if (!tmp) return CUDA_ERROR_OUT_OF_MEMORY;
    if (alen) memcpy(tmp, cfg->attrs, alen);
    if ((st = pack(f, params, extra, tmp + alen))) {
        free(tmp);
        return st;
    }
    fc_LAUNCH_EX m = {f->id, sid, {cfg->gridDimX, cfg->gridDimY, cfg->gridDimZ},
                      {cfg->blockDimX, cfg->blockDimY, cfg->blockDimZ}, cfg->sharedMemBytes,
                      cfg->numAttrs};
    /* CU_LAUNCH_ATTRIBUTE_COOPERATIVE (2) and CLUSTER_DIMENSION (4) have conditions only the
     * device can judge */
    int ask = doubtful(f, dev, cfg->gridDimX, cfg->gridDimY, cfg->gridDimZ, cfg->blockDimX,
                       cfg->blockDimY, cfg->blockDimZ, cfg->sharedMemBytes);
    for (unsigned i = 0; i < cfg->numAttrs && !ask; i++)
        ask = cfg->attrs[i].id == 2 || cfg->attrs[i].id == 4;
    if (ask) {
        int e = fcc_call(dev, FC_OP_LAUNCH_EX, &m, sizeof m, tmp, alen + f->param_size, NULL, 0,
                         NULL, NULL);
        free(tmp);
        if (!e) fcd_capture_node(fcd_capture_of(cfg->hStream), 0);
        return fcd_status(fcc_sync_status(dev, e));
    }
    st = fcd_status(fcc_post(dev, FC_OP_LAUNCH_EX, &m, sizeof m, tmp, alen + f->param_size));
    free(tmp);
    if (!st) fcd_capture_node(fcd_capture_of(cfg->hStream), 0);
    return st;
}

FCD_EXPORT CUresult cuLaunchKernelEx(const CUlaunchConfig *cfg, CUfunction f, void **params,
                                     void **extra) {
    return launch_ex(cfg, f, params, extra, 0);
}
FCD_EXPORT CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *cfg, CUfunction f, void **params,
                                          void **extra) {
    return launch_ex(cfg, f, params, extra, 1);
}

/* ---------------- occupancy ---------------- */

static CUresult occupancy(int *n, CUfunction f, int block, size_t smem, unsigned flags) {
    int dev;
    CUresult st = func_dev(f, -1, &dev);
    if (st) return st;
    if (!n || block <= 0) return CUDA_ERROR_INVALID_VALUE;
    fc_OCCUPANCY m = {f->id, (uint32_t)block, smem, flags};
    int64_t v;
    if (answer_get(f, dev, FC_OP_OCCUPANCY, &m, sizeof m, &v)) {
        *n = (int)v;
        return CUDA_SUCCESS;
    }
    fc_OCCUPANCY_reply rep = {0};
    st = fcd_status(fcc_call(dev, FC_OP_OCCUPANCY, &m, sizeof m, NULL, 0, &rep, sizeof rep, NULL,
                             NULL));
    if (!st) {
        *n = rep.blocks;
        answer_put(f, dev, FC_OP_OCCUPANCY, &m, sizeof m, rep.blocks);
    }
    return st;
}

FCD_EXPORT CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int *n, CUfunction f, int block,
                                                                size_t smem) {
    return occupancy(n, f, block, smem, 0);
}
FCD_EXPORT CUresult cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int *n, CUfunction f,
                                                                         int block, size_t smem,
                                                                         unsigned int flags) {
    return occupancy(n, f, block, smem, flags);
}

FCD_EXPORT CUresult cuOccupancyAvailableDynamicSMemPerBlock(size_t *bytes, CUfunction f,
                                                            int numBlocks, int blockSize) {
    int dev;
    CUresult st = func_dev(f, -1, &dev);
    if (st) return st;
    if (!bytes) return CUDA_ERROR_INVALID_VALUE;
    fc_OCCUPANCY_SMEM m = {f->id, (uint32_t)numBlocks, (uint32_t)blockSize};
    int64_t v;
    if (answer_get(f, dev, FC_OP_OCCUPANCY_SMEM, &m, sizeof m, &v)) {
        *bytes = (size_t)v;
        return CUDA_SUCCESS;
    }
    fc_OCCUPANCY_SMEM_reply rep = {0};
    st = fcd_status(fcc_call(dev, FC_OP_OCCUPANCY_SMEM, &m, sizeof m, NULL, 0, &rep, sizeof rep,
                             NULL, NULL));
    if (!st) {
        *bytes = rep.bytes;
        answer_put(f, dev, FC_OP_OCCUPANCY_SMEM, &m, sizeof m, (int64_t)rep.bytes);
    }
    return st;
}

/* The block size with the best occupancy, searched as the CUDA occupancy calculator does:
 * multiples of the warp size up to the limit, each asked of the server. */
static CUresult potential_block(int *min_grid, int *block_out, CUfunction f,
                                size_t (*smem_of)(int), size_t smem, int limit, unsigned flags) {
    int dev;
    CUresult st = func_dev(f, -1, &dev);
    if (st) return st;
    if (!min_grid || !block_out) return CUDA_ERROR_INVALID_VALUE;
    int max = f->max_threads > 0 ? f->max_threads : 1024;
    if (limit > 0 && limit < max) max = limit;
    int fcd_attr(int dev, int attr);
    int sms = fcd_attr(dev, 16);
    int best_block = 0, best_occ = -1;
    for (int b = (max / 32) * 32; b >= 32; b -= 32) {
        int n = 0;
        if ((st = occupancy(&n, f, b, smem_of ? smem_of(b) : smem, flags))) return st;
        if (n * b > best_occ) {
            best_occ = n * b;
            best_block = b;
        }
    }
    if (!best_block) best_block = max;
    *block_out = best_block;
    *min_grid = best_occ > 0 ? (best_occ / best_block) * sms : sms;
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuOccupancyMaxPotentialBlockSize(int *minGrid, int *block, CUfunction f,
                                                     size_t (*smem_of)(int), size_t smem,
                                                     int limit) {
    return potential_block(minGrid, block, f, smem_of, smem, limit, 0);
}
FCD_EXPORT CUresult cuOccupancyMaxPotentialBlockSizeWithFlags(int *minGrid, int *block,
                                                              CUfunction f,
                                                              size_t (*smem_of)(int), size_t smem,
                                                              int limit, unsigned int flags) {
    return potential_block(minGrid, block, f, smem_of, smem, limit, flags);
}

/* ---------------- tensor maps ----------------
 *
 * A tensor map (a TMA descriptor) is the driver's own encoding of a tensor's layout, made on
 * the host and given to kernels by value. The GPU's driver makes it on the server, for the
 * same device addresses the program uses here (one round trip). */

static CUresult tensor_map(fc_TENSOR_MAP *m, const CUtensorMap *old, CUtensorMap *out) {
    int dev;
    CUresult st = fcd_current_device(&dev);
    if (st) return st;
    if ((st = fcd_status(fcc_device_ready(dev)))) return st;
    char *bulk = NULL;
    size_t n = 0;
    st = fcd_status(fcc_call(dev, FC_OP_TENSOR_MAP, m, sizeof *m, old, old ? sizeof *old : 0,
                             NULL, 0, &bulk, &n));
    if (!st && n != sizeof *out) st = CUDA_ERROR_UNKNOWN;
    if (!st) memcpy(out, bulk, sizeof *out);
    free(bulk);
    return st;
}

static CUresult tensor_map_shape(fc_TENSOR_MAP *m, CUtensorMap *map, int dtype, unsigned rank,
                                 void *addr, const cuuint64_t *dims, const cuuint64_t *strides,
                                 const cuuint32_t *estrides, int interleave, int swizzle, int l2,
                                 int oob) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!map || !dims || !estrides || rank < 1 || rank > 5 || (rank > 1 && !strides))
        return CUDA_ERROR_INVALID_VALUE;
    memset(m, 0, sizeof *m);
    m->dtype = (uint32_t)dtype;
    m->rank = rank;
    m->interleave = (uint32_t)interleave;
    m->swizzle = (uint32_t)swizzle;
    m->l2 = (uint32_t)l2;
    m->oob = (uint32_t)oob;
    m->addr = (uint64_t)(uintptr_t)addr;
    for (unsigned i = 0; i < rank; i++) {
        m->dims[i] = dims[i];
        m->estrides[i] = estrides[i];
        if (i + 1 < rank) m->strides[i] = strides[i];
    }
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuTensorMapEncodeTiled(CUtensorMap *map, CUtensorMapDataType dtype,
                                           cuuint32_t rank, void *addr, const cuuint64_t *dims,
                                           const cuuint64_t *strides, const cuuint32_t *box,
                                           const cuuint32_t *estrides,
                                           CUtensorMapInterleave interleave,
                                           CUtensorMapSwizzle swizzle,
                                           CUtensorMapL2promotion l2,
                                           CUtensorMapFloatOOBfill oob) {
    fc_TENSOR_MAP m;
    CUresult st = tensor_map_shape(&m, map, (int)dtype, rank, addr, dims, strides, estrides,
                                   (int)interleave, (int)swizzle, (int)l2, (int)oob);
    if (st) return st;
    if (!box) return CUDA_ERROR_INVALID_VALUE;
    m.kind = FC_TENSOR_MAP_TILED;
    for (unsigned i = 0; i < rank; i++) m.box[i] = box[i];
    return tensor_map(&m, NULL, map);
}

FCD_EXPORT CUresult cuTensorMapEncodeIm2col(CUtensorMap *map, CUtensorMapDataType dtype,
                                            cuuint32_t rank, void *addr, const cuuint64_t *dims,
                                            const cuuint64_t *strides, const int *lower,
                                            const int *upper, cuuint32_t channels,
                                            cuuint32_t pixels, const cuuint32_t *estrides,
                                            CUtensorMapInterleave interleave,
                                            CUtensorMapSwizzle swizzle,
                                            CUtensorMapL2promotion l2,
                                            CUtensorMapFloatOOBfill oob) {
    fc_TENSOR_MAP m;
    CUresult st = tensor_map_shape(&m, map, (int)dtype, rank, addr, dims, strides, estrides,
                                   (int)interleave, (int)swizzle, (int)l2, (int)oob);
    if (st) return st;
    if (rank < 3 || !lower || !upper) return CUDA_ERROR_INVALID_VALUE;
    m.kind = FC_TENSOR_MAP_IM2COL;
    m.channels = channels;
    m.pixels = pixels;
    for (unsigned i = 0; i + 2 < rank; i++) { /* one corner coordinate per spatial dimension */
        m.lower[i] = lower[i];
        m.upper[i] = upper[i];
    }
    return tensor_map(&m, NULL, map);
}

FCD_EXPORT CUresult cuTensorMapReplaceAddress(CUtensorMap *map, void *addr) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!map) return CUDA_ERROR_INVALID_VALUE;
    fc_TENSOR_MAP m;
    memset(&m, 0, sizeof m);
    m.kind = FC_TENSOR_MAP_REPLACE;
    m.addr = (uint64_t)(uintptr_t)addr;
    CUtensorMap old;
    memcpy(&old, map, sizeof old);
    return tensor_map(&m, &old, map);
}

static CUresult clusters(int *out, CUfunction f, const CUlaunchConfig *cfg, uint32_t what) {
    int dev;
    CUresult st = func_dev(f, -1, &dev);
    if (st) return st;
    if (!out || !cfg || (cfg->numAttrs && !cfg->attrs) || cfg->numAttrs > 64)
        return CUDA_ERROR_INVALID_VALUE;
    fc_OCCUPANCY_CLUSTERS m = {f->id, {cfg->gridDimX, cfg->gridDimY, cfg->gridDimZ},
                               {cfg->blockDimX, cfg->blockDimY, cfg->blockDimZ},
                               cfg->sharedMemBytes, cfg->numAttrs, what};
    /* the key: the request and its launch attributes */
    unsigned char key[256];
    size_t alen = cfg->numAttrs * sizeof(CUlaunchAttribute), klen = sizeof m;
    memcpy(key, &m, sizeof m);
    int cacheable = alen <= sizeof key - sizeof m;
    if (cacheable) {
        if (alen) memcpy(key + sizeof m, cfg->attrs, alen);
        klen += alen;
        int64_t v;
        if (answer_get(f, dev, FC_OP_OCCUPANCY_CLUSTERS, key, klen, &v)) {
            *out = (int)v;
            return CUDA_SUCCESS;
        }
    }
    fc_OCCUPANCY_CLUSTERS_reply rep = {0};
    st = fcd_status(fcc_call(dev, FC_OP_OCCUPANCY_CLUSTERS, &m, sizeof m, cfg->attrs, alen, &rep,
                             sizeof rep, NULL, NULL));
    if (!st) {
        *out = rep.value;
        if (cacheable) answer_put(f, dev, FC_OP_OCCUPANCY_CLUSTERS, key, klen, rep.value);
    }
    return st;
}

FCD_EXPORT CUresult cuOccupancyMaxActiveClusters(int *n, CUfunction f, const CUlaunchConfig *cfg) {
    return clusters(n, f, cfg, 0);
}
FCD_EXPORT CUresult cuOccupancyMaxPotentialClusterSize(int *n, CUfunction f,
                                                       const CUlaunchConfig *cfg) {
    return clusters(n, f, cfg, 1);
}
