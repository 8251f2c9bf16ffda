"""The daemon's C path (daemon/fastpath.c) without a GPU: built against a recording stand-in of
the driver (tests/fakes/libcuda_recording.c), fed frames made by the wire's own encoder.

What it must do: execute runs of async launches and event operations exactly as the frames
say (kernel, configuration, stream, the parameter bytes unchanged), answer a synchronous
request only when nothing has to wait and the memory is the session's, and stop at the first
frame it does not vouch for, leaving it (and everything after it) to the Python session.
"""

from __future__ import annotations

import os
import socket
import struct

import pytest
from farcuda.wire import BY_NAME, FrameReader, encode, encode_header

LAUNCH = BY_NAME["LAUNCH"]
SMALL = 64 << 10


def launch(kid: int, stream: int = 0, grid=(1, 1, 1), block=(32, 1, 1), shmem: int = 0,
           params: bytes = b"", flags: int = 0, vdev: int = 0, rid: int = 0) -> bytes:
    return encode(LAUNCH, {"kernel": kid, "stream": stream, "grid": grid, "block": block,
                           "shmem": shmem, "flags": flags}, params, rid=rid, vdev=vdev)


def launch_call(fp, kid: int, stream: int = 0, grid=(1, 1, 1), block=(32, 1, 1),
                shmem: int = 0, params: bytes = b"", vdev: int = 0) -> tuple:
    return ("launch", fp.func_h(vdev, kid), *grid, *block, shmem, fp.stream_h(vdev, stream),
            params)


@pytest.fixture
def fp(fastpath):
    fastpath.reset()
    yield fastpath
    fastpath.reset()


def test_a_run_of_launches_executes_as_the_frames_say(fp):
    fp.device(kernels={1: 16, 2: 0, 3: 1032}, streams={1: 0, 2: 1})
    p1, p3 = bytes(range(16)), bytes(i * 7 & 0xFF for i in range(1032))
    data = (launch(1, 0, (2, 3, 4), (32, 2, 1), 128, p1) + launch(2, 1)
            + launch(3, 2, (65535, 1, 1), (1024, 1, 1), 0, p3))
    res, reply = fp.run(data)
    assert (res.consumed, res.launches, res.error, res.out_len) == (len(data), 3, 0, 0)
    assert fp.calls() == [("set_current", fp.CTX[0]),
                          launch_call(fp, 1, 0, (2, 3, 4), (32, 2, 1), 128, p1),
                          launch_call(fp, 2, 1),
                          launch_call(fp, 3, 2, (65535, 1, 1), (1024, 1, 1), 0, p3)]


def test_event_records_and_waits(fp):
    fp.device(streams={1: 0, 2: 0}, events=(1, 2))
    data = (encode(BY_NAME["EVENT_RECORD"], {"event": 1, "stream": 1, "flags": 0})
            + encode(BY_NAME["STREAM_WAIT_EVENT"], {"stream": 2, "event": 1, "flags": 0})
            + encode(BY_NAME["EVENT_RECORD"], {"event": 2, "stream": 0, "flags": 1}))
    res, _ = fp.run(data)
    assert (res.consumed, res.records, res.waits) == (len(data), 2, 1)
    assert fp.calls()[1:] == [("record", fp.event_h(0, 1), fp.stream_h(0, 1), 0),
                              ("wait", fp.stream_h(0, 2), fp.event_h(0, 1), 0),
                              ("record", fp.event_h(0, 2), 0, 1)]


