"""Frames: a fixed 16-byte header, the message's fixed part, then an optional tail.

Header (little-endian): u32 length of everything after the header, u16 opcode, u16 flags,
u32 request id (0: no reply wanted), u16 virtual device, u16 aux. No I/O happens here: the
reader is fed bytes (or hands out the buffer the bytes should be read into, which is how a
bulk tail lands in its final buffer without a copy) and returns parsed frames.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from ._messages import BY_NAME, BY_OP, Message

__all__ = [
    "HEADER", "HEADER_SIZE", "MAGIC", "VERSION", "MAX_TAIL", "INLINE_TAIL", "Frame",
    "FrameReader", "ProtocolError", "encode", "encode_header", "pack_fixed", "unpack_fixed",
    "encode_reply", "encode_value",
]

HEADER = struct.Struct("<IHHIHH")
HEADER_SIZE = HEADER.size
MAGIC = 0x41444346  # b"FCDA"
VERSION = 1
# Largest tail a frame may carry. Copies are cut into frames well below this; a module's fat
# binary is the largest single tail in practice.
MAX_TAIL = 1 << 30
# Tails up to this size are delivered from the reader's own buffer; larger ones go to a sink
# (or are accumulated as data arrives, never preallocated from the length field).
INLINE_TAIL = 256 * 1024
# After a tail went to a sink, the next read is kept this short: in a run of bulk frames the
# next frame's tail will go to a sink too, and whatever of it a long read put in the reader's
# buffer would have to be copied there.
AFTER_SINK_READ = 64 * 1024


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame: the connection must be closed."""


@dataclass(slots=True)
class Frame:
    op: int
    flags: int
    rid: int
    vdev: int
    aux: int
    msg: Message
    fixed: bytes
    tail: memoryview | bytes | None  # None when the tail went to a sink
    size_of_tail: int = 0  # the tail's length, also when a sink took it

    def values(self) -> tuple:
        return struct.unpack(self.msg.fmt, self.fixed)

    def as_dict(self) -> dict:
        return dict(zip(self.msg.names, self.values(), strict=True))


def encode_header(op: int, length: int, rid: int = 0, vdev: int = 0, flags: int = 0,
                  aux: int = 0) -> bytes:
    return HEADER.pack(length, op, flags, rid, vdev, aux)


def pack_fixed(msg: Message, values=None, reply: bool = False) -> bytes:
    """The fixed part of ``msg`` (or of its reply): from a typed value (wire/messages.py), or
    from a dict of field names (arrays by their name, or element by element: grid0 ...),
    missing fields zero."""
    if hasattr(values, "pack"):
        return values.pack()
    names = msg.reply_names if reply else msg.names
    fmt = msg.reply_fmt if reply else msg.fmt
    values = values or {}
    unknown = set(values) - set(names) - {n.rstrip("0123456789") for n in names}
    if unknown:
        raise KeyError(f"{msg.name}: unknown fields {sorted(unknown)}")
    flat = []
    for n in names:
        if n in values:
            flat.append(values[n])
            continue
        base = n.rstrip("0123456789")
        if base in values and base != n:
            flat.append(values[base][int(n[len(base):])])
        else:
            flat.append(0)
    return struct.pack(fmt, *flat)


def unpack_fixed(msg: Message, data: bytes | memoryview, reply: bool = False) -> dict:
    fmt = msg.reply_fmt if reply else msg.fmt
    names = msg.reply_names if reply else msg.names
    return dict(zip(names, struct.unpack_from(fmt, data), strict=True))


def encode(msg: Message, values: dict | None = None, tail: bytes | memoryview = b"",
           rid: int = 0, vdev: int = 0, flags: int = 0, aux: int = 0) -> bytes:
    fixed = pack_fixed(msg, values)
    return encode_header(msg.op, len(fixed) + len(tail), rid, vdev, flags, aux) + fixed + bytes(
        tail)


def encode_value(value, tail: bytes | memoryview = b"", rid: int = 0, vdev: int = 0,
                 flags: int = 0) -> bytes:
    """A frame of a typed message (wire/messages.py): the message is the value's class, and
    the header's aux what the value's aux field holds, for the messages that have one."""
    msg = BY_NAME[type(value).__name__]
    fixed = value.pack()
    aux = getattr(value, msg.aux[0]) if msg.aux else 0
    return encode_header(msg.op, len(fixed) + len(tail), rid, vdev, flags, aux) + fixed + bytes(
        tail)


