"""The embedded Python half of the shim: configuration, connections, modules, cold calls.

This module runs inside the CUDA application's process, in the interpreter the shim starts.
The C half calls the functions registered by ``install`` (cffi ``extern "Python+C"``) for
everything that is not on the hot path; each returns a cudaError_t. An exception inside one
becomes cudaErrorUnknown with a traceback on stderr, never a silent success.

With FARCUDA_TLS=1 a connection's bytes go through a TLS relay (interposer/tls.py): the C
transport gets one end of a socketpair, a Python thread of this process encrypts and forwards,
and the farcuda handshake itself already runs inside TLS.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import struct
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from farcuda.wire import BY_NAME, FrameReader, compress, handshake, pack_fixed, unpack_fixed
from farcuda.wire import messages as msg
from farcuda.wire.abi import ERRORS, STRUCTS, cudaDeviceAttr, cudaFuncAttribute
from farcuda.wire.calls import PY_CALLS

from . import config as configmod
from .devprops import attr_number, fill_device_prop

E = {name: code for code, (name, _text) in ERRORS.items()}
SUCCESS = 0
RANGE_SYMBOL = 2

ffi: Any = None
lib: Any = None


def log(text: str) -> None:
    lib.fcx_log(text.encode(errors="replace"))


@dataclass
class Device:
    server: int
    gpu: int
    sm: int
    info: dict | None = None  # GPU_INFO
    opened: dict | None = None  # DEVICE_OPEN reply
    flags: int = 0
    cache_config: int = 0
    peers: set = field(default_factory=set)
    stream_attrs: dict = field(default_factory=dict)


@dataclass
class State:
    cfg: configmod.ClientConfig | None = None
    servers: list = field(default_factory=list)  # (host, port)
    devices: list = field(default_factory=list)  # Device
    # Answers that cannot change until the program changes what they depend on (a kernel's
    # attributes, a device reset), kept after the first time: (device, kernel, ...) -> answer
    occupancy: dict = field(default_factory=dict)
    func_attrs: dict = field(default_factory=dict)
    clusters: dict = field(default_factory=dict)
    kernel_attrs: dict = field(default_factory=dict)  # kernel -> {attr: value} set by the app
    compress_decided: set = field(default_factory=set)  # servers
    link_rate: dict = field(default_factory=dict)  # server -> bytes/s measured (auto mode)


S = State()


# ---------------------------------------------------------------- requests


class CudaError(Exception):
    def __init__(self, status: int, message: str | None = None, reason: str | None = None):
        super().__init__(message or ERRORS.get(status, ("?", "?"))[0])
        self.status = status
        self.reason = reason  # the server's words, when its reply carried some


def call(dev: int, name: str, values: dict | None = None, tail: bytes = b"",
         bulk: bool = False, server: int | None = None) -> tuple[dict, bytes | None]:
    """A synchronous request on a virtual device (or to a server); raises CudaError."""
    m = BY_NAME[name]
    fixed = pack_fixed(m, values)
    rep_size = max(m.reply_size, 1)
    rep = ffi.new("char[]", rep_size)
    pbulk = ffi.new("void **") if bulk else ffi.NULL
    plen = ffi.new("size_t *") if bulk else ffi.NULL
    if server is not None:
        st = lib.fcx_call_server(server, m.op, fixed, len(fixed), rep, m.reply_size, pbulk,
                                 plen)
    else:
        st = lib.fcx_call(dev, m.op, fixed, len(fixed), tail, len(tail), rep, m.reply_size,
                          pbulk, plen)
    data = None
    if bulk and pbulk[0] != ffi.NULL:
        data = bytes(ffi.buffer(pbulk[0], plen[0]))
        lib.fcx_free(pbulk[0])
    if st != SUCCESS:
        raise CudaError(st, reason=data.decode(errors="replace") if data else None)
    reply = unpack_fixed(m, ffi.buffer(rep, rep_size), reply=True) if m.reply_size else {}
    return reply, data


def post(dev: int, name: str, values: dict | None = None, tail: bytes = b"") -> int:
    m = BY_NAME[name]
    fixed = pack_fixed(m, values)
    return lib.fcx_post(dev, m.op, fixed, len(fixed), tail, len(tail))


def ready(dev: int) -> None:
    st = lib.fcx_device_ready(dev)
    if st != SUCCESS:
        raise CudaError(st)


def check_device(dev: int) -> Device:
    if not 0 <= dev < len(S.devices):
        raise CudaError(E["cudaErrorInvalidDevice"])
    return S.devices[dev]


# ---------------------------------------------------------------- init and connections


def init() -> int:
    try:
        cfg = configmod.from_env()
    except configmod.ConfigError as exc:
        log(f"bad configuration: {exc}")
        lib.fcx_set_init_status(E["cudaErrorInvalidValue"])
        return 0
    S.cfg = cfg
    lib.fcx_set_timeouts(int(cfg.connect_timeout * 1000), int(cfg.liveness_timeout * 1000))
    lib.fcx_set_spin(int(cfg.spin_us * 1000))
    if not cfg.configured:
        log(f"no GPU server configured: {configmod.ENV_HELP}")
        lib.fcx_set_init_status(E["cudaErrorNoDevice"])
        return 0
    index: dict[tuple[str, int], int] = {}

    def server_index(host: str, port: int) -> int:
        key = (host, port)
        if key not in index:
            index[key] = lib.fcx_add_server(host.encode(), port)
            S.servers.append(key)
        return index[key]

    if cfg.devices is not None:
        for entry in cfg.devices:
            s = server_index(entry.host, entry.port)
            d = lib.fcx_add_device(s, entry.gpu, entry.sm)
            S.devices.append(Device(s, entry.gpu, entry.sm))
            assert d == len(S.devices) - 1
    else:
        host, port = cfg.server
        s = server_index(host, port)
        st = connect(s)
        if st != SUCCESS:
            lib.fcx_server_failed(s, st)
            lib.fcx_set_init_status(st)
            return 0
        ngpus = _ngpus.get(s, 0)
        if ngpus == 0:
            log(f"the server {host}:{port} ({cfg.source or 'FARCUDA_SERVER'}) has no GPU")
            lib.fcx_set_init_status(E["cudaErrorNoDevice"])
            return 0
        for gpu in range(min(ngpus, 64)):
            lib.fcx_add_device(s, gpu, 0)
            S.devices.append(Device(s, gpu, 0))
    lib.fcx_set_init_status(SUCCESS)
    return 0


_ngpus: dict[int, int] = {}  # GPUs of each server, from its welcome


def _identity() -> dict:
    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    exe = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    try:
        exe = os.path.basename(os.readlink("/proc/self/exe"))
    except OSError:
        pass
    ident = {"pid": os.getpid(), "host": socket.gethostname(), "user": user, "exe": exe}
    job = os.environ.get("FARCUDA_JOB", "").strip()
    if job:  # the scheduler's job (slurm:ID), shown beside the session by `farcuda status`
        ident["job"] = job[:128]
    return ident


def _recv_frame(sock: socket.socket, reader: FrameReader):
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection during the handshake")
        frames = reader.feed(data)
        if frames:
            return frames[0]


def _open_tls(host: str, port: int, cfg) -> socket.socket:
    """The local end of a TLS relay to host:port (interposer/tls.py)."""
    import ssl

    from farcuda.wire.tls import client_context

    from . import tls
    try:
        ctx = client_context(cfg.tls_ca, cfg.tls_cert, cfg.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise _TlsSetupError(f"FARCUDA_TLS_CA/CERT/KEY: {exc}") from None
    sock = tls.client_relay().connect(host, port, ctx, cfg.connect_timeout)
    sock.settimeout(cfg.connect_timeout)
    return sock


class _TlsSetupError(Exception):
    pass


def connect(server: int) -> int:
    """Open the connection to a server and shake hands; give the socket to the C runtime."""
    host, port = S.servers[server]
    cfg = S.cfg
    where = f"{host}:{port}"
    var = cfg.source if cfg and cfg.source else "FARCUDA_SERVER"
    try:
        if cfg.tls:
            sock = _open_tls(host, port, cfg)
        else:
            sock = socket.create_connection((host, port), timeout=cfg.connect_timeout)
    except _TlsSetupError as exc:
        log(f"cannot set up TLS for the GPU server {where}: {exc}")
        return E["cudaErrorDevicesUnavailable"]
    except OSError as exc:  # ssl.SSLError included
        if isinstance(exc, TimeoutError):
            reason = "timed out"
        elif hasattr(exc, "reason") and exc.reason:  # ssl: e.g. CERTIFICATE_VERIFY_FAILED
            reason = f"TLS handshake failed: {getattr(exc, 'verify_message', None) or exc.reason}"
        else:
            reason = exc.strerror or str(exc)
        log(f"cannot reach the GPU server {where} (set by {var}): {reason}; start farcudad "
            f"there or fix {var}" + (" (or FARCUDA_TLS_*)" if cfg.tls else ""))
        return E["cudaErrorDevicesUnavailable"]
    try:
        reader = FrameReader("s2c")
        first = _recv_frame(sock, reader)
        if first.msg.name != "SERVER_HELLO":
            raise ConnectionError(f"unexpected {first.msg.name} frame")
        version, flags, challenge = handshake.parse_server_hello(first.fixed)
        if flags & handshake.FLAG_AUTH and not cfg.token:
            log(f"the GPU server {where} requires a token: set FARCUDA_TOKEN")
            sock.close()
            return E["cudaErrorDevicesUnavailable"]
        sock.sendall(handshake.client_hello(challenge, _identity(), cfg.token))
        rep = _recv_frame(sock, reader)
        status, flen = struct.unpack_from("<II", rep.fixed)
        if status != 0:
            reason = bytes(rep.tail or b"").decode(errors="replace")
            log(f"the GPU server {where} refused this client: {reason}")
            sock.close()
            return status
        if rep.tail is None or len(rep.tail) < flen:
            raise ConnectionError("short welcome")
        info = unpack_fixed(BY_NAME["HELLO"], bytes(rep.tail)[:flen], reply=True)
    except (OSError, ConnectionError, ValueError) as exc:
        hint = ""
        if isinstance(exc, TimeoutError) and not cfg.tls:  # a TLS server waits for us
            hint = " (if the server uses TLS, set FARCUDA_TLS=1 and FARCUDA_TLS_CA)"
        elif cfg.tls:
            from . import tls
            why = tls.client_relay().why_closed(sock)
            if why:
                hint = f" (TLS: {why})"
            elif not cfg.tls_cert:  # TLS 1.3 reports a missing certificate only as a close
                hint = (" (over TLS: the server may require a client certificate: set "
                        "FARCUDA_TLS_CERT and FARCUDA_TLS_KEY)")
            else:
                hint = " (over TLS: the server may not accept this client's certificate)"
        log(f"handshake with the GPU server {where} failed: {exc}{hint}")
        sock.close()
        return E["cudaErrorDevicesUnavailable"]
    sock.settimeout(None)
    _ngpus[server] = info["ngpus"]
    lib.fcx_server_set_info(server, info["ngpus"], info["driver"])
    return lib.fcx_attach(server, sock.detach(), info["heartbeat_ms"])


def _info(dev: int) -> dict:
    """The physical GPU's properties, as its server reports them (no context needed)."""
    d = check_device(dev)
    if d.info is None:
        host, port = S.servers[d.server]
        _, data = call(dev, "GPU_INFO", {"gpu": d.gpu}, bulk=True, server=d.server)
        info = json.loads(data)
        if "error" in info:
            log(f"device {dev} ({host}:{port}/{d.gpu}, set by {S.cfg.source}): "
                f"{info['error']}")
            raise CudaError(E["cudaErrorInvalidDevice"])
        d.info = info
    return d.info