def _others() -> dict[str, bytes]:
    """Frames the C path must leave to Python, each in a setting where a plain launch works."""
    m = BY_NAME
    return {
        "unknown kernel": launch(7),
        "kernel id past the table": launch(1 << 20),
        "short parameters": launch(1, params=b"\0" * 15),
        "long parameters": launch(1, params=b"\0" * 17),
        "cooperative": launch(1, params=b"\0" * 16, flags=1),
        "unknown stream": launch(1, 9, params=b"\0" * 16),
        "destroyed stream": launch(1, 3, params=b"\0" * 16),
        "device never opened": launch(1, params=b"\0" * 16, vdev=5),
        "device past the table": launch(1, params=b"\0" * 16, vdev=200),
        "a synchronous launch": launch(1, params=b"\0" * 16, rid=4),
        "an async copy": encode(m["MEMCPY_HTOD"], {"dst": 1 << 40, "stream": 0, "flags": 0},
                                b"\1" * 8),
        "another opcode": encode(m["MEMSET"], {"dst": 1 << 40, "size": 4, "value": 0,
                                               "stream": 0, "elem": 1}),
        "a request with a reply": encode(m["MALLOC"], {"size": 4096}, rid=5),
        "unknown event": encode(m["EVENT_RECORD"], {"event": 9, "stream": 0, "flags": 0}),
        "destroyed event": encode(m["EVENT_RECORD"], {"event": 2, "stream": 0, "flags": 0}),
        "another device's event": encode(m["STREAM_WAIT_EVENT"], {"stream": 1, "event": 1},
                                         aux=1),
        "a launch shorter than its fixed part": encode_header(LAUNCH.op, 12) + b"\0" * 12,
        "an event record of the wrong length": encode_header(BY_NAME["EVENT_RECORD"].op, 16)
        + b"\0" * 16,
    }


@pytest.mark.parametrize("what", sorted(_others()))
def test_the_run_stops_where_python_takes_over(fp, what):
    fp.device(kernels={1: 16}, streams={1: 0, 3: 0}, events=(1, 2))
    fp.lib.fp_drop_stream(0, 3)
    fp.lib.fp_drop_event(0, 2)
    good = launch(1, 1, params=b"\x11" * 16)
    data = good + _others()[what] + good
    res, _ = fp.run(data)
    assert (res.consumed, res.launches, res.error, res.out_len) == (len(good), 1, 0, 0)
    assert fp.calls()[-1] == launch_call(fp, 1, 1, params=b"\x11" * 16)


@pytest.mark.parametrize("cut", [1, 15, 16, 17, 55, 56 + 15])
def test_an_incomplete_frame_is_left_for_later(fp, cut):
    """The buffer ends inside the second frame (its header, or claimed bytes not received)."""
    fp.device(kernels={1: 16})
    good = launch(1, params=b"\x22" * 16)
    res, _ = fp.run(good + good[:cut])
    assert (res.consumed, res.launches) == (len(good), 1)
    lying = encode_header(LAUNCH.op, 1 << 30) + good[16:]
    res, _ = fp.run(good + lying)
    assert (res.consumed, res.launches) == (len(good), 1)


def test_a_driver_error_ends_the_run_with_its_frame(fp):
    fp.device(kernels={1: 0})
    fp.rec.rec_fail(1, 700)  # cuLaunchKernel: cudaErrorIllegalAddress's driver twin
    data = launch(1) + launch(1)
    res, _ = fp.run(data)
    assert (res.consumed, res.launches) == (len(launch(1)), 1)
    assert (res.error, res.error_op, res.error_vdev) == (700, LAUNCH.op, 0)


def test_contexts_are_switched_only_when_needed(fp):
    fp.device(0, kernels={1: 0})
    fp.device(1, kernels={1: 0})
    fp.lib.fp_note_current(fp.ptr(fp.CTX[1]))  # the Python side made device 1's current
    data = launch(1, vdev=1) + launch(1, vdev=0) + launch(1, vdev=0) + launch(1, vdev=1)
    res, _ = fp.run(data)
    assert res.launches == 4
    assert [c for c in fp.calls() if c[0] == "set_current"] == [("set_current", fp.CTX[0]),
                                                                ("set_current", fp.CTX[1])]
    fp.rec.rec_fail(2, 999)  # cuCtxSetCurrent fails: nothing runs
    fp.lib.fp_note_current(fp.ffi.NULL)
    res, _ = fp.run(launch(1))
    assert (res.consumed, res.launches) == (0, 0)


# ---------------------------------------------------------------- synchronous requests

BASE = 0x2000_0000_0000


def _reply(raw: bytes):
    frames = FrameReader("s2c").feed(raw)
    assert len(frames) == 1 and frames[0].msg.name == "REPLY"
    status, fixed_len = struct.unpack_from("<II", frames[0].fixed)
    assert fixed_len == 0
    return frames[0], status


