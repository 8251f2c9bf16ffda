/* The client's tables of memory and the virtual devices' address windows (ranges.c). */
#ifndef FARCUDA_RANGES_H
#define FARCUDA_RANGES_H

#include "fc.h"

/* a host range's flag: mapped (cudaHostAllocMapped, cudaHostRegisterMapped) */
#define FC_HOST_MAPPED 2u

/* the tables: device ranges (allocations, module globals) and host ranges (pinned memory) */
int fc_range_add(uint64_t base, uint64_t size, int dev, int kind, unsigned int flags,
                 uint64_t devptr);
int fc_range_insert(const fc_range *r);
int fc_range_remove(uint64_t base, int kind, fc_range *out);
/* the range holding p: device ranges when want_device, else host ranges; 0 when found */
int fc_range_find(uint64_t p, int want_device, fc_range *out);
/* ... of this layer only, and the lookup of the driver layer's ranges when it shares this
 * session (join.c): fc_range_find asks it what this layer does not know */
int fc_range_find_own(uint64_t p, int want_device, fc_range *out);
void fc_ranges_join(int (*find)(uint64_t p, int want_device, fc_range *out));
void fc_ranges_drop_device(int dev); /* cudaDeviceReset: its memory is gone */
/* v lies in mapped (zero-copy) host memory of the app */
int fc_mapped_pointer(uint64_t v);

/* each virtual device allocates inside a window this process reserves PROT_NONE */
int fc_window_reserve(int dev, uint64_t size, uint64_t *base);
int fc_window_adopt(int dev, uint64_t base, uint64_t size);

#endif
