/* farcuda client runtime: the C half of the libcudart.so.13 shim, and the types it is made of.
 *
 * The C side owns everything on the hot path and everything shared between threads: the
 * per-thread CUDA state (last error, current device, launch configuration stack), the device
 * and allocation tables, the registered modules and kernels, and one ordered connection per
 * server. The embedded Python half (farcuda.interposer.runtime) handles configuration, the
 * handshake, module loading and the cold calls; it reaches this state through the functions
 * declared in api.h.
 *
 * This header holds the types and limits; what each C file offers is declared in the header
 * of its name (log.h, pyhost.h, runtime.h, conn.h for conn.c and connect.c, core/ranges.h,
 * streams.h, launch.h, pools.h, memory.h, graphs.h, devices.h), and the exports themselves
 * in gen/exports.h, generated from the call table (wire/calls.py). The files stand in layers,
 * each calling only those below it (interposer/build_shim.py lists them in that order): log,
 * pyhost (the embedded interpreter), runtime (process and thread state, errors), conn (the
 * transport, which the driver layer's client core shares), connect (a server's connection and
 * a device opened on first use), ranges (the tables of memory: core/ranges.c, built into the
 * client core too), the families of
 * calls (streams, launch, pools, memory, graphs), devices (device management), join (the session
 * lent to the driver layer's client core when both layers are loaded: join.h), and the
 * generated exports above them all. The notices the transport receives reach the layers above it through
 * functions they register (fc_conn_set_notices). What the Python half asks of the C half
 * (api.h) is defined where the state it touches lives.
 *
 * No CUDA header is included: the shim builds on machines without CUDA. The few CUDA types
 * it needs are declared here with the CUDA 13 ABI (sizes checked against the ABI record,
 * gen/abi.h).
 */
#ifndef FARCUDA_FC_H
#define FARCUDA_FC_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "fc_wire.h"
#include "gen/abi.h"

#define FC_EXPORT __attribute__((visibility("default")))

/* ---- CUDA ABI pieces ---- */
typedef struct { unsigned int x, y, z; } fc_dim3;
typedef int cudaError_t;
typedef void *cudaStream_t;
typedef void *cudaEvent_t;

enum {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInitializationError = 3,
    cudaErrorCudartUnloading = 4,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDeviceFunction = 98,
    cudaErrorInvalidPitchValue = 12,
    cudaErrorInvalidSymbol = 13,
    cudaErrorInvalidDevicePointer = 17,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorMissingConfiguration = 52,
    cudaErrorInsufficientDriver = 35,
    cudaErrorDevicesUnavailable = 46,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorDeviceNotLicensed = 102,
    cudaErrorInvalidKernelImage = 200,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorIllegalState = 401,
    cudaErrorSymbolNotFound = 500,
    cudaErrorNotReady = 600,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchOutOfResources = 701,
    cudaErrorLaunchTimeout = 702,
    cudaErrorPeerAccessAlreadyEnabled = 704,
    cudaErrorPeerAccessNotEnabled = 705,
    cudaErrorSetOnActiveProcess = 708,
    cudaErrorContextIsDestroyed = 709,
    cudaErrorAssert = 710,
    cudaErrorHostMemoryAlreadyRegistered = 712,
    cudaErrorHostMemoryNotRegistered = 713,
    cudaErrorHardwareStackError = 714,
    cudaErrorIllegalInstruction = 715,
    cudaErrorMisalignedAddress = 716,
    cudaErrorInvalidAddressSpace = 717,
    cudaErrorInvalidPc = 718,
    cudaErrorLaunchFailure = 719,
    cudaErrorCooperativeLaunchTooLarge = 720,
    cudaErrorNotSupported = 801,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
    cudaErrorStreamCaptureUnmatched = 903,
    cudaErrorStreamCaptureImplicit = 906,
    cudaErrorCapturedEvent = 907,
    cudaErrorGraphExecUpdateFailure = 910,
    cudaErrorUnknown = 999,
};

