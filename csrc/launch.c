/* Registration of fat binaries, kernels and device variables, and kernel launches.
 *
 * Registration runs in the program's static constructors, before main: it only records (and
 * copies the fat binary, which may be unmapped before __cudaUnregisterFatBinary runs). A
 * module is sent to a virtual device the first time something on that device needs it; the
 * daemon answers with each kernel's parameter layout, from which a launch packs the argument
 * bytes straight into the connection's queue.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "fc.h"
#include "api.h"
#include "conn.h"
#include "gen/exports.h"
#include "gen/pycalls.h"
#include "launch.h"
#include "log.h"
#include "pyhost.h"
#include "core/ranges.h"
#include "runtime.h"
#include "streams.h"

#define FATBINC_MAGIC 0x466243B1
#define FATBIN_MAGIC 0xBA55ED50u

typedef struct {
    int magic;
    int version;
    const unsigned long long *data;
    void *filename_or_fatbins;
} fatbinc_wrapper;

/* registries: append-only arrays (published with a release store of the count) */
static pthread_mutex_t reg_mtx = PTHREAD_MUTEX_INITIALIZER;
static fc_module **modules;
static size_t nmodules, cap_modules;
static fc_kernel **kernels;
static size_t nkernels, cap_kernels;
static fc_var **vars;
static size_t nvars, cap_vars;

/* host pointer -> kernel / variable: open addressing, rebuilt on growth */
typedef struct { const void *key; void *val; } slot_t;
static slot_t *hmap;
static size_t hmap_cap;

