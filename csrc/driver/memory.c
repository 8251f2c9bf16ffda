/* Memory: device allocations, page-locked host memory, copies, sets, pointer attributes.
 *
 * Device pointers are the server's real device addresses, inside each virtual device's
 * window (csrc/core/ranges.c), so a pointer names its device by itself. As with the runtime
 * shim: synchronous copies wait for their reply; async copies from host memory send the bytes
 * with the request (the source is consumed before the call returns); an async copy into
 * page-locked memory of up to 4 MiB returns at once and its bytes land before any later
 * synchronization that covers it returns; sets and device-to-device copies never wait.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fcd.h"
#include "../core/core.h"

enum { HOST_PORTABLE = 1, HOST_DEVICEMAP = 2, HOST_WRITECOMBINED = 4, HOST_OWNED = 0x100 };

static fc_conn *conn_of(int dev) { return fcc_dev_conn(dev); }

/* ---------------- allocation ---------------- */

static CUresult dev_alloc(int dev, size_t size, CUdeviceptr *out) {
    fc_MALLOC m = {size, 0};
    fc_MALLOC_reply rep = {0};
    CUresult st = fcd_status(fcc_sync_status(dev, fcc_call(dev, FC_OP_MALLOC, &m, sizeof m, NULL,
                                                           0, &rep, sizeof rep, NULL, NULL)));
    if (st) return st;
    if (fcc_range_add(rep.ptr, size, dev, FC_RANGE_DEVICE, 0)) {
        fcc_log("cuMemAlloc: the server returned 0x%llx, which overlaps memory already known; "
                "refusing it", (unsigned long long)rep.ptr);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *out = rep.ptr;
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize) {
    int dev;
    CUresult st = fcd_current_device(&dev);
    if (st) return st;
    if (!dptr || !bytesize) return CUDA_ERROR_INVALID_VALUE;
    return dev_alloc(dev, bytesize, dptr);
}

FCD_EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pitch, size_t width,
                                       size_t height, unsigned int elem) {
    int dev;
    CUresult st = fcd_current_device(&dev);
    if (st) return st;
    if (!dptr || !pitch || !width || !height || (elem != 4 && elem != 8 && elem != 16))
        return CUDA_ERROR_INVALID_VALUE;
    fc_MALLOC_PITCH m = {width, height};
    fc_MALLOC_PITCH_reply rep = {0};
    st = fcd_status(fcc_sync_status(dev, fcc_call(dev, FC_OP_MALLOC_PITCH, &m, sizeof m, NULL, 0,
                                                  &rep, sizeof rep, NULL, NULL)));
    if (st) return st;
    if (fcc_range_add(rep.ptr, rep.pitch * height, dev, FC_RANGE_DEVICE, 0))
        return CUDA_ERROR_OUT_OF_MEMORY;
    *dptr = rep.ptr;
    *pitch = rep.pitch;
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuMemFree_v2(CUdeviceptr dptr) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!dptr) return CUDA_SUCCESS;
    fc_range rg;
    if (fcc_range_find(dptr, 1, &rg) || rg.base != dptr ||
        (rg.kind != FC_RANGE_DEVICE && rg.kind != FC_RANGE_ASYNC))
        return CUDA_ERROR_INVALID_VALUE;
    int dev = rg.dev;
    if ((st = fcd_status(fcc_device_ready(dev)))) return st;
    /* forget the range first: once freed, another thread's allocation may get it back */
    if (fcc_range_remove(rg.base, rg.kind, NULL)) return CUDA_ERROR_INVALID_VALUE;
    fc_FREE m = {rg.base};
    int e = fcc_call(dev, FC_OP_FREE, &m, sizeof m, NULL, 0, NULL, 0, NULL, NULL);
    if (e != cudaSuccess && e != cudaErrorInvalidValue)
        fcc_range_insert(&rg);
    else
        fcc_pool_release(&rg);
    return fcd_status(fcc_sync_status(dev, e));
}

FCD_EXPORT CUresult cuMemGetInfo_v2(size_t *free_, size_t *total) {
    int dev;
    CUresult st = fcd_current_device(&dev);
    if (st) return st;
    fc_MEM_GET_INFO_reply rep = {0};
    st = fcd_status(fcc_call(dev, FC_OP_MEM_GET_INFO, NULL, 0, NULL, 0, &rep, sizeof rep, NULL,
                             NULL));
    if (st) return st;
    if (free_) *free_ = rep.free;
    if (total) *total = rep.total;
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuMemGetAddressRange_v2(CUdeviceptr *base, size_t *size, CUdeviceptr dptr) {
    CUresult st = fcd_enter();
    if (st) return st;
    fc_range rg;
    if (fcc_range_find(dptr, 1, &rg)) return CUDA_ERROR_NOT_FOUND;
    if (base) *base = rg.base;
    if (size) *size = rg.size;
    return CUDA_SUCCESS;
}

/* Stream-ordered allocation from the device's default pool. */
FCD_EXPORT CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t size, CUstream hStream);
FCD_EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t size, CUstream hStream);
FCD_EXPORT CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream hStream);
FCD_EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream hStream);

static int capture_alloc_notice;

/* A stream-ordered allocation from a pool (NULL: the current pool of the stream's device). The
 * allocation is made now (nothing in the stream can touch it before this returns); the
 * stream travels for the record. */
CUresult fcd_alloc_async(CUdeviceptr *dptr, size_t size, void *pool_handle, CUstream s,
                         int ptds);