def device_attrs(dev: int) -> dict[int, int]:
    """The attributes of a virtual device: its GPU's, with the SM count of its partition when
    it has an SM budget (known once its context exists)."""
    d = S.devices[dev]
    attrs = {int(k): v for k, v in _info(dev)["attrs"].items()}
    if d.sm and d.opened is not None:
        attrs[attr_number("MultiProcessorCount")] = d.opened["sm_count"]
    return attrs


def _publish(dev: int) -> None:
    attrs = device_attrs(dev)
    flat = [0] * 256
    for k, v in attrs.items():
        if 0 < k < 256:
            flat[k] = v
    lib.fcx_set_attrs(dev, flat, 256, attrs.get(attr_number("MaxSharedMemoryPerBlockOptin"),
                                                  49152))


def _compression(dev: int, server_can: bool) -> None:
    """Decide, for the server of dev (at its first device), whether large host-to-device
    pieces go compressed: FARCUDA_COMPRESS, what this client and the server can do, and in
    auto mode the link's rate, measured at the first large copy (link_probe)."""
    d = S.devices[dev]
    if d.server in S.compress_decided:
        return
    S.compress_decided.add(d.server)
    assert S.cfg is not None
    mode = S.cfg.compress
    here = compress.available()
    if mode == "on" and not here:
        log("FARCUDA_COMPRESS=on, but the lz4 package is not installed here (pip install "
            "'farcuda[compress]'): copies go uncompressed")
    elif mode == "on" and not server_can:
        host, port = S.servers[d.server]
        log(f"FARCUDA_COMPRESS=on, but the server {host}:{port} cannot decompress (no lz4 "
            "package there): copies go uncompressed")
    state = 0 if mode == "off" or not (here and server_can) else (1 if mode == "on" else 2)
    lib.fcx_set_compress(d.server, state)


