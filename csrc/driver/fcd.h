/* farcuda's stand-in for the CUDA driver (libcuda.so.1): the ABI pieces it needs and its own
 * objects.
 *
 * Pure C, no Python, no CUDA header: it builds where there is no CUDA. The types below are
 * declared with the CUDA 13 ABI (tests/unit/test_driver_abi.py checks sizes and offsets
 * against the real cuda.h where one is installed). Everything that reaches the GPU goes
 * through the client core (csrc/core), shared by every layer of the process.
 */
#ifndef FARCUDA_FCD_H
#define FARCUDA_FCD_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define FCD_EXPORT __attribute__((visibility("default")))
#define FC_MAX_DEVICES_FCD 64 /* FC_MAX_DEVICES of csrc/fc.h */

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct fcd_ctx *CUcontext;
typedef struct fcd_module *CUmodule;
typedef struct fcd_module *CUlibrary;  /* a library is a module loaded context-independently */
typedef struct fcd_func *CUfunction;
typedef struct fcd_func *CUkernel;     /* CUDA accepts a CUkernel wherever a CUfunction goes */
typedef struct fcd_stream *CUstream;
typedef struct fcd_event *CUevent;
typedef struct { unsigned char bytes[16]; } CUuuid;

enum {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_INITIALIZED = 3,
    CUDA_ERROR_DEINITIALIZED = 4,
    CUDA_ERROR_DEVICE_UNAVAILABLE = 46,
    CUDA_ERROR_NO_DEVICE = 100,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_IMAGE = 200,
    CUDA_ERROR_INVALID_CONTEXT = 201,
    CUDA_ERROR_CONTEXT_ALREADY_CURRENT = 202,
    CUDA_ERROR_NO_BINARY_FOR_GPU = 209,
    CUDA_ERROR_INVALID_PTX = 218,
    CUDA_ERROR_INVALID_SOURCE = 300,
    CUDA_ERROR_FILE_NOT_FOUND = 301,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_ILLEGAL_STATE = 401,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_NOT_READY = 600,
    CUDA_ERROR_ILLEGAL_ADDRESS = 700,
    CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701,
    CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED = 704,
    CUDA_ERROR_PEER_ACCESS_NOT_ENABLED = 705,
    CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE = 708,
    CUDA_ERROR_CONTEXT_IS_DESTROYED = 709,
    CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED = 712,
    CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED = 713,
    CUDA_ERROR_LAUNCH_FAILED = 719,
    CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE = 720,
    CUDA_ERROR_NOT_PERMITTED = 800,
    CUDA_ERROR_NOT_SUPPORTED = 801,
    CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED = 900,
    CUDA_ERROR_UNKNOWN = 999,
};

/* cuGetProcAddress */
enum { CU_GET_PROC_ADDRESS_DEFAULT = 0, CU_GET_PROC_ADDRESS_LEGACY_STREAM = 1,
       CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM = 2 };
enum { CU_GET_PROC_ADDRESS_SUCCESS = 0, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND = 1,
       CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT = 2 };

#define CU_STREAM_LEGACY ((CUstream)0x1)
#define CU_STREAM_PER_THREAD ((CUstream)0x2)

#define CU_LAUNCH_PARAM_END ((void *)0x00)
#define CU_LAUNCH_PARAM_BUFFER_POINTER ((void *)0x01)
#define CU_LAUNCH_PARAM_BUFFER_SIZE ((void *)0x02)

enum { CU_MEMORYTYPE_HOST = 1, CU_MEMORYTYPE_DEVICE = 2, CU_MEMORYTYPE_ARRAY = 3,
       CU_MEMORYTYPE_UNIFIED = 4 };

typedef struct CUDA_MEMCPY2D_st {
    size_t srcXInBytes, srcY;
    int srcMemoryType;
    const void *srcHost;
    CUdeviceptr srcDevice;
    void *srcArray;
    size_t srcPitch;
    size_t dstXInBytes, dstY;
    int dstMemoryType;
    void *dstHost;
    CUdeviceptr dstDevice;
    void *dstArray;
    size_t dstPitch;
    size_t WidthInBytes, Height;
} CUDA_MEMCPY2D;

