"""farcudad's configuration: a TOML file, overridden by command-line flags.

```toml
listen = ["0.0.0.0:7420"]       # one or more host:port
log_level = "info"
heartbeat_ms = 1000             # heartbeat period: sign of life and acks to clients
client_timeout = 60             # seconds of client silence before its session ends
prestart = 1                    # idle workers kept ready (at most limits.sessions_total)
shutdown_grace = 10             # seconds running calls get on SIGTERM

[auth]
tokens = { alice = "secret-1", ci = "secret-2" }   # a client must prove one of these

[limits]                        # the values shown for the last six are their defaults
memory_per_tenant = "16GiB"     # device memory quota of each tenant, all its connections
tenants_per_gpu = 8
sessions_total = 64             # sessions at once (each is a worker process)
sessions_per_tenant = 16
handshakes_total = 256          # connections accepted and not through their handshake yet
handshakes_per_peer = 64        # ... of them from one peer
connections_per_second_per_peer = 50   # new connections of one peer (bursts of twice that)
handshake_timeout = 5           # seconds from accept to the client's complete HELLO

[metrics]                       # optional: Prometheus text at http://HOST:PORT/metrics
listen = "127.0.0.1:9420"

[gpu]                           # optional: CUDA MPS for the workers (daemon/mps.py)
mps = true                      # start (or join) an MPS control daemon; workers are its clients
mps_pipe_directory = "/tmp/farcuda-mps"   # default: $FARCUDA_RUN_DIR/farcuda-mps, else /tmp/...
mps_log_directory = "/tmp/farcuda-mps-log"
mps_control = "nvidia-cuda-mps-control"   # the control program (a path, or found on PATH)
active_thread_percentage = 50   # each session's share of a GPU's threads (MPS, 1..100)
pinned_memory_limit = "16GiB"   # each session's device memory on each GPU (MPS)
shared_contexts = true          # a session's virtual devices of one GPU share its context

[tls]                           # optional: clients connect with FARCUDA_TLS=1
cert = "server.crt"             # PEM; relative paths are relative to this file
key = "server.key"
client_ca = "clients-ca.crt"    # optional: then every client must present a certificate
```

A tenant is the token's name when tokens are configured, else one client process. A peer is
a client's IP address (for IPv6 its /64, the block one host usually holds). Paths in [tls]
are resolved when the file is loaded, so the daemon's working directory never matters.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from farcuda.wire.addresses import DEFAULT_PORT, ConfigError, parse_hostport

__all__ = ["DaemonConfig", "load", "parse_size", "ConfigError", "DEFAULT_PORT"]

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 10**6,
          "mib": 1 << 20, "g": 1 << 30, "gb": 10**9, "gib": 1 << 30, "t": 1 << 40,
          "tb": 10**12, "tib": 1 << 40}


def parse_size(value, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise ConfigError(f"{what}: {value!r} is not a size (e.g. 512MiB, 16GiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


@dataclass
class DaemonConfig:
    listen: list[tuple[str, int]] = field(default_factory=lambda: [("127.0.0.1", DEFAULT_PORT)])
    log_level: str = "info"
    heartbeat_ms: int = 1000
    client_timeout: float = 60.0
    prestart: int = 1
    shutdown_grace: float = 10.0
    tokens: dict[str, str] = field(default_factory=dict)
    memory_per_tenant: int | None = None
    tenants_per_gpu: int | None = None
    gpus: list[int] | None = None  # physical GPUs served (None: all)
    tls_cert: str | None = None  # [tls]: the front terminates TLS when cert and key are set
    tls_key: str | None = None
    tls_client_ca: str | None = None  # client certificates required (signed by this CA)
    # [modules]: the module cache (daemon/modcache.py); None: a folder of this daemon's own,
    # removed when it stops; "off": no cache
    module_cache: str | None = None
    module_cache_bytes: int = 4 << 30
    # [limits] that bound what unauthenticated or misbehaving clients can make the front
    # hold: each session is a process (tens of MiB, more with a CUDA context), each
    # handshake a socket and a task. Defaults fit a shared GPU host; daemon/farcudad.toml
    # explains them.
    sessions_total: int = 64
    sessions_per_tenant: int = 16
    handshakes_total: int = 256
    handshakes_per_peer: int = 64
    connections_per_second_per_peer: float = 50.0
    handshake_timeout: float = 5.0
    metrics_listen: tuple[str, int] | None = None  # [metrics] listen
    # [gpu]: CUDA MPS (daemon/mps.py)
    mps: bool = False
    mps_pipe_directory: str | None = None
    mps_log_directory: str | None = None
    mps_control: str = "nvidia-cuda-mps-control"
    mps_active_thread_percentage: int | None = None
    mps_pinned_memory_limit: int | None = None
    shared_contexts: bool = True  # false: a context per virtual device (they take turns)
    source: str = ""

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


_TOP = {"listen", "log_level", "heartbeat_ms", "client_timeout", "prestart", "shutdown_grace",
        "auth", "limits", "gpus", "tls", "metrics", "gpu", "modules"}
_GPU = {"mps", "mps_pipe_directory", "mps_log_directory", "mps_control",
        "active_thread_percentage", "pinned_memory_limit", "shared_contexts"}
_COUNT_LIMITS = ("sessions_total", "sessions_per_tenant", "handshakes_total",
                 "handshakes_per_peer")
_LIMITS = {"memory_per_tenant", "tenants_per_gpu", "connections_per_second_per_peer",
           "handshake_timeout", *_COUNT_LIMITS}


def _check_keys(table: dict, allowed: set[str], where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")


def from_dict(data: dict, source: str = "") -> DaemonConfig:
    cfg = DaemonConfig(source=source)
    where = source or "configuration"
    _check_keys(data, _TOP, where)
    if "listen" in data:
        items = data["listen"] if isinstance(data["listen"], list) else [data["listen"]]
        if not items or not all(isinstance(x, str) for x in items):
            raise ConfigError(f"{where}: listen must be a host:port string or a list of them")
        cfg.listen = [parse_hostport(x, f"{where}: listen", allow_zero=True) for x in items]
    if "log_level" in data:
        if str(data["log_level"]).lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"{where}: log_level {data['log_level']!r} is not one of "
                              "debug, info, warning, error")
        cfg.log_level = str(data["log_level"]).lower()
    for key, lo in (("heartbeat_ms", 50), ("prestart", 0)):
        if key in data:
            v = data[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ConfigError(f"{where}: {key} must be an integer >= {lo}")
            setattr(cfg, key, v)
    for key in ("client_timeout", "shutdown_grace"):
        if key in data:
            v = data[key]
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"{where}: {key} must be a positive number of seconds")
            setattr(cfg, key, float(v))
    if "gpus" in data:
        g = data["gpus"]
        if not isinstance(g, list) or not all(isinstance(x, int) and x >= 0 for x in g):
            raise ConfigError(f"{where}: gpus must be a list of GPU indices")
        cfg.gpus = list(g)
    auth = data.get("auth", {})
    if not isinstance(auth, dict):
        raise ConfigError(f"{where}: [auth] must be a table")
    _check_keys(auth, {"tokens", "token"}, f"{where} [auth]")
    if "token" in auth:
        cfg.tokens["default"] = str(auth["token"])
    tokens = auth.get("tokens", {})
    if not isinstance(tokens, dict) or not all(isinstance(v, str) and v for v in tokens.values()):
        raise ConfigError(f"{where}: [auth] tokens must map names to non-empty strings")
    cfg.tokens.update(tokens)
    limits = data.get("limits", {})
    if not isinstance(limits, dict):
        raise ConfigError(f"{where}: [limits] must be a table")
    _check_keys(limits, _LIMITS, f"{where} [limits]")
    if "memory_per_tenant" in limits:
        cfg.memory_per_tenant = parse_size(limits["memory_per_tenant"],
                                           f"{where}: limits.memory_per_tenant")
    if "tenants_per_gpu" in limits:
        v = limits["tenants_per_gpu"]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{where}: limits.tenants_per_gpu must be an integer >= 1")
        cfg.tenants_per_gpu = v
    for key in _COUNT_LIMITS:
        if key in limits:
            v = limits[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{where}: limits.{key} must be an integer >= 1")
            setattr(cfg, key, v)
    for key in ("connections_per_second_per_peer", "handshake_timeout"):
        if key in limits:
            v = limits[key]
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < 1e6:
                raise ConfigError(f"{where}: limits.{key} must be a positive number")
            setattr(cfg, key, float(v))
    if cfg.prestart > cfg.sessions_total:
        raise ConfigError(f"{where}: prestart ({cfg.prestart}) is more than "
                          f"limits.sessions_total ({cfg.sessions_total})")
    metrics = data.get("metrics", {})
    if not isinstance(metrics, dict):
        raise ConfigError(f"{where}: [metrics] must be a table")
    _check_keys(metrics, {"listen"}, f"{where} [metrics]")
    if "listen" in metrics:
        if not isinstance(metrics["listen"], str):
            raise ConfigError(f"{where}: [metrics] listen must be a host:port string")
        cfg.metrics_listen = parse_hostport(metrics["listen"], f"{where}: [metrics] listen",
                                            allow_zero=True)
    _gpu_table(data.get("gpu", {}), cfg, where)
    tls = data.get("tls", {})
    if not isinstance(tls, dict):
        raise ConfigError(f"{where}: [tls] must be a table")
    _check_keys(tls, {"cert", "key", "client_ca"}, f"{where} [tls]")
    if tls:
        if not tls.get("cert") or not tls.get("key"):
            raise ConfigError(f"{where}: [tls] needs both cert and key (PEM files)")
        base = Path(source).parent if source else Path.cwd()
        for key in ("cert", "key", "client_ca"):
            if key in tls:
                if not isinstance(tls[key], str) or not tls[key]:
                    raise ConfigError(f"{where}: [tls] {key} must be a file path")
                path = base / Path(tls[key]).expanduser()
                if not path.is_file():
                    raise ConfigError(f"{where}: [tls] {key}: {path} does not exist")
                setattr(cfg, f"tls_{key}", str(path))
    modules = data.get("modules", {})
    if not isinstance(modules, dict):
        raise ConfigError(f"{where}: [modules] must be a table")
    _check_keys(modules, {"cache", "cache_size"}, f"{where} [modules]")
    if "cache" in modules:
        if not isinstance(modules["cache"], str) or not modules["cache"]:
            raise ConfigError(f'{where}: modules.cache must be a folder or "off"')
        base = Path(source).parent if source else Path.cwd()
        cfg.module_cache = ("off" if modules["cache"] == "off"
                            else str(base / Path(modules["cache"]).expanduser()))
    if "cache_size" in modules:
        cfg.module_cache_bytes = parse_size(modules["cache_size"], f"{where}: modules.cache_size")
    return cfg


def _gpu_table(gpu, cfg: DaemonConfig, where: str) -> None:
    if not isinstance(gpu, dict):
        raise ConfigError(f"{where}: [gpu] must be a table")
    _check_keys(gpu, _GPU, f"{where} [gpu]")
    for key, attr in (("mps", "mps"), ("shared_contexts", "shared_contexts")):
        if key in gpu:
            if not isinstance(gpu[key], bool):
                raise ConfigError(f"{where}: [gpu] {key} must be true or false")
            setattr(cfg, attr, gpu[key])
    for key in ("mps_pipe_directory", "mps_log_directory", "mps_control"):
        if key in gpu:
            if not isinstance(gpu[key], str) or not gpu[key]:
                raise ConfigError(f"{where}: [gpu] {key} must be a path")
            setattr(cfg, key, gpu[key])
    if "active_thread_percentage" in gpu:
        v = gpu["active_thread_percentage"]
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 100:
            raise ConfigError(f"{where}: [gpu] active_thread_percentage must be an integer "
                              "from 1 to 100")
        cfg.mps_active_thread_percentage = v
    if "pinned_memory_limit" in gpu:
        v = parse_size(gpu["pinned_memory_limit"], f"{where}: [gpu] pinned_memory_limit")
        if v < 1 << 20:
            raise ConfigError(f"{where}: [gpu] pinned_memory_limit must be at least 1MiB")
        cfg.mps_pinned_memory_limit = v
    limited = ("active_thread_percentage" in gpu or "pinned_memory_limit" in gpu)
    if limited and not cfg.mps:
        raise ConfigError(f"{where}: [gpu] active_thread_percentage and pinned_memory_limit "
                          "are MPS limits: they need mps = true")


def load(path: str | Path | None) -> DaemonConfig:
    if path is None:
        return DaemonConfig()
    p = Path(path)
    try:
        data = tomllib.loads(p.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {p} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"configuration file {p} is a directory, not a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"configuration file {p}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8 by definition
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8") \
            from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    return from_dict(data, str(p))