CUresult fcd_alloc_async(CUdeviceptr *dptr, size_t size, void *pool_handle, CUstream s,
                         int ptds) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!dptr) return CUDA_ERROR_INVALID_VALUE;
    int sdev = -1;
    uint32_t sid;
    fc_pool *pool = NULL;
    if (pool_handle) { /* a default stream is then the pool's device's */
        int pdev = 0;
        if ((st = fcd_status(fcc_pool_for_alloc(pool_handle, &pdev, 0, &pool)))) return st;
        sdev = pdev;
    }
    if ((st = fcd_stream_resolve(s, ptds, &sdev, &sid))) {
        if (st != CUDA_ERROR_INVALID_VALUE || !pool_handle) return st;
        sdev = -1; /* a pool of another device than the stream's */
        if ((st = fcd_stream_resolve(s, ptds, &sdev, &sid))) return st;
    }
    int dev = sdev;
    if ((st = fcd_status(fcc_pool_for_alloc(pool_handle, &dev, size, &pool)))) return st;
    if ((st = fcd_status(fcc_device_ready(dev)))) return st;
    if (fcd_capture_of(s)) {
        fcd_note_once(&capture_alloc_notice, "stream-ordered allocation in a capturing stream "
                      "(graph memory nodes) is not supported by farcuda "
                      "(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED)");
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    }
    if (!size) { /* as CUDA answers it: no memory, a null pointer */
        *dptr = 0;
        return CUDA_SUCCESS;
    }
    fc_MALLOC_ASYNC m = {size, dev == sdev ? sid : 0};
    fc_MALLOC_ASYNC_reply rep = {0};
    st = fcd_status(fcc_sync_status(dev, fcc_call(dev, FC_OP_MALLOC_ASYNC, &m, sizeof m, NULL, 0,
                                                  &rep, sizeof rep, NULL, NULL)));
    if (st) return st;
    fc_range rg = {rep.ptr, size, dev, FC_RANGE_ASYNC, 0, 0, pool, rep.used, rep.reserved};
    if (fcc_range_insert(&rg)) return CUDA_ERROR_OUT_OF_MEMORY;
    fcc_pool_account(pool, rep.used, rep.reserved);
    *dptr = rep.ptr;
    return CUDA_SUCCESS;
}

static CUresult alloc_async(CUdeviceptr *dptr, size_t size, CUstream s, int ptds) {
    return fcd_alloc_async(dptr, size, NULL, s, ptds);
}

/* Free in the stream's order, without waiting: the daemon frees when the stream gets there,
 * so work queued before it still sees the memory. */
static CUresult free_async(CUdeviceptr dptr, CUstream s, int ptds) {
    CUresult st = fcd_enter();
    if (st) return st;
    fc_range rg;
    if (!dptr || fcc_range_find(dptr, 1, &rg) || rg.base != dptr ||
        (rg.kind != FC_RANGE_ASYNC && rg.kind != FC_RANGE_DEVICE))
        return CUDA_ERROR_INVALID_VALUE;
    int sdev = rg.dev;
    uint32_t sid;
    if ((st = fcd_stream_resolve(s, ptds, &sdev, &sid))) {
        if (st != CUDA_ERROR_INVALID_VALUE) return st;
        sdev = -1; /* a stream of another device */
        if ((st = fcd_stream_resolve(s, ptds, &sdev, &sid))) return st;
    }
    if ((st = fcd_status(fcc_device_ready(rg.dev)))) return st;
    if (fcd_capture_of(s)) {
        fcd_note_once(&capture_alloc_notice, "stream-ordered allocation in a capturing stream "
                      "(graph memory nodes) is not supported by farcuda "
                      "(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED)");
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    }
    if (fcc_range_remove(rg.base, rg.kind, NULL)) return CUDA_ERROR_INVALID_VALUE;
    fcc_pool_release(&rg);
    int fdev = sdev;
    if (fc_devices[sdev].server != fc_devices[rg.dev].server) {
        /* the stream is on another server, whose order the memory's cannot see: wait for
         * it here, then free in the order of the memory's device */
        fc_STREAM_SYNC w = {sid};
        st = fcd_status(fcc_sync_status(sdev, fcc_call(sdev, FC_OP_STREAM_SYNC, &w, sizeof w,
                                                       NULL, 0, NULL, 0, NULL, NULL)));
        fdev = rg.dev;
        sid = 0;
    }
    fc_FREE_ASYNC m = {rg.base, sid};
    fc_conn *c = conn_of(fdev);
    char *p = fc_post_begin(c, FC_OP_FREE_ASYNC, (uint16_t)fdev, sizeof m);
    if (!p) return CUDA_ERROR_OUT_OF_MEMORY;
    ((fc_hdr *)p)[-1].aux = (uint16_t)rg.dev; /* the device of the memory */
    memcpy(p, &m, sizeof m);
    fc_post_commit(c);
    return st ? st : fcd_status(fcc_device_status(fdev));
}

CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t size, CUstream s) {
    return alloc_async(dptr, size, s, 0);
}
CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t size, CUstream s) {
    return alloc_async(dptr, size, s, 1);
}
CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream s) { return free_async(dptr, s, 0); }
CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream s) { return free_async(dptr, s, 1); }

/* cuDevicePrimaryCtxReset: the device's memory is gone. */
void fcd_device_forget(int dev);
void fcd_device_forget(int dev) {
    fcc_range_drop_device(dev);
    fcc_pools_reset_device(dev);
}

/* ---------------- page-locked host memory ---------------- */

static int mapped_notice;

