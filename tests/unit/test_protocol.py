"""The sans-io protocol: frames in memory, in any chunking, and malformed input."""

from __future__ import annotations

import random
import struct

import pytest
from farcuda.wire import (
    BY_NAME,
    HEADER,
    FrameReader,
    ProtocolError,
    encode,
    encode_reply,
    handshake,
    unpack_fixed,
)


def frames_of(data: bytes, accept: str, chunk: int | None = None, seed: int = 0):
    rng = random.Random(seed)
    r = FrameReader(accept)
    out, i = [], 0
    while i < len(data):
        k = chunk or rng.randint(1, 70000)
        out += r.feed(data[i:i + k])
        i += k
    return out


@pytest.mark.parametrize("seed", range(5))
def test_round_trip_any_chunking(seed):
    sizes = [0, 1, 17, 256 * 1024, 256 * 1024 + 1, 3 << 20]
    msg = BY_NAME["MEMCPY_HTOD"]
    data = b"".join(encode(msg, {"dst": 0x1000 + i, "stream": i}, bytes([i]) * n, rid=i,
                           vdev=i % 3) for i, n in enumerate(sizes))
    got = frames_of(data, "c2s", seed=seed)
    assert [len(f.tail or b"") for f in got] == sizes
    for i, f in enumerate(got):
        assert (f.rid, f.vdev) == (i, i % 3)
        assert f.as_dict() == {"dst": 0x1000 + i, "stream": i, "flags": 0}
        assert (f.tail or b"") == bytes([i]) * sizes[i]


def test_launch_fields():
    msg = BY_NAME["LAUNCH"]
    raw = encode(msg, {"kernel": 7, "stream": 3, "grid": (1, 2, 3), "block": (4, 5, 6),
                       "shmem": 128, "flags": 1}, b"\x01\x02")
    (f,) = frames_of(raw, "c2s")
    assert f.values() == (7, 3, 1, 2, 3, 4, 5, 6, 128, 1)
    assert bytes(f.tail) == b"\x01\x02"


def test_reply_carries_fields_and_tail():
    raw = encode_reply(9, 0, BY_NAME["MALLOC"], {"ptr": 0xABC}, b"tail")
    (f,) = frames_of(raw, "s2c")
    status, flen = struct.unpack_from("<II", f.fixed)
    assert (f.rid, status, flen) == (9, 0, 8)
    assert unpack_fixed(BY_NAME["MALLOC"], bytes(f.tail)[:flen], reply=True) == {"ptr": 0xABC}
    assert bytes(f.tail)[flen:] == b"tail"


def test_sink_receives_bulk_in_place():
    target = bytearray(5 << 20)
    seen = []

    def sink(header, fixed, n):
        seen.append(n)
        return memoryview(target)[:n]
    r = FrameReader("c2s", sink=sink)
    payload = bytes(range(256)) * (4 << 12)
    data = encode(BY_NAME["MEMCPY_HTOD"], {"dst": 1}, payload)
    out = []
    for i in range(0, len(data), 100000):
        out += r.feed(data[i:i + 100000])
    assert len(out) == 1 and out[0].tail is None
    assert seen == [len(payload)] and bytes(target[:len(payload)]) == payload


@pytest.mark.parametrize("raw, why", [
    (HEADER.pack(0, 0x7777, 0, 0, 0, 0), "unknown opcode"),
    (HEADER.pack(0, 0x8001, 0, 0, 0, 0), "not accepted"),
    (HEADER.pack(3, 0x0201, 0, 0, 0, 0), "below its fixed size"),
    (HEADER.pack(12 + 5, 0x0201, 0, 0, 0, 0) + bytes(17), "carries no tail"),
    (HEADER.pack(0xFFFFFFF0, 0x0210, 0, 0, 0, 0), "exceeds the limit"),
])
def test_malformed_frames(raw, why):
    with pytest.raises(ProtocolError, match=why):
        FrameReader("c2s").feed(raw)