def dtoh(src: int, size: int, stream: int = 0, flags: int = 0, rid: int = 7,
         vdev: int = 0) -> bytes:
    return encode(BY_NAME["MEMCPY_DTOH"], {"src": src, "size": size, "stream": stream,
                                           "flags": flags}, rid=rid, vdev=vdev)


def test_a_small_copy_from_an_idle_stream_is_answered_here(fp):
    fp.device(kernels={1: 0}, streams={1: 0}, ranges=[(BASE, 4 << 20)])
    src, n = BASE + 4096 + 3, 1000
    data = launch(1) + dtoh(src, n, 1) + launch(1)
    res, raw = fp.run(data)
    assert res.consumed == len(launch(1)) + len(dtoh(src, n, 1))  # the run ends at the reply
    assert (res.launches, res.sync_op, res.sync_vdev, res.out_len) == (
        1, BY_NAME["MEMCPY_DTOH"].op, 0, 24 + n)
    f, status = _reply(raw)
    assert (f.rid, f.vdev, status) == (7, 0, 0)
    assert f.tail == bytes(fp.rec.rec_byte_at(src + i) for i in range(n))
    calls = fp.calls()
    small = int(fp.ffi.cast("uintptr_t", fp.small[0]))
    # the stream is idle, and so is the legacy stream a blocking stream waits for
    assert calls[2:] == [("stream_query", fp.stream_h(0, 1)), ("stream_query", 0),
                         ("dtoh", small, src, n, fp.stream_h(0, 1)),
                         ("stream_sync", fp.stream_h(0, 1))]


@pytest.mark.parametrize("what", ["busy stream", "busy legacy stream", "outside the memory",
                                  "past the end of an allocation", "too large", "empty",
                                  "deferred", "no reply buffer", "reply buffer too small",
                                  "unknown stream"])
def test_a_copy_that_might_wait_or_is_not_the_sessions_goes_to_python(fp, what):
    fp.device(streams={1: 0}, ranges=[(BASE, 1 << 20)])
    src, n, stream, flags, out, cap = BASE, 512, 1, 0, True, fp.OUT_CAP
    if what == "busy stream":
        fp.rec.rec_busy(fp.ptr(fp.stream_h(0, 1)), 1)
    elif what == "busy legacy stream":
        fp.rec.rec_busy(fp.ffi.NULL, 1)
    elif what == "outside the memory":
        src = BASE - 512
    elif what == "past the end of an allocation":
        src = BASE + (1 << 20) - 100
    elif what == "too large":
        n = SMALL + 1
    elif what == "empty":
        n = 0
    elif what == "deferred":
        flags = 1
    elif what == "no reply buffer":
        out = False
    elif what == "reply buffer too small":
        cap = 24 + n - 1
    elif what == "unknown stream":
        stream = 4
    res, raw = fp.run(dtoh(src, n, stream, flags), out=out, out_cap=cap)
    assert (res.consumed, res.out_len) == (0, 0)
    assert not [c for c in fp.calls() if c[0] == "dtoh"]


def sync(name: str, rid: int = 9, vdev: int = 0, **values) -> bytes:
    return encode(BY_NAME[name], values, rid=rid, vdev=vdev)


def test_synchronizations_of_idle_work_are_answered_here(fp):
    fp.device(streams={1: 0, 2: 1}, events=(1,))
    for frame, want in [(sync("STREAM_SYNC", stream=1), ("stream_sync", fp.stream_h(0, 1))),
                        (sync("STREAM_SYNC", stream=0), ("stream_sync", 0)),
                        (sync("EVENT_SYNC", event=1), ("event_sync", fp.event_h(0, 1))),
                        (sync("DEVICE_SYNC"), ("ctx_sync",))]:
        fp.rec.rec_reset()
        res, raw = fp.run(frame)
        assert res.consumed == len(frame) and res.out_len == 24, frame
        f, status = _reply(raw)
        assert (f.rid, status) == (9, 0)
        assert fp.calls()[-1] == want


