"""Client configuration from the environment, in rCUDA's habit.

Precedence: FARCUDA_DEVICES (the device map), then FARCUDA_DEVICE_COUNT with
FARCUDA_DEVICE_<i>, then FARCUDA_SERVER (every GPU of one server). The parsers raise
ConfigError with a message naming the variable and the entry at fault.

FARCUDA_TLS=1 puts every connection through TLS (interposer/tls.py); FARCUDA_TLS_CA names the
CA to verify servers with, FARCUDA_TLS_CERT/KEY this client's certificate. Setting one of those
without FARCUDA_TLS=1 is an error, never a silent plain-text connection.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from farcuda.wire import compress
from farcuda.wire.addresses import DEFAULT_PORT, ConfigError, parse_hostport

__all__ = ["DEFAULT_PORT", "ConfigError", "DeviceEntry", "ClientConfig", "parse_hostport",
           "parse_device", "parse_devices", "from_env", "ENV_HELP"]

ENV_HELP = ("set FARCUDA_SERVER=host[:port], or FARCUDA_DEVICES=host:port/gpu,..., or run the "
            "program with `farcuda run -- PROGRAM`")


@dataclass(frozen=True)
class DeviceEntry:
    host: str
    port: int
    gpu: int
    sm: int = 0  # SM budget, 0: the whole GPU
    text: str = ""


def parse_device(text: str, what: str) -> DeviceEntry:
    """One device map entry: host[:port][/gpu][@sm=N]."""
    raw = text.strip()
    if not raw:
        raise ConfigError(f"{what}: empty entry")
    rest, _, opts = raw.partition("@")
    sm = 0
    if opts:
        for opt in opts.split("@"):
            key, eq, val = opt.partition("=")
            if key.strip() != "sm" or not eq or not val.strip().isdigit() or int(val) <= 0:
                raise ConfigError(f"{what}: {raw!r}: unknown option {opt!r} (expected sm=N, N>0)")
            sm = int(val)
    hostport, slash, gpu_text = rest.rpartition("/") if "/" in rest else (rest, "", "")
    if slash and not gpu_text.strip().isdigit():
        raise ConfigError(f"{what}: {raw!r}: GPU index {gpu_text!r} is not a number")
    host, port = parse_hostport(hostport, f"{what} {raw!r}")
    return DeviceEntry(host, port, int(gpu_text) if slash else 0, sm, raw)


def parse_devices(spec: str, what: str = "FARCUDA_DEVICES") -> list[DeviceEntry]:
    entries = [e for e in spec.split(",")]
    if not any(e.strip() for e in entries):
        raise ConfigError(f"{what} is set but lists no device")
    return [parse_device(e, f"{what} entry {i}") for i, e in enumerate(entries)]


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a number of seconds") from None
    if value <= 0:
        raise ConfigError(f"{name}={text!r} must be positive")
    return value


@dataclass
class ClientConfig:
    devices: list[DeviceEntry] | None = None  # an explicit map
    server: tuple[str, int] | None = None  # FARCUDA_SERVER: all its GPUs
    source: str = ""  # the variable the devices came from
    token: str | None = None
    connect_timeout: float = 5.0
    liveness_timeout: float = 10.0
    spin_us: float = 200.0  # FARCUDA_SPIN_US: busy-polling for a reply before sleeping
    report: bool = False
    suballoc: bool = True  # FARCUDA_SUBALLOC=0: every cudaMalloc asks the server
    compress: str = "auto"  # FARCUDA_COMPRESS: auto | on | off (wire/compress.py)
    tls: bool = False  # FARCUDA_TLS=1: every connection goes through TLS (interposer/tls.py)
    tls_ca: str | None = None  # FARCUDA_TLS_CA: verify servers against this CA (PEM)
    tls_cert: str | None = None  # FARCUDA_TLS_CERT/_KEY: this client's certificate
    tls_key: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def configured(self) -> bool:
        return self.devices is not None or self.server is not None


def _tls_from_env(env: Mapping[str, str], cfg: ClientConfig) -> None:
    flag = env.get("FARCUDA_TLS", "").strip().lower()
    if flag not in ("", "0", "1", "yes", "no", "true", "false", "on", "off"):
        raise ConfigError(f"FARCUDA_TLS={flag!r} is not 1 or 0")
    cfg.tls = flag in ("1", "yes", "true", "on")
    for var, attr in (("FARCUDA_TLS_CA", "tls_ca"), ("FARCUDA_TLS_CERT", "tls_cert"),
                      ("FARCUDA_TLS_KEY", "tls_key")):
        path = env.get(var, "").strip()
        if not path:
            continue
        if not cfg.tls:
            raise ConfigError(f"{var} is set but FARCUDA_TLS is not: set FARCUDA_TLS=1")
        if not os.path.isfile(path):
            raise ConfigError(f"{var}={path!r}: no such file")
        setattr(cfg, attr, path)
    if cfg.tls_key and not cfg.tls_cert:
        raise ConfigError("FARCUDA_TLS_KEY is set without FARCUDA_TLS_CERT")


def from_env(env: Mapping[str, str] | None = None) -> ClientConfig:
    env = os.environ if env is None else env
    cfg = ClientConfig()
    cfg.token = env.get("FARCUDA_TOKEN") or None
    cfg.connect_timeout = _float(env, "FARCUDA_CONNECT_TIMEOUT", 5.0)
    cfg.liveness_timeout = _float(env, "FARCUDA_LIVENESS_TIMEOUT", 10.0)
    text = env.get("FARCUDA_SPIN_US", "").strip()
    if text:
        try:
            cfg.spin_us = float(text)
        except ValueError:
            raise ConfigError(f"FARCUDA_SPIN_US={text!r} is not a number of microseconds") from None
        if not 0 <= cfg.spin_us <= 1e6:
            raise ConfigError(f"FARCUDA_SPIN_US={text!r} is not between 0 and 1000000")
    cfg.report = env.get("FARCUDA_REPORT", "") not in ("", "0")
    flag = env.get("FARCUDA_SUBALLOC", "").strip()
    if flag not in ("", "0", "1"):
        raise ConfigError(f"FARCUDA_SUBALLOC={flag!r} is not 1 or 0")
    cfg.suballoc = flag != "0"
    try:
        cfg.compress = compress.mode_from_env(env.get("FARCUDA_COMPRESS"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    _tls_from_env(env, cfg)
    if env.get("FARCUDA_DEVICES", "").strip():
        cfg.devices = parse_devices(env["FARCUDA_DEVICES"])
        cfg.source = "FARCUDA_DEVICES"
    elif env.get("FARCUDA_DEVICE_COUNT", "").strip():
        text = env["FARCUDA_DEVICE_COUNT"].strip()
        if not text.isdigit() or int(text) == 0:
            raise ConfigError(f"FARCUDA_DEVICE_COUNT={text!r} is not a positive number")
        devices = []
        for i in range(int(text)):
            name = f"FARCUDA_DEVICE_{i}"
            if not env.get(name, "").strip():
                raise ConfigError(f"FARCUDA_DEVICE_COUNT={text} but {name} is not set")
            devices.append(parse_device(env[name], name))
        cfg.devices = devices
        cfg.source = "FARCUDA_DEVICE_COUNT"
    elif env.get("FARCUDA_SERVER", "").strip():
        cfg.server = parse_hostport(env["FARCUDA_SERVER"], "FARCUDA_SERVER")
        # `farcuda run` says where it got the server from, for the shim's messages
        cfg.source = env.get("FARCUDA_SERVER_ORIGIN", "").strip() or "FARCUDA_SERVER"
    if cfg.devices is not None and len(cfg.devices) > 64:
        raise ConfigError(f"{cfg.source}: {len(cfg.devices)} devices; at most 64 are supported")
    return cfg