typedef struct CUDA_MEMCPY3D_st {
    size_t srcXInBytes, srcY, srcZ, srcLOD;
    int srcMemoryType;
    const void *srcHost;
    CUdeviceptr srcDevice;
    void *srcArray;
    void *reserved0;
    size_t srcPitch, srcHeight;
    size_t dstXInBytes, dstY, dstZ, dstLOD;
    int dstMemoryType;
    void *dstHost;
    CUdeviceptr dstDevice;
    void *dstArray;
    void *reserved1;
    size_t dstPitch, dstHeight;
    size_t WidthInBytes, Height, Depth;
} CUDA_MEMCPY3D;

typedef struct CUlaunchAttribute_st {
    int id;
    char pad[4];
    char value[64];
} CUlaunchAttribute;

typedef struct CUlaunchConfig_st {
    unsigned int gridDimX, gridDimY, gridDimZ;
    unsigned int blockDimX, blockDimY, blockDimZ;
    unsigned int sharedMemBytes;
    CUstream hStream;
    CUlaunchAttribute *attrs;
    unsigned int numAttrs;
} CUlaunchConfig;

/* The explicit graph API's node parameters, as cuda.h lays them out. */
typedef struct CUDA_KERNEL_NODE_PARAMS_v2_st {
    CUfunction func;
    unsigned int gridDimX, gridDimY, gridDimZ;
    unsigned int blockDimX, blockDimY, blockDimZ;
    unsigned int sharedMemBytes;
    void **kernelParams;
    void **extra;
    CUkernel kern;  /* _v2: a kernel of a library (when func is NULL) */
    CUcontext ctx;  /* _v2: the context it runs in (NULL: the current one) */
} CUDA_KERNEL_NODE_PARAMS;

typedef struct CUDA_MEMSET_NODE_PARAMS_st {
    CUdeviceptr dst;
    size_t pitch;
    unsigned int value;
    unsigned int elementSize;
    size_t width, height;
} CUDA_MEMSET_NODE_PARAMS;

/* A tensor map (TMA descriptor): 128 opaque bytes, as cuda.h lays it out. */
typedef uint32_t cuuint32_t;
typedef uint64_t cuuint64_t;
typedef struct CUtensorMap_st {
    _Alignas(128) cuuint64_t opaque[16];
} CUtensorMap;
typedef int CUtensorMapDataType, CUtensorMapInterleave, CUtensorMapSwizzle,
    CUtensorMapL2promotion, CUtensorMapFloatOOBfill;

typedef struct CUdevprop_st {
    int maxThreadsPerBlock;
    int maxThreadsDim[3];
    int maxGridSize[3];
    int sharedMemPerBlock;
    int totalConstantMemory;
    int SIMDWidth;
    int memPitch;
    int regsPerBlock;
    int clockRate;
    int textureAlign;
} CUdevprop;

/* ---- the stand-in's objects: every handle starts with a magic, and is validated against a
 * registry of live handles before it is dereferenced (cudart probes with invalid ones) ---- */
enum { FCD_CTX = 0x43545831, FCD_MODULE = 0x4d4f4431, FCD_FUNC = 0x46554e31,
       FCD_STREAM = 0x53545231, FCD_EVENT = 0x45564e31 };

typedef struct fcd_cls {
    void *key, *value;
    void (*dtor)(CUcontext, void *, void *);
    struct fcd_cls *next;
} fcd_cls;

struct fcd_ctx {
    uint32_t magic;
    int dev;
    int primary;
    unsigned int flags;
    unsigned long long id;
    pthread_mutex_t mtx;
    fcd_cls *cls;               /* context-local storage of the runtime */
};

typedef struct fcd_param { uint32_t offset, size; } fcd_param;

struct fcd_func {
    uint32_t magic;
    uint32_t id;                /* the kernel's id on the wire */
    struct fcd_module *module;
    char *name;
    int dev;                    /* the device it was looked up on (a CUfunction's) */
    uint64_t resolved;          /* bit per device where the server knows it */
    uint32_t nparams;
    fcd_param *params;
    uint32_t param_size;
    int max_threads;
    uint32_t max_dyn_smem;
    int kernel;                 /* a CUkernel (library), not a CUfunction */
    struct fcd_func *next;      /* in its module's list */
    /* answers that only change when the program sets an attribute, per device: the
     * server's attributes (JSON), and occupancy queries (request bytes -> answer) */
    char *attrs[FC_MAX_DEVICES_FCD];
    struct fcd_answer *answers;
};

