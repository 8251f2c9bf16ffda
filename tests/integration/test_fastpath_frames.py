"""The daemon's C path fed the frames real programs send.

An nvcc-built program runs through the shim against the in-memory daemon, with a proxy in
between that keeps every byte of both directions. Those frames are then replayed, one at a
time and in order, into daemon/fastpath.c built against the recording stand-in of the driver,
with handles registered as the CUDA backend registers them (contexts at DEVICE_OPEN, kernels
at MODULE_LOAD, streams and events at their creation, the session's memory from the daemon's
replies). Each frame the C path is meant to take must be executed exactly as the Python
session decodes it; every other frame must be left to Python untouched.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections import Counter

import pytest
from farcuda.wire import BY_NAME, FrameReader, fatbin

M = BY_NAME
FAST = {M["LAUNCH"].op, M["EVENT_RECORD"].op, M["STREAM_WAIT_EVENT"].op}
SYNC = {M[n].op for n in ("MEMCPY_DTOH", "MEMCPY_HTOD", "STREAM_SYNC", "EVENT_SYNC",
                          "DEVICE_SYNC", "STREAM_QUERY", "EVENT_QUERY")}


class RecordingProxy:
    """One TCP connection relayed to the daemon; every byte of each direction is kept."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.c2s = bytearray()
        self.s2c = bytearray()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with self.listener.accept()[0] as client, socket.create_connection(self.target) as server:
            pumps = [threading.Thread(target=self._pump, args=(src, dst, keep), daemon=True)
                     for src, dst, keep in ((client, server, self.c2s),
                                            (server, client, self.s2c))]
            for t in pumps:
                t.start()
            for t in pumps:
                t.join()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, keep: bytearray) -> None:
        try:
            while data := src.recv(1 << 16):
                keep += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._thread.join(10)
        self.listener.close()


def _frames(data: bytes, accept: str) -> list:
    """Every frame of one direction, each with its raw bytes."""
    reader = FrameReader(accept)
    out, off = [], 0
    for f in reader.feed(data):
        n = 16 + f.msg.size + f.size_of_tail
        out.append((f, data[off:off + n]))
        off += n
    return out


def _replies(s2c: bytes) -> dict[int, bytes]:
    """request id -> the fixed fields of its REPLY (successful ones only)."""
    out = {}
    for f, _raw in _frames(s2c, "s2c"):
        if f.msg.name == "REPLY":
            status, flen = struct.unpack_from("<II", f.fixed)
            if status == 0:
                out[f.rid] = bytes(f.tail or b"")[:flen]
    return out