def test_what_blocks_a_synchronization_sends_it_to_python(fp):
    fp.device(streams={1: 0, 2: 1}, events=(1,))
    cases = [  # (busy handles, frame, answered here)
        ([fp.stream_h(0, 1)], sync("STREAM_SYNC", stream=1), False),
        ([0], sync("STREAM_SYNC", stream=1), False),  # a blocking stream waits for legacy
        ([0], sync("STREAM_SYNC", stream=2), True),  # a non-blocking one does not
        ([fp.stream_h(0, 1)], sync("STREAM_SYNC", stream=0), False),  # legacy waits for blocking
        ([fp.stream_h(0, 2)], sync("STREAM_SYNC", stream=0), True),  # but not for non-blocking
        ([fp.event_h(0, 1)], sync("EVENT_SYNC", event=1), False),
        ([fp.stream_h(0, 2)], sync("DEVICE_SYNC"), False),
        ([], sync("EVENT_SYNC", event=5), False),
    ]
    for busy, frame, here in cases:
        fp.rec.rec_reset()
        for h in busy:
            fp.rec.rec_busy(fp.ptr(h), 1)
        res, _ = fp.run(frame)
        assert (res.consumed == len(frame)) == here, (busy, frame)


def test_the_drivers_status_is_the_replys(fp):
    fp.device(streams={1: 0})
    fp.rec.rec_fail(7, 719)  # cuStreamSynchronize reports a launch failure
    res, raw = fp.run(sync("STREAM_SYNC", stream=1))
    assert _reply(raw)[1] == 719


def test_the_reply_goes_straight_to_an_idle_socket(fp):
    fp.device(streams={1: 0})
    a, b = socket.socketpair()
    r, w = os.pipe()
    try:
        res, raw = fp.run(sync("STREAM_SYNC", stream=1), sock=a.fileno(), pipe=r)
        assert res.out_sent == res.out_len == 24
        assert b.recv(64) == raw
        os.write(w, b"printf output")  # device printf output waits: it must go first
        res, raw = fp.run(sync("STREAM_SYNC", stream=1), sock=a.fileno(), pipe=r)
        assert (res.out_sent, res.out_len) == (0, 24)
    finally:
        a.close()
        b.close()
        os.close(r)
        os.close(w)


def htod(dst: int, data: bytes, stream: int = 0, flags: int = 0, rid: int = 8,
         vdev: int = 0) -> bytes:
    return encode(BY_NAME["MEMCPY_HTOD"], {"dst": dst, "stream": stream, "flags": flags}, data,
                  rid=rid, vdev=vdev)


def test_a_small_synchronous_copy_to_the_device_is_answered_here(fp):
    fp.device(kernels={1: 0}, streams={1: 0}, ranges=[(BASE, 4 << 20)])
    dst, data = BASE + 4096 + 5, bytes(i * 13 & 0xFF for i in range(SMALL))
    frame = htod(dst, data, 1)
    res, raw = fp.run(launch(1) + frame + launch(1))
    assert res.consumed == len(launch(1)) + len(frame)  # the run ends at the reply
    assert (res.launches, res.sync_op, res.out_len) == (1, BY_NAME["MEMCPY_HTOD"].op, 24)
    f, status = _reply(raw)
    assert (f.rid, status, bytes(f.tail or b"")) == (8, 0, b"")
    small = int(fp.ffi.cast("uintptr_t", fp.small[0]))
    # through the bounce buffer, complete before the reply (the buffer is free again)
    assert fp.calls()[2:] == [("stream_query", fp.stream_h(0, 1)), ("stream_query", 0),
                              ("htod", dst, len(data), fp.stream_h(0, 1), small, data),
                              ("stream_sync", fp.stream_h(0, 1))]


@pytest.mark.parametrize("what", ["busy stream", "busy legacy stream", "outside the memory",
                                  "past the end of an allocation", "too large", "empty",
                                  "flags", "no reply buffer", "unknown stream", "async"])