static CUresult host_alloc(void **pp, size_t size, unsigned int flags) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!pp || !size || (flags & ~7u)) return CUDA_ERROR_INVALID_VALUE;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t len = (size + page - 1) / page * page;
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
    if (fcc_range_add((uint64_t)(uintptr_t)p, size, -1, FC_RANGE_HOST, flags | HOST_OWNED)) {
        munmap(p, len);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *pp = p;
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuMemAllocHost_v2(void **pp, size_t size) { return host_alloc(pp, size, 0); }
FCD_EXPORT CUresult cuMemHostAlloc(void **pp, size_t size, unsigned int flags) {
    return host_alloc(pp, size, flags);
}

void fc_wait_async_all(void);

FCD_EXPORT CUresult cuMemFreeHost(void *p) {
    CUresult st = fcd_enter();
    if (st) return st;
    fc_range r;
    if (!p || fcc_range_find((uint64_t)(uintptr_t)p, 0, &r) || r.base != (uint64_t)(uintptr_t)p ||
        !(r.flags & HOST_OWNED))
        return CUDA_ERROR_INVALID_VALUE;
    fc_wait_async_all(); /* copies into it still on their way */
    fcc_range_remove(r.base, FC_RANGE_HOST, NULL);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    munmap(p, (r.size + page - 1) / page * page);
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuMemHostRegister_v2(void *p, size_t size, unsigned int flags) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!p || !size || (flags & ~0xfu)) return CUDA_ERROR_INVALID_VALUE;
    if (fcc_range_add((uint64_t)(uintptr_t)p, size, -1, FC_RANGE_HOST, flags & 3u))
        return CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED;
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuMemHostUnregister(void *p) {
    CUresult st = fcd_enter();
    if (st) return st;
    fc_range r;
    if (!p || fcc_range_find((uint64_t)(uintptr_t)p, 0, &r) || r.base != (uint64_t)(uintptr_t)p ||
        (r.flags & HOST_OWNED))
        return CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
    fc_wait_async_all();
    fcc_range_remove(r.base, FC_RANGE_HOST, NULL);
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuMemHostGetFlags(unsigned int *flags, void *p) {
    CUresult st = fcd_enter();
    if (st) return st;
    fc_range r;
    if (!flags || fcc_range_find((uint64_t)(uintptr_t)p, 0, &r)) return CUDA_ERROR_INVALID_VALUE;
    *flags = r.flags & 0xffu;
    return CUDA_SUCCESS;
}

FCD_EXPORT CUresult cuMemHostGetDevicePointer_v2(CUdeviceptr *pdptr, void *p, unsigned int flags) {
    (void)flags;
    CUresult st = fcd_enter();
    if (st) return st;
    if (!pdptr || fcc_range_find((uint64_t)(uintptr_t)p, 0, NULL)) return CUDA_ERROR_INVALID_VALUE;
    /* a remote GPU cannot reach this process's memory coherently */
    fcd_note_once(&mapped_notice, "cuMemHostGetDevicePointer: mapped (zero-copy) host memory is "
                  "not supported by farcuda (returns CUDA_ERROR_NOT_SUPPORTED)");
    return CUDA_ERROR_NOT_SUPPORTED;
}

/* ---------------- copies ---------------- */

static int is_device(CUdeviceptr p, size_t n, int *dev, int *bad) {
    fc_range r;
    *bad = 0;
    if (fcc_range_find(p, 1, &r)) return 0;
    *dev = r.dev;
    if (p + n > r.base + r.size) *bad = 1;
    return 1;
}

static int pinned(const void *p, size_t n) {
    fc_range r;
    return fcc_range_find((uint64_t)(uintptr_t)p, 0, &r) == 0 &&
           (uint64_t)(uintptr_t)p + n <= r.base + r.size;
}

static CUresult htod(int dev, CUdeviceptr dst, const void *src, size_t n, uint32_t sid,
                     int async) {
    CUresult st = fcd_status(fcc_device_ready(dev));
    if (st) return st;
    if (pinned(src, n)) fcc_wait_host_funcs(dev);
    fc_MEMCPY_HTOD m = {dst, sid, 0};
    int e = fc_send_htod(conn_of(dev), (uint16_t)dev, FC_OP_MEMCPY_HTOD, &m, sizeof m, 0, src, n,
                         !async);
    if (async) return fcd_status(e ? e : fcc_device_status(dev));
    return fcd_status(fcc_sync_status(dev, e));
}

static CUresult dtoh(int dev, void *dst, CUdeviceptr src, size_t n, uint32_t sid) {
    CUresult st = fcd_status(fcc_device_ready(dev));
    if (st) return st;
    fc_MEMCPY_DTOH m = {src, n, sid, 0};
    fc_req r;
    fc_req_init(&r, NULL, 0);
    r.bulk = dst;
    r.bulk_cap = n;
    int e = fc_call(conn_of(dev), FC_OP_MEMCPY_DTOH, (uint16_t)dev, &m, sizeof m, NULL, 0, &r);
    if (e == cudaSuccess && r.bulk_len != n) e = cudaErrorUnknown;
    return fcd_status(fcc_sync_status(dev, e));
}

static CUresult dtoh_async(int dev, void *dst, CUdeviceptr src, size_t n, uint32_t sid) {
    CUresult st = fcd_status(fcc_device_ready(dev));
    if (st) return st;
    fc_req *r = calloc(1, sizeof *r);
    if (!r) return CUDA_ERROR_OUT_OF_MEMORY;
    r->bulk = dst;
    r->bulk_cap = n;
    fc_MEMCPY_DTOH m = {src, n, sid, FC_MEMCPY_DTOH_DEFERRED};
    int e = fc_post_req(conn_of(dev), FC_OP_MEMCPY_DTOH, (uint16_t)dev, &m, sizeof m, r, n);
    return fcd_status(e ? e : fcc_device_status(dev));
}

static CUresult dtod(int dev, CUdeviceptr dst, CUdeviceptr src, size_t n, uint32_t sid) {
    CUresult st = fcd_status(fcc_device_ready(dev));
    if (st) return st;
    fc_MEMCPY_DTOD m = {dst, src, n, sid, 0};
    return fcd_status(fcc_post(dev, FC_OP_MEMCPY_DTOD, &m, sizeof m, NULL, 0));
}

/* Between two virtual devices: on the server when one session serves both, else through
 * this process. */
static CUresult peer(int ddev, CUdeviceptr dst, int sdev, CUdeviceptr src, size_t n, uint32_t sid,
                     int async) {
    CUresult st = fcd_status(fcc_device_ready(ddev));
    if (!st) st = fcd_status(fcc_device_ready(sdev));
    if (st) return st;
    if (fc_devices[ddev].server == fc_devices[sdev].server) {
        fc_MEMCPY_PEER m = {dst, (uint32_t)ddev, (uint32_t)sdev, src, n, sid, 0};
        if (async) return fcd_status(fcc_post(sdev, FC_OP_MEMCPY_PEER, &m, sizeof m, NULL, 0));
        return fcd_status(fcc_sync_status(sdev, fcc_call(sdev, FC_OP_MEMCPY_PEER, &m, sizeof m,
                                                         NULL, 0, NULL, 0, NULL, NULL)));
    }
    size_t chunk = n < (64u << 20) ? n : (64u << 20);
    char *tmp = malloc(chunk);
    if (!tmp) return CUDA_ERROR_OUT_OF_MEMORY;
    for (size_t off = 0; off < n && !st; off += chunk) {
        size_t k = n - off < chunk ? n - off : chunk;
        st = dtoh(sdev, tmp, src + off, k, 0);
        if (!st) st = htod(ddev, dst + off, tmp, k, 0, 0);
    }
    free(tmp);
    return st;
}

/* One copy, its sides found from the pointers (unified addressing); `want_dst`/`want_src`
 * (1 device, 0 host, -1 either) are what the entry point's name promises. */
static CUresult copy(CUdeviceptr dst, CUdeviceptr src, size_t n, int want_dst, int want_src,
                     CUstream stream, int ptds, int async) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (n == 0) return CUDA_SUCCESS;
    if (!dst || !src) return CUDA_ERROR_INVALID_VALUE;
    int ddev = -1, sdev = -1, dbad, sbad;
    int d_dev = is_device(dst, n, &ddev, &dbad), s_dev = is_device(src, n, &sdev, &sbad);
    if ((want_dst == 1 && !d_dev) || (want_src == 1 && !s_dev) || (d_dev && dbad) ||
        (s_dev && sbad))
        return CUDA_ERROR_INVALID_VALUE;
    if (want_dst == 0 && d_dev) d_dev = 1; /* a host pointer that is device memory: as CUDA */
    int dev = d_dev ? ddev : (s_dev ? sdev : -1);
    uint32_t sid = 0;
    if (dev >= 0 || stream) {
        int sdev_of_stream = dev;
        if ((st = fcd_stream_resolve(stream, ptds, &sdev_of_stream, &sid))) return st;
        if (dev < 0) dev = sdev_of_stream;
    }
    struct fcd_capture *cap = fcd_capture_of(stream);
    if (cap) { /* into the graph: host memory is read and written at each replay */
        if (d_dev && s_dev && ddev == sdev) {
            st = dtod(ddev, dst, src, n, sid);
            if (!st) fcd_capture_node(cap, 1); /* CU_GRAPH_NODE_TYPE_MEMCPY */
            return st;
        }
        if (d_dev != s_dev)
            return fcd_capture_host_copy(cap, d_dev ? ddev : sdev, d_dev ? dst : src,
                                         (void *)(uintptr_t)(d_dev ? src : dst), n, d_dev, sid);
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    }
    if (d_dev && s_dev) {
        if (ddev == sdev) return dtod(ddev, dst, src, n, sid);
        return peer(ddev, dst, sdev, src, n, sid, async);
    }
    if (d_dev) return htod(ddev, dst, (const void *)(uintptr_t)src, n, sid, async);
    if (s_dev) {
        void *h = (void *)(uintptr_t)dst;
        if (async && n <= FC_PIECE && pinned(h, n)) return dtoh_async(sdev, h, src, n, sid);
        return dtoh(sdev, h, src, n, sid);
    }
    memmove((void *)(uintptr_t)dst, (const void *)(uintptr_t)src, n);
    return CUDA_SUCCESS;
}

#define P(x) ((CUdeviceptr)(uintptr_t)(x))

FCD_EXPORT CUresult cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    return copy(dst, src, n, -1, -1, NULL, 0, 0);
}
FCD_EXPORT CUresult cuMemcpy_ptds(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    return copy(dst, src, n, -1, -1, NULL, 1, 0);
}
FCD_EXPORT CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) {
    return copy(dst, src, n, -1, -1, s, 0, 1);
}
FCD_EXPORT CUresult cuMemcpyAsync_ptsz(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) {
    return copy(dst, src, n, -1, -1, s, 1, 1);
}
FCD_EXPORT CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n) {
    return copy(dst, P(src), n, 1, 0, NULL, 0, 0);
}
FCD_EXPORT CUresult cuMemcpyHtoD_v2_ptds(CUdeviceptr dst, const void *src, size_t n) {
    return copy(dst, P(src), n, 1, 0, NULL, 1, 0);
}
FCD_EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, CUstream s) {
    return copy(dst, P(src), n, 1, 0, s, 0, 1);
}
FCD_EXPORT CUresult cuMemcpyHtoDAsync_v2_ptsz(CUdeviceptr dst, const void *src, size_t n,
                                              CUstream s) {
    return copy(dst, P(src), n, 1, 0, s, 1, 1);
}
FCD_EXPORT CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) {
    return copy(P(dst), src, n, 0, 1, NULL, 0, 0);
}
FCD_EXPORT CUresult cuMemcpyDtoH_v2_ptds(void *dst, CUdeviceptr src, size_t n) {
    return copy(P(dst), src, n, 0, 1, NULL, 1, 0);
}
FCD_EXPORT CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, CUstream s) {
    return copy(P(dst), src, n, 0, 1, s, 0, 1);
}
FCD_EXPORT CUresult cuMemcpyDtoHAsync_v2_ptsz(void *dst, CUdeviceptr src, size_t n, CUstream s) {
    return copy(P(dst), src, n, 0, 1, s, 1, 1);
}
FCD_EXPORT CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    return copy(dst, src, n, 1, 1, NULL, 0, 0);
}
FCD_EXPORT CUresult cuMemcpyDtoD_v2_ptds(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    return copy(dst, src, n, 1, 1, NULL, 1, 0);
}
FCD_EXPORT CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) {
    return copy(dst, src, n, 1, 1, s, 0, 1);
}
FCD_EXPORT CUresult cuMemcpyDtoDAsync_v2_ptsz(CUdeviceptr dst, CUdeviceptr src, size_t n,
                                              CUstream s) {
    return copy(dst, src, n, 1, 1, s, 1, 1);
}

