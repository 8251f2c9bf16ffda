/* Process-wide and per-thread state (runtime.c): the configuration (servers, devices), each
 * thread's current device and last error, the devices' sticky and pending errors. The base of the C half: it calls only the Python half
 * (to configure) and log.c. */
#ifndef FARCUDA_RUNTIME_H
#define FARCUDA_RUNTIME_H

#include "fc.h"

extern fc_server fc_servers[FC_MAX_SERVERS];
extern int fc_nservers;
extern fc_device fc_devices[FC_MAX_DEVICES];
extern int fc_ndevices;
extern int fc_init_status;      /* cudaSuccess once configured, else the error to report */
extern int64_t fc_connect_timeout_ms, fc_liveness_timeout_ms;
extern int64_t fc_spin_ns;      /* FARCUDA_SPIN_US: how long waiters and readers busy-poll */

fc_tls *fc_tls_get(void);
int64_t fc_now_ns(void);

/* Every exported entry point starts with fc_ensure_init (configuration, once) and ends
 * through fc_ret (the generated exports do it), which records a failure as the thread's last
 * error, as the CUDA runtime does; fc_ret_query leaves cudaErrorNotReady out (an answer of
 * cudaStreamQuery and cudaEventQuery, not an error). */
static inline int fc_ensure_init(void);
int fc_ret(int status);
int fc_ret_query(int status);
int fc_current_device(void);
static inline int fc_device_status(int dev); /* sticky or pending error, else success */
int fc_sync_status(int dev, int st); /* a synchronizing call's status: faults stick */
void fc_note_async_error(int dev, int status); /* an async operation failed */
void fc_note_fault(int dev, int status, const char *culprit); /* the daemon's FAULT notice */
void fc_report_at_exit(void);

/* inline: every call (a launch too) passes through both */
extern int fc_init_done; /* set, with release, once the configuration ran */
int fc_ensure_init_slow(void);

static inline int fc_ensure_init(void) {
    if (__builtin_expect(__atomic_load_n(&fc_init_done, __ATOMIC_ACQUIRE), 1))
        return fc_init_status;
    return fc_ensure_init_slow();
}

static inline int fc_device_status(int dev) {
    fc_device *d = &fc_devices[dev];
    if (d->sticky) return d->sticky;
    return __atomic_exchange_n(&d->pending, 0, __ATOMIC_ACQ_REL);
}

#endif