PROBE_BYTES = 2 << 20  # well past a link's burst (a token bucket's depth, a switch's buffer)


def link_probe(dev: int) -> int:
    """FARCUDA_COMPRESS=auto, at the first copy of 1 MiB or more: the link's rate from the
    time of a request with PROBE_BYTES behind it against that of an empty one (the best of
    two each: a busy machine's hiccup in one of them is not the link)."""
    d = S.devices[dev]
    filler = os.urandom(PROBE_BYTES)
    rate = None
    try:
        times = []
        for tail in (b"", filler, b"", filler):
            t0 = time.perf_counter()
            call(dev, "PROBE", tail=tail)
            times.append(time.perf_counter() - t0)
        extra = min(times[1], times[3]) - min(times[0], times[2])
        rate = PROBE_BYTES / max(extra, 1e-7)
    except CudaError:
        pass
    on = compress.decide("auto", rate)
    S.link_rate[d.server] = rate
    lib.fcx_set_compress(d.server, 1 if on else 0)
    return SUCCESS


def compress_piece(src, n, dst, cap) -> int:
    """A host-to-device piece compressed into dst: its length, or 0 to send it as it is."""
    data = ffi.buffer(src, n)
    if not compress.worth(data):
        return 0
    z = compress.compress(data)
    if z is None or len(z) > cap:
        return 0
    ffi.memmove(dst, z, len(z))
    return len(z)


