"""The dispatch table: each request the client may send, and the function that answers it.

A handler module registers one function per message with ``@handler``; the function bears the
message's name (so the table reads like the wire's), and is called as ``fn(session, frame, m)``
with ``m`` the frame's fixed part decoded into the message's typed class (wire/messages.py).

What a handler returns says how the request is answered:
- None: an empty REPLY (when the frame asked for one);
- a typed reply (``msg.<NAME>_REPLY``) or a dict of reply fields; ``(values, tail)`` with a
  tail (a plain tuple: typed replies are NamedTuples);
- ``Bulk``: a large result, sent as DATA frames and then the REPLY;
- ``DEFERRED``: the answer goes out later by other means (a deferred copy);
- an awaitable of one of the above: the session awaits it in a task;
- raising CudaError answers with its status (ASYNC_ERROR for an async frame), raising
  ProtocolError ends the session.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from farcuda.wire import BY_NAME
from farcuda.wire import messages as msg

__all__ = ["handler", "HANDLERS", "Bulk", "DEFERRED", "INLINE_REPLY", "data_reply"]

# opcode -> (decoder of the fixed part, handler)
HANDLERS: dict[int, tuple[Callable[..., Any], Callable[..., Any]]] = {}

DEFERRED = object()  # a handler's result: the request is answered later, by other means
INLINE_REPLY = 64 << 10  # device-to-host results up to this size travel in the REPLY itself


def handler(fn: Callable[..., Any]) -> Callable[..., Any]:
    m = BY_NAME[fn.__name__]
    if m.direction != "c2s" or m.op in HANDLERS:
        raise AssertionError(f"{fn.__name__}: not a request, or answered twice")
    HANDLERS[m.op] = (msg.DECODE[m.op], fn)
    return fn


class Bulk:
    """A reply whose tail is large: sent as DATA frames, then the REPLY. ``pieces`` are
    buffers, or an async iterator of (view, release) pairs (staging memory the backend lends
    until the transport no longer holds it)."""

    __slots__ = ("pieces", "values", "z")

    def __init__(self, pieces: Any, values: Any = None) -> None:
        self.pieces = pieces
        self.values = values
        self.z = False  # pieces that compress well may go as DATA_Z (the client asked)


def data_reply(data) -> tuple | Bulk:
    """A device-to-host result: inline in the REPLY when small, else as DATA frames."""
    if len(data) <= INLINE_REPLY:
        return {}, data
    return Bulk([data])
