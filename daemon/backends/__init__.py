"""The backend seam: what a session needs from a GPU (declared in base.py).

Two implementations: ``cuda`` (the driver, through cuda-bindings) and ``memory`` (device
memory in host buffers, no kernel execution), which exists for the test suite only and is not
selectable from farcudad's command line or configuration.
"""

from __future__ import annotations

import importlib

from .base import Backend, DeviceBackend, Pending

__all__ = ["load_backend", "Backend", "DeviceBackend", "Pending"]

_BACKENDS = {"cuda": "farcuda.daemon.backends.cuda:CudaBackend",
             "memory": "farcuda.daemon.backends.memory:MemoryBackend"}


def load_backend(spec: str, options: dict | None = None) -> Backend:
    """Instantiate a backend by name ('cuda', 'memory') or 'module:Class'."""
    target = _BACKENDS.get(spec, spec)
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)(**(options or {}))