def describe(dev: int) -> int:
    d = check_device(dev)
    _info(dev)
    if d.sm and d.opened is None:
        ready(dev)  # an SM-budget device's SM count is its partition's: make the context
    _publish(dev)
    return SUCCESS


def device_open(dev: int) -> int:
    d = check_device(dev)
    _info(dev)
    base = ffi.new("uint64_t *")
    size = 1 << 38
    if lib.fcx_window_reserve(dev, size, base) != 0:
        log(f"device {dev}: no free address window for its memory in this process")
        return E["cudaErrorMemoryAllocation"]
    try:
        rep, data = call(dev, "DEVICE_OPEN", {"gpu": d.gpu, "sm_budget": d.sm,
                                              "flags": d.flags, "window_base": base[0],
                                              "window_size": size}, bulk=True)
    except CudaError as exc:
        if exc.reason:  # refused by the server's policy (e.g. limits.tenants_per_gpu)
            host, port = S.servers[d.server]
            log(f"device {dev} ({host}:{port}/{d.gpu}): the server refused it: {exc.reason}")
        raise
    if rep["window_base"] != base[0]:
        if lib.fcx_window_adopt(dev, rep["window_base"], size) != 0:
            log(f"device {dev}: the server's address window 0x{rep['window_base']:x} collides "
                "with memory of this process; refusing it")
            return E["cudaErrorDevicesUnavailable"]
    d.opened = json.loads(data) if data else {}
    d.opened["sm_count"] = rep["sm_count"]
    lib.fcx_set_priorities(dev, d.opened.get("priority_least", 0),
                           d.opened.get("priority_greatest", 0))
    assert S.cfg is not None
    lib.fcx_set_arena(dev, int(d.opened.get("arena", 0)) if S.cfg.suballoc else 0)
    _compression(dev, d.opened.get("compress") == compress.CODEC)
    _publish(dev)
    lib.fcx_device_opened(dev, 1)
    return SUCCESS


def module_load(mod: int, dev: int) -> int:
    image = ffi.new("const char **")
    size = ffi.new("size_t *")
    if lib.fcx_module_image(mod, image, size) != 0 or image[0] == ffi.NULL:
        return E["cudaErrorInvalidKernelImage"]
    blob = bytes(ffi.buffer(image[0], size[0]))
    kernels, variables = [], []
    m = ffi.new("int *")
    name = ffi.new("const char **")
    for k in range(lib.fcx_kernel_count()):
        lib.fcx_kernel_info(k, m, name)
        if m[0] == mod:
            kernels.append((k, ffi.string(name[0])))
    vsize = ffi.new("size_t *")
    const = ffi.new("int *")
    managed = ffi.new("int *")
    for v in range(lib.fcx_var_count()):
        lib.fcx_var_info(v, m, name, vsize, const, managed)
        if m[0] == mod:
            variables.append((v, ffi.string(name[0]), vsize[0]))
    names = json.dumps({"kernels": [[k, n.decode()] for k, n in kernels],
                        "vars": [[v, n.decode(), sz] for v, n, sz in variables]}).encode()
    _, data = call(dev, "MODULE_LOAD", {"module": mod, "nkernels": len(kernels),
                                        "nvars": len(variables)}, blob + names, bulk=True)
    reply = json.loads(data)
    for (k, kname), info in zip(kernels, reply["kernels"], strict=False):
        if info is None:  # not in the image (device linking may drop unused kernels)
            continue
        flat = [x for pair in info["params"] for x in pair]
        arr = ffi.new("uint32_t[]", flat or [0])
        if lib.fcx_set_kernel_plan(k, arr, len(info["params"]), info["param_size"],
                                   info.get("max_threads", 0),
                                   info.get("max_dyn_smem", 49152)) != 0:
            log(f"kernel {kname.decode(errors='replace')}: inconsistent parameter layout")
            return E["cudaErrorInvalidKernelImage"]
        # attributes the program set on another device apply to the kernel everywhere
        for attr, value in S.kernel_attrs.get(k, {}).items():
            call(dev, "FUNC_SET_ATTR", {"kernel": k, "attr": attr, "value": value})
    for (v, _name, vsz), info in zip(variables, reply["vars"], strict=False):
        if info is None:
            continue
        lib.fcx_set_var_addr(v, dev, info["addr"])
        lib.fcx_range_add(info["addr"], max(info["size"], vsz), dev, RANGE_SYMBOL)
    lib.fcx_module_loaded(mod, dev)
    return SUCCESS