def test_a_copy_to_the_device_that_might_wait_or_is_not_the_sessions_goes_to_python(fp, what):
    fp.device(streams={1: 0}, ranges=[(BASE, 1 << 20)])
    dst, n, stream, flags, out, rid = BASE, 512, 1, 0, True, 8
    if what == "busy stream":
        fp.rec.rec_busy(fp.ptr(fp.stream_h(0, 1)), 1)
    elif what == "busy legacy stream":
        fp.rec.rec_busy(fp.ffi.NULL, 1)
    elif what == "outside the memory":
        dst = BASE - 512
    elif what == "past the end of an allocation":
        dst = BASE + (1 << 20) - 100
    elif what == "too large":
        n = SMALL + 1
    elif what == "empty":
        n = 0
    elif what == "flags":
        flags = 1
    elif what == "no reply buffer":
        out = False
    elif what == "unknown stream":
        stream = 4
    elif what == "async":
        rid = 0
    res, _ = fp.run(htod(dst, b"\7" * n, stream, flags, rid), out=out)
    assert (res.consumed, res.out_len) == (0, 0)
    assert not [c for c in fp.calls() if c[0] == "htod"]


def test_work_that_completes_within_the_spin_is_waited_for_here(fp):
    """A launch and its synchronization: the kernel is done within microseconds."""
    fp.device(streams={1: 0}, events=(1,), ranges=[(BASE, 1 << 20)])
    fp.lib.fp_set_spin(10**9)  # (it ends as soon as the work is done)
    try:
        for busy, frame, done in [
                (fp.stream_h(0, 1), sync("STREAM_SYNC", stream=1), ("stream_sync",)),
                (0, sync("STREAM_SYNC", stream=1), ("stream_sync",)),
                (fp.stream_h(0, 1), sync("DEVICE_SYNC"), ("ctx_sync",)),
                (fp.event_h(0, 1), sync("EVENT_SYNC", event=1), ("event_sync",)),
                (fp.stream_h(0, 1), dtoh(BASE, 64, 1), ("dtoh", "stream_sync")),
                (0, htod(BASE, b"\3" * 64, 0), ("htod", "stream_sync"))]:
            fp.rec.rec_reset()
            fp.rec.rec_busy_for(fp.ptr(busy), 5)  # busy for its next five queries
            res, raw = fp.run(frame)
            assert res.consumed == len(frame), frame
            assert _reply(raw)[1] == 0
            calls = [c[0] for c in fp.calls()]
            assert calls.count("stream_query") + calls.count("event_query") >= 6, calls
            assert tuple(c for c in calls if not c.endswith("query")
                         and c != "set_current") == done
    finally:
        fp.lib.fp_set_spin(60_000)


def test_queries_are_answered_here(fp):
    fp.device(streams={1: 0}, events=(1,))
    a, b = socket.socketpair()
    try:
        for frame, handle, kind in [(sync("STREAM_QUERY", stream=1), fp.stream_h(0, 1),
                                     "stream_query"),
                                    (sync("STREAM_QUERY", stream=0), 0, "stream_query"),
                                    (sync("EVENT_QUERY", event=1), fp.event_h(0, 1),
                                     "event_query")]:
            for busy, want in ((False, 0), (True, 600)):  # cudaErrorNotReady: an answer
                fp.rec.rec_reset()
                fp.rec.rec_busy(fp.ptr(handle), int(busy))
                res, raw = fp.run(frame, sock=a.fileno())
                assert res.consumed == len(frame) and res.sync_status == want, frame
                assert _reply(raw)[1] == want
                assert res.out_sent == 24 and b.recv(64) == raw  # sent at once, either way
                assert fp.calls()[-1] == (kind, handle)
                fp.rec.rec_busy(fp.ptr(handle), 0)
        fp.rec.rec_fail(6, 700)  # cuStreamQuery reports a fault: the session sends it after
        res, raw = fp.run(sync("STREAM_QUERY", stream=1), sock=a.fileno())
        assert (_reply(raw)[1], res.out_sent) == (700, 0)
        for frame in (sync("STREAM_QUERY", stream=4), sync("EVENT_QUERY", event=3)):
            assert fp.run(frame)[0].consumed == 0  # unknown handles: Python says so
    finally:
        a.close()
        b.close()