static size_t hash_ptr(const void *p) {
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

static void hmap_put_locked(const void *key, void *val) {
    if ((nkernels + nvars + 1) * 2 > hmap_cap) {
        size_t cap = hmap_cap ? hmap_cap * 2 : 1024;
        slot_t *m = calloc(cap, sizeof *m);
        if (!m) return;
        for (size_t i = 0; i < hmap_cap; i++) {
            if (!hmap[i].key) continue;
            size_t j = hash_ptr(hmap[i].key) & (cap - 1);
            while (m[j].key) j = (j + 1) & (cap - 1);
            m[j] = hmap[i];
        }
        /* readers may hold the old table for a moment: leak it rather than free it */
        __atomic_store_n(&hmap_cap, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&hmap, m, __ATOMIC_RELEASE);
        __atomic_store_n(&hmap_cap, cap, __ATOMIC_RELEASE);
    }
    size_t j = hash_ptr(key) & (hmap_cap - 1);
    while (hmap[j].key && hmap[j].key != key) j = (j + 1) & (hmap_cap - 1);
    hmap[j].val = val;
    __atomic_store_n(&hmap[j].key, key, __ATOMIC_RELEASE);
}

static void *hmap_get(const void *key) {
    size_t cap = __atomic_load_n(&hmap_cap, __ATOMIC_ACQUIRE);
    slot_t *m = __atomic_load_n(&hmap, __ATOMIC_ACQUIRE);
    if (!cap || !m) return NULL;
    size_t j = hash_ptr(key) & (cap - 1);
    for (size_t n = 0; n < cap; n++) {
        const void *k = __atomic_load_n(&m[j].key, __ATOMIC_ACQUIRE);
        if (!k) return NULL;
        if (k == key) return m[j].val;
        j = (j + 1) & (cap - 1);
    }
    return NULL;
}

static int grow(void ***arr, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap * 2 : 64;
    while (c < need) c *= 2;
    void **a = realloc(*arr, c * sizeof(void *));
    if (!a) return -1;
    *arr = a;
    *cap = c;
    return 0;
}

/* tags in the low bit tell kernels from variables in the shared map */
fc_kernel *fc_kernel_by_host(const void *host_fun) {
    uintptr_t v = (uintptr_t)hmap_get(host_fun);
    return (v && !(v & 1)) ? (fc_kernel *)v : NULL;
}

fc_var *fc_var_by_host(const void *host_var) {
    uintptr_t v = (uintptr_t)hmap_get(host_var);
    return (v & 1) ? (fc_var *)(v & ~(uintptr_t)1) : NULL;
}

/* ---------------- registration ---------------- */

FC_EXPORT void **__cudaRegisterFatBinary(void *fatCubin) {
    fc_module *m = calloc(1, sizeof *m);
    if (!m) abort();
    pthread_mutex_init(&m->mtx, NULL);
    m->wrapper = fatCubin;
    const fatbinc_wrapper *w = fatCubin;
    if (w && w->magic == FATBINC_MAGIC && w->data) {
        const unsigned char *blob = (const unsigned char *)w->data;
        uint32_t magic;
        uint16_t hsize;
        uint64_t size;
        memcpy(&magic, blob, 4);
        memcpy(&hsize, blob + 6, 2);
        memcpy(&size, blob + 8, 8);
        if (magic == FATBIN_MAGIC && hsize >= 16 && size < (1ULL << 32)) {
            m->image_size = hsize + size;
            m->image = malloc(m->image_size);
            if (m->image) memcpy(m->image, blob, m->image_size);
        }
    }
    if (!m->image) fc_log("__cudaRegisterFatBinary: unrecognized fat binary; its kernels will "
                          "fail with cudaErrorInvalidKernelImage");
    pthread_mutex_lock(&reg_mtx);
    if (grow((void ***)&modules, &cap_modules, nmodules + 1)) abort();
    m->id = (uint32_t)nmodules;
    modules[nmodules] = m;
    __atomic_store_n(&nmodules, nmodules + 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&reg_mtx);
    return (void **)m;
}

FC_EXPORT void __cudaRegisterFatBinaryEnd(void **handle) { (void)handle; }

FC_EXPORT void __cudaUnregisterFatBinary(void **handle) {
    /* The process is ending or a library is unloaded: the daemon frees the module with the
     * session; we only stop using it. */
    fc_module *m = (fc_module *)handle;
    if (m) m->unregistered = 1;
}

FC_EXPORT char __cudaInitModule(void **handle) {
    (void)handle;
    return 1; /* modules load lazily, on first use on each device */
}

FC_EXPORT void __cudaRegisterFunction(void **handle, const char *hostFun, char *deviceFun,
                                      const char *deviceName, int thread_limit, void *tid,
                                      void *bid, void *bDim, void *gDim, int *wSize) {
    (void)deviceFun;
    (void)thread_limit;
    (void)tid;
    (void)bid;
    (void)bDim;
    (void)gDim;
    (void)wSize;
    fc_kernel *k = calloc(1, sizeof *k);
    if (!k) abort();
    k->module = (fc_module *)handle;
    k->host_fun = hostFun;
    k->name = strdup(deviceName ? deviceName : "");
    pthread_mutex_lock(&reg_mtx);
    if (grow((void ***)&kernels, &cap_kernels, nkernels + 1)) abort();
    k->id = (uint32_t)nkernels;
    kernels[nkernels] = k;
    __atomic_store_n(&nkernels, nkernels + 1, __ATOMIC_RELEASE);
    hmap_put_locked(hostFun, k);
    pthread_mutex_unlock(&reg_mtx);
}

static fc_var *add_var(void **handle, const void *host, const char *name, size_t size,
                       int constant, int managed) {
    fc_var *v = calloc(1, sizeof *v);
    if (!v) abort();
    v->module = (fc_module *)handle;
    v->host_var = host;
    v->name = strdup(name ? name : "");
    v->size = size;
    v->constant = constant;
    v->managed = managed;
    pthread_mutex_lock(&reg_mtx);
    if (grow((void ***)&vars, &cap_vars, nvars + 1)) abort();
    v->id = (uint32_t)nvars;
    vars[nvars] = v;
    __atomic_store_n(&nvars, nvars + 1, __ATOMIC_RELEASE);
    hmap_put_locked(host, (void *)((uintptr_t)v | 1));
    pthread_mutex_unlock(&reg_mtx);
    return v;
}

FC_EXPORT void __cudaRegisterVar(void **handle, char *hostVar, char *deviceAddress,
                                 const char *deviceName, int ext, size_t size, int constant,
                                 int global) {
    (void)deviceAddress;
    (void)ext;
    (void)global;
    add_var(handle, hostVar, deviceName, size, constant, 0);
}

FC_EXPORT void __cudaRegisterManagedVar(void **handle, void **hostVarPtrAddress,
                                        char *deviceAddress, const char *deviceName, int ext,
                                        size_t size, int constant, int global) {
    (void)deviceAddress;
    (void)ext;
    (void)global;
    fc_log("__managed__ variable %s: managed memory is not supported by farcuda; its module's "
           "kernels fail with cudaErrorNotSupported", deviceName ? deviceName : "?");
    /* The program reads the variable through *hostVarPtrAddress: give it private host memory
     * so that a stray host access does not crash; no kernel of the module will run. */
    if (hostVarPtrAddress) *hostVarPtrAddress = calloc(1, size ? size : 1);
    add_var(handle, hostVarPtrAddress, deviceName, size, constant, 1);
    ((fc_module *)handle)->unregistered = 2; /* unusable */
}

FC_EXPORT void __cudaRegisterHostVar(void **handle, const char *deviceName, char *hostVar,
                                     size_t size) {
    (void)handle;
    (void)deviceName;
    (void)hostVar;
    (void)size;
}

/* ---------------- module loading ---------------- */

int fc_module_ready(fc_module *m, int dev) {
    uint64_t bit = 1ULL << dev;
    if (__atomic_load_n(&m->loaded, __ATOMIC_ACQUIRE) & bit) return cudaSuccess;
    if (m->unregistered == 2) return cudaErrorNotSupported;
    if (!m->image) return cudaErrorInvalidKernelImage;
    pthread_mutex_lock(&m->mtx);
    int st = cudaSuccess;
    if (!(m->loaded & bit)) {
        fc_python_ensure();
        st = fcpy_module_load((int)m->id, dev);
    }
    pthread_mutex_unlock(&m->mtx);
    return st;
}

int fc_var_address(fc_var *v, int dev, uint64_t *addr) {
    if (v->managed) return cudaErrorNotSupported;
    int st = fc_module_ready(v->module, dev);
    if (st) return st;
    if (!v->addr[dev]) return cudaErrorInvalidSymbol;
    *addr = v->addr[dev];
    return cudaSuccess;
}

int fcx_module_count(void) { return (int)__atomic_load_n(&nmodules, __ATOMIC_ACQUIRE); }

int fcx_module_image(int mod, const char **image, size_t *size) {
    if (mod < 0 || (size_t)mod >= nmodules) return -1;
    *image = modules[mod]->image;
    *size = modules[mod]->image_size;
    return 0;
}

int fcx_kernel_count(void) { return (int)__atomic_load_n(&nkernels, __ATOMIC_ACQUIRE); }

int fcx_kernel_info(int k, int *mod, const char **name) {
    if (k < 0 || (size_t)k >= nkernels) return -1;
    *mod = (int)kernels[k]->module->id;
    *name = kernels[k]->name;
    return 0;
}

int fcx_var_count(void) { return (int)__atomic_load_n(&nvars, __ATOMIC_ACQUIRE); }

int fcx_var_info(int v, int *mod, const char **name, size_t *size, int *constant, int *managed) {
    if (v < 0 || (size_t)v >= nvars) return -1;
    *mod = (int)vars[v]->module->id;
    *name = vars[v]->name;
    *size = vars[v]->size;
    *constant = vars[v]->constant;
    *managed = vars[v]->managed;
    return 0;
}

int fcx_set_kernel_plan(int k, const uint32_t *params, int nparams, uint32_t param_size,
                        int max_threads, uint32_t max_dyn_smem) {
    if (k < 0 || (size_t)k >= nkernels || nparams < 0) return -1;
    fc_kernel *kn = kernels[k];
    if (kn->plan_ready) return 0; /* the layout does not depend on the device */
    fc_param *p = calloc((size_t)nparams + 1, sizeof *p);
    if (!p) return -1;
    for (int i = 0; i < nparams; i++) {
        p[i].offset = params[2 * i];
        p[i].size = params[2 * i + 1];
        if (p[i].offset + p[i].size > param_size) {
            free(p);
            return -1;
        }
    }
    kn->params = p;
    kn->nparams = (uint32_t)nparams;
    kn->param_size = param_size;
    kn->max_threads = max_threads;
    kn->max_dyn_smem = max_dyn_smem;
    __atomic_store_n(&kn->plan_ready, 1, __ATOMIC_RELEASE);
    return 0;
}

void fcx_kernel_set_smem(int k, uint32_t max_dyn_smem) {
    if (k >= 0 && (size_t)k < nkernels) kernels[k]->max_dyn_smem = max_dyn_smem;
}

void fcx_set_var_addr(int v, int dev, uint64_t addr) {
    if (v < 0 || (size_t)v >= nvars || dev < 0 || dev >= FC_MAX_DEVICES) return;
    vars[v]->addr[dev] = addr;
}

void fcx_module_loaded(int mod, int dev) {
    if (mod < 0 || (size_t)mod >= nmodules) return;
    __atomic_or_fetch(&modules[mod]->loaded, 1ULL << dev, __ATOMIC_ACQ_REL);
}

int fcx_module_ready(int mod, int dev) {
    if (mod < 0 || (size_t)mod >= nmodules) return cudaErrorInvalidValue;
    return fc_module_ready(modules[mod], dev);
}

int fcx_kernel_by_host(const void *host_fun) {
    fc_kernel *k = fc_kernel_by_host(host_fun);
    return k ? (int)k->id : -1;
}

/* ---------------- launch ---------------- */

FC_EXPORT unsigned __cudaPushCallConfiguration(fc_dim3 grid, fc_dim3 block, size_t shmem,
                                               void *stream) {
    fc_tls *t = fc_tls_get();
    if (t->nconfig >= FC_CONFIG_STACK) return 1;
    t->config[t->nconfig++] = (fc_config){grid, block, shmem, stream};
    return 0;
}

FC_EXPORT cudaError_t __cudaPopCallConfiguration(fc_dim3 *grid, fc_dim3 *block, size_t *shmem,
                                                 void *stream) {
    fc_tls *t = fc_tls_get();
    if (t->nconfig == 0) return fc_ret(cudaErrorMissingConfiguration);
    fc_config *c = &t->config[--t->nconfig];
    *grid = c->grid;
    *block = c->block;
    *shmem = c->shmem;
    *(cudaStream_t *)stream = c->stream;
    return cudaSuccess;
}

FC_EXPORT cudaError_t __cudaGetKernel(void **handle, const void *hostFun) {
    fc_kernel *k = fc_kernel_by_host(hostFun);
    if (!handle) return fc_ret(cudaErrorInvalidValue);
    *handle = k;
    return k ? cudaSuccess : fc_ret(cudaErrorInvalidDeviceFunction);
}

/* A pointer argument into mapped host memory: the remote GPU cannot reach the client's
 * memory, so the launch is refused (cudaErrorNotSupported, said once) rather than left to
 * fault or, worse, to read whatever lies at that address on the server. */
static int mapped_notice;
static int mapped_arguments(const fc_kernel *k, void **args) {
    for (uint32_t i = 0; i < k->nparams; i++) {
        if (k->params[i].size != 8) continue;
        uint64_t v;
        memcpy(&v, args[i], 8);
        if (v && fcc_mapped_pointer(v)) {
            if (!__atomic_exchange_n(&mapped_notice, 1, __ATOMIC_ACQ_REL))
                fc_log("a kernel argument points into mapped (zero-copy) host memory, which a "
                       "remote GPU cannot reach: the launch returns cudaErrorNotSupported");
            return cudaErrorNotSupported;
        }
    }
    return cudaSuccess;
}

/* What every launch checks first, in this order (the order decides which error a bad
 * launch gets): the stream is the current device's, the device is open, the kernel's module
 * is loaded there and its parameter layout known, no argument points into mapped memory. */
static inline __attribute__((always_inline)) int
launch_prologue(fc_kernel *k, cudaStream_t stream, int ptds, void **args, int *dev,
                uint32_t *sid) {
    int st;
    *dev = fc_current_device();
    int sdev = *dev;
    if ((st = fc_stream_resolve(stream, ptds, &sdev, sid))) return st;
    if (sdev != *dev) return cudaErrorInvalidResourceHandle;
    if ((st = fc_device_ready(*dev))) return st;
    if ((st = fc_module_ready(k->module, *dev))) return st;
    if (!k->plan_ready) return cudaErrorInvalidDeviceFunction;
    return mapped_arguments(k, args);
}

/* The argument bytes at the offsets of the kernel's layout, the gaps zeroed: the bytes are
 * the driver's parameter buffer as they are, the daemon copies nothing. */
static inline void pack_params(const fc_kernel *k, void **args, char *pb) {
    memset(pb, 0, k->param_size);
    for (uint32_t i = 0; i < k->nparams; i++)
        memcpy(pb + k->params[i].offset, args[i], k->params[i].size);
}

/* A LAUNCH frame's fixed part and arguments, written where `p` points (the queue, on the
 * async path: field by field, no temporary). */
static inline void pack_launch(char *p, const fc_kernel *k, uint32_t sid, fc_dim3 grid,
                               fc_dim3 block, size_t shmem, uint32_t flags, void **args) {
    fc_LAUNCH *m = (fc_LAUNCH *)p;
    m->kernel = k->id;
    m->stream = sid;
    m->grid[0] = grid.x;
    m->grid[1] = grid.y;
    m->grid[2] = grid.z;
    m->block[0] = block.x;
    m->block[1] = block.y;
    m->block[2] = block.z;
    m->shmem = (uint32_t)shmem;
    m->flags = flags;
    pack_params(k, args, p + sizeof *m);
}

int fc_launch(fc_kernel *k, fc_dim3 grid, fc_dim3 block, void **args, size_t shmem,
              cudaStream_t stream, int ptds, uint32_t flags) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!k) return cudaErrorInvalidDeviceFunction;
    int dev;
    uint32_t sid;
    if ((st = launch_prologue(k, stream, ptds, args, &dev, &sid))) return st;
    fc_device *d = &fc_devices[dev];
    /* Configurations the driver would refuse go synchronously, so that the error comes back
     * from this call, exactly as the driver words it. */
    uint64_t threads = (uint64_t)block.x * block.y * block.z;
    int doubtful = threads == 0 || threads > (uint64_t)d->max_threads ||
                   grid.x == 0 || grid.y == 0 || grid.z == 0 ||
                   (int)block.x > d->max_block[0] || (int)block.y > d->max_block[1] ||
                   (int)block.z > d->max_block[2] || grid.x > (unsigned)d->max_grid[0] ||
                   (int)grid.y > d->max_grid[1] || (int)grid.z > d->max_grid[2] ||
                   (k->max_threads > 0 && threads > (uint64_t)k->max_threads) ||
                   shmem > d->shmem_optin || shmem > k->max_dyn_smem ||
                   (flags & FC_LAUNCH_COOPERATIVE);
    fc_conn *c = fc_servers[d->server].conn;
    size_t len = sizeof(fc_LAUNCH) + k->param_size;
    if (doubtful) {
        char *buf = malloc(len);
        if (!buf) return cudaErrorMemoryAllocation;
        pack_launch(buf, k, sid, grid, block, shmem, flags, args);
        fc_req r;
        fc_req_init(&r, NULL, 0);
        st = fc_call(c, FC_OP_LAUNCH, (uint16_t)dev, buf, len, NULL, 0, &r);
        free(buf);
        if (!st) fc_capture_node(fc_capture_of(stream, ptds, dev), FC_NODE_KERNEL);
        return fc_sync_status(dev, st);
    }
    fc_capture *cap = fc_capture_of(stream, ptds, dev);
    if (cap) fc_capture_node(cap, FC_NODE_KERNEL);
    char *p = fc_post_begin(c, FC_OP_LAUNCH, (uint16_t)dev, len);
    if (!p) return c->dead ? c->dead_status : cudaErrorMemoryAllocation;
    pack_launch(p, k, sid, grid, block, shmem, flags, args);
    fc_post_commit(c);
    if (c->dead) return c->dead_status;
    return fc_device_status(dev);
}