def _session_energy() -> float | None:
    """The GPU energy the servers attributed to this process's sessions (J), asked for in one
    last STATUS request to each; None when no server can tell (no NVML there)."""
    total = None
    for s in range(len(S.servers)):
        if lib.fcx_server_connected(s) != 1:
            continue
        try:
            _, data = call(0, "STATUS", bulk=True, server=s)
            joules = json.loads(data or b"{}").get("energy_j")
        except (CudaError, ValueError):
            continue
        if joules is not None:
            total = (total or 0.0) + float(joules)
    return total


def report() -> int:
    """FARCUDA_REPORT=1: the summary line at exit (the figures are read before the last
    STATUS request, which is not counted)."""
    out = ffi.new("uint64_t[5]")
    lib.fcx_stats(out)
    calls, sync_calls, bytes_out, bytes_in, wait_ns = (int(x) for x in out)
    rt = ffi.new("uint64_t[2]")
    lib.fcx_round_trips(rt)
    joules = _session_energy()
    energy = "unavailable" if joules is None else f"{joules:.3f}"
    z = ffi.new("uint64_t[2]")
    lib.fcx_compressed(z)
    # the link rates FARCUDA_COMPRESS=auto measured, per server (n/a: none measured)
    rates = ",".join(f"{r / 1e6:.0f}" if r else "n/a" for r in S.link_rate.values()) or "n/a"
    log(f"report: calls={calls} sync_calls={sync_calls} round_trips={rt[0]} "
        f"sync_round_trips={rt[1]} compressed={z[0]}->{z[1]} link_MBps={rates} "
        f"bytes_to_server={bytes_out} "
        f"bytes_from_server={bytes_in} wait_s={wait_ns / 1e9:.3f} gpu_energy_j={energy}")
    return SUCCESS


# ---------------------------------------------------------------- cold CUDA calls


def current() -> int:
    return lib.fcx_current_device()


def kernel_of(func) -> int:
    k = lib.fcx_kernel_by_host(func)
    if k < 0:
        raise CudaError(E["cudaErrorInvalidDeviceFunction"])
    m = ffi.new("int *")
    name = ffi.new("const char **")
    lib.fcx_kernel_info(k, m, name)
    dev = current()
    ready(dev)
    st = lib.fcx_module_ready(m[0], dev)
    if st != SUCCESS:
        raise CudaError(st)
    return k


def cudaGetDeviceProperties(prop, device):
    d = check_device(device)
    describe(device)
    info = d.info
    data = fill_device_prop(info["name"], bytes.fromhex(info["uuid"]), info["total_mem"],
                            device_attrs(device))
    ffi.memmove(prop, data, len(data))
    return SUCCESS


def cudaSetDeviceFlags(flags):
    dev = current()
    d = check_device(dev)
    if flags & ~0x1F:
        return E["cudaErrorInvalidValue"]
    d.flags = flags
    if d.opened is not None:
        call(dev, "SET_FLAGS", {"flags": flags})
    return SUCCESS


def cudaGetDeviceFlags(flags):
    d = check_device(current())
    flags[0] = d.flags | 0x8  # cudaDeviceMapHost is always on with unified addressing
    return SUCCESS


def cudaDeviceReset():
    dev = current()
    d = check_device(dev)
    if d.opened is None:
        return SUCCESS
    call(dev, "DEVICE_RESET")
    lib.fcx_device_reset_local(dev)
    _forget(dev)
    return SUCCESS