static CUresult copy_peer(CUdeviceptr dst, CUcontext dctx, CUdeviceptr src, CUcontext sctx,
                          size_t n, CUstream s, int ptds, int async) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!fcd_handle_live(dctx, FCD_CTX) || !fcd_handle_live(sctx, FCD_CTX))
        return CUDA_ERROR_INVALID_CONTEXT;
    return copy(dst, src, n, 1, 1, s, ptds, async);
}

FCD_EXPORT CUresult cuMemcpyPeer(CUdeviceptr dst, CUcontext dctx, CUdeviceptr src, CUcontext sctx,
                                 size_t n) {
    return copy_peer(dst, dctx, src, sctx, n, NULL, 0, 0);
}
FCD_EXPORT CUresult cuMemcpyPeer_ptds(CUdeviceptr dst, CUcontext dctx, CUdeviceptr src,
                                      CUcontext sctx, size_t n) {
    return copy_peer(dst, dctx, src, sctx, n, NULL, 1, 0);
}
FCD_EXPORT CUresult cuMemcpyPeerAsync(CUdeviceptr dst, CUcontext dctx, CUdeviceptr src,
                                      CUcontext sctx, size_t n, CUstream s) {
    return copy_peer(dst, dctx, src, sctx, n, s, 0, 1);
}
FCD_EXPORT CUresult cuMemcpyPeerAsync_ptsz(CUdeviceptr dst, CUcontext dctx, CUdeviceptr src,
                                           CUcontext sctx, size_t n, CUstream s) {
    return copy_peer(dst, dctx, src, sctx, n, s, 1, 1);
}

