"""The wire messages: one declarative table, fixed opcodes, shared by client and daemon.

Everything that crosses the wire is described here and nowhere else (h11's rule for its state
machine): the opcode, the direction, the fixed fields, what a tail holds, the named values of
fields that carry flags or choices (``consts``), and what the header's ``aux`` field carries for
the few messages that use it (``aux``). tools/gen_calls.py turns this table into the C header
both C sides include (wire/c/fc_wire.h: opcodes, the header, packed layouts, constants) and into
one typed class per message for Python (wire/messages.py); tests/unit/test_table.py checks that
both are current.

A message has a fixed part (little-endian, no padding, laid out by ``fields``; a field named
``rsv`` is padding, zero on the wire) and, when ``bulk`` is set, a variable-length tail
(payload bytes, packed kernel parameters, JSON on cold paths). Opcodes are never reused:
retire a message by moving it to ``RETIRED``.

Requests (client -> daemon) are *async* (no reply; errors surface at the next synchronizing
call) or *sync* (the frame carries a nonzero request id and the daemon answers with one REPLY
frame with that id, possibly preceded by DATA frames that carry bulk results in pieces).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .abi import STRUCTS

__all__ = ["Field", "Const", "Message", "MESSAGES", "BY_NAME", "BY_OP", "RETIRED", "FTYPES",
           "CONSTANTS"]

# field type -> (struct code, C type)
FTYPES: dict[str, tuple[str, str]] = {
    "u8": ("B", "uint8_t"),
    "u16": ("H", "uint16_t"),
    "u32": ("I", "uint32_t"),
    "i32": ("i", "int32_t"),
    "u64": ("Q", "uint64_t"),
    "i64": ("q", "int64_t"),
    "f32": ("f", "float"),
    "f64": ("d", "double"),
}

# Sizes both sides cut or count by: name -> (value, meaning). C: FC_<name>; Python: the name.
CONSTANTS: dict[str, tuple[int, str]] = {
    "PIECE": (4 << 20, "bulk data travels in frames of at most this many bytes, so that a "
                       "receiver copies one piece while the next is on the wire; a deferred "
                       "device-to-host copy is one piece"),
    "LAUNCH_ATTR_SIZE": (STRUCTS["cudaLaunchAttribute"][0],
                         "bytes of one launch attribute in a tail (sizeof cudaLaunchAttribute)"),
    "STREAM_ATTR_SIZE": (STRUCTS["cudaLaunchAttributeValue"][0],
                         "bytes of a stream attribute's value (sizeof "
                         "cudaLaunchAttributeValue)"),
}


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    count: int = 1


@dataclass(frozen=True)
class Const:
    """A named value of a field: a flag bit, or one of the field's choices."""

    field: str
    name: str
    value: int
    doc: str


def _fields(spec: str) -> tuple[Field, ...]:
    """Parse 'dst:u64 grid:u32*3' into fields."""
    out = []
    for item in spec.split():
        name, _, typ = item.partition(":")
        typ, _, count = typ.partition("*")
        if typ not in FTYPES:
            raise ValueError(f"unknown field type {typ!r} in {spec!r}")
        out.append(Field(name, typ, int(count or 1)))
    return tuple(out)


def _consts(specs: tuple[str, ...]) -> tuple[Const, ...]:
    """Parse 'flags COOPERATIVE=1: what it means' into constants."""
    out = []
    for spec in specs:
        head, _, doc = spec.partition(":")
        fname, _, assign = head.strip().partition(" ")
        name, _, value = assign.partition("=")
        out.append(Const(fname, name.strip(), int(value, 0), doc.strip()))
    return tuple(out)