_REPLY = BY_OP[0x8001]


def encode_reply(rid: int, status: int, msg: Message | None = None, values=None,
                 tail: bytes | memoryview = b"", vdev: int = 0) -> bytes:
    """A REPLY frame: status, the answered message's reply fields, then the tail."""
    fixed = pack_fixed(msg, values, reply=True) if msg is not None and msg.reply else b""
    head = struct.pack("<II", status, len(fixed))
    return encode_header(_REPLY.op, 8 + len(fixed) + len(tail), rid, vdev) + head + fixed + bytes(
        tail)


Sink = Callable[[tuple, bytes, int], "memoryview | None"]


class FrameReader:
    """Incremental frame parser.

    ``get_buffer()`` returns the writable view the next bytes belong in; after writing ``n``
    bytes there call ``buffer_updated(n)``, which returns the frames completed. A frame's
    inline tail is a view into the reader's buffer, valid until the next ``get_buffer()``.
    ``feed(data)`` does both for callers that already hold bytes (its frames own their tails).

    ``fast``, when given, is offered the unparsed bytes before each frame is parsed and may
    execute and consume complete frames itself (those are not returned). To keep program
    order, a reader with ``fast`` returns at most one frame per call: call
    ``buffer_updated(0)`` again after handling it, until it returns no frame.
    A ``sink(header, fixed, tail_len)`` may return a view of exactly ``tail_len`` bytes for a
    frame's tail (bulk data lands there directly); returning None keeps the tail in the reader.
    ``accept`` names the direction this side receives; any other opcode, an impossible length,
    or a tail above ``max_tail`` raises ProtocolError.
    """

    def __init__(self, accept: str = "c2s", sink: Sink | None = None, max_tail: int = MAX_TAIL,
                 capacity: int = 1 << 20,
                 fast: Callable[[bytearray, int, int], int] | None = None) -> None:
        self._accept = accept
        self._sink = sink
        # fast(buffer, start, end) may execute and consume whole frames at the start of the
        # unparsed bytes (the daemon's C path for runs of launches); it returns the bytes taken
        self._fast = fast
        self._max_tail = max_tail
        self._buf = bytearray(capacity)
        self._view = memoryview(self._buf)
        self._r = 0  # start of unparsed bytes
        self._w = 0  # end of received bytes
        self._need = HEADER_SIZE  # bytes the frame at _r needs in the buffer to parse
        # a frame whose tail is being received outside the ring buffer:
        # (header, msg, fixed, sink view | list of received chunks, bytes got, tail length)
        self._pending: tuple | None = None
        # the chunk such a tail is being received into, and how much of it is filled
        self._open_chunk: bytearray | None = None
        self._open_fill = 0
        self._after_sink = False  # the last frame's tail went to a sink

    # -- buffer interface (asyncio.BufferedProtocol-shaped) --
    def get_buffer(self, sizehint: int = -1) -> memoryview:
        if self._pending is not None:
            _, _, _, dest, got, total = self._pending
            if isinstance(dest, memoryview):
                return dest[got:]
            # Accumulating a tail without a sink: one chunk at a time, so memory follows the
            # bytes that actually arrived, never the length the peer claimed. A chunk is
            # filled to the end before the next one is made (short reads must not cost a new
            # 4 MiB chunk each), and an event loop may call get_buffer again without
            # buffer_updated in between (a read that found nothing): both get the unfilled
            # rest of the open chunk, never a fresh one that would leave a hole in the tail.
            if self._open_chunk is None:
                self._open_chunk = bytearray(min(total - got, 4 << 20))
                self._open_fill = 0
            return memoryview(self._open_chunk)[self._open_fill:]
        if self._r == self._w:
            self._r = self._w = 0
        elif len(self._buf) - self._w < max(65536, self._need - (self._w - self._r)):
            live = self._w - self._r
            if len(self._buf) < self._need:
                # Grow into a new buffer: a bytearray cannot be resized while views of it
                # exist (self._view, and tails of frames handed out earlier).
                buf = bytearray(self._need)
                buf[:live] = self._view[self._r:self._w]
                self._buf, self._view = buf, memoryview(buf)
            else:
                self._buf[:live] = self._buf[self._r:self._w]
            self._r, self._w = 0, live
        if self._after_sink:
            return self._view[self._w:self._w + max(AFTER_SINK_READ, self._need)]
        return self._view[self._w:]

    def buffer_updated(self, n: int) -> list[Frame]:
        frames: list[Frame] = []
        if self._pending is not None:
            self._advance_pending(n, frames)
        else:
            self._w += n
        self._parse(frames)
        return frames

    def feed(self, data: bytes | memoryview) -> list[Frame]:
        frames: list[Frame] = []
        mv = memoryview(data)
        while mv:
            buf = self.get_buffer()
            k = min(len(buf), len(mv))
            buf[:k] = mv[:k]
            for f in self.buffer_updated(k):
                if isinstance(f.tail, memoryview):
                    f.tail = bytes(f.tail)
                frames.append(f)
            mv = mv[k:]
        return frames

    # -- internals --
    def _advance_pending(self, n: int, frames: list[Frame]) -> None:
        header, msg, fixed, dest, got, total = self._pending  # type: ignore[misc]
        if isinstance(dest, list) and n:
            self._open_fill += n
            if self._open_fill == len(self._open_chunk):  # type: ignore[arg-type]
                dest.append(self._open_chunk)
                self._open_chunk = None
        got += n
        if got < total:
            self._pending = (header, msg, fixed, dest, got, total)
            return
        self._pending = None
        tail = None if isinstance(dest, memoryview) else memoryview(b"".join(dest))
        frames.append(Frame(header[1], header[2], header[3], header[4], header[5], msg, fixed,
                            tail, total))

    def _parse(self, frames: list[Frame]) -> None:
        while self._pending is None:
            if self._fast is not None and frames:
                return  # the caller handles these first (program order), then asks again
            if self._fast is not None and self._w - self._r >= HEADER_SIZE:
                self._r += self._fast(self._buf, self._r, self._w)
            avail = self._w - self._r
            self._need = HEADER_SIZE
            if avail < HEADER_SIZE:
                return
            header = HEADER.unpack_from(self._buf, self._r)
            length, op = header[0], header[1]
            msg = BY_OP.get(op)
            if msg is None:
                raise ProtocolError(f"unknown opcode 0x{op:04x}")
            if msg.direction != self._accept:
                raise ProtocolError(f"opcode {msg.name} not accepted from this peer")
            fsize = msg.size
            if length < fsize:
                raise ProtocolError(f"{msg.name}: length {length} below its fixed size {fsize}")
            tail_len = length - fsize
            if tail_len and not (msg.bulk or msg.direction == "s2c"):
                raise ProtocolError(f"{msg.name} carries no tail, got {tail_len} bytes")
            if tail_len > self._max_tail:
                raise ProtocolError(f"{msg.name}: tail of {tail_len} bytes exceeds the limit")
            self._need = HEADER_SIZE + fsize
            if avail < self._need:
                return
            start = self._r + HEADER_SIZE
            fixed = bytes(self._view[start:start + fsize])
            tstart = start + fsize
            have = min(self._w - tstart, tail_len)
            dest = None
            if self._sink is not None and tail_len:
                dest = self._sink(header, fixed, tail_len)
                if dest is not None and len(dest) != tail_len:
                    raise RuntimeError("sink returned a view of the wrong size")
            self._after_sink = dest is not None
            if dest is None and tail_len <= INLINE_TAIL:
                if have < tail_len:
                    self._need = HEADER_SIZE + length
                    return
                tail = self._view[tstart:tstart + tail_len]
                self._r = tstart + tail_len
                frames.append(Frame(op, header[2], header[3], header[4], header[5], msg, fixed,
                                    tail if tail_len else None, tail_len))
                if self._fast is not None:
                    # the fast path must not run ahead of a frame the caller has not handled
                    # yet: hand this one over first (the caller asks again with
                    # buffer_updated(0))
                    return
                continue
            # Tail outside the ring: copy what arrived already, receive the rest in place.
            if dest is None:
                self._pending = (header, msg, fixed, [bytearray(self._view[tstart:tstart + have])],
                                 have, tail_len)
            else:
                dest[:have] = self._view[tstart:tstart + have]
                self._pending = (header, msg, fixed, dest, have, tail_len)
            self._r = tstart + have
            if have == tail_len:
                self._advance_pending(0, frames)