/* cudaLaunchConfig_t of CUDA 13; its attributes travel as they are (FC_LAUNCH_ATTR_SIZE
 * bytes each) and the daemon reads them */
typedef struct {
    fc_dim3 gridDim;
    fc_dim3 blockDim;
    size_t dynamicSmemBytes;
    cudaStream_t stream;
    void *attrs;
    unsigned int numAttrs;
} fc_launch_config;
_Static_assert(sizeof(fc_launch_config) == FC_SIZEOF_cudaLaunchConfig_t, "cudaLaunchConfig_t");
_Static_assert(offsetof(fc_launch_config, numAttrs) == FC_OFFSETOF_cudaLaunchConfig_t_numAttrs,
               "cudaLaunchConfig_t.numAttrs");

/* cudaLaunchKernel of something that is not a registered kernel: CUDA 13 answers
 * cudaErrorInvalidResourceHandle. */
int fc_launch_host_fun(const void *func, fc_dim3 grid, fc_dim3 block, void **args,
                       size_t shmem, cudaStream_t stream, int ptds, uint32_t flags) {
    fc_kernel *k = fc_kernel_by_host(func);
    if (!k) {
        int st = fc_ensure_init();
        return st ? st : cudaErrorInvalidResourceHandle;
    }
    return fc_launch(k, grid, block, args, shmem, stream, ptds, flags);
}

