/* One session per process, the shim's side (join.h): once loaded, the shim offers the driver
 * layer's client core its session. The core is libfarcuda.so.1, found loaded already (a
 * program linked with libcuda.so.1) or in the driver layer's folder beside this library
 * (lib/driver/), where a later dlopen of libcuda.so.1 finds it by its SONAME; loading it
 * costs nothing more (it does nothing until asked). Without the driver layer installed, the
 * shim goes on alone. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "fc.h"
#include "conn.h"
#include "join.h"
#include "core/ranges.h"
#include "runtime.h"

static int join_init(void) { return fc_ensure_init(); }

static int join_device_status(int dev) { return fc_device_status(dev); }

static const fc_join offer = {
    FC_JOIN_VERSION, sizeof(fc_join), fc_servers, fc_devices, &fc_nservers, &fc_ndevices,
    join_init, fc_server_conn, fc_device_ready, join_device_status, fcc_range_find_own,
    fc_conn_join_notices, fcc_ranges_join,
};

static void *core_library(void) {
    void *h = dlopen("libfarcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (h) return h;
    Dl_info info;
    if (!dladdr((void *)&offer, &info) || !info.dli_fname) return NULL;
    const char *slash = strrchr(info.dli_fname, '/');
    if (!slash) return NULL;
    char path[4096];
    int n = snprintf(path, sizeof path, "%.*s/driver/libfarcuda.so.1",
                     (int)(slash - info.dli_fname), info.dli_fname);
    if (n <= 0 || (size_t)n >= sizeof path) return NULL;
    return dlopen(path, RTLD_NOW | RTLD_LOCAL);
}

__attribute__((constructor)) static void join_core(void) {
    void *h = core_library();
    if (!h) return;
    fc_join_fn join = (fc_join_fn)dlsym(h, "fcc_join_shim");
    if (join) join(&offer);
}
