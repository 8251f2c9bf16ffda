/* Stream-ordered allocation and memory pools (pools.c): the pools live in the client. */
#ifndef FARCUDA_POOLS_H
#define FARCUDA_POOLS_H

#include "fc.h"

/* an allocation of a pool is gone (freed, or its device reset): the pool forgets its bytes */
void fc_pool_release(const fc_range *r);
void fc_pools_reset_device(int dev);

/* the exports (the call table's C rows); `fn` names the export in what a refusal logs */
int fc_malloc_async(void **ptr, size_t size, const void *pool_handle, int from_pool,
                    cudaStream_t stream, int ptds);
int fc_free_async(void *ptr, cudaStream_t stream, int ptds);
int fc_device_pool(void **out, int dev, int current);
int fc_set_device_pool(int dev, void *handle);
int fc_mem_get_pool(void **out, const struct fc_mem_location *loc, int type, int current,
                    const char *fn);
int fc_mem_set_pool(struct fc_mem_location *location, int type, void *pool);
int fc_pool_create(void **out, const struct fc_mem_pool_props *props);
int fc_pool_destroy(void *pool);
int fc_pool_trim(void *pool, size_t minBytesToKeep);
int fc_pool_set_attr(void *pool, int attr, const void *value);
int fc_pool_get_attr(void *pool, int attr, void *value);
int fc_pool_set_access(void *pool, const struct fc_mem_access_desc *descs, size_t count);
int fc_pool_get_access(int *flags, void *pool, const struct fc_mem_location *loc);

#endif
