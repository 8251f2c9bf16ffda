"""Addresses as both sides write them: ``host``, ``host:port``, ``[v6]:port``.

The client's device map and the daemon's listening addresses use the same syntax and the same
default port; a malformed one is a ConfigError whose message names the setting at fault.
"""

from __future__ import annotations

import re

__all__ = ["DEFAULT_PORT", "ConfigError", "parse_hostport"]

DEFAULT_PORT = 7420


class ConfigError(ValueError):
    """A configuration variable is malformed; the message names it."""


_HOSTPORT = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:/@\[\]]+))(?::(?P<port>[^/@]*))?$")


def parse_hostport(text: str, what: str, allow_zero: bool = False) -> tuple[str, int]:
    """'host', 'host:port', '[v6]:port' -> (host, port); port 0 (any free port) only for a
    listening address."""
    m = _HOSTPORT.match(text.strip())
    if not m:
        raise ConfigError(f"{what}: {text!r} is not host[:port]")
    host = m.group("v6") or m.group("host")
    port_text = m.group("port")
    if port_text is None or port_text == "":
        if port_text == "":
            raise ConfigError(f"{what}: {text!r} has an empty port")
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not (0 if allow_zero else 1) <= int(port_text) < 65536:
        raise ConfigError(f"{what}: {text!r} has a bad port {port_text!r}")
    return host, int(port_text)