typedef struct fcd_answer {
    int dev;
    uint16_t op;
    size_t n;
    unsigned char key[256];
    int64_t value;
    struct fcd_answer *next;
} fcd_answer;

struct fcd_module {
    uint32_t magic;
    uint32_t id;                /* the module's id on the wire */
    int library;                /* cuLibrary*: loaded on each device where it is used */
    unsigned char hash[32];     /* of the image: the daemon's cache key */
    char *image;                /* our copy (libraries load lazily, on each device) */
    size_t image_size;
    uint64_t loaded;            /* bit per device */
    pthread_mutex_t mtx;
    struct fcd_func *funcs;
    char *names;                /* its functions' names, NUL-separated, once asked for */
    size_t names_size;
    struct fcd_module *next_module; /* every module of the process */
};

struct fcd_capture;

struct fcd_stream {
    uint32_t magic;
    uint32_t id;
    int dev;
    CUcontext ctx;
    unsigned int flags;
    int priority;
    struct fcd_capture *capture;  /* the stream capture it takes part in, if any */
};

struct fcd_event {
    uint32_t magic;
    uint32_t id;
    int dev;
    unsigned int flags;
    struct fcd_capture *capture;  /* recorded in a capturing stream: waiting on it joins */
};

/* ---- init.c ---- */
extern const int fcd_nsyms;
extern const char *const fcd_sym_names[];
extern const char *const fcd_sym_reasons[];
typedef struct { const char *name; int version; void *fn, *fn_pt; } fcd_proc;
extern const int fcd_nprocs;
extern const fcd_proc fcd_procs[];
typedef struct { int code; const char *name; const char *text; } fcd_error;
extern const int fcd_nerrors;
extern const fcd_error fcd_errors[];

CUresult fcd_unsupported(int sym);
void fcd_note_once(int *flag, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
CUresult fcd_status(int cuda_error);    /* the daemon's cudaError_t as a CUresult */
CUresult fcd_enter(void);               /* initialized? (cuInit was called and succeeded) */
CUresult fcd_check_device(CUdevice dev);
int fcd_tracing(void);                  /* FARCUDA_TRACE_DRIVER */

/* ---- handles (handles.c) ---- */
void fcd_handle_add(const void *h);
void fcd_handle_del(const void *h);
int fcd_handle_live(const void *h, uint32_t magic);

/* ---- context.c ---- */
CUcontext fcd_primary(int dev);
/* The current context of this thread, made current (the primary context of device 0) where
 * CUDA would create it implicitly: NULL with *st set when there is none. */
CUcontext fcd_current(CUresult *st);
/* The device of the current context, ready (connected, opened), or an error. */
CUresult fcd_current_device(int *dev);
void fcd_ctx_reset_cls(CUcontext ctx);

/* ---- stream.c ---- */
/* The wire stream id and the device of a stream handle (NULL / legacy / per-thread / own). */
CUresult fcd_stream_resolve(CUstream s, int ptds, int *dev, uint32_t *sid);
CUresult fcd_module_each_function(CUmodule m, void (*each)(void *, CUfunction), void *user);

/* ---- graph.c ---- */
struct fcd_capture *fcd_capture_of(CUstream s);
void fcd_capture_node(struct fcd_capture *c, int type); /* CU_GRAPH_NODE_TYPE_* */
void fcd_capture_join(struct fcd_capture *c, CUstream s);
CUresult fcd_capture_host_copy(struct fcd_capture *c, int dev, CUdeviceptr dptr, void *host,
                               size_t n, int to_device, uint32_t sid);

/* ---- module.c ---- */
CUresult fcd_module_from_image(const void *image, size_t size, int library, CUmodule *out);

/* ---- darkapi.c ---- */
CUresult fcd_get_export_table(const void **table, const CUuuid *id);

#endif
