/* Registration and launches (launch.c): the registries of modules, kernels and device
 * variables the program's constructors fill, each module loaded lazily per device, and the
 * launch calls, which pack a kernel's arguments by the layout the daemon sent. */
#ifndef FARCUDA_LAUNCH_H
#define FARCUDA_LAUNCH_H

#include "fc.h"

fc_kernel *fc_kernel_by_host(const void *host_fun); /* NULL: not a registered kernel */
fc_var *fc_var_by_host(const void *host_var);       /* NULL: not a registered variable */
/* the module is loaded on the device (loading it the first time); a status */
int fc_module_ready(fc_module *m, int dev);
/* the variable's address on the device (its module loaded); a status */
int fc_var_address(fc_var *v, int dev, uint64_t *addr);
void fc_modules_forget_device(int dev); /* cudaDeviceReset: load again on next use */
/* a launch kept for later (a graph's kernel node): the kernel's layout known on the device,
 * and its arguments copied by that layout from args or from a packed `extra` buffer into a
 * malloc'd buffer of param_size bytes; statuses */
int fc_kernel_layout(fc_kernel *k, int dev);
int fc_kernel_pack(const fc_kernel *k, void **args, void **extra, char **out);

/* the exports (the call table's C rows); flags are the LAUNCH message's (FC_LAUNCH_*) */
int fc_launch(fc_kernel *k, fc_dim3 grid, fc_dim3 block, void **args, size_t shmem,
              cudaStream_t stream, int ptds, uint32_t flags);
int fc_launch_host_fun(const void *func, fc_dim3 grid, fc_dim3 block, void **args,
                       size_t shmem, cudaStream_t stream, int ptds, uint32_t flags);
int fc_launch_ex(const void *config, const void *func, void **args, int ptds);
int fc_func_get_name(const char **name, const void *func);

#endif
