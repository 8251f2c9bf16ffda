"""The backend seam: what a session needs from a GPU.

``Backend`` is per worker process (one client); ``open_device`` gives a ``DeviceBackend`` per
virtual device (its own context). Methods raise ``CudaError`` on failure. Those that may have
to wait for the GPU return an awaitable (``Pending``) instead of blocking: the session awaits
it while it keeps executing the client's other frames.

Two implementations: ``cuda`` (the driver, through cuda-bindings) and ``memory`` (device
memory in host buffers, no kernel execution), which exists for the test suite only and is not
selectable from farcudad's command line or configuration.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable
from typing import Any

__all__ = ["load_backend", "Pending"]

Pending = Awaitable[Any]

_BACKENDS = {"cuda": "farcuda.daemon.backends.cuda:CudaBackend",
             "memory": "farcuda.daemon.backends.memory:MemoryBackend"}


def load_backend(spec: str, options: dict | None = None):
    """Instantiate a backend by name ('cuda', 'memory') or 'module:Class'."""
    target = _BACKENDS.get(spec, spec)
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)(**(options or {}))