@dataclass(frozen=True)
class Message:
    name: str
    op: int
    direction: str  # "c2s" (client to server) or "s2c"
    mode: str  # c2s: "async" | "sync" | "either"; s2c: "reply" | "notify"
    fields: tuple[Field, ...]
    reply: tuple[Field, ...] = ()
    bulk: str = ""  # what the request's tail holds, "" when none
    reply_bulk: str = ""  # what the reply's tail holds (sent as DATA frames + REPLY tail)
    doc: str = ""
    consts: tuple[Const, ...] = ()
    aux: tuple[str, str] | None = None  # (name, meaning) of what the header's aux carries
    fmt: str = field(init=False, repr=False)
    reply_fmt: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fmt", _fmt(self.fields))
        object.__setattr__(self, "reply_fmt", _fmt(self.reply))
        names = {f.name for f in self.fields}
        for c in self.consts:
            if c.field not in names:
                raise ValueError(f"{self.name}: a constant of no field {c.field!r}")

    @property
    def size(self) -> int:
        return struct.calcsize(self.fmt)

    @property
    def reply_size(self) -> int:
        return struct.calcsize(self.reply_fmt)

    @property
    def names(self) -> tuple[str, ...]:
        return _names(self.fields)

    @property
    def reply_names(self) -> tuple[str, ...]:
        return _names(self.reply)


def _fmt(fields: tuple[Field, ...]) -> str:
    return "<" + "".join(f"{f.count}{FTYPES[f.type][0]}" if f.count > 1 else FTYPES[f.type][0]
                         for f in fields)


def _names(fields: tuple[Field, ...]) -> tuple[str, ...]:
    out: list[str] = []
    for f in fields:
        out += [f.name] if f.count == 1 else [f"{f.name}{i}" for i in range(f.count)]
    return tuple(out)


def _m(name: str, op: int, mode: str, fields: str = "", reply: str = "", bulk: str = "",
       reply_bulk: str = "", doc: str = "", direction: str = "c2s",
       consts: tuple[str, ...] = (), aux: tuple[str, str] | None = None) -> Message:
    return Message(name, op, direction, mode, _fields(fields), _fields(reply), bulk, reply_bulk,
                   doc, _consts(consts), aux)