enum { cudaMemcpyHostToHost = 0, cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2,
       cudaMemcpyDeviceToDevice = 3, cudaMemcpyDefault = 4 };

struct cudaChannelFormatDesc { int x, y, z, w, f; };
/* cudaMemLocation, cudaMemAccessDesc, cudaMemPoolProps */
struct fc_mem_location { int type; int id; };
struct fc_mem_access_desc { struct fc_mem_location location; int flags; };
struct fc_mem_pool_props {
    int allocType;
    int handleTypes;
    struct fc_mem_location location;
    void *win32SecurityAttributes;
    size_t maxSize;
    unsigned short usage;
    unsigned char reserved[54];
};
_Static_assert(sizeof(struct fc_mem_location) == FC_SIZEOF_cudaMemLocation, "cudaMemLocation");
_Static_assert(sizeof(struct fc_mem_access_desc) == FC_SIZEOF_cudaMemAccessDesc,
               "cudaMemAccessDesc");
_Static_assert(sizeof(struct fc_mem_pool_props) == FC_SIZEOF_cudaMemPoolProps, "cudaMemPoolProps");

/* cudaPitchedPtr, cudaPos, cudaExtent, cudaMemcpy3DParms: 3D copies of linear memory (for
 * which x and width count bytes); the arrays are always NULL, as farcuda makes none */
struct fc_pitched_ptr { void *ptr; size_t pitch; size_t xsize; size_t ysize; };
struct fc_pos { size_t x; size_t y; size_t z; };
struct fc_extent { size_t width; size_t height; size_t depth; };
struct fc_memcpy3d_parms {
    void *srcArray;
    struct fc_pos srcPos;
    struct fc_pitched_ptr srcPtr;
    void *dstArray;
    struct fc_pos dstPos;
    struct fc_pitched_ptr dstPtr;
    struct fc_extent extent;
    int kind;
};
_Static_assert(sizeof(struct fc_pitched_ptr) == FC_SIZEOF_cudaPitchedPtr, "cudaPitchedPtr");
_Static_assert(sizeof(struct fc_pos) == FC_SIZEOF_cudaPos, "cudaPos");
_Static_assert(sizeof(struct fc_extent) == FC_SIZEOF_cudaExtent, "cudaExtent");
_Static_assert(sizeof(struct fc_memcpy3d_parms) == FC_SIZEOF_cudaMemcpy3DParms,
               "cudaMemcpy3DParms");
_Static_assert(offsetof(struct fc_memcpy3d_parms, dstPtr) == FC_OFFSETOF_cudaMemcpy3DParms_dstPtr,
               "cudaMemcpy3DParms.dstPtr");
_Static_assert(offsetof(struct fc_memcpy3d_parms, kind) == FC_OFFSETOF_cudaMemcpy3DParms_kind,
               "cudaMemcpy3DParms.kind");

/* Graphs built node by node: cudaKernelNodeParams (cudaKernelNodeParamsV2 has its layout),
 * cudaMemsetParams (and V2), cudaMemcpyNodeParams, cudaChildGraphNodeParams, the
 * cudaGraphNodeParams of cudaGraphAddNode (its union: the kinds farcuda builds; an event
 * record or wait node's event is the union's first member), cudaGraphExecUpdateResultInfo */
struct fc_kernel_node_parms {
    const void *func;
    fc_dim3 gridDim, blockDim;
    unsigned int sharedMemBytes;
    void **kernelParams;
    void **extra;
};
struct fc_memset_parms {
    void *dst;
    size_t pitch;
    unsigned int value, elementSize;
    size_t width, height;
};
struct fc_memcpy_node_parms { int flags; int reserved[3]; struct fc_memcpy3d_parms copyParams; };
struct fc_child_graph_parms { void *graph; int ownership; };
struct fc_graph_node_parms {
    int type;
    int reserved0[3];
    union {
        long long reserved1[29];
        struct fc_kernel_node_parms kernel;
        struct fc_memcpy_node_parms memcpy;
        struct fc_memset_parms memset;
        struct fc_child_graph_parms graph;
        void *event;
    };
    long long reserved2;
};
struct fc_graph_update_info { int result; void *errorNode, *errorFromNode; };
_Static_assert(sizeof(struct fc_kernel_node_parms) == FC_SIZEOF_cudaKernelNodeParams,
               "cudaKernelNodeParams");