def _forget(dev: int | None = None, kernel: int | None = None) -> None:
    """Drop the kept answers of a device (reset), or of a kernel (its attributes changed)."""
    for cache in (S.occupancy, S.func_attrs, S.clusters):
        for key in [k for k in cache if (dev is None or k[0] == dev)
                    and (kernel is None or k[1] == kernel)]:
            del cache[key]


_FUNC_ATTR_FIELDS = ("sharedSizeBytes", "constSizeBytes", "localSizeBytes", "maxThreadsPerBlock",
                     "numRegs", "ptxVersion", "binaryVersion", "cacheModeCA",
                     "maxDynamicSharedSizeBytes", "preferredShmemCarveout",
                     "clusterDimMustBeSet", "requiredClusterWidth", "requiredClusterHeight",
                     "requiredClusterDepth", "clusterSchedulingPolicyPreference",
                     "nonPortableClusterSizeAllowed")
_FUNC_ATTR_FMT = "<3Q13i"


def cudaFuncGetAttributes(attr, func):
    if attr == ffi.NULL:
        return E["cudaErrorInvalidValue"]
    k = kernel_of(func)
    dev = current()
    raw = S.func_attrs.get((dev, k))
    if raw is None:
        _, data = call(dev, "FUNC_ATTRS", {"kernel": k}, bulk=True)
        values = json.loads(data)
        raw = struct.pack(_FUNC_ATTR_FMT, *(int(values.get(f, 0)) for f in _FUNC_ATTR_FIELDS))
        S.func_attrs[(dev, k)] = raw
    ffi.memmove(attr, raw, len(raw))
    return SUCCESS


def cudaFuncSetAttribute(func, attr, value):
    if attr not in cudaFuncAttribute.values() or attr == cudaFuncAttribute.get(
            "cudaFuncAttributeMax"):
        return E["cudaErrorInvalidValue"]
    k = kernel_of(func)
    call(current(), "FUNC_SET_ATTR", {"kernel": k, "attr": attr, "value": value})
    S.kernel_attrs.setdefault(k, {})[attr] = value
    if attr == cudaFuncAttribute["cudaFuncAttributeMaxDynamicSharedMemorySize"]:
        lib.fcx_kernel_set_smem(k, value)
    _forget(kernel=k)
    return SUCCESS


def cudaFuncSetCacheConfig(func, cacheConfig):
    k = kernel_of(func)
    attr = msg.FUNC_SET_ATTR_CACHE_CONFIG
    call(current(), "FUNC_SET_ATTR", {"kernel": k, "attr": attr, "value": cacheConfig})
    S.kernel_attrs.setdefault(k, {})[attr] = cacheConfig
    _forget(kernel=k)
    return SUCCESS


def _occupancy(num_blocks, func, block_size, smem, flags):
    if num_blocks == ffi.NULL:
        return E["cudaErrorInvalidValue"]
    k = kernel_of(func)
    dev = current()
    key = (dev, k, block_size, smem, flags)
    if key not in S.occupancy:
        rep, _ = call(dev, "OCCUPANCY", {"kernel": k, "block": block_size, "shmem": smem,
                                         "flags": flags})
        S.occupancy[key] = rep["blocks"]
    num_blocks[0] = S.occupancy[key]
    return SUCCESS


def cudaOccupancyMaxActiveBlocksPerMultiprocessor(numBlocks, func, blockSize, dynamicSMemSize):
    return _occupancy(numBlocks, func, blockSize, dynamicSMemSize, 0)


def cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(numBlocks, func, blockSize,
                                                           dynamicSMemSize, flags):
    return _occupancy(numBlocks, func, blockSize, dynamicSMemSize, flags)


# cudaLaunchConfig_t: gridDim, blockDim, dynamicSmemBytes, stream, attrs, numAttrs
_LAUNCH_CONFIG = struct.Struct("<6I3QI4x")
assert _LAUNCH_CONFIG.size == STRUCTS["cudaLaunchConfig_t"][0]


def _clusters(out, func, config, what: int) -> int:
    if out == ffi.NULL or config == ffi.NULL:
        return E["cudaErrorInvalidValue"]
    k = kernel_of(func)
    raw = bytes(ffi.buffer(ffi.cast("char *", config), _LAUNCH_CONFIG.size))
    gx, gy, gz, bx, by, bz, smem, _stream, attrs, nattrs = _LAUNCH_CONFIG.unpack(raw)
    size = msg.LAUNCH_ATTR_SIZE * nattrs
    tail = bytes(ffi.buffer(ffi.cast("char *", attrs), size)) if nattrs else b""
    dev = current()
    key = (dev, k, gx, gy, gz, bx, by, bz, smem, tail, what)  # the stream does not matter
    if key not in S.clusters:
        rep, _ = call(dev, "OCCUPANCY_CLUSTERS", {
            "kernel": k, "grid": (gx, gy, gz), "block": (bx, by, bz), "shmem": smem,
            "nattrs": nattrs, "what": what}, tail)
        S.clusters[key] = rep["value"]
    out[0] = S.clusters[key]
    return SUCCESS