# Stream ids on the wire: 0 is the legacy default stream; the client numbers its own streams
# (including one per-thread default stream per host thread and device) from 1. Event, kernel,
# module and callback ids are likewise the client's, so creating them needs no round trip.
MESSAGES: tuple[Message, ...] = (
    # --- session (0x00xx): handshake frames are exchanged with the daemon's front process ---
    _m("SERVER_HELLO", 0x0001, "notify", "magic:u32 version:u16 flags:u16 nonce:u8*32",
       direction="s2c", doc="first frame from the daemon: protocol version, auth challenge",
       consts=("flags AUTH=1: the client must prove a token",)),
    _m("HELLO", 0x0002, "sync", "magic:u32 version:u16 flags:u16 pid:u32 mac:u8*32",
       reply="session:u64 ngpus:u32 driver:u32 heartbeat_ms:u32", bulk="json identity",
       doc="client identity and auth answer; the reply welcomes it",
       consts=("flags TOKEN=1: mac proves a token",)),
    _m("PING", 0x0003, "async", doc="client keep-alive when idle"),
    _m("BYE", 0x0004, "async", doc="orderly end of a client; the daemon frees its resources"),
    _m("GPU_INFO", 0x0005, "sync", "gpu:u32", reply_bulk="json",
       doc="properties and attributes of a physical GPU, without creating a context"),
    _m("STATUS", 0x0006, "sync", reply_bulk="json", doc="server status for `farcuda status`"),
    # --- devices (0x01xx) ---
    _m("DEVICE_OPEN", 0x0101, "sync",
       "gpu:u32 sm_budget:u32 flags:u32 window_base:u64 window_size:u64",
       reply="window_base:u64 sm_count:u32 rsv:u32", reply_bulk="json",
       doc="create the context of a virtual device (flags: cudaSetDeviceFlags'); its "
           "allocations land in the window"),
    _m("DEVICE_SYNC", 0x0102, "sync"),
    _m("DEVICE_RESET", 0x0103, "sync"),
    _m("SET_LIMIT", 0x0104, "sync", "limit:u32 rsv:u32 value:u64"),
    _m("GET_LIMIT", 0x0105, "sync", "limit:u32", reply="value:u64"),
    _m("MEM_GET_INFO", 0x0106, "sync", reply="free:u64 total:u64"),
    _m("SET_FLAGS", 0x0107, "sync", "flags:u32"),
    _m("SET_CACHE_CONFIG", 0x0108, "async", "config:u32"),
    # --- memory (0x02xx) ---
    _m("MALLOC", 0x0201, "sync", "size:u64 flags:u32", reply="ptr:u64"),
    _m("FREE", 0x0202, "either", "ptr:u64",
       doc="sent without waiting when the client knows that no work of the device is pending"),
    _m("MALLOC_PITCH", 0x0203, "sync", "width:u64 height:u64", reply="ptr:u64 pitch:u64"),
    _m("MEMCPY_HTOD", 0x0210, "either", "dst:u64 stream:u32 flags:u32", bulk="bytes",
       doc="host data in the tail; large copies are sent as several frames"),
    _m("MEMCPY_DTOH", 0x0211, "sync", "src:u64 size:u64 stream:u32 flags:u32",
       reply_bulk="bytes", doc="the daemon streams the bytes back as DATA frames",
       consts=("flags DEFERRED=1: the client does not wait (into pinned memory, one PIECE at "
               "most): the daemon answers once the copy completed, and before the answer to "
               "anything that covers it",
               "flags COMPRESSED=2: pieces of the result may come as DATA_Z",)),
    _m("MEMCPY_DTOD", 0x0212, "either", "dst:u64 src:u64 size:u64 stream:u32 flags:u32"),
    _m("MEMSET", 0x0213, "either", "dst:u64 size:u64 value:u32 stream:u32 elem:u32"),
    _m("MEMCPY2D_HTOD", 0x0214, "either",
       "dst:u64 dpitch:u64 width:u64 height:u64 stream:u32 flags:u32", bulk="rows",
       doc="rows packed tightly in the tail (width bytes each)"),
    _m("MEMCPY2D_DTOH", 0x0215, "sync",
       "src:u64 spitch:u64 width:u64 height:u64 stream:u32 flags:u32", reply_bulk="rows"),
    _m("MEMCPY2D_DTOD", 0x0216, "either",
       "dst:u64 dpitch:u64 src:u64 spitch:u64 width:u64 height:u64 stream:u32 flags:u32"),
    _m("MEMSET2D", 0x0217, "either",
       "dst:u64 pitch:u64 width:u64 height:u64 value:u32 stream:u32"),
    _m("POINTER_INFO", 0x0218, "sync", "ptr:u64", reply="type:u32 rsv:u32 base:u64 size:u64",
       doc="reply type: a cudaMemoryType"),
    _m("MEMCPY_PEER", 0x0219, "either",
       "dst:u64 dst_vdev:u32 src_vdev:u32 src:u64 size:u64 stream:u32 flags:u32",
       doc="copy between two virtual devices served by the same daemon session"),
    _m("MALLOC_ASYNC", 0x021A, "sync", "size:u64 stream:u32",
       reply="ptr:u64 used:u64 reserved:u64",
       doc="cudaMallocAsync: the bytes the allocation uses and the bytes mapped for it, for "
           "the client's pool statistics"),
    _m("FREE_ASYNC", 0x021B, "either", "ptr:u64 stream:u32",
       doc="free in the order of the stream (of the frame's virtual device)",
       aux=("mem_vdev", "the virtual device of the memory")),
    # client-side sub-allocation: the client places its small cudaMalloc calls in arenas the
    # daemon maps for it (as the daemon packs small allocations itself) and tells the daemon
    # of each allocation and free without waiting, ahead of any frame that uses the memory
    _m("ARENA", 0x0230, "sync", reply="ptr:u64 size:u64",
       doc="map an arena for the client's small allocations (DEVICE_OPEN offers them)"),
    _m("SUBALLOC", 0x0231, "async", "ptr:u64 size:u64",
       doc="the client allocated size bytes at ptr in one of its arenas"),
    _m("SUBFREE", 0x0232, "async", "ptr:u64",
       doc="the client freed its allocation at ptr (the device was idle for it)"),
    _m("ARENA_RELEASE", 0x0233, "async", "ptr:u64",
       doc="the client gives back its empty arena at ptr"),
    _m("MEMCPY_HTOD_Z", 0x0234, "either", "dst:u64 stream:u32 flags:u32 size:u64",
       bulk="an LZ4 block of size bytes (wire/compress.py)",
       doc="a piece of MEMCPY_HTOD, compressed (where DEVICE_OPEN said the daemon can)"),
    _m("PROBE", 0x0235, "sync", bulk="bytes, ignored",
       doc="measures the link: the client times an empty one and a large one"),
    # --- modules and kernels (0x03xx) ---
    _m("MODULE_LOAD", 0x0301, "sync", "module:u32 nkernels:u32 nvars:u32",
       bulk="fat binary, then JSON {kernels: [[id, name]], vars: [[id, name, size]]}",
       reply_bulk="json",
       doc="load a fat binary into the device's context; reply: parameter layouts, globals"),
    _m("FUNC_ATTRS", 0x0302, "sync", "kernel:u32", reply_bulk="json",
       doc="cudaFuncAttributes of a kernel in this device's context"),
    _m("FUNC_SET_ATTR", 0x0303, "sync", "kernel:u32 attr:u32 value:i32",
       doc="attr: a cudaFuncAttribute, or CACHE_CONFIG",
       consts=("attr CACHE_CONFIG=1000: value is a cudaFuncCache (cudaFuncSetCacheConfig)",)),
    _m("OCCUPANCY", 0x0304, "sync", "kernel:u32 block:u32 shmem:u64 flags:u32",
       reply="blocks:i32"),
    _m("OCCUPANCY_SMEM", 0x0305, "sync", "kernel:u32 blocks:u32 block:u32",
       reply="bytes:u64", doc="cudaOccupancyAvailableDynamicSMemPerBlock"),
    _m("OCCUPANCY_CLUSTERS", 0x0306, "sync",
       "kernel:u32 grid:u32*3 block:u32*3 shmem:u32 nattrs:u32 what:u32",
       bulk="nattrs launch attributes of LAUNCH_ATTR_SIZE bytes", reply="value:i32",
       consts=("what MAX_ACTIVE=0: cudaOccupancyMaxActiveClusters",
               "what MAX_SIZE=1: cudaOccupancyMaxPotentialClusterSize")),
    _m("LAUNCH", 0x0310, "either",
       "kernel:u32 stream:u32 grid:u32*3 block:u32*3 shmem:u32 flags:u32", bulk="params",
       doc="packed kernel parameters in the tail",
       consts=("flags COOPERATIVE=1: a cooperative launch (cudaLaunchCooperativeKernel)",)),
    _m("LAUNCH_EX", 0x0311, "either",
       "kernel:u32 stream:u32 grid:u32*3 block:u32*3 shmem:u32 nattrs:u32",
       bulk="nattrs launch attributes of LAUNCH_ATTR_SIZE bytes, then the packed parameters",
       doc="cudaLaunchKernelExC"),
    _m("FUNC_MAX_CLUSTER", 0x0312, "sync", "kernel:u32 grid:u32*3 block:u32*3 shmem:u32",
       reply="clusters:i32"),
    # A tensor map (TMA descriptor) is the driver's own encoding of these arguments, made on
    # the host and passed to kernels by value: the GPU's driver makes it, for the same
    # addresses the client uses.
    _m("TENSOR_MAP", 0x0313, "sync",
       "kind:u32 dtype:u32 rank:u32 interleave:u32 swizzle:u32 l2:u32 oob:u32 channels:u32 "
       "pixels:u32 rsv:u32 addr:u64 dims:u64*5 strides:u64*4 box:u32*5 estrides:u32*5 "
       "lower:i32*3 upper:i32*3",
       bulk="REPLACE: the tensor map whose address changes (128 bytes)",
       reply_bulk="the tensor map (128 bytes)",
       doc="cuTensorMapEncodeTiled, cuTensorMapEncodeIm2col and cuTensorMapReplaceAddress",
       consts=("kind TILED=0: cuTensorMapEncodeTiled (box, estrides)",
               "kind IM2COL=1: cuTensorMapEncodeIm2col (lower, upper: the pixel box's corners, "
               "channels, pixels, estrides)",
               "kind REPLACE=2: cuTensorMapReplaceAddress (addr)")),
    # --- streams and events (0x04xx) ---
    _m("STREAM_CREATE", 0x0401, "async", "stream:u32 flags:u32 priority:i32",
       consts=("flags NON_BLOCKING=1: cudaStreamNonBlocking: no implicit order with the legacy "
               "stream",)),
    _m("STREAM_DESTROY", 0x0402, "async", "stream:u32"),
    _m("STREAM_SYNC", 0x0403, "sync", "stream:u32"),
    _m("STREAM_QUERY", 0x0404, "sync", "stream:u32"),
    _m("STREAM_WAIT_EVENT", 0x0405, "async", "stream:u32 event:u32 flags:u32",
       aux=("event_vdev", "the virtual device of the event (another one of this session's)")),
    _m("STREAM_SET_ATTR", 0x0406, "sync", "stream:u32 attr:u32",
       bulk="the value: STREAM_ATTR_SIZE bytes"),
    _m("EVENT_CREATE", 0x0410, "async", "event:u32 flags:u32"),
    _m("EVENT_DESTROY", 0x0411, "async", "event:u32"),
    _m("EVENT_RECORD", 0x0412, "async", "event:u32 stream:u32 flags:u32"),
    _m("EVENT_SYNC", 0x0413, "sync", "event:u32"),
    _m("EVENT_QUERY", 0x0414, "sync", "event:u32"),
    _m("EVENT_ELAPSED", 0x0415, "sync", "start:u32 end:u32", reply="ms:f32"),
    _m("HOST_FUNC", 0x0420, "async", "stream:u32 callback:u32",
       doc="the daemon sends CALLBACK when the stream reaches it and holds the stream until "
           "CALLBACK_DONE",
       aux=("captured", "1: captured into a graph, the callback runs at every replay")),
    _m("CALLBACK_DONE", 0x0421, "async", "callback:u32"),
    # --- graphs (0x05xx) ---
    _m("CAPTURE_BEGIN", 0x0501, "sync", "stream:u32 mode:u32"),
    _m("CAPTURE_END", 0x0502, "sync", "stream:u32 graph:u32"),
    _m("CAPTURE_STATUS", 0x0503, "sync", "stream:u32", reply="status:u32"),
    _m("GRAPH_INSTANTIATE", 0x0504, "sync", "graph:u32 exec:u32 flags:u64"),
    _m("GRAPH_LAUNCH", 0x0505, "either", "exec:u32 stream:u32"),
    _m("GRAPH_DESTROY", 0x0506, "async", "graph:u32"),
    _m("GRAPH_EXEC_DESTROY", 0x0507, "async", "exec:u32"),
    _m("GRAPH_UPLOAD", 0x0508, "either", "exec:u32 stream:u32"),
    # Host memory in a captured graph is read and written when the graph runs, as in CUDA:
    # the daemon captures a host node that fetches the bytes from the client (FETCH, answered
    # with HOST_DATA) or pushes them to it (PUSH, answered with PUSH_DONE) at each replay.
    _m("CAPTURE_HTOD", 0x0509, "sync", "dst:u64 size:u64 stream:u32 node:u32"),
    _m("CAPTURE_DTOH", 0x050A, "sync", "src:u64 size:u64 stream:u32 node:u32"),
    _m("HOST_DATA", 0x050B, "async", "node:u32 rsv:u32 offset:u64", bulk="bytes"),
    _m("PUSH_DONE", 0x050C, "async", "node:u32"),
    # --- modules by image, for the driver layer (0x06xx) ---
    # The client's own images (cuModuleLoadData, cuLibraryLoadData, the runtime's registered
    # fat binaries) of any kind: fat binary, cubin or PTX. The daemon keeps what it was sent
    # in a cache keyed by SHA-256, shared by its sessions: a client asks by hash first.
    _m("MODULE_IMAGE", 0x0601, "sync", "module:u32 flags:u32 size:u64 hash:u8*32",
       bulk="the image, or nothing: then the daemon takes it from its cache",
       reply_bulk="text: why the load failed",
       doc="load an image into the device's context as `module`; with no tail, "
           "cudaErrorSymbolNotFound says the cache does not hold that hash (send the image)"),
    _m("MODULE_FUNCTION", 0x0602, "sync", "module:u32 kernel:u32", bulk="the function's name",
       reply_bulk="json {params: [[offset, size]], param_size, max_threads, max_dyn_smem}",
       doc="look a function of the module up by name; launches name it `kernel` from then on"),
    _m("MODULE_GLOBAL", 0x0603, "sync", "module:u32", bulk="the variable's name",
       reply="addr:u64 size:u64", doc="a global variable of the module"),
    _m("MODULE_UNLOAD", 0x0604, "async", "module:u32"),
    _m("MODULE_NAMES", 0x0605, "sync", "module:u32",
       reply_bulk="the names of the module's functions, each ended by a NUL",
       doc="the functions of a module, for cuModuleEnumerateFunctions and "
           "cuLibraryEnumerateKernels"),
    # --- daemon to client (0x80xx) ---
    _m("REPLY", 0x8001, "reply", "status:u32 fixed_len:u32", direction="s2c",
       doc="answer to the sync request with the same id: status, the reply's fixed part, tail"),
    _m("DATA", 0x8002, "reply", "offset:u64", direction="s2c",
       doc="a piece of a sync request's bulk result, at this offset of it"),
    # A HEARTBEAT is sent when the daemon was idle for a heartbeat period, and in every period
    # in which it received bytes from the client: ``received`` (all bytes of this session
    # after the handshake) is how the client tells a link dead in its own direction only.
    # A HEARTBEAT without it (an older daemon, length 0) acknowledges nothing.
    _m("HEARTBEAT", 0x8003, "notify", "received:u64", direction="s2c",
       doc="sign of life, and how many bytes the session has received from the client"),
    _m("CALLBACK", 0x8004, "notify", "callback:u32", direction="s2c",
       doc="a stream reached a host function: run it, then send CALLBACK_DONE"),
    _m("ASYNC_ERROR", 0x8005, "notify", "status:u32 op:u32", direction="s2c",
       doc="an async operation of this virtual device failed"),
    _m("STDOUT", 0x8006, "notify", direction="s2c", doc="device printf output, in the tail"),
    _m("GOODBYE", 0x8007, "notify", "status:u32", direction="s2c",
       doc="the daemon is ending this session; the tail says why"),
    _m("FETCH", 0x8008, "notify", "node:u32", direction="s2c",
       doc="a graph replay needs the host bytes of a captured host-to-device copy"),
    _m("PUSH", 0x8009, "notify", "node:u32 last:u32 offset:u64", direction="s2c",
       doc="bytes of a captured device-to-host copy, for the client's memory; after the last "
           "piece the client answers PUSH_DONE"),
    _m("FAULT", 0x800A, "notify", "status:u32 rsv:u32 first:u64 last:u64", direction="s2c",
       doc="a fault left this virtual device's context unusable (sent once, before the first "
           "answer that reports it): the first and the last launch since its last good "
           "synchronization (0: none); the tail names the kernel it came from, in words"),
    _m("DATA_Z", 0x800B, "reply", "offset:u64 size:u64", direction="s2c",
       bulk="an LZ4 block of size bytes (wire/compress.py)",
       doc="a piece of a bulk result, compressed (the request asked for it: MEMCPY_DTOH "
           "flags COMPRESSED)"),
)

BY_NAME: dict[str, Message] = {m.name: m for m in MESSAGES}
BY_OP: dict[int, Message] = {m.op: m for m in MESSAGES}

# Opcodes once used and retired: never reuse them.
RETIRED: dict[int, str] = {}

if len(BY_OP) != len(MESSAGES) or len(BY_NAME) != len(MESSAGES):
    raise AssertionError("duplicate opcode or message name in the wire table")