# -- virtual devices that share a context: stream 0 is each device's own stream, and the
# legacy stream's order against the device's blocking streams is kept by the Python side


def test_devices_of_a_shared_context_launch_into_their_own_stream_0(fp):
    fp.device(0, kernels={1: 0}, shared=True)
    fp.device(1, kernels={1: 0}, shared=True)
    data = launch(1, vdev=0) + launch(1, vdev=1) + launch(1, vdev=0)
    res, _ = fp.run(data)
    assert (res.consumed, res.launches) == (len(data), 3)
    legacy = [c[-2] for c in fp.calls() if c[0] == "launch"]
    assert legacy == [fp.legacy_h(0), fp.legacy_h(1), fp.legacy_h(0)]
    # one context: made current once, never switched between the devices
    assert [c for c in fp.calls() if c[0] == "set_current"] == [("set_current", fp.CTX[0])]


def test_the_legacy_order_of_a_shared_context_is_left_to_python(fp):
    fp.device(0, kernels={1: 0}, streams={1: 0, 2: 1}, events=(1,), shared=True)
    m = BY_NAME
    record0 = encode(m["EVENT_RECORD"], {"event": 1, "stream": 0, "flags": 0})
    wait0 = encode(m["STREAM_WAIT_EVENT"], {"stream": 0, "event": 1, "flags": 0})
    for frame, here in [(launch(1, 0), False),  # the device has a blocking stream
                        (launch(1, 1), False),  # a blocking stream
                        (launch(1, 2), True),  # a non-blocking one keeps no legacy order
                        (record0, False), (wait0, False)]:
        res, _ = fp.run(frame)
        assert (res.consumed == len(frame)) == here, frame
    fp.lib.fp_drop_stream(0, 1)  # no blocking stream left: stream 0 orders with nothing
    for frame in (launch(1, 0), record0, wait0):
        res, _ = fp.run(frame)
        assert res.consumed == len(frame), frame
    fp.lib.fp_set_stream(0, 3, fp.ptr(fp.stream_h(0, 3)), 0)  # a blocking one again
    res, _ = fp.run(launch(1, 0))
    assert res.consumed == 0
    fp.lib.fp_set_stream(0, 3, fp.ptr(fp.stream_h(0, 3)), 1)  # registered again, non-blocking
    res, _ = fp.run(launch(1, 0))
    assert res.consumed == len(launch(1, 0))


def test_synchronizations_in_a_shared_context_are_the_devices_own(fp):
    fp.device(0, streams={1: 0}, shared=True)
    fp.device(1, shared=True)
    for frame, want in [(sync("STREAM_SYNC", stream=0), ("stream_sync", fp.legacy_h(0))),
                        (sync("DEVICE_SYNC"), ("stream_sync", fp.legacy_h(0))),
                        (sync("DEVICE_SYNC", vdev=1), ("stream_sync", fp.legacy_h(1)))]:
        fp.rec.rec_reset()
        res, raw = fp.run(frame)
        assert res.consumed == len(frame) and _reply(raw)[1] == 0, frame
        assert fp.calls()[-1] == want  # never cuCtxSynchronize: it would wait for the others
    cases = [  # (busy handles, frame, answered here)
        ([fp.legacy_h(1)], sync("DEVICE_SYNC"), True),  # another device's work
        ([fp.legacy_h(0)], sync("DEVICE_SYNC"), False),
        ([fp.stream_h(0, 1)], sync("DEVICE_SYNC"), False),
        ([fp.legacy_h(0)], sync("STREAM_SYNC", stream=1), False),  # blocking waits for legacy
        ([fp.stream_h(0, 1)], sync("STREAM_SYNC", stream=0), False),
        ([0], sync("STREAM_SYNC", stream=0), True),  # the context's NULL stream is no one's
    ]
    for busy, frame, here in cases:
        fp.rec.rec_reset()
        for h in busy:
            fp.rec.rec_busy(fp.ptr(h), 1)
        res, _ = fp.run(frame)
        assert (res.consumed == len(frame)) == here, (busy, frame)