int fc_launch_ex(const void *config, const void *func, void **args, int ptds) {
    const fc_launch_config *cfg = config;
    if (!cfg) return cudaErrorInvalidValue;
    if (cfg->numAttrs == 0)
        return fc_launch_host_fun(func, cfg->gridDim, cfg->blockDim, args,
                                  cfg->dynamicSmemBytes, cfg->stream, ptds, 0);
    fc_kernel *k = fc_kernel_by_host(func);
    int st = fc_ensure_init();
    if (st) return st;
    if (!k) return cudaErrorInvalidResourceHandle;
    int dev;
    uint32_t sid;
    if ((st = launch_prologue(k, cfg->stream, ptds, args, &dev, &sid))) return st;
    size_t alen = (size_t)cfg->numAttrs * FC_LAUNCH_ATTR_SIZE;
    size_t len = sizeof(fc_LAUNCH_EX) + alen + k->param_size;
    char *buf = malloc(len);
    if (!buf) return cudaErrorMemoryAllocation;
    fc_LAUNCH_EX *m = (fc_LAUNCH_EX *)buf;
    *m = (fc_LAUNCH_EX){k->id, sid, {cfg->gridDim.x, cfg->gridDim.y, cfg->gridDim.z},
                        {cfg->blockDim.x, cfg->blockDim.y, cfg->blockDim.z},
                        (uint32_t)cfg->dynamicSmemBytes, cfg->numAttrs};
    memcpy(buf + sizeof *m, cfg->attrs, alen);
    pack_params(k, args, buf + sizeof *m + alen);
    /* with attributes the driver's checks are subtle: always synchronous */
    st = fc_call_dev(dev, FC_OP_LAUNCH_EX, buf, len, NULL, 0);
    free(buf);
    if (!st) fc_capture_node(fc_capture_of(cfg->stream, ptds, dev), FC_NODE_KERNEL);
    return fc_sync_status(dev, st);
}