/* ---------------- 2D copies ---------------- */

static int array_notice, capture2d_notice;

static CUresult copy2d(const CUDA_MEMCPY2D *p, CUstream stream, int ptds, int async) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!p) return CUDA_ERROR_INVALID_VALUE;
    if (p->srcMemoryType == CU_MEMORYTYPE_ARRAY || p->dstMemoryType == CU_MEMORYTYPE_ARRAY) {
        fcd_note_once(&array_notice, "cuMemcpy2D: CUDA arrays are not supported by farcuda "
                      "(returns CUDA_ERROR_NOT_SUPPORTED)");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    size_t w = p->WidthInBytes, h = p->Height;
    if (!w || !h) return CUDA_SUCCESS;
    CUdeviceptr s = p->srcMemoryType == CU_MEMORYTYPE_HOST ? P(p->srcHost) : p->srcDevice;
    CUdeviceptr d = p->dstMemoryType == CU_MEMORYTYPE_HOST ? P(p->dstHost) : p->dstDevice;
    size_t spitch = p->srcPitch ? p->srcPitch : w, dpitch = p->dstPitch ? p->dstPitch : w;
    if (w > spitch || w > dpitch) return CUDA_ERROR_INVALID_VALUE;
    s += p->srcY * spitch + p->srcXInBytes;
    d += p->dstY * dpitch + p->dstXInBytes;
    size_t sspan = (h - 1) * spitch + w, dspan = (h - 1) * dpitch + w;
    int sdev = -1, ddev = -1, sbad, dbad;
    int s_dev = is_device(s, sspan, &sdev, &sbad), d_dev = is_device(d, dspan, &ddev, &dbad);
    if ((p->srcMemoryType == CU_MEMORYTYPE_DEVICE && !s_dev) ||
        (p->dstMemoryType == CU_MEMORYTYPE_DEVICE && !d_dev) || (s_dev && sbad) || (d_dev && dbad))
        return CUDA_ERROR_INVALID_VALUE;
    int dev = d_dev ? ddev : (s_dev ? sdev : -1);
    uint32_t sid = 0;
    if (dev >= 0 && (st = fcd_stream_resolve(stream, ptds, &dev, &sid))) return st;
    struct fcd_capture *cap = fcd_capture_of(stream);
    if (cap && !(d_dev && s_dev && ddev == sdev) && (h == 1 || (spitch == w && dpitch == w)))
        return copy(d, s, w * h, -1, -1, stream, ptds, async); /* rows back to back: 1D */
    if (cap && !(d_dev && s_dev && ddev == sdev)) {
        fcd_note_once(&capture2d_notice, "pitched 2D copies between host memory and a capturing "
                      "stream are not supported by farcuda (CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED)");
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    }
    if (cap) fcd_capture_node(cap, 1);
    if (d_dev && s_dev && ddev == sdev) {
        if ((st = fcd_status(fcc_device_ready(ddev)))) return st;
        fc_MEMCPY2D_DTOD m = {d, dpitch, s, spitch, w, h, sid, 0};
        return fcd_status(fcc_post(ddev, FC_OP_MEMCPY2D_DTOD, &m, sizeof m, NULL, 0));
    }
    if (d_dev && !s_dev) {
        if ((st = fcd_status(fcc_device_ready(ddev)))) return st;
        size_t rows = FC_PIECE / w ? FC_PIECE / w : 1;
        char *tmp = malloc(rows * w);
        if (!tmp) return CUDA_ERROR_OUT_OF_MEMORY;
        for (size_t y = 0; y < h && !st; y += rows) {
            size_t k = h - y < rows ? h - y : rows;
            for (size_t i = 0; i < k; i++)
                memcpy(tmp + i * w, (const char *)(uintptr_t)s + (y + i) * spitch, w);
            fc_MEMCPY2D_HTOD m = {d + y * dpitch, dpitch, w, k, sid, 0};
            if (y + k >= h && !async)
                st = fcd_status(fcc_sync_status(ddev, fcc_call(ddev, FC_OP_MEMCPY2D_HTOD, &m,
                                                               sizeof m, tmp, k * w, NULL, 0,
                                                               NULL, NULL)));
            else
                st = fcd_status(fcc_post(ddev, FC_OP_MEMCPY2D_HTOD, &m, sizeof m, tmp, k * w));
        }
        free(tmp);
        return st;
    }
    if (s_dev && !d_dev) {
        if ((st = fcd_status(fcc_device_ready(sdev)))) return st;
        fc_MEMCPY2D_DTOH m = {s, spitch, w, h, sid, 0};
        fc_req r;
        fc_req_init(&r, NULL, 0);
        r.bulk = (char *)(uintptr_t)d;
        r.bulk_cap = (h - 1) * dpitch + w;
        r.row_width = w;
        r.row_pitch = dpitch;
        int e = fc_call(conn_of(sdev), FC_OP_MEMCPY2D_DTOH, (uint16_t)sdev, &m, sizeof m, NULL, 0,
                        &r);
        return fcd_status(fcc_sync_status(sdev, e));
    }
    /* host to host, or between devices: row by row */
    for (size_t y = 0; y < h && !st; y++)
        st = copy(d + y * dpitch, s + y * spitch, w, -1, -1, stream, ptds, async);
    return st;
}

