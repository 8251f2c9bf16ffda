"""A daemon session's acknowledgements (HEARTBEAT.received), with the client in memory.

The client fails its link when what it sent stays unacknowledged for its liveness timeout
(csrc/conn.c), so the session must acknowledge in every heartbeat period in which it received
anything, also while it is busy sending, and must say nothing more than a heartbeat when idle.
"""

from __future__ import annotations

import asyncio

from farcuda.daemon.backends.memory import MemoryBackend
from farcuda.daemon.session import Session
from farcuda.wire import BY_NAME, FrameReader, encode

HOUR_MS = 3_600_000  # a period whose timer never fires in a test: ticks are called by hand
PING = encode(BY_NAME["PING"])


class Transport:
    """What Session needs of an asyncio transport. With ``pause_over`` it stands for a slow
    link: a write that leaves more than that many bytes in flight pauses the session's
    writing, and the bytes are 'sent' ``delay`` seconds later."""

    def __init__(self, session: Session, pause_over: int = 0, delay: float = 0.0) -> None:
        self.session = session
        self.out = bytearray()
        self.reader = FrameReader("s2c")
        self.pause_over, self.delay = pause_over, delay
        self.in_flight = 0
        self.closing = False

    def write(self, data) -> None:
        self.out += data
        if not self.pause_over:
            return
        if not self.in_flight:
            asyncio.get_running_loop().call_later(self.delay, self._sent)
        self.in_flight += len(data)
        if self.in_flight > self.pause_over:
            self.session.pause_writing()

    def _sent(self) -> None:
        self.in_flight = 0
        self.session.resume_writing()

    def get_write_buffer_size(self) -> int:
        return self.in_flight

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        pass

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.session.connection_lost, None)

    abort = close

    def frames(self):
        """The frames written since the last call."""
        data, self.out = bytes(self.out), bytearray()
        return self.reader.feed(data)


def _session(heartbeat_ms: int = HOUR_MS, **kw) -> tuple[Session, Transport]:
    s = Session(MemoryBackend(), session_id=1, heartbeat_ms=heartbeat_ms, client_timeout=3600)
    t = Transport(s, **kw)
    s.connection_made(t)
    return s, t


def _feed(s: Session, data: bytes) -> None:
    mv = memoryview(data)
    while mv:
        buf = s.get_buffer(-1)
        k = min(len(buf), len(mv))
        buf[:k] = mv[:k]
        s.buffer_updated(k)
        mv = mv[k:]


def _acks(frames) -> list[int]:
    return [f.as_dict()["received"] for f in frames if f.msg.name == "HEARTBEAT"]


def test_each_period_acknowledges_what_arrived():
    async def main():
        s, t = _session()
        s._tick()  # nothing received, not idle for a period: silence
        assert t.frames() == []
        _feed(s, PING * 3)
        s._tick()
        assert _acks(t.frames()) == [3 * len(PING)]
        s._tick()  # nothing new: nothing to acknowledge
        assert t.frames() == []
        _feed(s, PING)
        s._write(encode(BY_NAME["STDOUT"], None, b"busy"))  # just sent something else
        s._tick()  # acknowledged all the same
        assert _acks(t.frames()) == [4 * len(PING)]
        s._last_tx -= 3600  # idle for a period: a heartbeat, with the same count
        s._tick()
        assert _acks(t.frames()) == [4 * len(PING)]
        t.close()
        await s.closed
    asyncio.run(main())


def test_acknowledged_while_a_download_streams():
    """A device-to-host copy over a slow link takes many heartbeat periods; the client's
    PINGs meanwhile are acknowledged between the DATA frames, not after the reply."""
    async def main():
        s, t = _session(heartbeat_ms=10, pause_over=1 << 20, delay=0.03)
        dev = BY_NAME["DEVICE_OPEN"]
        size = 16 << 20
        _feed(s, encode(dev, {"gpu": 0, "window_base": 1 << 40, "window_size": 1 << 30},
                        rid=1))
        _feed(s, encode(BY_NAME["MALLOC"], {"size": size}, rid=2))
        ptr = next(f for f in t.frames() if f.rid == 2).tail
        ptr = int.from_bytes(bytes(ptr)[:8], "little")
        _feed(s, encode(BY_NAME["MEMCPY_DTOH"], {"src": ptr, "size": size}, rid=3))
        sent_before = s.bytes_in
        seen = []
        done = False
        while not done:
            await asyncio.sleep(0.01)
            _feed(s, PING)
            for f in t.frames():
                seen.append(f)
                done = done or (f.msg.name == "REPLY" and f.rid == 3)
        names = [f.msg.name for f in seen]
        first_data, reply = names.index("DATA"), names.index("REPLY")
        during = _acks(seen[first_data:reply])
        assert len(during) >= 3, names
        # PINGs fed while DATA streamed are acknowledged before the REPLY
        assert during == sorted(during) and during[-1] > sent_before
        s._tick()
        assert _acks(t.frames())[-1] == s.bytes_in  # and finally, everything
        t.close()
        await s.closed
    asyncio.run(main())