/* What keeps a launch's arguments for later (a graph's kernel node, graphs.c) needs the
 * kernel's layout: its module loaded on the device. */
int fc_kernel_layout(fc_kernel *k, int dev) {
    int st = fc_device_ready(dev);
    if (st) return st;
    if ((st = fc_module_ready(k->module, dev))) return st;
    return k->plan_ready ? cudaSuccess : cudaErrorInvalidDeviceFunction;
}

#define FC_LAUNCH_PARAM_END ((void *)0)
#define FC_LAUNCH_PARAM_BUFFER_POINTER ((void *)1)
#define FC_LAUNCH_PARAM_BUFFER_SIZE ((void *)2)

/* A launch's arguments copied into a new buffer by the kernel's layout (param_size bytes, at
 * least one): from the pointers in args, or from the packed buffer that `extra` names
 * (CU_LAUNCH_PARAM_BUFFER_POINTER and _SIZE, as cuLaunchKernel takes them). */
int fc_kernel_pack(const fc_kernel *k, void **args, void **extra, char **out) {
    if (args && extra) return cudaErrorInvalidValue;
    char *buf = malloc(k->param_size ? k->param_size : 1);
    if (!buf) return cudaErrorMemoryAllocation;
    memset(buf, 0, k->param_size);
    if (args) {
        for (uint32_t i = 0; i < k->nparams; i++)
            if (!args[i]) {
                free(buf);
                return cudaErrorInvalidValue;
            }
        pack_params(k, args, buf);
    } else if (extra) {
        const void *packed = NULL;
        const size_t *size = NULL;
        int known = 1;
        for (int i = 0; i < 64 && known && extra[i] != FC_LAUNCH_PARAM_END; i += 2) {
            if (extra[i] == FC_LAUNCH_PARAM_BUFFER_POINTER) packed = extra[i + 1];
            else if (extra[i] == FC_LAUNCH_PARAM_BUFFER_SIZE) size = extra[i + 1];
            else known = 0;
        }
        if (!known || !packed || !size || *size < k->param_size) {
            free(buf);
            return cudaErrorInvalidValue;
        }
        memcpy(buf, packed, k->param_size);
    } else if (k->nparams) {
        free(buf);
        return cudaErrorInvalidValue;
    }
    *out = buf;
    return cudaSuccess;
}

int fc_func_get_name(const char **name, const void *func) {
    if (!name) return cudaErrorInvalidValue;
    fc_kernel *k = fc_kernel_by_host(func);
    if (!k) return cudaErrorInvalidDeviceFunction;
    *name = k->name;
    return cudaSuccess;
}

void fc_modules_forget_device(int dev) {
    size_t n = __atomic_load_n(&nmodules, __ATOMIC_ACQUIRE);
    for (size_t i = 0; i < n; i++)
        __atomic_and_fetch(&modules[i]->loaded, ~(1ULL << dev), __ATOMIC_ACQ_REL);
    n = __atomic_load_n(&nvars, __ATOMIC_ACQUIRE);
    for (size_t i = 0; i < n; i++) vars[i]->addr[dev] = 0;
}