_Static_assert(offsetof(struct fc_kernel_node_parms, extra) ==
               FC_OFFSETOF_cudaKernelNodeParams_extra, "cudaKernelNodeParams.extra");
_Static_assert(sizeof(struct fc_memset_parms) == FC_SIZEOF_cudaMemsetParams, "cudaMemsetParams");
_Static_assert(offsetof(struct fc_memset_parms, width) == FC_OFFSETOF_cudaMemsetParams_width,
               "cudaMemsetParams.width");
_Static_assert(sizeof(struct fc_memcpy_node_parms) == FC_SIZEOF_cudaMemcpyNodeParams,
               "cudaMemcpyNodeParams");
_Static_assert(offsetof(struct fc_memcpy_node_parms, copyParams) ==
               FC_OFFSETOF_cudaMemcpyNodeParams_copyParams, "cudaMemcpyNodeParams.copyParams");
_Static_assert(sizeof(struct fc_child_graph_parms) == FC_SIZEOF_cudaChildGraphNodeParams,
               "cudaChildGraphNodeParams");
_Static_assert(sizeof(struct fc_graph_node_parms) == FC_SIZEOF_cudaGraphNodeParams,
               "cudaGraphNodeParams");
_Static_assert(offsetof(struct fc_graph_node_parms, kernel) ==
               FC_OFFSETOF_cudaGraphNodeParams_kernel, "cudaGraphNodeParams.kernel");
_Static_assert(offsetof(struct fc_graph_node_parms, event) ==
               FC_OFFSETOF_cudaGraphNodeParams_eventRecord, "cudaGraphNodeParams.eventRecord");
_Static_assert(offsetof(struct fc_graph_node_parms, reserved2) ==
               FC_OFFSETOF_cudaGraphNodeParams_reserved2, "cudaGraphNodeParams.reserved2");
_Static_assert(sizeof(struct fc_graph_update_info) == FC_SIZEOF_cudaGraphExecUpdateResultInfo,
               "cudaGraphExecUpdateResultInfo");
_Static_assert(offsetof(struct fc_graph_update_info, errorFromNode) ==
               FC_OFFSETOF_cudaGraphExecUpdateResultInfo_errorFromNode,
               "cudaGraphExecUpdateResultInfo.errorFromNode");

#define FC_STREAM_LEGACY ((cudaStream_t)0x1)
#define FC_STREAM_PER_THREAD ((cudaStream_t)0x2)

/* ---- limits ---- */
#define FC_MAX_DEVICES 64
#define FC_MAX_SERVERS 64
#define FC_MAX_ATTR 256
#define FC_CONFIG_STACK 16

/* ---- connections ---- */
typedef struct fc_req fc_req;
struct fc_req {
    uint32_t rid;
    volatile int done;
    int status;           /* cudaError_t from the REPLY, or a transport failure */
    void *rep;            /* destination of the reply's fixed fields */
    size_t rep_cap;
    /* bulk result: DATA frames and the REPLY tail land at bulk + offset */
    char *bulk;
    size_t bulk_cap;
    size_t bulk_len;      /* bytes received */
    int bulk_alloc;       /* 1: the reader allocates bulk (size unknown in advance) */
    /* 2D scatter of a bulk result: rows of `width` bytes into a pitched host buffer */
    size_t row_width, row_pitch;
    fc_req *next;
    pthread_mutex_t *mtx; /* the connection's reply mutex, for the waiter */
    pthread_cond_t cv;
    /* an async request (fc_post_req): nobody waits; the reader frees it on completion and a
     * failure becomes the device's pending error */
    int async;
    int vdev;
    size_t async_bytes;
};