FCD_EXPORT CUresult cuMemcpy2D_v2(const CUDA_MEMCPY2D *p) { return copy2d(p, NULL, 0, 0); }
FCD_EXPORT CUresult cuMemcpy2D_v2_ptds(const CUDA_MEMCPY2D *p) { return copy2d(p, NULL, 1, 0); }
FCD_EXPORT CUresult cuMemcpy2DUnaligned_v2(const CUDA_MEMCPY2D *p) { return copy2d(p, NULL, 0, 0); }
FCD_EXPORT CUresult cuMemcpy2DUnaligned_v2_ptds(const CUDA_MEMCPY2D *p) {
    return copy2d(p, NULL, 1, 0);
}
FCD_EXPORT CUresult cuMemcpy2DAsync_v2(const CUDA_MEMCPY2D *p, CUstream s) {
    return copy2d(p, s, 0, 1);
}
FCD_EXPORT CUresult cuMemcpy2DAsync_v2_ptsz(const CUDA_MEMCPY2D *p, CUstream s) {
    return copy2d(p, s, 1, 1);
}

/* ---------------- 3D copies of linear memory ---------------- */

/* A box of a pitched volume is a 2D copy of its rows: one for the whole box when both volumes'
 * slices are as tall as the box (the rows follow each other), else one per slice. */
static CUresult copy3d(const CUDA_MEMCPY3D *p, CUstream stream, int ptds, int async) {
    if (!p || p->reserved0 || p->reserved1) return CUDA_ERROR_INVALID_VALUE;
    if (p->srcMemoryType == CU_MEMORYTYPE_ARRAY || p->dstMemoryType == CU_MEMORYTYPE_ARRAY) {
        fcd_note_once(&array_notice, "cuMemcpy3D: CUDA arrays are not supported by farcuda "
                      "(returns CUDA_ERROR_NOT_SUPPORTED)");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    if (p->srcLOD || p->dstLOD) return CUDA_ERROR_INVALID_VALUE; /* arrays only */
    size_t depth = p->Depth, sh = p->srcHeight, dh = p->dstHeight;
    if (!p->WidthInBytes || !p->Height || !depth) return fcd_enter();
    if (depth > 1 && (sh < p->Height || dh < p->Height)) return CUDA_ERROR_INVALID_VALUE;
    CUDA_MEMCPY2D q = {p->srcXInBytes, p->srcY + p->srcZ * sh, p->srcMemoryType, p->srcHost,
                       p->srcDevice, NULL, p->srcPitch, p->dstXInBytes, p->dstY + p->dstZ * dh,
                       p->dstMemoryType, p->dstHost, p->dstDevice, NULL, p->dstPitch,
                       p->WidthInBytes, p->Height};
    if (depth == 1 || (sh == p->Height && dh == p->Height)) {
        q.Height = p->Height * depth;
        return copy2d(&q, stream, ptds, async);
    }
    CUresult st = CUDA_SUCCESS;
    for (size_t z = 0; z < depth && !st; z++) {
        st = copy2d(&q, stream, ptds, async);
        q.srcY += sh;
        q.dstY += dh;
    }
    return st;
}

FCD_EXPORT CUresult cuMemcpy3D_v2(const CUDA_MEMCPY3D *p) { return copy3d(p, NULL, 0, 0); }
FCD_EXPORT CUresult cuMemcpy3D_v2_ptds(const CUDA_MEMCPY3D *p) { return copy3d(p, NULL, 1, 0); }
FCD_EXPORT CUresult cuMemcpy3DAsync_v2(const CUDA_MEMCPY3D *p, CUstream s) {
    return copy3d(p, s, 0, 1);
}
FCD_EXPORT CUresult cuMemcpy3DAsync_v2_ptsz(const CUDA_MEMCPY3D *p, CUstream s) {
    return copy3d(p, s, 1, 1);
}

/* ---------------- sets ---------------- */

static CUresult memset_n(CUdeviceptr dst, uint32_t value, size_t count, uint32_t elem,
                         CUstream stream, int ptds) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!count) return CUDA_SUCCESS;
    size_t n = count * elem;
    int dev, bad;
    if (!is_device(dst, n, &dev, &bad) || bad || dst % elem) return CUDA_ERROR_INVALID_VALUE;
    uint32_t sid;
    if ((st = fcd_stream_resolve(stream, ptds, &dev, &sid))) return st;
    if ((st = fcd_status(fcc_device_ready(dev)))) return st;
    fc_MEMSET m = {dst, n, value, sid, elem};
    st = fcd_status(fcc_post(dev, FC_OP_MEMSET, &m, sizeof m, NULL, 0));
    if (!st) fcd_capture_node(fcd_capture_of(stream), 2); /* CU_GRAPH_NODE_TYPE_MEMSET */
    return st;
}

