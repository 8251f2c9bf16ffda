/* Device management (devices.c): the exports of the call table's C rows for devices. */
#ifndef FARCUDA_DEVICES_H
#define FARCUDA_DEVICES_H

int fc_get_device_count(int *count);
int fc_get_device(int *device);
int fc_set_device(int device);
int fc_init_device(int device, unsigned int deviceFlags, unsigned int flags);
int fc_device_synchronize(void);
int fc_runtime_version(int *v);
int fc_driver_version(int *v);
int fc_device_attribute(int *value, int attr, int device);

#endif