typedef struct fc_conn {
    int fd;
    int server;
    pthread_mutex_t send_mtx;   /* serializes writes to fd; taken before q_mtx */
    pthread_mutex_t q_mtx;      /* guards the async queue */
    pthread_cond_t q_cv;        /* the sender waits for work */
    pthread_cond_t room_cv;     /* posters wait for room below the high-water mark */
    int room_waiters;
    char *q;
    size_t q_len, q_cap;
    int sender_waiting;
    pthread_mutex_t rep_mtx;    /* guards the pending request list */
    fc_req *pending;
    uint32_t next_rid;
    volatile int dead;          /* 1 once the link failed: every call fails */
    int spinners;               /* callers spinning for a reply (the reader polls meanwhile) */
    int64_t poll_until_ns;      /* the reader polls until then (set by a synchronous reply) */
    int poll;                   /* the reader may poll at all (there are cores to spare) */
    int fail_logged;
    int dead_status;
    volatile int64_t last_rx_ns;
    int64_t last_tx_ns;
    int heartbeat_ms;
    /* acknowledgements (HEARTBEAT.received), the reader's alone: the count the daemon last
     * reported, whether it reports one at all, and since when bytes_out stayed ahead of it
     * with no progress and no frame but heartbeats (0: not waiting) */
    uint64_t acked;
    int acks;
    int64_t unacked_since_ns;
    int rx_fail;                /* why read_full gave up: -2 nothing arrived, -5 no acks */
    pthread_t reader, sender;
    int stop;
    /* the reader's input buffer: small frames are parsed from it, bulk lands in place */
    size_t in_r, in_w;
    char in[65536];
    /* async requests in flight (under rep_mtx): bounded, so that a client that never
     * synchronizes cannot make the daemon stage results without end */
    uint32_t async_n;
    uint64_t async_bytes;
    pthread_cond_t async_cv;
    /* statistics for FARCUDA_REPORT and tests; bytes_out is also what acknowledgements
     * are compared with: written under send_mtx, read by the reader (atomics) */
    uint64_t calls, sync_calls, bytes_out, bytes_in, wait_ns;
    uint64_t async_reqs;        /* requests with a reply nobody waits for (fc_post_req) */
    /* compression of host-to-device pieces (wire/compress.py): 0 off, 1 on, 2 to be decided
     * by measuring the link at the first large copy; the buffer pieces are compressed into,
     * and the bytes sent compressed (before, after) */
    volatile int compress;
    char *zbuf, *zin;           /* (zin: the reader's, for compressed pieces of results) */
    uint64_t z_raw, z_sent, z_in_raw, z_in;
    /* per virtual device, the frames sent on this connection (by either layer, when the shim
     * lends it to the driver layer's client core) that may have queued work there, counted
     * once queued: what fc_device.synced_gen is compared with */
    uint64_t work_gen[FC_MAX_DEVICES];
} fc_conn;

/* ---- servers and virtual devices ---- */
typedef struct fc_server {
    char host[256];
    int port;
    fc_conn *conn;
    pthread_mutex_t mtx;
    int failed_status;          /* connect failure, remembered: later calls fail fast */
    int ngpus;
    int driver_version;
} fc_server;

typedef struct fc_device {
    int server;
    int gpu;
    int sm_budget;
    volatile int opened;
    pthread_mutex_t mtx;
    volatile int sticky;        /* sticky error of this device's context */
    volatile int pending;       /* an async error not yet reported */
    uint64_t win_base, win_size;
    int attrs_valid;
    int attrs[FC_MAX_ATTR];
    int max_threads, max_block[3], max_grid[3];
    size_t shmem_optin;
    int cooperative;
    int prio_least, prio_greatest;
    volatile int generation;   /* bumped by cudaDeviceReset: per-thread streams are stale */
    /* how many of the frames that may have queued work on the device (fc_conn.work_gen) a
     * successful device synchronization covered: equal, nothing can be pending */
    uint64_t synced_gen;
} fc_device;

