"""Fuzzing the wire protocol and the daemon with random and malformed input (hypothesis).

Three layers, each with its own invariants:

(a) ``FrameReader`` fed random and malformed byte streams, in random pieces, through the
    BufferedProtocol interface (including the extra ``get_buffer`` calls event loops make
    when a read finds nothing) and ``feed``: only ``ProtocolError`` ever escapes, the memory it
    holds stays bounded by the bytes that actually arrived (a length field is never trusted
    for an allocation), and well-formed streams parse back exactly, with a small ring buffer
    and with a sink.
(b) The daemon's ``Session`` dispatcher, in process, on the memory backend, with a fake
    transport: well-formed frames carrying random field values (bad handles and pointers, huge
    sizes, unknown streams/events/kernels, wrong tails, operations out of order or on devices
    never opened), sometimes a malformed frame. Every request with a request id gets exactly
    one REPLY with a known status (async ones may answer with ASYNC_ERROR), a malformed frame
    closes the session with a GOODBYE, nothing reaches the session's catch-all for internal
    errors, nothing hangs (host callbacks are answered as the client would), and all memory
    is returned when the session ends.
(c) A real daemon (front and workers) receiving a few hundred hostile connections: garbage
    before and after the handshake, truncated and oversized frames, hostile identities,
    abrupt closes and resets. Afterwards the daemon is alive, no session or memory is left
    behind, no traceback was logged, and the nvcc-built ``ci_memory`` runs through the shim.
(d) The daemon's C path (daemon/fastpath.c, built against the recording stand-in of the
    driver) fed the same hostile streams, and frames of its own opcodes with random handles,
    sizes and lengths, as the session feeds it: it takes only whole frames of the kinds it
    knows, executes each exactly as the frame says (the driver calls are checked against the
    frames), and never reads outside what it was given: the same corpus is replayed by a
    build with AddressSanitizer and UndefinedBehaviorSanitizer.

The default budget keeps the file well under a minute on a 2-core runner with a fixed seed
(deterministic). ``FARCUDA_FUZZ_EXAMPLES=N`` runs N examples of (a) and (b) and N connections
in (c), with fresh randomness each run; the counts tried are printed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import struct
import subprocess
import time
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field

import pytest
from farcuda.daemon.backends.memory import MemoryBackend
from farcuda.daemon.session import Session
from farcuda.wire import (
    BY_NAME,
    BY_OP,
    HEADER_SIZE,
    INLINE_TAIL,
    MAGIC,
    MAX_TAIL,
    MESSAGES,
    FrameReader,
    ProtocolError,
    encode,
    encode_header,
    handshake,
)
from farcuda.wire.abi import ERRORS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_ENV_EXAMPLES = int(os.environ.get("FARCUDA_FUZZ_EXAMPLES", "0") or 0)
TRIED: Counter[str] = Counter()


def fuzz_settings(default: int, most: int | None = None) -> settings:
    """``default`` deterministic examples, or FARCUDA_FUZZ_EXAMPLES random ones (at most
    ``most``: for the slow, traced ones)."""
    n = min(_ENV_EXAMPLES, most or _ENV_EXAMPLES) if _ENV_EXAMPLES else default
    return settings(max_examples=n, deadline=None, database=None,
                    derandomize=not _ENV_EXAMPLES, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def report(capsys, what: str, text: str) -> None:
    with capsys.disabled():
        print(f"\n[fuzz] {what}: {text}")


C2S = [m for m in MESSAGES if m.direction == "c2s"]
REQUESTS = [m for m in C2S if m.name != "HELLO"]
SESSION_OPS = [m for m in REQUESTS if m.name != "BYE"]  # BYE ends a scenario, at its end
MAX_FIXED = max(m.size for m in MESSAGES)
_RANGES = {"u8": (0, 0xFF), "u16": (0, 0xFFFF), "u32": (0, 0xFFFFFFFF),
           "i32": (-(1 << 31), (1 << 31) - 1), "u64": (0, (1 << 64) - 1),
           "i64": (-(1 << 63), (1 << 63) - 1)}


def _fit(value: int, ftype: str) -> int:
    """Wrap an integer into the range of a wire type."""
    lo, hi = _RANGES[ftype]
    span = hi - lo + 1
    return (value - lo) % span + lo


def frame(msg, values: list[int] | None = None, tail: bytes = b"", rid: int = 0, vdev: int = 0,
          aux: int = 0, length: int | None = None) -> bytes:
    """A frame whose header may lie about its length."""
    fixed = struct.pack(msg.fmt, *(values if values is not None
                                   else [0] * len(msg.names)))
    n = len(fixed) + len(tail) if length is None else length
    return encode_header(msg.op, n, rid, vdev, 0, aux) + fixed + tail


# =========================================================================== (a) FrameReader

def _footprint(r: FrameReader) -> int:
    """Bytes the reader holds: its ring buffer and the chunks of a tail being received."""
    n = len(r._buf)
    pending = r._pending
    if pending is not None and isinstance(pending[3], list):
        n += sum(len(c) for c in pending[3])
    if getattr(r, "_open_chunk", None) is not None:
        n += len(r._open_chunk)
    return n


@st.composite
def c2s_frame(draw) -> bytes:
    """A valid c2s frame with random values and (for bulk messages) a random tail."""
    msg = draw(st.sampled_from(C2S))
    values = [draw(st.integers(*_RANGES[_type_of(msg, i)])) for i in range(len(msg.names))]
    tail = b""
    if msg.bulk:
        n = draw(st.sampled_from([0, 1, 33, INLINE_TAIL, INLINE_TAIL + 1, 600_000])
                 | st.integers(0, 64))
        tail = bytes([draw(st.integers(0, 255))]) * n
    return frame(msg, values, tail, draw(st.integers(0, 0xFFFFFFFF)),
                 draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFF)))


def _type_of(msg, i: int) -> str:
    types = [f.type for f in msg.fields for _ in range(f.count)]
    return types[i]


@st.composite
def hostile_piece(draw) -> bytes:
    """Something that is not a valid c2s frame, or a valid header that lies."""
    kind = draw(st.sampled_from(["garbage", "bad_op", "s2c_op", "short", "tail_on_plain",
                                 "huge", "max_tail", "truncated"]))
    if kind == "garbage":
        return draw(st.binary(min_size=1, max_size=200))
    msg = draw(st.sampled_from(C2S))
    if kind == "bad_op":
        op = draw(st.integers(0, 0xFFFF).filter(lambda o: o not in BY_OP))
        return encode_header(op, draw(st.integers(0, 0xFFFFFFFF))) + draw(st.binary(max_size=40))
    if kind == "s2c_op":
        m = draw(st.sampled_from([m for m in MESSAGES if m.direction == "s2c"]))
        return encode(m)
    if kind == "short":
        return frame(msg, length=draw(st.integers(0, max(0, msg.size - 1)))) if msg.size else \
            frame(BY_NAME["MALLOC"], length=3)
    if kind == "tail_on_plain":
        m = draw(st.sampled_from([m for m in C2S if not m.bulk]))
        return frame(m, tail=b"x" * draw(st.integers(1, 100)))
    if kind == "huge":  # a bulk message claiming up to 4 GiB, of which a little arrives
        m = draw(st.sampled_from([m for m in C2S if m.bulk]))
        n = draw(st.sampled_from([MAX_TAIL, MAX_TAIL + m.size, (1 << 32) - 1]))
        return frame(m, length=n) + b"\x00" * draw(st.integers(0, 5000))
    if kind == "max_tail":
        m = draw(st.sampled_from([m for m in C2S if m.bulk]))
        return frame(m, length=MAX_TAIL + m.size + 1)
    whole = draw(c2s_frame())  # truncated: the connection ends inside a frame
    return whole[:draw(st.integers(1, max(1, len(whole) - 1)))]


def _drive_reader(r: FrameReader, data: bytes, pieces: list[int], spurious: list[bool],
                  capacity: int) -> tuple[list, bool]:
    """Feed ``data`` through the buffer interface; returns (frames, protocol error seen)."""
    frames: list = []
    mv = memoryview(data)
    fed = 0
    i = 0
    bound = max(capacity, HEADER_SIZE + MAX_FIXED + INLINE_TAIL) + (4 << 20) + 1024
    while mv:
        try:
            buf = r.get_buffer(-1)
            if spurious[i % len(spurious)]:  # a read that found nothing, then another try
                buf = r.get_buffer(-1)
            assert len(buf) > 0, "get_buffer returned an empty buffer"
            k = min(len(buf), len(mv), pieces[i % len(pieces)])
            buf[:k] = mv[:k]
            got = r.buffer_updated(k)
        except ProtocolError:
            return frames, True
        for f in got:
            f.tail = None if f.tail is None else bytes(f.tail)
            frames.append(f)
        mv = mv[k:]
        fed += k
        i += 1
        assert _footprint(r) <= bound + 2 * fed, (_footprint(r), fed)
    return frames, False


def test_frame_reader_hostile_streams(capsys):
    """Random mixes of valid frames, lying headers and garbage: only ProtocolError, bounded
    memory, and the valid frames before the first bad byte come out intact."""

    @fuzz_settings(800)
    @given(parts=st.lists(st.one_of(c2s_frame(), hostile_piece()), min_size=1, max_size=6),
           pieces=st.lists(st.integers(1, 1 << 20), min_size=1, max_size=8),
           spurious=st.lists(st.booleans(), min_size=1, max_size=8),
           capacity=st.sampled_from([64, 1024, 300_000, 1 << 20]),
           use_feed=st.booleans())
    def run(parts, pieces, spurious, capacity, use_feed):
        TRIED["frame reader streams"] += 1
        data = b"".join(parts)
        r = FrameReader("c2s", capacity=capacity)
        if use_feed:
            try:
                for k in range(0, len(data), pieces[0]):
                    r.feed(data[k:k + pieces[0]])
                    assert _footprint(r) <= max(capacity, HEADER_SIZE + MAX_FIXED
                                                + INLINE_TAIL) + (4 << 20) + 2 * (k + pieces[0])
            except ProtocolError:
                pass
            return
        _drive_reader(r, data, pieces, spurious, capacity)
    run()
    report(capsys, "FrameReader hostile streams", f"{TRIED['frame reader streams']} inputs")


def test_frame_reader_random_bytes(capsys):
    @fuzz_settings(600)
    @given(data=st.binary(min_size=1, max_size=4096),
           pieces=st.lists(st.integers(1, 4096), min_size=1, max_size=4),
           accept=st.sampled_from(["c2s", "s2c"]))
    def run(data, pieces, accept):
        TRIED["frame reader random bytes"] += 1
        r = FrameReader(accept)
        try:
            for k in range(0, len(data), pieces[0]):
                r.feed(data[k:k + pieces[0]])
        except ProtocolError:
            pass
        assert _footprint(r) <= (1 << 20) + (4 << 20)
    run()
    report(capsys, "FrameReader random bytes", f"{TRIED['frame reader random bytes']} inputs")


def test_frame_reader_valid_streams_round_trip(capsys):
    """Valid frames in any chunking, with extra get_buffer calls, a small ring and a sink,
    parse back exactly."""

    @fuzz_settings(400)
    @given(parts=st.lists(c2s_frame(), min_size=1, max_size=6),
           pieces=st.lists(st.integers(1, 3 << 20), min_size=1, max_size=8),
           spurious=st.lists(st.booleans(), min_size=1, max_size=8),
           capacity=st.sampled_from([64, 4096, 1 << 20]), sink_above=st.sampled_from(
               [None, 0, INLINE_TAIL]))
    def run(parts, pieces, spurious, capacity, sink_above):
        TRIED["frame reader round trips"] += 1
        sunk: list[bytearray] = []

        def sink(header, fixed, n):
            if sink_above is None or n <= sink_above:
                return None
            sunk.append(bytearray(n))
            return memoryview(sunk[-1])
        r = FrameReader("c2s", capacity=capacity, sink=sink)
        got, bad = _drive_reader(r, b"".join(parts), pieces, spurious, capacity)
        assert not bad
        assert len(got) == len(parts)
        sunk_iter = iter(sunk)
        for f, raw in zip(got, parts, strict=True):
            length, op, _fl, rid, vdev, aux = struct.unpack_from("<IHHIHH", raw)
            msg = BY_OP[op]
            assert (f.op, f.rid, f.vdev, f.aux) == (op, rid, vdev, aux)
            assert f.fixed == raw[HEADER_SIZE:HEADER_SIZE + msg.size]
            tail = raw[HEADER_SIZE + msg.size:]
            if f.tail is None and tail:
                assert bytes(next(sunk_iter)) == tail
            else:
                assert (f.tail or b"") == tail
    run()
    report(capsys, "FrameReader round trips", f"{TRIED['frame reader round trips']} inputs")


def test_frame_reader_never_trusts_a_length(capsys):
    """A header that claims up to MAX_TAIL bytes, followed by a trickle: the memory traced
    while parsing follows the bytes received, not the claim (tracemalloc)."""

    @fuzz_settings(40, most=300)
    @given(claim=st.sampled_from([INLINE_TAIL + 1, 64 << 20, MAX_TAIL]),
           trickle=st.integers(0, 300_000), piece=st.integers(1, 70_000),
           spurious=st.booleans())
    def run(claim, trickle, piece, spurious):
        TRIED["length claims"] += 1
        msg = BY_NAME["MEMCPY_HTOD"]
        data = frame(msg, [0, 0, 0], length=msg.size + claim) + b"\x5a" * trickle
        tracemalloc.start()
        try:
            r = FrameReader("c2s")
            _drive_reader(r, data, [piece], [spurious], 1 << 20)
            _cur, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # the 1 MiB ring, one 4 MiB receive chunk, what arrived (kept once, copied once)
        assert peak <= (1 << 20) + (4 << 20) + 2 * len(data) + (256 << 10), (claim, peak)
    run()
    report(capsys, "FrameReader length claims", f"{TRIED['length claims']} inputs")


def test_frame_reader_trickle_is_not_amplified():
    """A bulk tail that arrives a few bytes per read costs work per byte received, not a
    fresh 4 MiB receive chunk per read (which the reader once allocated and zeroed: a slow
    sender could make a worker clear gigabytes per second)."""
    msg = BY_NAME["MEMCPY_HTOD"]
    tail = bytes(range(256)) * 2400  # 600 KiB: received outside the ring
    data = frame(msg, [0, 0, 0], tail, rid=1)
    r = FrameReader("c2s")
    t0 = time.process_time()
    got, bad = _drive_reader(r, data, [7, 3, 11], [False, True], 1 << 20)
    took = time.process_time() - t0
    assert not bad and len(got) == 1 and got[0].tail == tail
    assert took < 5.0, f"{len(data) // 7} small reads took {took:.1f} s of CPU"


# =========================================================================== (b) Session

WINDOW = 0x2000_0000_0000
WINDOW_SIZE = 1 << 34
_POINTER_NAMES = {"dst", "src", "ptr", "base"}
_SIZE_NAMES = {"size", "width", "height", "dpitch", "spitch", "pitch", "value", "shmem"}
_DIM_NAMES = {f"{n}{i}" for n in ("grid", "block") for i in range(3)}
_BULKY = {"MEMCPY_HTOD", "MEMCPY2D_HTOD", "LAUNCH", "LAUNCH_EX", "OCCUPANCY_CLUSTERS",
          "STREAM_SET_ATTR"}

pointers = st.one_of(
    st.sampled_from([0, WINDOW, WINDOW + 512, WINDOW + 1024, WINDOW + (2 << 20),
                     WINDOW + (4 << 20), WINDOW + (6 << 20), WINDOW - 1, WINDOW + WINDOW_SIZE,
                     (1 << 64) - 1]),
    st.integers(0, 8).map(lambda k: WINDOW + 512 * k + 7 * (k % 2)),
    st.integers(0, (1 << 64) - 1))
sizes = st.one_of(st.sampled_from([0, 1, 7, 511, 512, 4096, 65536, 1 << 20, 3 << 20,
                                   (8 << 20) + 1, 1 << 42, (1 << 64) - 1]),
                  st.integers(0, 1 << 16), st.integers(0, (1 << 64) - 1))
handles = st.one_of(st.integers(0, 4), st.integers(0, (1 << 32) - 1))
dims = st.sampled_from([0, 1, 2, 32, 1024, 1025, 65535, (1 << 32) - 1])


def _value_strategy(name: str, ftype: str):
    base = name.rstrip("0123456789") if name not in _DIM_NAMES else name
    if base in _POINTER_NAMES:
        s = pointers
    elif base in _SIZE_NAMES:
        s = sizes
    elif name in _DIM_NAMES:
        s = dims
    else:
        s = handles
    return s.map(lambda v: _fit(v, ftype))


@dataclass
class Op:
    """One frame to feed the session."""

    raw: bytes
    name: str
    rid: int
    malformed: bool = False  # framing-level garbage: the session must close


@st.composite
def random_request(draw, rid: int) -> Op:
    msg = draw(st.sampled_from(SESSION_OPS))
    values = [draw(_value_strategy(n, _type_of(msg, i))) for i, n in enumerate(msg.names)]
    if msg.name == "DEVICE_OPEN" and draw(st.booleans()):
        values = [draw(st.integers(0, 2)), 0, 0, WINDOW + (1 << 36) * draw(st.integers(0, 2)),
                  draw(st.sampled_from([WINDOW_SIZE, 0, 1 << 43, 4096]))]
    tail = b""
    if msg.bulk:
        if msg.name == "MODULE_LOAD":
            tail = draw(module_tail())
        else:
            n = draw(st.sampled_from([0, 1, 8, 48, 56, 72, 144, 512, 1032, 4096, 300_000])
                     | st.integers(0, 80))
            tail = bytes([draw(st.integers(0, 255))]) * n
    if msg.name in ("LAUNCH_EX", "OCCUPANCY_CLUSTERS") and draw(st.booleans()):
        nattrs = draw(st.integers(0, 3))  # attributes that fit the tail
        values[msg.names.index("nattrs")] = nattrs
        tail = b"\0" * (72 * nattrs) + (tail if msg.name == "LAUNCH_EX" else b"")
        if msg.name == "OCCUPANCY_CLUSTERS":
            values[-1] = draw(st.sampled_from([0, 1, 2]))
    if msg.name == "MEMCPY2D_HTOD" and draw(st.booleans()):  # consistent width*height
        values[2], values[3] = draw(st.integers(0, 600)), draw(st.integers(0, 8))
        values[1] = values[2] + draw(st.sampled_from([0, 1, 512]))
        tail = b"\x11" * (values[2] * values[3])
    rid_used = rid if draw(st.integers(0, 9)) else 0
    vdev = draw(st.sampled_from([0, 0, 0, 1, 7, 0xFFFF]))
    aux = draw(st.sampled_from([0, 0, 1, 0xFFFF]))
    return Op(frame(msg, values, tail, rid_used, vdev, aux), msg.name, rid_used)


@st.composite
def module_tail(draw) -> bytes:
    """Garbage, a fat binary header that lies, or a plausible container with a name table."""
    kind = draw(st.sampled_from(["garbage", "header", "container"]))
    if kind == "garbage":
        return draw(st.binary(max_size=64))
    body = draw(st.binary(max_size=128))
    size = len(body) if kind == "container" else draw(st.integers(0, (1 << 64) - 1))
    head = struct.pack("<IHHQ", 0xBA55ED50, 1, draw(st.sampled_from([16, 0, 15, 4096])), size)
    table = draw(st.sampled_from([
        b'{"kernels": [], "vars": []}', b'{"kernels": [[1, "k"]], "vars": [[2, "v", 8]]}',
        b"[[[[[[[[", b'{"kernels": 1}', b"\xff\xfe", b""]))
    return head + body + table


@st.composite
def scenario(draw) -> list[Op]:
    """A session's worth of frames: usually a device opened first, then random requests,
    sometimes a scripted sequence that reaches deep states, sometimes one malformed frame."""
    ops: list[Op] = []
    rid = 1
    if draw(st.integers(0, 4)):
        for vdev in range(draw(st.integers(1, 2))):
            ops.append(Op(frame(BY_NAME["DEVICE_OPEN"], [0, 0, 0, WINDOW + (1 << 36) * vdev,
                                                         WINDOW_SIZE], rid=rid, vdev=vdev),
                          "DEVICE_OPEN", rid))
            rid += 1
        if draw(st.booleans()):  # kernels 1..n of an nvcc-built module (when nvcc is here)
            ops.append(Op(b"", "REAL_MODULE", rid))
            rid += 1
    for _ in range(draw(st.integers(1, 25))):
        if draw(st.integers(0, 5)) == 0:
            seq = draw(scripted(rid))
            ops += seq
            rid += len(seq)
        else:
            ops.append(draw(random_request(rid)))
            rid += 1
    if draw(st.integers(0, 7)) == 0:
        bad = draw(hostile_piece().filter(lambda b: _is_malformed(b)))
        ops.insert(draw(st.integers(0, len(ops))), Op(bad, "MALFORMED", 0, malformed=True))
    if draw(st.integers(0, 14)) == 0:
        ops.append(Op(frame(BY_NAME["HELLO"], None, b"{}", rid=rid), "HELLO", rid,
                      malformed=True))
    elif draw(st.integers(0, 9)) == 0:
        ops.append(Op(frame(BY_NAME["BYE"], rid=draw(st.sampled_from([0, rid]))), "BYE", 0))
    return ops


def _is_malformed(raw: bytes) -> bool:
    try:
        FrameReader("c2s").feed(raw)
    except ProtocolError:
        return True
    return False


@st.composite
def scripted(draw, rid: int) -> list[Op]:
    """Sequences that reach states random frames rarely do: memory in use, streams held by
    host callbacks with work queued behind them, events, graphs, frees while work waits."""
    m = BY_NAME
    stream = draw(st.sampled_from([0, 1, 2]))
    size = draw(st.sampled_from([1, 512, 4096, 1 << 20, 3 << 20]))
    ptr = WINDOW if size < (1 << 20) else WINDOW + (2 << 20) * draw(st.integers(0, 3))
    cb = draw(st.integers(1, 3))
    # ci_launch's kernels as _real_module numbers them, with their parameter sizes (a wrong
    # pairing is only a cudaErrorInvalidValue)
    kid, psize = draw(st.sampled_from([(1, 56), (2, 1032), (3, 48), (4, 40), (9, 8)]))
    steps = [
        (m["STREAM_CREATE"], [stream, 0, 0], b""),
        (m["MALLOC"], [size, 0], b""),
        (m["HOST_FUNC"], [stream, cb], b""),
        (m["MEMCPY_HTOD"], [ptr, stream, 0], b"\x7e" * min(size, 4096)),
        (m["MEMSET"], [draw(pointers), draw(st.sampled_from([0, 1, 64])), 1, stream, 1], b""),
        (m["EVENT_CREATE"], [1, 0], b""),
        (m["EVENT_RECORD"], [1, stream, 0], b""),
        (m["STREAM_WAIT_EVENT"], [0, 1, 0], b""),
        (m["MEMCPY_DTOH"], [ptr, min(size, 4096), stream, 0], b""),
        (m["FREE_ASYNC"], [ptr, draw(st.sampled_from([0, stream]))], b""),
        (m["MALLOC_ASYNC"], [size, draw(st.sampled_from([0, stream]))], b""),
        (m["CAPTURE_BEGIN"], [stream, 0], b""),
        (m["CAPTURE_END"], [stream, 5], b""),
        (m["GRAPH_INSTANTIATE"], [5, 6, 0], b""),
        (m["GRAPH_LAUNCH"], [6, stream], b""),
        (m["STREAM_SYNC"], [stream], b""),
        (m["FREE"], [ptr], b""),
        (m["DEVICE_RESET"], [], b""),
        (m["STREAM_DESTROY"], [stream], b""),
        (m["DEVICE_SYNC"], [], b""),
        (m["MEM_GET_INFO"], [], b""),
        (m["LAUNCH"], [kid, stream, 2, 1, 1, 32, 1, 1, 0, 0], b"\x01" * psize),
        (m["FUNC_ATTRS"], [draw(st.integers(0, 4))], b""),
    ]
    chosen = draw(st.lists(st.sampled_from(range(len(steps))), min_size=2, max_size=10))
    out = []
    for k, i in enumerate(chosen):
        msg, values, tail = steps[i]
        out.append(Op(frame(msg, values, tail, rid + k, 0), msg.name, rid + k))
    return out


def _real_module(tmp_path_factory, fc) -> tuple[int, bytes] | None:
    """(kernel count, MODULE_LOAD tail) for ci_launch's kernels, numbered 1..n as the shim
    numbers them, plus one variable the module does not have; None where nvcc is missing."""
    from farcuda.wire import fatbin
    try:
        exe = fc.programs_build.build("ci_launch", tmp_path_factory.mktemp("fuzzmod"))
    except (OSError, subprocess.CalledProcessError):
        return None
    blob = fatbin.fatbin_from_elf(exe)
    off = 0
    while off + 16 <= len(blob):  # the container that holds the kernels
        if blob[off:off + 4] != b"\x50\xed\x55\xba":
            off += 8
            continue
        n = fatbin.fatbin_size(blob[off:])
        image = blob[off:off + n]
        names = list(fatbin.kernel_layouts(image))
        if names:
            table = json.dumps({"kernels": [[i + 1, k] for i, k in enumerate(names)],
                                "vars": [[100, "no_such_variable", 4]]}).encode()
            return len(names), image + table
        off += n
    return None


class FakeTransport:
    """What Session needs of an asyncio transport; it records what the session writes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: Session) -> None:
        self.loop = loop
        self.protocol = protocol
        self.out = bytearray()
        self.closing = False
        self.aborted = False
        self.late_writes = 0  # writes after close: a real transport drops them too

    def write(self, data) -> None:
        if self.closing:
            self.late_writes += 1
            return
        self.out += data

    def _lose(self) -> None:
        if not self.closing:
            self.closing = True
            self.loop.call_soon(self.protocol.connection_lost, None)

    def close(self) -> None:
        self._lose()

    def abort(self) -> None:
        self.aborted = True
        self._lose()

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default=None):
        return {"peername": ("127.0.0.1", 40000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


@dataclass
class Outcome:
    replies: Counter = field(default_factory=Counter)
    closed: bool = False
    goodbye: bool = False
    async_errors: int = 0
    unanswered: list = field(default_factory=list)
    why: str = ""  # the GOODBYE's reason, up to its first colon
    status: dict = field(default_factory=dict)  # request id -> status answered
    launches: int = 0  # kernel launches the backend executed (recorded)
    leaked: int = 0


async def run_session(ops: list[Op], pieces: list[int], yields: list[bool],
                      module: tuple[int, bytes] | None = None) -> Outcome:
    loop = asyncio.get_running_loop()
    if module is not None:
        real = BY_NAME["MODULE_LOAD"]
        ops = [op if op.name != "REAL_MODULE" else
               Op(frame(real, [1, module[0], 1], module[1], op.rid), "MODULE_LOAD", op.rid)
               for op in ops]
    ops = [op for op in ops if op.name != "REAL_MODULE"]
    loop_errors: list[str] = []
    loop.set_exception_handler(lambda _l, ctx: loop_errors.append(str(ctx.get("message"))
                                                                  + repr(ctx.get("exception"))))
    backend = MemoryBackend(gpus=2, capacity=16 << 20)
    s = Session(backend, session_id=1, heartbeat_ms=3_600_000, client_timeout=3600.0)
    tr = FakeTransport(loop, s)
    s.connection_made(tr)
    out_reader = FrameReader("s2c")
    out = Outcome()
    answered_cbs: set[tuple[int, int]] = set()
    seen_out = 0

    async def feed(data: bytes) -> None:
        mv = memoryview(data)
        i = 0
        while mv and not tr.closing:
            buf = s.get_buffer(-1)
            k = min(len(buf), len(mv), pieces[i % len(pieces)])
            buf[:k] = mv[:k]
            s.buffer_updated(k)
            mv = mv[k:]
            if yields[i % len(yields)]:
                await asyncio.sleep(0)
            i += 1

    def scan() -> list[bytes]:
        """Parse new output; returns CALLBACK_DONE frames for callbacks reached."""
        nonlocal seen_out
        frames = out_reader.feed(bytes(tr.out[seen_out:]))
        seen_out = len(tr.out)
        answers = []
        for f in frames:
            if f.msg.name == "REPLY":
                status = struct.unpack_from("<I", f.fixed)[0]
                assert status == 0 or status in ERRORS, status
                out.replies[f.rid] += 1
                out.status[f.rid] = status
            elif f.msg.name == "ASYNC_ERROR":
                status, _op = f.values()
                assert status in ERRORS, status
                out.async_errors += 1
            elif f.msg.name == "GOODBYE":
                out.goodbye = True
                out.why = bytes(f.tail or b"").decode(errors="replace").split(":")[0]
            elif f.msg.name == "CALLBACK":
                (cb,) = f.values()
                if (f.vdev, cb) not in answered_cbs:
                    answered_cbs.add((f.vdev, cb))
                    answers.append(frame(BY_NAME["CALLBACK_DONE"], [cb], vdev=f.vdev))
        return answers

    await feed(b"".join(op.raw for op in ops))
    # Answer host callbacks as the client would, until nothing new happens.
    for _ in range(50):
        for _ in range(5):
            await asyncio.sleep(0)
        answers = scan()
        if not answers or tr.closing:
            break
        await feed(b"".join(answers))
    pending = [t for t in s._tasks if not t.done()]
    if pending and not tr.closing:
        await asyncio.wait(pending, timeout=2.0)
    scan()
    out.closed = tr.closing
    if not tr.closing:
        wanted = {op.rid: op.name for op in ops if op.rid}
        out.unanswered = [(rid, name) for rid, name in wanted.items()
                          if out.replies[rid] != 1]
    tr.close()
    for _ in range(5):
        await asyncio.sleep(0)
    assert s.transport is None and s.closed.done()
    out.leaked = backend.total_mapped + s.memory_held()
    out.launches = backend.launches
    assert not loop_errors, loop_errors
    return out


# A session that ends while a request's task has not started yet cancels it before its first
# step: the backend's coroutine it held is then never awaited (harmless, and a warning only).
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <coroutine object:pytest.PytestUnraisableExceptionWarning")
def test_session_random_frames(capsys, tmp_path_factory, fc):
    """Random requests (and sometimes a malformed frame) against an in-process Session."""
    module = _real_module(tmp_path_factory, fc)
    errors = _Errors()
    log = logging.getLogger("farcudad.session")
    log.addHandler(errors)
    tally = Counter()
    closes: Counter[str] = Counter()

    @fuzz_settings(500)
    @given(ops=scenario(), pieces=st.lists(st.integers(1, 1 << 20), min_size=1, max_size=6),
           yields=st.lists(st.booleans(), min_size=1, max_size=6))
    def run(ops, pieces, yields):
        TRIED["session scenarios"] += 1
        tally["frames"] += len(ops)
        errors.records.clear()
        out = asyncio.run(run_session(ops, pieces, yields, module))
        tally["replies"] += sum(out.replies.values())
        tally["async errors"] += out.async_errors
        tally["launches"] += out.launches
        tally["successes"] += sum(1 for v in out.status.values() if v == 0)
        tally["modules loaded"] += sum(1 for op in ops if op.name in ("MODULE_LOAD",
                                                                      "REAL_MODULE")
                                       and out.status.get(op.rid) == 0)
        rids = {op.rid for op in ops if op.rid}
        assert set(out.replies) <= rids, "a REPLY for a request never made"
        assert all(n == 1 for n in out.replies.values()), "a request answered twice"
        assert not errors.records, errors.records  # the catch-all for internal errors
        assert out.leaked == 0, f"{out.leaked} bytes of device memory left after the session"
        if any(op.malformed for op in ops):
            assert out.closed, "a malformed frame did not end the session"
        if out.closed:
            tally["sessions closed"] += 1
            closes[out.why or "BYE"] += 1
            assert out.goodbye or any(op.name == "BYE" for op in ops)
        else:
            assert not out.unanswered, f"requests without exactly one REPLY: {out.unanswered}"
    try:
        run()
    finally:
        log.removeHandler(errors)
    report(capsys, "Session scenarios", f"{TRIED['session scenarios']} inputs, "
           f"{tally['frames']} frames, {tally['replies']} replies "
           f"({tally['successes']} successes), {tally['modules loaded']} modules loaded, "
           f"{tally['launches']} kernel launches executed, "
           f"{tally['async errors']} async errors, {tally['sessions closed']} sessions closed "
           "(malformed input or BYE), 0 internal errors, 0 bytes leaked; closed by: "
           + ", ".join(f"{k} {v}" for k, v in closes.most_common(6)))


# =========================================================================== (c) real daemon

_ROUNDS = _ENV_EXAMPLES or 400


@dataclass
class Attack:
    kind: str
    handshake: bool  # completes the handshake (costs the daemon a worker)


_PRE = ["connect_close", "connect_reset", "garbage", "huge_hello", "short_hello_close",
        "bad_magic", "bad_version", "json_garbage", "json_nested", "json_list", "hello_slowloris",
        "wrong_first_op", "status_then_garbage"]
_POST = ["post_garbage", "post_huge_length", "post_truncated_close", "post_reset",
         "post_random_frames", "post_htod_then_reset", "post_bye_then_garbage",
         "post_hello_again", "post_big_identity"]


def _hello_identity() -> dict:
    return {"pid": os.getpid(), "exe": "fuzz", "host": "fuzz"}


async def _read_frame(reader: asyncio.StreamReader, timeout: float = 5.0):
    head = await asyncio.wait_for(reader.readexactly(HEADER_SIZE), timeout)
    length = struct.unpack_from("<I", head)[0]
    body = await asyncio.wait_for(reader.readexactly(length), timeout)
    return FrameReader("s2c").feed(head + body)[0]


async def _until_closed(reader: asyncio.StreamReader, timeout: float) -> bool:
    """Read until the daemon closes; True if it did within ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(1 << 16):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def attack(host: str, port: int, kind: str, rng: random.Random) -> str:
    """One hostile connection; returns how it ended ("closed by daemon", "we left", ...)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        if kind == "connect_close":
            return "we left"
        if kind == "connect_reset":
            _reset(writer)
            return "we reset"
        hello = await _read_frame(reader)
        _v, _f, challenge = handshake.parse_server_hello(hello.fixed)
        ident = _hello_identity()
        if kind == "post_big_identity":  # all but fills the 64 KiB the front accepts
            ident["exe"] = "a" * rng.randint(60_000, 65_400)
        good = handshake.client_hello(challenge, ident, None)
        if kind == "garbage":
            writer.write(rng.randbytes(rng.randint(16, 400)))
        elif kind == "huge_hello":
            writer.write(encode_header(BY_NAME["HELLO"].op, (1 << 32) - 1, 1) + b"\0" * 100)
        elif kind == "short_hello_close":
            writer.write(good[:rng.randint(1, len(good) - 1)])
            await writer.drain()
            return "we left"
        elif kind == "bad_magic":
            writer.write(good[:HEADER_SIZE] + b"XXXX" + good[HEADER_SIZE + 4:])
        elif kind == "bad_version":
            writer.write(good[:HEADER_SIZE + 4] + b"\x63\x00" + good[HEADER_SIZE + 6:])
        elif kind in ("json_garbage", "json_nested", "json_list"):
            tail = {"json_garbage": rng.randbytes(200), "json_nested": b"[" * 60000,
                    "json_list": b"[1, 2, 3]"}[kind]
            m = BY_NAME["HELLO"]
            writer.write(frame(m, [MAGIC, 1, 0, 1] + [0] * 32, tail, rid=1))
        elif kind == "hello_slowloris":
            writer.write(good[:HEADER_SIZE + 3])  # the front's handshake timeout ends it
            await writer.drain()
            await asyncio.sleep(0.2)
            return "we left"
        elif kind == "wrong_first_op":
            writer.write(encode(BY_NAME["MALLOC"], {"size": 4096}, rid=1))
        elif kind == "status_then_garbage":
            writer.write(handshake.client_hello(challenge, {"purpose": "status"}, None)
                         + rng.randbytes(64))
        else:  # past the handshake: a worker serves us
            writer.write(good)
            await writer.drain()
            welcome = await _read_frame(reader)
            assert welcome.msg.name == "REPLY" and welcome.fixed[:4] == b"\0\0\0\0"
            await _post_handshake(reader, writer, kind, rng)
            if kind in ("post_reset", "post_htod_then_reset", "post_truncated_close"):
                return "we left"
            if kind == "post_garbage" and not await _until_closed(reader, 1.0):
                return "we left"  # random bytes may be the start of a frame: the daemon waits
        await writer.drain()
        if rng.random() < 0.3:
            _reset(writer)
            return "we reset"
        return "closed by daemon" if await _until_closed(reader, 15.0) else "daemon kept it"
    except (ConnectionError, asyncio.IncompleteReadError):
        return "closed by daemon"
    finally:
        if not writer.transport.is_closing():
            writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def _post_handshake(reader, writer, kind: str, rng: random.Random) -> None:
    if kind == "post_garbage":  # half the time a header with no such opcode: must be closed
        junk = rng.randbytes(rng.randint(16, 300))
        writer.write(junk[:4] + b"\xff\xff" + junk[6:] if rng.random() < 0.5 else junk)
    elif kind == "post_huge_length":
        writer.write(encode_header(BY_NAME["MEMCPY_HTOD"].op, (1 << 32) - 1) + b"\1" * 4000)
    elif kind == "post_truncated_close":
        f = encode(BY_NAME["MALLOC"], {"size": 4096}, rid=2)
        writer.write(f[:rng.randint(1, len(f) - 1)])
        await writer.drain()
        writer.close()
    elif kind == "post_reset":
        _reset(writer)
    elif kind == "post_random_frames":
        for _ in range(rng.randint(1, 20)):
            m = rng.choice(REQUESTS)
            vals = [_fit(rng.getrandbits(64), _type_of(m, i)) for i in range(len(m.names))]
            writer.write(frame(m, vals, rng.randbytes(rng.randint(0, 64)) if m.bulk else b"",
                               rid=rng.randint(0, 50)))
        writer.write(encode_header(0xFFFF, 0) + rng.randbytes(24))  # then an unknown opcode
    elif kind == "post_htod_then_reset":
        writer.write(frame(BY_NAME["DEVICE_OPEN"], [0, 0, 0, WINDOW, WINDOW_SIZE], rid=2))
        writer.write(encode(BY_NAME["MALLOC"], {"size": 8 << 20}, rid=3))
        writer.write(frame(BY_NAME["MEMCPY_HTOD"], [WINDOW, 0, 0],
                           length=BY_NAME["MEMCPY_HTOD"].size + (8 << 20)) + b"\3" * (1 << 20))
        await writer.drain()
        await asyncio.sleep(0.05)
        _reset(writer)
    elif kind == "post_bye_then_garbage":
        writer.write(encode(BY_NAME["BYE"]) + rng.randbytes(100))
    elif kind == "post_big_identity":  # a legitimate client: it must be served
        writer.write(encode(BY_NAME["STATUS"], rid=2))
        await writer.drain()
        while True:
            f = await _read_frame(reader)
            if f.msg.name == "REPLY":
                assert f.rid == 2 and f.fixed[:4] == b"\0\0\0\0", f
                break
        writer.write(encode(BY_NAME["BYE"]))
    elif kind == "post_hello_again":
        writer.write(handshake.client_hello(b"\0" * 32, _hello_identity(), None, rid=9))


async def _run_attacks(host: str, port: int, plan: list[Attack], seed: int,
                       concurrency: int = 12) -> Counter:
    sem = asyncio.Semaphore(concurrency)
    ends: Counter = Counter()

    async def one(i: int, a: Attack) -> None:
        async with sem:
            rng = random.Random(seed * 100003 + i)
            try:
                how = await attack(host, port, a.kind, rng)
            except TimeoutError:
                how = "timed out"
            ends[how] += 1
            if how in ("timed out", "daemon kept it"):
                ends[f"{how}: {a.kind}"] += 1
    await asyncio.gather(*(one(i, a) for i, a in enumerate(plan)))
    return ends


def test_daemon_survives_hostile_connections(tmp_path, fc, program, shim, capsys):
    from farcuda.interposer.cli import query_status

    seed = int(os.environ.get("FARCUDA_FUZZ_SEED", "0")) or (
        random.SystemRandom().randrange(1 << 30) if _ENV_EXAMPLES else 20240607)
    rng = random.Random(seed)
    exe = program("ci_memory")
    # A few hundred connections in seconds from one address, dozens of sessions of one tenant
    # (one pid) still ending at once, are over the default limits: here it is the malformed
    # input that is under test (tests/integration/test_limits.py covers the limits), so this
    # daemon takes them all.
    daemon = fc.start_daemon(tmp_path, "memory", config={
        "prestart": 2, "log_level": "info",
        "limits": {"connections_per_second_per_peer": 10000, "sessions_per_tenant": 1000,
                   "sessions_total": 1000}})
    try:
        # Most connections stay in the front (cheap); one in five gets a worker.
        plan = [Attack(rng.choice(_POST), True) if rng.random() < 0.2
                else Attack(rng.choice(_PRE), False) for _ in range(_ROUNDS)]
        t0 = time.monotonic()
        ends = asyncio.run(_run_attacks(daemon.host, daemon.port, plan, seed))
        took = time.monotonic() - t0
        assert daemon.proc.poll() is None, "the daemon died:\n" + daemon.log()[-3000:]
        assert ends["timed out"] == 0 and ends["daemon kept it"] == 0, ends
        assert daemon.proc.poll() is None
        # Every worker of a hostile session has ended and freed its memory.
        deadline = time.monotonic() + 10
        while True:
            status = query_status(daemon.address, None)
            if not status["tenants"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status["tenants"] == [], status["tenants"]
        r = fc.run_remote(exe, shim, daemon.address)
        assert r.returncode == 0 and "PASSED" in r.stdout, r.stdout + r.stderr
        assert daemon.proc.poll() is None
        text = daemon.log()
        assert "Traceback" not in text, text[text.index("Traceback") - 2000:][:5000]
        assert "exception was never retrieved" not in text
    finally:
        daemon.stop()
    workers = sum(1 for a in plan if a.handshake)
    report(capsys, "daemon hostile connections",
           f"{len(plan)} connections ({workers} past the handshake) in {took:.1f} s, "
           f"seed {seed}; ends: " + json.dumps(dict(sorted(ends.items())))
           + "; daemon alive, no session left, ci_memory PASSED afterwards")


# =========================================================================== (d) the C path

FP_WINDOW = WINDOW
FP_KERNELS = {1: 16, 2: 0, 3: 56, 4: 1032}  # kernel id -> parameter bytes (both devices)
FP_STREAMS = {1: 0, 2: 1, 3: 0}  # stream id -> creation flags
FP_EVENTS = (1, 2)
FP_RANGES = ((FP_WINDOW, 1 << 20), (FP_WINDOW + (4 << 20), 4096))
FP_FAST = {BY_NAME[n].op for n in ("LAUNCH", "EVENT_RECORD", "STREAM_WAIT_EVENT")}
FP_SYNC = {BY_NAME[n].op for n in ("MEMCPY_DTOH", "STREAM_SYNC", "EVENT_SYNC", "DEVICE_SYNC")}


@st.composite
def fast_frame(draw) -> bytes:
    """A frame of an opcode the C path takes, with handles, sizes and lengths that are
    sometimes right and sometimes not."""
    vdev = draw(st.sampled_from([0, 0, 0, 0, 1, 1, 2, 63, 64, 0xFFFF]))
    rid = 0
    name = draw(st.sampled_from(["LAUNCH", "LAUNCH", "LAUNCH", "EVENT_RECORD",
                                 "STREAM_WAIT_EVENT", "MEMCPY_DTOH", "STREAM_SYNC",
                                 "EVENT_SYNC", "DEVICE_SYNC"]))
    msg = BY_NAME[name]
    known = st.sampled_from([1, 2, 3, 4, 1, 0])  # hypothesis starts from the first
    handle = st.one_of(known, known, known, st.integers(0, (1 << 32) - 1))
    aux = vdev
    tail = b""
    if name == "LAUNCH" and draw(st.integers(0, 3)):  # one the C path should take
        vdev = draw(st.sampled_from([0, 1]))
        kid = draw(st.sampled_from(sorted(FP_KERNELS)))
        tail = draw(st.binary(min_size=FP_KERNELS[kid], max_size=FP_KERNELS[kid]))
        values = [kid, draw(st.sampled_from([0, *FP_STREAMS])), *[draw(dims) for _ in range(6)],
                  draw(st.integers(0, 1 << 16)), 0]
    elif name == "LAUNCH":
        kid = draw(handle)
        psize = FP_KERNELS.get(kid, draw(st.integers(0, 64)))
        psize = max(0, psize + draw(st.sampled_from([0] * 8 + [-1, 1, 4096])))
        tail = draw(st.binary(min_size=psize, max_size=psize))
        values = [kid, draw(handle), *[draw(dims) for _ in range(6)],
                  draw(st.sampled_from([0, 48, 1 << 16, (1 << 32) - 1])),
                  draw(st.sampled_from([0] * 6 + [1, 2, (1 << 32) - 1]))]
        rid = draw(st.sampled_from([0] * 9 + [3]))
    elif name == "EVENT_RECORD":
        values = [draw(handle), draw(handle), draw(st.sampled_from([0, 1, 7]))]
    elif name == "STREAM_WAIT_EVENT":
        values = [draw(handle), draw(handle), draw(st.sampled_from([0, 1]))]
        aux = draw(st.sampled_from([vdev, vdev, 0, 1, 0xFFFF]))
    elif name == "MEMCPY_DTOH":
        values = [draw(pointers), draw(sizes), draw(handle),
                  draw(st.sampled_from([0, 0, 1, 2]))]
        if draw(st.booleans()):  # in the session's memory, from a small size up
            base, size = draw(st.sampled_from(FP_RANGES))
            values[0] = base + draw(st.integers(0, size))
            values[1] = draw(st.integers(0, (64 << 10) + 1))
        rid = draw(st.integers(1, 0xFFFFFFFF))
    else:
        values = [draw(handle)] if msg.fields else []
        rid = draw(st.integers(1, 0xFFFFFFFF))
    length = None
    if draw(st.integers(0, 14)) == 0:  # a header that lies about the length
        length = draw(st.sampled_from([0, 3, msg.size - 1, msg.size + 1, (1 << 32) - 1]))
        length = max(0, length)
    return frame(msg, [_fit(x, _type_of(msg, i)) for i, x in enumerate(values)], tail, rid,
                 vdev, aux, length)


def _fp_setup(fp) -> bytes:
    """Register the fuzzer's handles with the C path; the same, as replay records."""
    rec = bytearray()
    for v in (0, 1):
        fp.device(v, FP_KERNELS, FP_STREAMS, FP_EVENTS, FP_RANGES)
        rec += b"C" + struct.pack("<I", v)
        for kid, size in FP_KERNELS.items():
            rec += b"K" + struct.pack("<III", v, kid, size)
        for sid, flags in FP_STREAMS.items():
            rec += b"S" + struct.pack("<III", v, sid, flags)
        for eid in FP_EVENTS:
            rec += b"E" + struct.pack("<II", v, eid)
        for base, size in FP_RANGES:
            rec += b"R" + struct.pack("<IQQ", v, base, size)
    return bytes(rec)


def _frames_in(data: bytes) -> list[tuple[int, int, int, int, int, bytes]]:
    """(op, rid, vdev, aux, flags, tail) of whole frames at the start of data, by their
    headers alone."""
    out, off = [], 0
    while len(data) - off >= HEADER_SIZE:
        length, op, _fl, rid, vdev, aux = struct.unpack_from("<IHHIHH", data, off)
        if len(data) - off - HEADER_SIZE < length:
            break
        body = data[off + HEADER_SIZE:off + HEADER_SIZE + length]
        out.append((op, rid, vdev, aux, len(body), body))
        off += HEADER_SIZE + length
    return out


def _fp_feed(fp, data: bytes, tally: Counter) -> None:
    """Feed ``data`` as the session does, checking each run against the frames it took."""
    launch = BY_NAME["LAUNCH"]
    off = 0
    while off < len(data):
        before = fp.rec.rec_count()
        res, reply = fp.run(data[off:])
        taken = res.consumed
        assert taken <= len(data) - off
        frames, walked = [], 0
        for fr in _frames_in(data[off:]):
            if walked == taken:
                break
            frames.append(fr)
            walked += HEADER_SIZE + fr[4]
        assert walked == taken, "the C path stopped inside a frame"
        for i, (op, rid, vdev, _aux, _n, _body) in enumerate(frames):
            last = i == len(frames) - 1
            assert vdev < 64
            if rid:
                assert last and op in FP_SYNC and res.out_len, "a request it cannot answer"
            else:
                assert op in FP_FAST, f"took opcode 0x{op:04x}"
        calls = fp.calls()[before:]
        assert [c[0] for c in calls].count("launch") == res.launches
        assert [c[0] for c in calls].count("record") == res.records
        assert [c[0] for c in calls].count("wait") == res.waits
        launched = [c for c in calls if c[0] == "launch"]
        for (_op, _rid, vdev, _aux, n, body), call in zip(
                [f for f in frames if f[0] == launch.op], launched, strict=True):
            v = struct.unpack_from(launch.fmt, body)
            assert v[9] == 0 and FP_KERNELS.get(v[0]) == n - launch.size
            assert call[1:] == (fp.func_h(vdev, v[0]), *v[2:9], fp.stream_h(vdev, v[1]),
                                body[launch.size:])
        if res.out_len:
            f = FrameReader("s2c").feed(reply)[0]
            assert f.msg.name == "REPLY" and f.rid == frames[-1][1]
            tally["replies"] += 1
        tally["launches"] += res.launches
        tally["event operations"] += res.records + res.waits
        tally["errors"] += bool(res.error)
        off += taken
        if taken:
            continue
        rest = _frames_in(data[off:])  # a frame for Python: skip it, as Python takes it
        if not rest:
            break
        off += HEADER_SIZE + rest[0][4]
        tally["left to Python"] += 1


def test_fastpath_hostile_frames(fastpath, tmp_path, capsys):
    fastpath.reset()
    setup = _fp_setup(fastpath)
    corpus = bytearray(setup)
    tally: Counter = Counter()

    @fuzz_settings(1500)
    @given(parts=st.lists(st.one_of(fast_frame(), fast_frame(), c2s_frame(), hostile_piece()),
                          min_size=1, max_size=12),
           busy=st.lists(st.sampled_from([0, 1, 2, 3]), max_size=2),
           fail=st.sampled_from([0, 0, 0, 1, 4, 7]))
    def run(parts, busy, fail):
        TRIED["fastpath streams"] += 1
        data = b"".join(parts)
        fastpath.rec.rec_reset()
        for v in (0, 1):
            for sid in busy:
                fastpath.rec.rec_busy(fastpath.ptr(fastpath.stream_h(v, sid)), 1)
        _fp_feed(fastpath, data, tally)
        if fail:  # a driver call fails now and then: the run ends, the session goes on
            fastpath.rec.rec_fail(fail, 700)
            _fp_feed(fastpath, data, tally)
        corpus.extend(b"B" + struct.pack("<Q", len(data)) + data)
    try:
        run()
    finally:
        fastpath.reset()
    assert tally["launches"] and tally["replies"] and tally["left to Python"]

    # the same corpus under the sanitizers: nothing read or written out of bounds
    driver = fastpath.sanitized_replay(tmp_path)
    path = tmp_path / "corpus.bin"
    path.write_bytes(bytes(corpus))
    r = subprocess.run([str(driver), str(path)], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
                                UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"))
    assert r.returncode == 0 and "runtime error" not in r.stderr, r.stdout + r.stderr[-5000:]
    report(capsys, "fastpath hostile frames",
           f"{TRIED['fastpath streams']} streams; " + ", ".join(
               f"{k} {v}" for k, v in sorted(tally.items()))
           + f"; replayed under ASan/UBSan: {r.stdout.strip()}")