def cudaOccupancyMaxActiveClusters(numClusters, func, launchConfig):
    return _clusters(numClusters, func, launchConfig, msg.OCCUPANCY_CLUSTERS_MAX_ACTIVE)


def cudaOccupancyMaxPotentialClusterSize(clusterSize, func, launchConfig):
    return _clusters(clusterSize, func, launchConfig, msg.OCCUPANCY_CLUSTERS_MAX_SIZE)


def cudaPointerGetAttributes(attributes, ptr):
    if attributes == ffi.NULL:
        return E["cudaErrorInvalidValue"]
    p = int(ffi.cast("uintptr_t", ptr))
    dev, base, size, kind = (ffi.new("int *"), ffi.new("uint64_t *"), ffi.new("uint64_t *"),
                             ffi.new("int *"))
    flags, devptr = ffi.new("unsigned int *"), ffi.new("uint64_t *")
    # struct cudaPointerAttributes { int type; int device; void *devicePointer;
    #                                void *hostPointer; long reserved[8]; }
    if p and lib.fcx_range_find(p, dev, base, size, kind, flags, devptr) == 0:
        if kind[0] == 3:  # pinned host memory of this process
            raw = struct.pack("<iiQQ", 1, current(), 0, p)
        else:
            raw = struct.pack("<iiQQ", 2, dev[0], p, 0)
    else:
        raw = struct.pack("<iiQQ", 0, -2, 0, 0)
    ffi.memmove(attributes, raw, len(raw))
    return SUCCESS


def cudaDeviceGetStreamPriorityRange(leastPriority, greatestPriority):
    dev = current()
    ready(dev)
    opened = S.devices[dev].opened or {}
    if leastPriority != ffi.NULL:
        leastPriority[0] = opened.get("priority_least", 0)
    if greatestPriority != ffi.NULL:
        greatestPriority[0] = opened.get("priority_greatest", 0)
    return SUCCESS


def _peer_possible(a: int, b: int) -> bool:
    da, db = check_device(a), check_device(b)
    return a != b and da.server == db.server and da.gpu == db.gpu


def cudaDeviceCanAccessPeer(canAccessPeer, device, peerDevice):
    check_device(device)
    check_device(peerDevice)
    canAccessPeer[0] = 1 if _peer_possible(device, peerDevice) else 0
    return SUCCESS


def cudaDeviceEnablePeerAccess(peerDevice, flags):
    dev = current()
    check_device(peerDevice)
    if flags != 0:
        return E["cudaErrorInvalidValue"]
    if not _peer_possible(dev, peerDevice):
        return E["cudaErrorPeerAccessUnsupported"]
    d = S.devices[dev]
    if peerDevice in d.peers:
        return E["cudaErrorPeerAccessAlreadyEnabled"]
    d.peers.add(peerDevice)
    return SUCCESS


def cudaDeviceDisablePeerAccess(peerDevice):
    d = check_device(current())
    check_device(peerDevice)
    if peerDevice not in d.peers:
        return E["cudaErrorPeerAccessNotEnabled"]
    d.peers.discard(peerDevice)
    return SUCCESS


def cudaChooseDevice(device, prop):
    if device == ffi.NULL or prop == ffi.NULL:
        return E["cudaErrorInvalidValue"]
    want = struct.unpack_from("<ii", ffi.buffer(prop, 400), 360)  # major, minor
    best = 0
    for i in range(len(S.devices)):
        describe(i)
        attrs = S.devices[i].info["attrs"]
        have = (attrs.get(str(attr_number("ComputeCapabilityMajor"))),
                attrs.get(str(attr_number("ComputeCapabilityMinor"))))
        if have == want:
            best = i
            break
    device[0] = best
    return SUCCESS


def _bus_id(dev: int) -> str:
    describe(dev)
    attrs = S.devices[dev].info["attrs"]
    get = lambda n: attrs.get(str(attr_number(n)), 0)  # noqa: E731
    return f"{get('PciDomainId'):04x}:{get('PciBusId'):02x}:{get('PciDeviceId'):02x}.0"


def cudaDeviceGetPCIBusId(pciBusId, length, device):
    check_device(device)
    text = _bus_id(device).encode()
    if pciBusId == ffi.NULL or length <= 0:
        return E["cudaErrorInvalidValue"]
    out = text[: length - 1] + b"\0"
    ffi.memmove(pciBusId, out, len(out))
    return SUCCESS


