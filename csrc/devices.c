/* Device management (the call table's C rows of it): how many devices, which is current,
 * opening one, synchronizing it, its attributes, versions; and forgetting what the client
 * knew of a device that cudaDeviceReset made anew.
 *
 * A device is opened on first use (conn.c: fc_device_ready); cudaSetDevice opens it at once,
 * as CUDA 12 and later initialize the context there, so that a bad server shows then.
 */
#include "fc.h"
#include "api.h"
#include "conn.h"
#include "devices.h"
#include "launch.h"
#include "memory.h"
#include "pools.h"
#include "core/ranges.h"
#include "runtime.h"

int fc_get_device_count(int *count) {
    int st = fc_ensure_init();
    if (!count) return cudaErrorInvalidValue;
    if (st) {
        *count = 0;
        return st;
    }
    *count = fc_ndevices;
    return cudaSuccess;
}

int fc_get_device(int *device) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!device) return cudaErrorInvalidValue;
    *device = fc_current_device();
    return cudaSuccess;
}

int fc_set_device(int device) {
    int st = fc_ensure_init();
    if (st) return st;
    if (device < 0 || device >= fc_ndevices) return cudaErrorInvalidDevice;
    fc_tls_get()->device = device;
    /* CUDA 12+ initializes the device's context here; so do we (a bad server shows now). */
    return fc_device_ready(device);
}

int fc_init_device(int device, unsigned int deviceFlags, unsigned int flags) {
    (void)deviceFlags;
    (void)flags;
    int st = fc_ensure_init();
    if (st) return st;
    if (device < 0 || device >= fc_ndevices) return cudaErrorInvalidDevice;
    return fc_device_ready(device);
}

int fc_device_synchronize(void) {
    int st = fc_ensure_init();
    if (st) return st;
    int dev = fc_current_device();
    st = fc_device_ready(dev);
    if (!st) st = fc_call_device_sync(dev);
    return fc_sync_status(dev, st);
}

int fc_runtime_version(int *v) {
    if (!v) return cudaErrorInvalidValue;
    *v = 13000;
    return cudaSuccess;
}

int fc_driver_version(int *v) {
    if (!v) return cudaErrorInvalidValue;
    *v = 0; /* as the real runtime answers with no driver */
    if (fc_ensure_init() || fc_ndevices == 0) return cudaSuccess;
    fc_server *s = &fc_servers[fc_devices[0].server];
    if (!s->driver_version) {
        fc_conn *c;
        if (fc_server_conn(fc_devices[0].server, &c)) return cudaSuccess;
    }
    *v = s->driver_version;
    return cudaSuccess;
}

int fc_device_attribute(int *value, int attr, int device) {
    int st = fc_ensure_init();
    if (st) return st;
    if (!value) return cudaErrorInvalidValue;
    if (device < 0 || device >= fc_ndevices) return cudaErrorInvalidDevice;
    return fcx_get_attr(device, attr, value);
}

/* cudaDeviceReset (the Python half asked the daemon): the device's memory, pool figures and
 * loaded modules are gone, and so are its errors. */
int fcx_device_reset_local(int dev) {
    fc_arenas_drop_device(dev);
    fcc_range_drop_device(dev);
    fc_pools_reset_device(dev);
    fc_modules_forget_device(dev);
    fc_devices[dev].sticky = 0;
    fc_devices[dev].pending = 0;
    __atomic_add_fetch(&fc_devices[dev].generation, 1, __ATOMIC_ACQ_REL);
    return cudaSuccess;
}
