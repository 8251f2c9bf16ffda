"""farcudad: the daemon that runs forwarded CUDA calls on a real GPU.

The front process (server.py) accepts connections, shakes hands and hands each client to a
worker process of its own (worker.py), where a Session (session/) executes the client's
frames on a backend: the CUDA driver (backends/cuda/) or, for the test suite only, an
in-memory fake (backends/memory.py).
"""

from __future__ import annotations

import importlib.util

__all__ = ["SERVER_EXTRA", "missing_dependencies"]

SERVER_EXTRA = "farcuda[server]"
# The server's own dependencies, which a client-only install (plain `pip install farcuda`)
# does not have: the module to import, and the distribution that provides it.
_SERVER_MODULES = (("cuda.bindings", "cuda-bindings"),)


def missing_dependencies() -> list[str]:
    """The distributions of the server extra that farcudad needs and cannot import."""
    missing = []
    for module, dist in _SERVER_MODULES:
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:  # its parent package is not there either
            found = False
        if not found:
            missing.append(dist)
    return missing