FCD_EXPORT CUresult cuMemsetD8_v2(CUdeviceptr d, unsigned char v, size_t n) {
    return memset_n(d, v, n, 1, NULL, 0);
}
FCD_EXPORT CUresult cuMemsetD8_v2_ptds(CUdeviceptr d, unsigned char v, size_t n) {
    return memset_n(d, v, n, 1, NULL, 1);
}
FCD_EXPORT CUresult cuMemsetD16_v2(CUdeviceptr d, unsigned short v, size_t n) {
    return memset_n(d, v, n, 2, NULL, 0);
}
FCD_EXPORT CUresult cuMemsetD16_v2_ptds(CUdeviceptr d, unsigned short v, size_t n) {
    return memset_n(d, v, n, 2, NULL, 1);
}
FCD_EXPORT CUresult cuMemsetD32_v2(CUdeviceptr d, unsigned int v, size_t n) {
    return memset_n(d, v, n, 4, NULL, 0);
}
FCD_EXPORT CUresult cuMemsetD32_v2_ptds(CUdeviceptr d, unsigned int v, size_t n) {
    return memset_n(d, v, n, 4, NULL, 1);
}
FCD_EXPORT CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, CUstream s) {
    return memset_n(d, v, n, 1, s, 0);
}
FCD_EXPORT CUresult cuMemsetD8Async_ptsz(CUdeviceptr d, unsigned char v, size_t n, CUstream s) {
    return memset_n(d, v, n, 1, s, 1);
}
FCD_EXPORT CUresult cuMemsetD16Async(CUdeviceptr d, unsigned short v, size_t n, CUstream s) {
    return memset_n(d, v, n, 2, s, 0);
}
FCD_EXPORT CUresult cuMemsetD16Async_ptsz(CUdeviceptr d, unsigned short v, size_t n, CUstream s) {
    return memset_n(d, v, n, 2, s, 1);
}
FCD_EXPORT CUresult cuMemsetD32Async(CUdeviceptr d, unsigned int v, size_t n, CUstream s) {
    return memset_n(d, v, n, 4, s, 0);
}
FCD_EXPORT CUresult cuMemsetD32Async_ptsz(CUdeviceptr d, unsigned int v, size_t n, CUstream s) {
    return memset_n(d, v, n, 4, s, 1);
}

static CUresult memset2d(CUdeviceptr dst, size_t pitch, uint32_t value, uint32_t elem, size_t w,
                         size_t h, CUstream stream, int ptds) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!w || !h) return CUDA_SUCCESS;
    if (w * elem > pitch) return CUDA_ERROR_INVALID_VALUE;
    if (elem == 1) {
        int dev, bad;
        if (!is_device(dst, (h - 1) * pitch + w, &dev, &bad) || bad) return CUDA_ERROR_INVALID_VALUE;
        uint32_t sid;
        if ((st = fcd_stream_resolve(stream, ptds, &dev, &sid))) return st;
        if ((st = fcd_status(fcc_device_ready(dev)))) return st;
        fc_MEMSET2D m = {dst, pitch, w, h, value, sid};
        return fcd_status(fcc_post(dev, FC_OP_MEMSET2D, &m, sizeof m, NULL, 0));
    }
    for (size_t y = 0; y < h && !st; y++) /* wider elements: a set per row, in stream order */
        st = memset_n(dst + y * pitch, value, w, elem, stream, ptds);
    return st;
}

FCD_EXPORT CUresult cuMemsetD2D8_v2(CUdeviceptr d, size_t pitch, unsigned char v, size_t w,
                                    size_t h) {
    return memset2d(d, pitch, v, 1, w, h, NULL, 0);
}
FCD_EXPORT CUresult cuMemsetD2D8_v2_ptds(CUdeviceptr d, size_t pitch, unsigned char v, size_t w,
                                         size_t h) {
    return memset2d(d, pitch, v, 1, w, h, NULL, 1);
}
FCD_EXPORT CUresult cuMemsetD2D16_v2(CUdeviceptr d, size_t pitch, unsigned short v, size_t w,
                                     size_t h) {
    return memset2d(d, pitch, v, 2, w, h, NULL, 0);
}
FCD_EXPORT CUresult cuMemsetD2D16_v2_ptds(CUdeviceptr d, size_t pitch, unsigned short v, size_t w,
                                          size_t h) {
    return memset2d(d, pitch, v, 2, w, h, NULL, 1);
}
FCD_EXPORT CUresult cuMemsetD2D32_v2(CUdeviceptr d, size_t pitch, unsigned int v, size_t w,
                                     size_t h) {
    return memset2d(d, pitch, v, 4, w, h, NULL, 0);
}
FCD_EXPORT CUresult cuMemsetD2D32_v2_ptds(CUdeviceptr d, size_t pitch, unsigned int v, size_t w,
                                          size_t h) {
    return memset2d(d, pitch, v, 4, w, h, NULL, 1);
}
FCD_EXPORT CUresult cuMemsetD2D8Async(CUdeviceptr d, size_t pitch, unsigned char v, size_t w,
                                      size_t h, CUstream s) {
    return memset2d(d, pitch, v, 1, w, h, s, 0);
}
FCD_EXPORT CUresult cuMemsetD2D8Async_ptsz(CUdeviceptr d, size_t pitch, unsigned char v, size_t w,
                                           size_t h, CUstream s) {
    return memset2d(d, pitch, v, 1, w, h, s, 1);
}
FCD_EXPORT CUresult cuMemsetD2D16Async(CUdeviceptr d, size_t pitch, unsigned short v, size_t w,
                                       size_t h, CUstream s) {
    return memset2d(d, pitch, v, 2, w, h, s, 0);
}
FCD_EXPORT CUresult cuMemsetD2D16Async_ptsz(CUdeviceptr d, size_t pitch, unsigned short v,
                                            size_t w, size_t h, CUstream s) {
    return memset2d(d, pitch, v, 2, w, h, s, 1);
}
FCD_EXPORT CUresult cuMemsetD2D32Async(CUdeviceptr d, size_t pitch, unsigned int v, size_t w,
                                       size_t h, CUstream s) {
    return memset2d(d, pitch, v, 4, w, h, s, 0);
}
FCD_EXPORT CUresult cuMemsetD2D32Async_ptsz(CUdeviceptr d, size_t pitch, unsigned int v, size_t w,
                                            size_t h, CUstream s) {
    return memset2d(d, pitch, v, 4, w, h, s, 1);
}