/* ---- modules, kernels, variables (registered before main) ---- */
typedef struct fc_param { uint32_t offset, size; } fc_param;

typedef struct fc_module {
    uint32_t id;
    const void *wrapper;        /* the app's __fatBinC_Wrapper_t */
    char *image;                /* our copy of the fat binary */
    size_t image_size;
    volatile uint64_t loaded;   /* bit per device (devices >= 64 are not supported) */
    pthread_mutex_t mtx;
    int unregistered;
} fc_module;

typedef struct fc_kernel {
    uint32_t id;
    fc_module *module;
    const void *host_fun;
    char *name;                 /* mangled device name */
    volatile int plan_ready;
    uint32_t nparams;
    fc_param *params;
    uint32_t param_size;        /* size of the packed parameter buffer */
    int max_threads;            /* per-kernel limit from the driver */
    volatile uint32_t max_dyn_smem; /* dynamic shared memory allowed without a sync launch */
} fc_kernel;

typedef struct fc_var {
    uint32_t id;
    fc_module *module;
    const void *host_var;
    char *name;
    size_t size;
    int constant;
    int managed;
    uint64_t addr[FC_MAX_DEVICES];   /* device address per virtual device, 0 = unknown */
} fc_var;

/* ---- streams and events (the handles the app holds) ---- */
#define FC_STREAM_MAGIC 0x5354524dU
#define FC_EVENT_MAGIC 0x4556544eU
typedef struct fc_capture fc_capture;

typedef struct fc_stream {
    uint32_t magic;
    uint32_t id;
    int dev;
    unsigned int flags;
    int priority;
    int per_thread;             /* an implicit per-thread default stream */
    fc_capture *capture;        /* the stream capture it takes part in, if any */
} fc_stream;

typedef struct fc_event {
    uint32_t magic;
    uint32_t id;
    int dev;
    unsigned int flags;
    int recorded;
    fc_capture *capture;        /* recorded in a capturing stream: waiting on it joins */
} fc_event;

/* ---- per-thread state ---- */
typedef struct fc_config {
    fc_dim3 grid, block;
    size_t shmem;
    cudaStream_t stream;
} fc_config;

typedef struct fc_tls {
    int last_error;
    int device;                 /* -1: not chosen yet (device 0) */
    int nconfig;
    fc_config config[FC_CONFIG_STACK];
    fc_stream *ptds[FC_MAX_DEVICES];
    int ptds_gen[FC_MAX_DEVICES];
} fc_tls;

/* ---- memory ranges the client knows (core/ranges.c) ---- */
typedef struct fc_pool fc_pool;
typedef struct fc_range {
    uint64_t base, size;
    int dev;
    int kind;                   /* FC_RANGE_* */
    unsigned int flags;
    uint64_t devptr;            /* mapped host memory: the device alias */
    fc_pool *pool;              /* stream-ordered allocations: the pool it came from */
    uint64_t used, reserved;    /* ... and what it counts there */
} fc_range;
enum { FC_RANGE_DEVICE = 1, FC_RANGE_SYMBOL = 2, FC_RANGE_HOST = 3, FC_RANGE_ASYNC = 4 };

/* ---- graphs: the kinds of node (cudaGraphNodeType) ---- */
enum { FC_NODE_KERNEL = 0, FC_NODE_MEMCPY = 1, FC_NODE_MEMSET = 2, FC_NODE_HOST = 3,
       FC_NODE_GRAPH = 4, FC_NODE_EMPTY = 5, FC_NODE_WAIT_EVENT = 6, FC_NODE_EVENT_RECORD = 7 };
/* cudaEventRecordExternal, cudaEventWaitExternal: in a capture, a node of the graph */
#define FC_EVENT_RECORD_EXTERNAL 1u
#define FC_EVENT_WAIT_EXTERNAL 1u

#endif
