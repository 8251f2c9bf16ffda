"""Admission at the front door: what one peer, and all peers together, may make the front hold
before they have proven anything.

A connection costs the front a socket and a task until its handshake ends; a session costs a
worker process. The session limits are the tenants' (daemon/tenants.py); here are those of
the connections, per peer and in all:

- new connections per second of one peer: a token bucket (``rate`` a second, holding up to
  twice that, so a burst of a host's parallel jobs passes);
- connections in their handshake at once: of one peer, and of all peers.

A connection over a limit is refused. Telling the client why costs a handshake of its own, so
only a few refusals per peer (and in all) are spoken at a time; beyond those the connection
is closed at once, which is what a flood gets. Either way one peer's flood leaves the others'
handshake places, and the front's loop, free.

A peer is an IP address; an IPv6 one counts by its /64 (one host usually holds a whole /64,
and could otherwise take a fresh address per connection). IPv4-mapped IPv6 addresses count as
their IPv4 address.

``LogThrottle`` keeps the log of refusals readable under a flood: per peer and kind of event,
the first few lines of an interval are logged and the rest counted, then said in one line.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Admission", "LogThrottle", "peer_key"]

# Refusals told to the client (a SERVER_HELLO, its HELLO awaited, a REPLY) at once.
SPOKEN_PER_PEER = 4
SPOKEN_TOTAL = 32
_PRUNE_AT = 1024  # per-peer entries kept before the idle ones are dropped


def peer_key(host: str) -> str:
    """The address a peer is counted by (see the module's docstring)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass
class _Peer:
    tokens: float
    stamp: float
    shaking: int = 0  # connections of this peer in their handshake
    speaking: int = 0  # refusals being told to this peer


class Admission:
    def __init__(self, rate: float, handshakes_per_peer: int, handshakes_total: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(2.0 * rate, 1.0)
        self.handshakes_per_peer = handshakes_per_peer
        self.handshakes_total = handshakes_total
        self.clock = clock
        self.shaking = 0
        self.speaking = 0
        self._peers: dict[str, _Peer] = {}

    def _peer(self, key: str) -> _Peer:
        now = self.clock()
        p = self._peers.get(key)
        if p is None:
            if len(self._peers) >= _PRUNE_AT:
                self._prune(now)
            p = self._peers[key] = _Peer(self.burst, now)
        else:
            p.tokens = min(self.burst, p.tokens + (now - p.stamp) * self.rate)
            p.stamp = now
        return p

    def _prune(self, now: float) -> None:
        """Forget peers that hold nothing and whose bucket has refilled: they are as new."""
        for key, p in list(self._peers.items()):
            full = p.tokens + (now - p.stamp) * self.rate >= self.burst
            if full and not p.shaking and not p.speaking:
                del self._peers[key]

    def connect(self, key: str) -> tuple[str, str] | None:
        """A new connection of peer ``key``: None, and it holds a handshake place until
        ``handshake_done``; or (the limit, a one-line reason naming it) if it is refused."""
        p = self._peer(key)
        if p.tokens < 1.0:
            return ("connections_per_second_per_peer",
                    f"too many new connections from {key}: this server takes {self.rate:g} a "
                    "second from one address (limits.connections_per_second_per_peer); try "
                    "again in a moment")
        if p.shaking >= self.handshakes_per_peer:
            return ("handshakes_per_peer",
                    f"{key} already has {p.shaking} connections in their handshake, the "
                    "limit of this server (limits.handshakes_per_peer)")
        if self.shaking >= self.handshakes_total:
            return ("handshakes_total",
                    f"this server already has {self.shaking} connections in their "
                    "handshake, its limit (limits.handshakes_total); try again in a moment")
        p.tokens -= 1.0
        p.shaking += 1
        self.shaking += 1
        return None

    def handshake_done(self, key: str) -> None:
        p = self._peers.get(key)
        if p is not None and p.shaking > 0:
            p.shaking -= 1
            self.shaking -= 1

    def may_speak(self, key: str) -> bool:
        """May a refusal be told to peer ``key`` (then ``spoken`` when done), or must its
        connection just be closed?"""
        p = self._peer(key)
        if p.speaking >= SPOKEN_PER_PEER or self.speaking >= SPOKEN_TOTAL:
            return False
        p.speaking += 1
        self.speaking += 1
        return True

    def spoken(self, key: str) -> None:
        p = self._peers.get(key)
        if p is not None and p.speaking > 0:
            p.speaking -= 1
            self.speaking -= 1

    def peers(self) -> int:
        return len(self._peers)


class LogThrottle:
    """At most ``burst`` lines per key and ``interval``; what was held back is counted and
    said in one line when the interval ends (by ``flush``, or the key's next event)."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.clock = clock
        self._keys: dict[tuple, list] = {}  # key -> [interval start, lines said, held back]

    def allow(self, key: tuple, burst: int = 1) -> tuple[bool, int]:
        """(log this one?, how many were held back in the interval just ended)."""
        now = self.clock()
        k = self._keys.get(key)
        held = 0
        if k is None or now - k[0] >= self.interval:
            held = k[2] if k is not None else 0
            k = self._keys[key] = [now, 0, 0]
        if k[1] < burst:
            k[1] += 1
            return True, held
        k[2] += 1
        return False, held

    def flush(self) -> list[tuple[tuple, int]]:
        """The keys whose interval has ended, with what they held back (dropped from here)."""
        now = self.clock()
        out = []
        for key, k in list(self._keys.items()):
            if now - k[0] >= self.interval:
                del self._keys[key]
                if k[2]:
                    out.append((key, k[2]))
        return out
