/* What the daemon's C path (fastpath.c) offers the Python session (through cffi, which parses
 * this file too: plain declarations only, no macros or includes below the guard).
 *
 * The session registers each virtual device's context, kernels (with their parameter sizes),
 * streams, events and memory as the backend creates them, and drops them as they go; fp_run
 * then executes what it can of the bytes the session received (see fastpath.c).
 */
#ifndef FARCUDA_FASTPATH_H
#define FARCUDA_FASTPATH_H
#ifndef FARCUDA_CDEF
#include <stdint.h>
#endif

/* What one fp_run did. */
typedef struct {
    uint64_t consumed;   /* bytes of buf executed */
    uint32_t launches;   /* frames of each kind executed */
    uint32_t records;
    uint32_t waits;
    int32_t error;       /* a CUDA error of the frame at `consumed` (it was consumed), or 0 */
    uint32_t error_op;
    uint32_t error_vdev;
    uint64_t out_len;    /* bytes of the reply written to `out` (0: the run ended without one) */
    uint64_t out_sent;   /* of which already sent on the socket */
    uint32_t sync_op;    /* the answered request's opcode */
    uint32_t sync_vdev;
    uint64_t sync_ns;    /* time spent executing it */
    int32_t sync_status; /* the status its reply carries */
} fp_result;

/* 0 once the driver's entry points are found */
int fp_init(void);
/* how long a synchronization (or a copy) may spin here for its stream to become idle */
void fp_set_spin(uint64_t ns);
/* the Python side made `ctx` current on this thread (or NULL: unknown) */
void fp_note_current(void *ctx);

/* registrations (each returns 0, or -1 when out of range or out of memory) */
int fp_set_context(uint32_t vdev, void *ctx);
/* a virtual device that shares its context with others: its stream 0 is `stream`, in which
 * the legacy stream's order is restored by the Python side (so async work in it while the
 * device has blocking streams, and in its blocking streams, goes to Python) */
int fp_set_legacy(uint32_t vdev, void *stream);
int fp_set_kernel(uint32_t vdev, uint32_t kid, void *func, uint32_t param_size);
/* flags: the stream's creation flags (FC_STREAM_CREATE_NON_BLOCKING) */
int fp_set_stream(uint32_t vdev, uint32_t sid, void *stream, uint32_t flags);
int fp_set_event(uint32_t vdev, uint32_t eid, void *event);
/* the pinned bounce buffer of small device-to-host copies */
int fp_set_small(uint32_t vdev, void *buf, uint64_t size);
/* the session's memory on the device: what a copy here may read */
int fp_range_add(uint32_t vdev, uint64_t base, uint64_t size);
void fp_range_remove(uint32_t vdev, uint64_t base);
void fp_range_clear(uint32_t vdev);
void fp_drop_stream(uint32_t vdev, uint32_t sid);
void fp_drop_event(uint32_t vdev, uint32_t eid);
void fp_drop_device(uint32_t vdev);

/* launches, whichever path made them, for the reports of faults (daemon/faults.py) */
void fp_note_launch(uint32_t vdev, uint32_t kid);
void fp_note_synced(uint32_t vdev);
/* out: the first launch since the last good synchronization (ordinal, kernel; 0 0: none),
 * and the last launch (ordinal, kernel) */
void fp_launch_window(uint32_t vdev, uint64_t out[4]);

/* Execute what can be executed of buf[0:len]; a reply goes to out[0:out_cap] (NULL: answer
 * nothing here), and to `sock` when nothing must go before it (sock, pipe_fd < 0: none). */
void fp_run(const unsigned char *buf, uint64_t len, unsigned char *out, uint64_t out_cap,
            int sock, int pipe_fd, fp_result *res);

#endif
