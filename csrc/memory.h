/* Memory (memory.c): allocation, host memory, and the copy and set calls. */
#ifndef FARCUDA_MEMORY_H
#define FARCUDA_MEMORY_H

#include "fc.h"

/* the exports (the call table's C rows) */
int fc_malloc(void **ptr, size_t size);
int fc_malloc_pitch(void **ptr, size_t *pitch, size_t width, size_t height);
int fc_free(void *ptr);
int fc_mem_get_info(size_t *free_bytes, size_t *total);
/* cudaDeviceReset: forget the device's arenas (the daemon dropped them) */
void fc_arenas_drop_device(int dev);
int fc_host_alloc(void **ptr, size_t size, unsigned int flags);
int fc_free_host(void *ptr);
int fc_host_register(void *ptr, size_t size, unsigned int flags);
int fc_host_unregister(void *ptr);
int fc_host_get_flags(unsigned int *flags, void *ptr);
int fc_host_get_device_pointer(void **pDevice, void *pHost, unsigned int flags);
int fc_memcpy_impl(void *dst, const void *src, size_t n, int kind, cudaStream_t stream,
                   int async, int ptds);
int fc_memcpy2d_impl(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                     size_t height, int kind, cudaStream_t stream, int async, int ptds);
int fc_memset_impl(void *dst, int value, size_t n, cudaStream_t stream, int async, int ptds);
int fc_memset2d_impl(void *dst, size_t pitch, int value, size_t width, size_t height,
                     cudaStream_t stream, int ptds);
int fc_malloc3d(struct fc_pitched_ptr *out, struct fc_extent e);
int fc_memcpy3d_impl(const struct fc_memcpy3d_parms *p, cudaStream_t stream, int async,
                     int ptds);
/* the checks cudaMemcpy3D and cudaGraphAddMemcpyNode share: linear memory and a direction
 * (an array is refused, once said on stderr under fn's name), then a box that is not empty
 * inside both pitched pointers; a CUDA status */
int fc_memcpy3d_check_kind(const struct fc_memcpy3d_parms *p, const char *fn, int *said);
int fc_memcpy3d_check_box(const struct fc_memcpy3d_parms *p);
int fc_memset3d_impl(struct fc_pitched_ptr p, int value, struct fc_extent e,
                     cudaStream_t stream, int ptds);
/* graphs built node by node (graphs.c): a copy node's sides (each one's device, -1: host
 * memory), checked as a copy's are; the device of device memory (-1: none); a set node */
int fc_copy_node_sides(const void *dst, size_t dspan, const void *src, size_t sspan, int kind,
                       int *ddev, int *sdev);
int fc_device_of(const void *p, size_t n);
int fc_memset_elems(void *dst, size_t pitch, unsigned int value, unsigned int elem,
                    size_t width, size_t height, cudaStream_t stream);
int fc_memcpy_peer(void *dst, int ddev, const void *src, int sdev, size_t n,
                   cudaStream_t stream, int async);
int fc_to_symbol(const void *symbol, const void *src, size_t count, size_t offset, int kind,
                 cudaStream_t s, int async, int ptds);
int fc_from_symbol(void *dst, const void *symbol, size_t count, size_t offset, int kind,
                   cudaStream_t s, int async, int ptds);
int fc_symbol_address(void **devPtr, const void *symbol);
int fc_symbol_size(size_t *size, const void *symbol);

#endif
