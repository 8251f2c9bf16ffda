"""farcudad's configuration: a TOML file, overridden by command-line flags.

```toml
listen = ["0.0.0.0:7420"]       # one or more host:port
log_level = "info"
heartbeat_ms = 1000             # heartbeat period: sign of life and acks to clients
client_timeout = 60             # seconds of client silence before its session ends
prestart = 1                    # idle workers kept ready
shutdown_grace = 10             # seconds running calls get on SIGTERM

[auth]
tokens = { alice = "secret-1", ci = "secret-2" }   # a client must prove one of these

[limits]
memory_per_tenant = "16GiB"     # device memory quota of each tenant, all its connections
tenants_per_gpu = 8

[tls]                           # optional: clients connect with FARCUDA_TLS=1
cert = "server.crt"             # PEM; relative paths are relative to this file
key = "server.key"
client_ca = "clients-ca.crt"    # optional: then every client must present a certificate
```

A tenant is the token's name when tokens are configured, else one client process. Paths in
[tls] are resolved when the file is loaded, so the daemon's working directory never matters.
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
    source: str = ""

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


_TOP = {"listen", "log_level", "heartbeat_ms", "client_timeout", "prestart", "shutdown_grace",
        "auth", "limits", "gpus", "tls"}


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
    _check_keys(limits, {"memory_per_tenant", "tenants_per_gpu"}, f"{where} [limits]")
    if "memory_per_tenant" in limits:
        cfg.memory_per_tenant = parse_size(limits["memory_per_tenant"],
                                           f"{where}: limits.memory_per_tenant")
    if "tenants_per_gpu" in limits:
        v = limits["tenants_per_gpu"]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{where}: limits.tenants_per_gpu must be an integer >= 1")
        cfg.tenants_per_gpu = v
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
    return cfg


def load(path: str | Path | None) -> DaemonConfig:
    if path is None:
        return DaemonConfig()
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"configuration file {p} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    return from_dict(data, str(p))