def test_huge_claim_is_not_preallocated():
    """A frame that claims a 1 GiB tail holds memory only for what actually arrived."""
    import tracemalloc
    r = FrameReader("c2s")
    tracemalloc.start()
    r.feed(HEADER.pack(16 + (1 << 30) - 1, 0x0210, 0, 0, 0, 0) + bytes(16) + bytes(1000))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 16 << 20


def test_handshake_round_trip():
    challenge = handshake.new_challenge()
    hello = frames_of(handshake.server_hello(challenge, True), "s2c")[0]
    version, flags, got = handshake.parse_server_hello(hello.fixed)
    assert got == challenge and flags & handshake.FLAG_AUTH
    raw = handshake.client_hello(challenge, {"pid": 42, "host": "edge"}, "s3cret")
    (f,) = frames_of(raw, "c2s")
    v, _f, mac, ident = handshake.parse_client_hello(f.fixed, bytes(f.tail))
    assert ident == {"pid": 42, "host": "edge"}
    assert handshake.check_mac({"a": "other", "b": "s3cret"}, challenge, bytes(f.tail), mac) == "b"
    assert handshake.check_mac({"a": "other"}, challenge, bytes(f.tail), mac) is None
    # a replayed HELLO fails against a new challenge
    assert handshake.check_mac({"b": "s3cret"}, handshake.new_challenge(), bytes(f.tail),
                               mac) is None
    # and the token never crosses the wire
    assert b"s3cret" not in raw


def test_fast_path_keeps_program_order():
    """Frames the fast path executes never overtake frames handed to the caller."""
    launch, htod = BY_NAME["LAUNCH"], BY_NAME["MEMCPY_HTOD"]
    seq = []
    stream = b""
    for i in range(40):
        if i % 3 == 0:
            stream += encode(htod, {"dst": i}, b"x" * 10)
        else:
            stream += encode(launch, {"kernel": i})
    order = []

    def fast(buf, start, end):
        taken = 0
        while end - start - taken >= 16:
            length, op = struct.unpack_from("<IH", buf, start + taken)
            if op != launch.op or end - start - taken < 16 + length:
                break
            order.append(struct.unpack_from("<I", buf, start + taken + 16)[0])
            taken += 16 + length
        return taken
    r = FrameReader("c2s", fast=fast)
    for i in range(0, len(stream), 37):
        buf = r.get_buffer()
        chunk = stream[i:i + 37]
        buf[:len(chunk)] = chunk
        frames = r.buffer_updated(len(chunk))
        while frames:
            order += [f.as_dict()["dst"] for f in frames]
            frames = r.buffer_updated(0)
    seq = list(range(40))
    assert order == seq


def test_fast_path_waits_for_a_sunk_frame():
    """A frame whose tail went to a sink is handed over before the fast path may run on."""
    launch, htod = BY_NAME["LAUNCH"], BY_NAME["MEMCPY_HTOD"]
    target = bytearray(1 << 20)
    order = []

    def sink(header, fixed, n):
        return memoryview(target)[:n] if header[1] == htod.op else None

    def fast(buf, start, end):
        if end - start >= 16 + 40 and struct.unpack_from("<H", buf, start + 4)[0] == launch.op:
            order.append("launch")
            return 16 + 40
        return 0
    r = FrameReader("c2s", sink=sink, fast=fast)
    data = encode(htod, {"dst": 1}, b"y" * 300000) + encode(launch, {"kernel": 1})
    pos = 0
    while pos < len(data):  # both frames in one read: the tail is already in the buffer
        buf = r.get_buffer()
        k = min(len(buf), len(data) - pos)
        buf[:k] = data[pos:pos + k]
        pos += k
        frames = r.buffer_updated(k)
        while frames:
            order += [f.msg.name for f in frames]
            frames = r.buffer_updated(0)
    assert order == ["MEMCPY_HTOD", "launch"]
