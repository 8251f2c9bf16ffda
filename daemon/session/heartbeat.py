"""Liveness, both ways: the session's HEARTBEATs and its patience with a silent client.

Every heartbeat period the session acknowledges what it received (HEARTBEAT.received, all the
bytes of the session after the handshake) whenever anything arrived, even while other frames
go out (a download streaming DATA): the client fails the link when what it sent stays
unacknowledged, so an acknowledgement must not wait for the daemon to fall idle. When the
daemon had nothing to send for a period, the heartbeat is its sign of life. A client that
sends nothing for ``client_timeout`` seconds (a live one sends a PING when idle) is gone: the
session ends and frees what it held.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from farcuda.wire import encode_value
from farcuda.wire import messages as msg

if TYPE_CHECKING:
    from .core import Session

__all__ = ["Heartbeat"]


class Heartbeat:
    __slots__ = ("session", "period", "client_timeout", "acked", "timer")

    def __init__(self, session: Session, period_ms: int, client_timeout: float) -> None:
        self.session = session
        self.period = period_ms / 1000.0
        self.client_timeout = client_timeout
        self.acked = 0  # bytes_in as the last HEARTBEAT told the client
        self.timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.timer = asyncio.get_event_loop().call_later(self.period, self.tick)

    def stop(self) -> None:
        if self.timer:
            self.timer.cancel()

    def tick(self) -> None:
        s = self.session
        now = time.monotonic()
        if s.transport is None:
            return
        if now - s._last_rx > self.client_timeout:
            s.abort(f"no sign of life from the client for {self.client_timeout:.0f} s")
            return
        if s.bytes_in != self.acked or now - s._last_tx >= self.period * 0.9:
            self.acked = s.bytes_in
            s._write(encode_value(msg.HEARTBEAT(s.bytes_in)))
        self.start()