def test_copies_and_queries_in_a_shared_context_use_the_devices_own_streams(fp):
    """The synchronous requests of the C path on devices of a shared context: each waits for
    what its stream implicitly waits for on its own device (the legacy order the Python side
    restores), never for another device's streams or the context's NULL stream, and leaves
    nothing queued behind it."""
    fp.device(0, streams={1: 0, 2: 1}, events=(1,), ranges=[(BASE, 1 << 20)], shared=True)
    fp.device(1, ranges=[(BASE + (1 << 20), 1 << 20)], shared=True)
    small = int(fp.ffi.cast("uintptr_t", fp.small[0]))
    data = b"\5" * 64
    for frame, stream, what in [(htod(BASE, data, 0), fp.legacy_h(0), "htod"),
                                (htod(BASE, data, 1), fp.stream_h(0, 1), "htod"),
                                (dtoh(BASE, 64, 2), fp.stream_h(0, 2), "dtoh")]:
        fp.rec.rec_reset()
        for h in (0, fp.legacy_h(1)):  # the context's NULL stream, another device's stream 0
            fp.rec.rec_busy(fp.ptr(h), 1)
        res, raw = fp.run(frame)
        assert res.consumed == len(frame) and _reply(raw)[1] == 0, frame
        copy = [c for c in fp.calls() if c[0] in ("htod", "dtoh")]
        if what == "htod":
            assert copy == [("htod", BASE, 64, stream, small, data)]
        else:
            assert copy == [("dtoh", small, BASE, 64, stream)]
        assert fp.calls()[-1] == ("stream_sync", stream)  # complete before the reply
        assert not [c for c in fp.calls() if c[0] == "ctx_sync"]
    cases = [  # (busy handle, frame): the legacy order keeps it waiting, so Python takes it
        (fp.stream_h(0, 1), htod(BASE, data, 0)),  # stream 0 waits for a blocking stream
        (fp.legacy_h(0), htod(BASE, data, 1)),  # a blocking stream waits for stream 0
        (fp.stream_h(0, 1), dtoh(BASE, 64, 0)),
        (fp.legacy_h(0), sync("STREAM_SYNC", stream=1)),
    ]
    for busy, frame in cases:
        fp.rec.rec_reset()
        fp.rec.rec_busy(fp.ptr(busy), 1)
        res, _ = fp.run(frame)
        assert (res.consumed, res.out_len) == (0, 0), (busy, frame)
        assert not [c for c in fp.calls() if c[0] in ("htod", "dtoh", "stream_sync")]
    fp.rec.rec_reset()
    fp.rec.rec_busy(fp.ptr(fp.legacy_h(0)), 1)  # a non-blocking stream waits for nothing
    res, _ = fp.run(htod(BASE, data, 2))
    assert res.consumed == len(htod(BASE, data, 2))
    fp.rec.rec_reset()
    for frame, handle, kind in [(sync("STREAM_QUERY", stream=0), fp.legacy_h(0), "stream_query"),
                                (sync("STREAM_QUERY", stream=1), fp.stream_h(0, 1),
                                 "stream_query"),
                                (sync("EVENT_QUERY", event=1), fp.event_h(0, 1), "event_query")]:
        for busy, want in ((False, 0), (True, 600)):
            fp.rec.rec_busy(fp.ptr(handle), int(busy))
            res, raw = fp.run(frame)
            assert res.consumed == len(frame) and _reply(raw)[1] == want, frame
            assert fp.calls()[-1] == (kind, handle)  # the device's own stream 0, not NULL
            fp.rec.rec_busy(fp.ptr(handle), 0)
    # a copy or a query answered here changes nothing of the legacy order Python keeps:
    # async work in stream 0 of a device with a blocking stream still goes to Python
    res, _ = fp.run(htod(BASE, data, 0) + launch(1, 0))
    assert (res.consumed, res.launches) == (len(htod(BASE, data, 0)), 0)