/* ---------------- pointer attributes ---------------- */

static CUresult pointer_attr(void *data, int attr, CUdeviceptr p) {
    fc_range r;
    int dev_mem = fcc_range_find(p, 1, &r) == 0;
    int host_mem = !dev_mem && fcc_range_find(p, 0, &r) == 0;
    if (!dev_mem && !host_mem) {
        /* memory CUDA does not know: most attributes are an error, a few answer "not mine" */
        switch (attr) {
        case 2: *(unsigned int *)data = 0; return CUDA_ERROR_INVALID_VALUE;
        case 8: *(unsigned int *)data = 0; return CUDA_SUCCESS; /* IS_MANAGED */
        case 13: *(unsigned int *)data = 0; return CUDA_SUCCESS; /* MAPPED */
        default: return CUDA_ERROR_INVALID_VALUE;
        }
    }
    int dev = dev_mem ? r.dev : 0;
    switch (attr) {
    case 1: { /* CONTEXT */
        CUcontext c = fcd_primary(dev);
        *(CUcontext *)data = c;
        return CUDA_SUCCESS;
    }
    case 2: *(unsigned int *)data = dev_mem ? CU_MEMORYTYPE_DEVICE : CU_MEMORYTYPE_HOST;
        return CUDA_SUCCESS;
    case 3: /* DEVICE_POINTER */
        if (!dev_mem) return CUDA_ERROR_INVALID_VALUE; /* no zero-copy alias of host memory */
        *(CUdeviceptr *)data = p;
        return CUDA_SUCCESS;
    case 4: /* HOST_POINTER */
        if (dev_mem) return CUDA_ERROR_INVALID_VALUE;
        *(void **)data = (void *)(uintptr_t)p;
        return CUDA_SUCCESS;
    case 6: *(unsigned int *)data = 0; return CUDA_SUCCESS;            /* SYNC_MEMOPS */
    case 7: *(unsigned long long *)data = r.base; return CUDA_SUCCESS; /* BUFFER_ID */
    case 8: *(unsigned int *)data = 0; return CUDA_SUCCESS;            /* IS_MANAGED */
    case 9: *(int *)data = dev; return CUDA_SUCCESS;                   /* DEVICE_ORDINAL */
    case 10: *(unsigned int *)data = 0; return CUDA_SUCCESS;  /* IS_LEGACY_CUDA_IPC_CAPABLE */
    case 11: *(CUdeviceptr *)data = r.base; return CUDA_SUCCESS;  /* RANGE_START_ADDR */
    case 12: *(size_t *)data = r.size; return CUDA_SUCCESS;       /* RANGE_SIZE */
    case 13: *(unsigned int *)data = dev_mem; return CUDA_SUCCESS; /* MAPPED */
    case 14: *(unsigned long long *)data = 0; return CUDA_SUCCESS; /* ALLOWED_HANDLE_TYPES */
    case 15: *(unsigned int *)data = 0; return CUDA_SUCCESS; /* GPU_DIRECT_RDMA_CAPABLE */
    case 16: *(unsigned int *)data = 3; return CUDA_SUCCESS; /* ACCESS_FLAGS: read-write */
    case 17: *(void **)data = NULL; return CUDA_SUCCESS;      /* MEMPOOL_HANDLE */
    case 18: *(size_t *)data = r.size; return CUDA_SUCCESS;   /* MAPPING_SIZE */
    case 19: *(CUdeviceptr *)data = r.base; return CUDA_SUCCESS; /* MAPPING_BASE_ADDR */
    case 20: *(unsigned long long *)data = r.base; return CUDA_SUCCESS; /* MEMORY_BLOCK_ID */
    case 21: *(unsigned int *)data = 0; return CUDA_SUCCESS; /* IS_HW_DECOMPRESS_CAPABLE */
    default: return CUDA_ERROR_INVALID_VALUE;
    }
}

FCD_EXPORT CUresult cuPointerGetAttribute(void *data, int attr, CUdeviceptr p) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!data) return CUDA_ERROR_INVALID_VALUE;
    return pointer_attr(data, attr, p);
}

FCD_EXPORT CUresult cuPointerGetAttributes(unsigned int n, int *attrs, void **data, CUdeviceptr p) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!attrs || !data) return CUDA_ERROR_INVALID_VALUE;
    for (unsigned int i = 0; i < n; i++) {
        if (!data[i]) continue;
        /* unlike cuPointerGetAttribute, memory CUDA does not know is not an error here */
        CUresult e = pointer_attr(data[i], attrs[i], p);
        if (e && attrs[i] >= 1 && attrs[i] <= 21) {
            switch (attrs[i]) {
            case 1: case 3: case 4: case 17: *(void **)data[i] = NULL; break;
            case 7: case 11: case 14: case 19: case 20: *(unsigned long long *)data[i] = 0; break;
            case 12: case 18: *(size_t *)data[i] = 0; break;
            case 9: *(int *)data[i] = -2; break;
            default: *(unsigned int *)data[i] = 0;
            }
        } else if (e) {
            return e;
        }
    }
    return CUDA_SUCCESS;
}
