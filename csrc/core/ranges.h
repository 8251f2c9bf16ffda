/* A layer's tables of memory and the virtual devices' address windows (core/ranges.c): the
 * runtime shim and the client core are each built with it and keep a table each. */
#ifndef FARCUDA_CORE_RANGES_H
#define FARCUDA_CORE_RANGES_H

#include <stdint.h>

#include "../fc.h"

/* a host range's flag: mapped (cudaHostAllocMapped, CU_MEMHOSTALLOC_DEVICEMAP) */
#define FC_HOST_MAPPED 2u

/* the tables: device ranges (allocations, module globals) and host ranges (pinned memory);
 * 0 on success, -1 on an overlap (a module global seen again is fine), -2 out of memory */
int fcc_range_add(uint64_t base, uint64_t size, int dev, int kind, unsigned int flags);
int fcc_range_insert(const fc_range *r);
int fcc_range_remove(uint64_t base, int kind, fc_range *out);
/* the range holding p: device ranges when want_device, else host ranges; 0 when found, also
 * among the other layer's ranges when both share the session */
int fcc_range_find(uint64_t p, int want_device, fc_range *out);
/* ... of this layer only, and the other layer's lookup when both share the session */
int fcc_range_find_own(uint64_t p, int want_device, fc_range *out);
void fcc_ranges_join(int (*find)(uint64_t p, int want_device, fc_range *out));
void fcc_range_drop_device(int dev); /* its context was reset: its memory is gone */
/* v lies in mapped (zero-copy) host memory of the app */
int fcc_mapped_pointer(uint64_t v);

/* each virtual device allocates inside a window this process reserves PROT_NONE */
int fcc_window_reserve(int dev, uint64_t size, uint64_t *base);
int fcc_window_adopt(int dev, uint64_t base, uint64_t size);

#endif