def replay(fp, c2s: bytes, s2c: bytes) -> Counter:
    """Feed the session's frames to the C path one by one; returns what it did."""
    replies = _replies(s2c)
    kernels: dict[tuple[int, int], int] = {}  # (vdev, kid) -> parameter bytes
    ranges: dict[tuple[int, int], int] = {}  # (vdev, base) -> size
    streams: dict[tuple[int, int], int] = {}  # (vdev, sid) -> flags
    events: set[tuple[int, int]] = set()
    tally: Counter = Counter()
    for f, raw in _frames(c2s, "c2s")[1:]:  # after the HELLO
        v, name = f.vdev, f.msg.name
        values = f.as_dict()
        # the registrations CudaDevice makes as the Python session executes these frames
        if name == "DEVICE_OPEN" and f.rid in replies:
            fp.device(v)
        elif name == "STREAM_CREATE":
            fp.lib.fp_set_stream(v, values["stream"], fp.ptr(fp.stream_h(v, values["stream"])),
                                 values["flags"] & 1)
            streams[(v, values["stream"])] = values["flags"] & 1
        elif name == "STREAM_DESTROY":
            fp.lib.fp_drop_stream(v, values["stream"])
            streams.pop((v, values["stream"]), None)
        elif name == "EVENT_CREATE":
            fp.lib.fp_set_event(v, values["event"], fp.ptr(fp.event_h(v, values["event"])))
            events.add((v, values["event"]))
        elif name == "EVENT_DESTROY":
            fp.lib.fp_drop_event(v, values["event"])
            events.discard((v, values["event"]))
        elif name == "MODULE_LOAD" and f.rid in replies:
            tail = bytes(f.tail)
            size = fatbin.fatbin_size(tail)
            layouts = fatbin.kernel_layouts(tail[:size])
            for kid, kname in json.loads(tail[size:])["kernels"]:
                if kname in layouts:
                    kernels[(v, kid)] = layouts[kname].param_size
                    fp.lib.fp_set_kernel(v, kid, fp.ptr(fp.func_h(v, kid)),
                                         layouts[kname].param_size)
        elif name in ("MALLOC", "MALLOC_ASYNC") and f.rid in replies and values["size"]:
            (ptr,) = struct.unpack_from("<Q", replies[f.rid])
            fp.lib.fp_range_add(v, ptr, values["size"])
            ranges[(v, ptr)] = values["size"]
        elif name == "SUBALLOC":  # a client-side sub-allocation: the daemon tracks it
            size = -(-values["size"] // 512) * 512
            fp.lib.fp_range_add(v, values["ptr"], size)
            ranges[(v, values["ptr"])] = size
        elif name in ("FREE", "FREE_ASYNC", "SUBFREE"):
            fp.lib.fp_range_remove(f.aux if name == "FREE_ASYNC" else v, values["ptr"])
            ranges.pop((v, values["ptr"]), None)
        elif name == "DEVICE_RESET":
            pytest.skip("a device reset: the replay does not model a new context")

        fp.rec.rec_reset()
        res, reply = fp.run(raw)
        calls = fp.calls()
        taken = res.consumed == len(raw)
        assert res.consumed in (0, len(raw)), name
        if f.op in FAST and not f.rid:
            if name == "LAUNCH":
                want = (values["flags"] == 0 and kernels.get((v, values["kernel"]))
                        == f.size_of_tail and (v, values["stream"]) in streams | {(v, 0): 0})
            elif name == "EVENT_RECORD":
                want = (v, values["event"]) in events and (
                    values["stream"] == 0 or (v, values["stream"]) in streams)
            else:
                want = f.aux == v and (v, values["event"]) in events and (
                    values["stream"] == 0 or (v, values["stream"]) in streams)
            assert taken == want, (name, values, res.consumed)
            if not taken:
                tally[f"{name} left to Python"] += 1
                continue
            last = calls[-1]
            s = fp.stream_h(v, values["stream"])
            if name == "LAUNCH":
                assert last == ("launch", fp.func_h(v, values["kernel"]),
                                *(values[f"grid{i}"] for i in range(3)),
                                *(values[f"block{i}"] for i in range(3)), values["shmem"], s,
                                bytes(f.tail or b""))
            elif name == "EVENT_RECORD":
                assert last == ("record", fp.event_h(v, values["event"]), s, values["flags"])
            else:
                assert last == ("wait", s, fp.event_h(v, values["event"]), values["flags"])
            tally[f"{name} executed"] += 1
        elif f.op in SYNC and f.rid:
            if name == "MEMCPY_DTOH":
                src, n = values["src"], values["size"]
                inside = any(vv == v and b <= src and src + n <= b + sz
                             for (vv, b), sz in ranges.items())
                want = values["flags"] == 0 and 0 < n <= fp.SMALL and inside and (
                    values["stream"] == 0 or (v, values["stream"]) in streams)
                assert taken == want, (values, ranges)
                if taken:
                    assert [c for c in calls if c[0] == "dtoh"][0][2:4] == (src, n)
                    assert reply[24:] == bytes(fp.rec.rec_byte_at(src + i) for i in range(n))
            elif name == "MEMCPY_HTOD":
                dst, n = values["dst"], f.size_of_tail
                inside = any(vv == v and b <= dst and dst + n <= b + sz
                             for (vv, b), sz in ranges.items())
                want = values["flags"] == 0 and 0 < n <= fp.SMALL and inside and (
                    values["stream"] == 0 or (v, values["stream"]) in streams)
                assert taken == want, (values, ranges)
                if taken:
                    (copy,) = [c for c in calls if c[0] == "htod"]
                    assert (copy[1], copy[2], copy[5]) == (dst, n, bytes(f.tail))
            elif not taken:  # every stream is idle in the replay: only unknown handles stay
                known = ((v, values["event"]) in events if "event" in values
                         else values["stream"] == 0 or (v, values["stream"]) in streams)
                assert name in ("EVENT_SYNC", "STREAM_SYNC", "STREAM_QUERY", "EVENT_QUERY") \
                    and not known, (name, values)
            if taken:
                status, _ = struct.unpack_from("<II", reply, 16)
                assert struct.unpack_from("<I", reply, 8)[0] == f.rid and status == 0
                tally[f"{name} answered"] += 1
            else:
                tally[f"{name} left to Python"] += 1
        else:
            assert not taken and not calls, name
            tally["other frames"] += 1
    return tally


@pytest.mark.parametrize("name", ["ci_launch", "ci_streams", "ci_memory", "ci_graph"])
def test_real_frames_through_the_c_path(name, program, shim, memory_daemon, fastpath, fc,
                                        capsys):
    exe = program(name)
    proxy = RecordingProxy((memory_daemon.host, memory_daemon.port))
    try:
        r = fc.run_remote(exe, shim, proxy.address)
    finally:
        proxy.close()
    assert r.returncode == 0, r.stdout + r.stderr
    fastpath.reset()
    try:
        tally = replay(fastpath, bytes(proxy.c2s), bytes(proxy.s2c))
    finally:
        fastpath.reset()
    if name == "ci_launch":  # every launch ci_launch makes is a plain async one
        assert tally["LAUNCH executed"] == len(memory_daemon.launches()) == 8
    with capsys.disabled():
        print(f"\n[fastpath] {name}: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items())))