def test_spinning_synchronizations_in_a_shared_context_wait_for_the_devices_own_work(fp):
    fp.device(0, streams={1: 0}, events=(1,), ranges=[(BASE, 1 << 20)], shared=True)
    fp.device(1, shared=True)
    fp.lib.fp_set_spin(10**9)  # (it ends as soon as the work is done)
    try:
        for busy, frame, done in [
                (fp.stream_h(0, 1), sync("STREAM_SYNC", stream=0), ("stream_sync",)),
                (fp.legacy_h(0), sync("STREAM_SYNC", stream=1), ("stream_sync",)),
                (fp.stream_h(0, 1), sync("DEVICE_SYNC"), ("stream_sync",)),
                (fp.legacy_h(0), sync("DEVICE_SYNC"), ("stream_sync",)),
                (fp.stream_h(0, 1), htod(BASE, b"\3" * 64, 0), ("htod", "stream_sync")),
                (fp.legacy_h(0), dtoh(BASE, 64, 1), ("dtoh", "stream_sync"))]:
            fp.rec.rec_reset()
            fp.rec.rec_busy_for(fp.ptr(busy), 5)  # busy for its next five queries
            res, raw = fp.run(frame)
            assert res.consumed == len(frame), (busy, frame)
            assert _reply(raw)[1] == 0
            calls = [c[0] for c in fp.calls()]
            assert calls.count("stream_query") >= 6, calls
            assert tuple(c for c in calls if not c.endswith("query")
                         and c != "set_current") == done  # never cuCtxSynchronize
        # another device's work, or the context's NULL stream, is not waited for at all
        fp.lib.fp_set_spin(60_000)
        for h in (fp.legacy_h(1), 0):
            fp.rec.rec_reset()
            fp.rec.rec_busy(fp.ptr(h), 1)
            res, raw = fp.run(sync("DEVICE_SYNC"))
            assert res.consumed == len(sync("DEVICE_SYNC")) and _reply(raw)[1] == 0
            assert [c for c in fp.calls() if c[0] == "stream_query"] == [
                ("stream_query", fp.legacy_h(0)), ("stream_query", fp.stream_h(0, 1))]
            fp.rec.rec_busy(fp.ptr(h), 0)
    finally:
        fp.lib.fp_set_spin(60_000)


class _Session:
    """What CPath.run uses of a Session, before the session's first kernel ran."""

    def __init__(self, fp, sock: int, pipe: int) -> None:
        from collections import Counter
        from types import SimpleNamespace
        self.d2h = None
        self.transport = SimpleNamespace(get_write_buffer_size=lambda: 0)
        self._sock_fd, self._output_fd, self._may_print = sock, pipe, False
        self.counts, self.errors = Counter(), Counter()
        self.backend = SimpleNamespace(context_unknown=lambda: None)
        self.round_trips = self.bytes_out = 0
        self.busy = SimpleNamespace(ns=0)
        self.written: list[bytes] = []
        self.pipe = pipe

    def _clock(self, vdev):
        return None

    def _fault(self, vdev, status):
        raise AssertionError(f"fault {status}")

    def _flush_output(self) -> None:
        if self._may_print:
            self.written.append(b"STDOUT " + os.read(self.pipe, 1 << 16))

    def _write(self, data: bytes) -> None:
        self.written.append(bytes(data))


def test_output_of_the_first_kernels_goes_before_the_reply_of_their_synchronization(fp):
    """The first kernels of a session and the synchronization behind them, in one run: the
    printf output they left in the pipe goes first, so the reply is not sent by the C path."""
    from farcuda.daemon.session.fast import CPath
    fp.device(kernels={1: 0})
    a, b = socket.socketpair()
    r, w = os.pipe()
    try:
        s = _Session(fp, a.fileno(), r)
        cpath = CPath(s, (fp.ffi, fp.lib))
        os.write(w, b"device: hello\n")  # as the driver prints while it synchronizes
        data = bytearray(launch(1) + sync("DEVICE_SYNC"))
        assert cpath.run(data, 0, len(data)) == len(data)
        assert s._may_print
        assert s.written[0] == b"STDOUT device: hello\n"
        _, status = _reply(s.written[1])
        assert status == 0
        b.setblocking(False)
        with pytest.raises(BlockingIOError):
            b.recv(64)  # nothing went ahead of the output
    finally:
        a.close()
        b.close()
        os.close(r)
        os.close(w)
