/* Memory pools through the driver API: the core's pools (csrc/core/pools.c), under the
 * driver's names. CUmemoryPool handles are the core's, shared with the runtime layer. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "fcd.h"
#include "../core/core.h"

CUresult fcd_alloc_async(CUdeviceptr *dptr, size_t size, void *pool_handle, CUstream s,
                         int ptds);

static CUresult entered(CUresult st, int core_status) { return st ? st : fcd_status(core_status); }

FCD_EXPORT CUresult cuDeviceGetDefaultMemPool(void **pool, CUdevice dev) {
    return entered(fcd_enter(), fcc_pool_of_device(dev, 0, pool));
}
FCD_EXPORT CUresult cuDeviceGetMemPool(void **pool, CUdevice dev) {
    return entered(fcd_enter(), fcc_pool_of_device(dev, 1, pool));
}
FCD_EXPORT CUresult cuDeviceSetMemPool(CUdevice dev, void *pool) {
    return entered(fcd_enter(), fcc_pool_set_device(dev, pool));
}

static CUresult mem_pool(void **pool, const void *location, int type, int current,
                         const char *fn) {
    CUresult st = fcd_enter();
    if (st) return st;
    if (!pool) return CUDA_ERROR_INVALID_VALUE;
    int dev;
    if ((st = fcd_status(fcc_pool_location(location, type, &dev, fn)))) return st;
    return fcd_status(fcc_pool_of_device(dev, current, pool));
}

FCD_EXPORT CUresult cuMemGetDefaultMemPool(void **pool, const void *location, int type) {
    return mem_pool(pool, location, type, 0, "cuMemGetDefaultMemPool");
}
FCD_EXPORT CUresult cuMemGetMemPool(void **pool, const void *location, int type) {
    return mem_pool(pool, location, type, 1, "cuMemGetMemPool");
}
FCD_EXPORT CUresult cuMemSetMemPool(const void *location, int type, void *pool) {
    CUresult st = fcd_enter();
    if (st) return st;
    int dev;
    if ((st = fcd_status(fcc_pool_location(location, type, &dev, "cuMemSetMemPool")))) return st;
    return fcd_status(fcc_pool_set_device(dev, pool));
}

FCD_EXPORT CUresult cuMemPoolCreate(void **pool, const void *props) {
    return entered(fcd_enter(), fcc_pool_create(pool, props, "cuMemPoolCreate"));
}
FCD_EXPORT CUresult cuMemPoolDestroy(void *pool) {
    return entered(fcd_enter(), fcc_pool_destroy(pool));
}
FCD_EXPORT CUresult cuMemPoolTrimTo(void *pool, size_t keep) {
    (void)keep;
    return entered(fcd_enter(), fcc_pool_trim(pool));
}
FCD_EXPORT CUresult cuMemPoolSetAttribute(void *pool, int attr, void *value) {
    return entered(fcd_enter(), fcc_pool_set_attr(pool, attr, value));
}
FCD_EXPORT CUresult cuMemPoolGetAttribute(void *pool, int attr, void *value) {
    return entered(fcd_enter(), fcc_pool_get_attr(pool, attr, value));
}
FCD_EXPORT CUresult cuMemPoolSetAccess(void *pool, const void *descs, size_t count) {
    return entered(fcd_enter(), fcc_pool_set_access(pool, descs, count, "cuMemPoolSetAccess"));
}
FCD_EXPORT CUresult cuMemPoolGetAccess(int *flags, void *pool, const void *location) {
    return entered(fcd_enter(), fcc_pool_get_access(flags, pool, location));
}

FCD_EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t size, void *pool,
                                            CUstream s) {
    if (!pool) return CUDA_ERROR_INVALID_VALUE;
    return fcd_alloc_async(dptr, size, pool, s, 0);
}
FCD_EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t size, void *pool,
                                                 CUstream s) {
    if (!pool) return CUDA_ERROR_INVALID_VALUE;
    return fcd_alloc_async(dptr, size, pool, s, 1);
}
