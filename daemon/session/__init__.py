"""One client's session: frames in, CUDA work on the backend, replies out.

``core`` holds the Session: the transport (an asyncio BufferedProtocol) and the dispatch of
each frame to its handler (``table``). The handlers live in modules that mirror the client's
families of calls (devices, memory, pools, launch, streams, graphs, and the driver layer's
modules by image). The session's smaller pieces each keep their own state: ``device`` (a
virtual device and its pointer checks), ``heartbeat`` (liveness and acknowledgements),
``quota`` (memory reservations), ``busy`` (busy time per GPU), ``frees`` (stream-ordered
frees), ``d2h`` (deferred device-to-host copies), ``modules`` (images loaded, the module
cache) and ``fast`` (the daemon's C path).
"""

# The handler families register themselves in table.HANDLERS as they are imported: here,
# before anything of the package is used (importing any of its modules runs this first).
from . import devices, graphs, launch, memory, modules, pools, streams  # noqa: F401
from .busy import BusyClock
from .core import Session
from .device import DeviceState, Refusal
from .table import HANDLERS

__all__ = ["Session", "DeviceState", "BusyClock", "Refusal", "HANDLERS"]