def cudaDeviceGetByPCIBusId(device, pciBusId):
    want = ffi.string(pciBusId).decode().lower()
    for i in range(len(S.devices)):
        mine = _bus_id(i)
        if want in (mine, mine[5:], "0000" + mine):
            device[0] = i
            return SUCCESS
    return E["cudaErrorInvalidDevice"]


def cudaDeviceSetCacheConfig(cacheConfig):
    dev = current()
    d = check_device(dev)
    if not 0 <= cacheConfig <= 3:
        return E["cudaErrorInvalidValue"]
    d.cache_config = cacheConfig
    ready(dev)
    return post(dev, "SET_CACHE_CONFIG", {"config": cacheConfig})


def cudaDeviceGetCacheConfig(pCacheConfig):
    pCacheConfig[0] = check_device(current()).cache_config
    return SUCCESS


def cudaDeviceGetP2PAttribute(value, attr, srcDevice, dstDevice):
    check_device(srcDevice)
    check_device(dstDevice)
    if srcDevice == dstDevice:
        return E["cudaErrorInvalidDevice"]
    possible = _peer_possible(srcDevice, dstDevice)
    # 1 performance rank, 2 access supported, 3 native atomics, 4 CUDA arrays
    value[0] = {1: 0, 2: int(possible), 3: int(possible), 4: 0}.get(attr, 0)
    return SUCCESS if attr in (1, 2, 3, 4) else E["cudaErrorInvalidValue"]


_STREAM_ATTR_SIZE = msg.STREAM_ATTR_SIZE


def _stream_key(hStream) -> tuple:
    dev, sid, prio, flags = (ffi.new("int *"), ffi.new("uint32_t *"), ffi.new("int *"),
                             ffi.new("unsigned int *"))
    st = lib.fcx_stream_info(hStream, dev, sid, prio, flags)
    if st != SUCCESS:
        raise CudaError(st)
    return dev[0], sid[0], prio[0]


def cudaStreamGetAttribute(hStream, attr, value_out):
    dev, sid, prio = _stream_key(hStream)
    raw = S.devices[dev].stream_attrs.get((sid, attr))
    if raw is None:
        raw = struct.pack("<i", prio) if attr == 8 else b""  # cudaLaunchAttributePriority
    ffi.memmove(value_out, raw.ljust(_STREAM_ATTR_SIZE, b"\0"), _STREAM_ATTR_SIZE)
    return SUCCESS


def cudaStreamSetAttribute(hStream, attr, value):
    dev, sid, _ = _stream_key(hStream)
    ready(dev)
    raw = bytes(ffi.buffer(value, _STREAM_ATTR_SIZE))
    call(dev, "STREAM_SET_ATTR", {"stream": sid, "attr": attr}, raw)
    S.devices[dev].stream_attrs[(sid, attr)] = raw
    return SUCCESS


def cudaSetValidDevices(device_arr, length):
    if length < 0 or (length > 0 and device_arr == ffi.NULL):
        return E["cudaErrorInvalidValue"]
    for i in range(length):
        check_device(device_arr[i])
    return SUCCESS


# ---------------------------------------------------------------- registration with cffi


def _guard(fn):
    def wrapper(*args):
        try:
            return fn(*args)
        except CudaError as exc:
            return exc.status
    wrapper.__name__ = fn.__name__
    return wrapper


def _onerror(exc_type, exc_value, tb):
    sys.stderr.write("farcuda: internal error in the shim:\n")
    traceback.print_exception(exc_type, exc_value, tb, file=sys.stderr)
    sys.stderr.flush()


def install(ffi_, lib_) -> None:
    """Register every Python entry point of the shim with cffi."""
    global ffi, lib
    ffi, lib = ffi_, lib_
    unknown = E["cudaErrorUnknown"]
    internal = {"fcpy_init": init, "fcpy_connect": connect, "fcpy_device_describe": describe,
                "fcpy_device_open": device_open, "fcpy_module_load": module_load,
                "fcpy_report": report, "fcpy_link_probe": link_probe}
    for name, fn in internal.items():
        ffi.def_extern(name=name, error=unknown, onerror=_onerror)(_guard(fn))
    ffi.def_extern(name="fcpy_compress", error=0, onerror=_onerror)(compress_piece)
    module = sys.modules[__name__]
    for name in PY_CALLS:
        fn = getattr(module, name.removesuffix("_ptsz"))
        ffi.def_extern(name=f"fcpy_{name}", error=unknown, onerror=_onerror)(_guard(fn))
    _ = cudaDeviceAttr  # the attribute numbers travel as the daemon reports them
