"""The session's side of the daemon's C path (daemon/fastpath.c).

The frame reader offers the C path the bytes that arrived before it parses a frame; the C path
executes what it can (runs of async launches and event operations, and a synchronous request
that need not wait), and the session accounts for what it did as if it had dispatched those
frames itself: counts, busy time, faults, and the reply when the C path could not send it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from farcuda.wire import BY_OP, encode_value
from farcuda.wire import messages as msg

if TYPE_CHECKING:
    from .core import Session

__all__ = ["CPath", "OUT"]

OUT = 24 + (64 << 10)  # the C path's reply buffer: a REPLY with a small copy's bytes


class CPath:
    __slots__ = ("session", "ffi", "lib", "res", "out")

    def __init__(self, session: Session, fastpath: tuple[Any, Any]) -> None:
        self.session = session
        self.ffi, self.lib = fastpath
        self.res = self.ffi.new("fp_result *")
        self.out = self.ffi.new("unsigned char[]", OUT)

    def run(self, buf: bytearray, start: int, end: int) -> int:
        """Let the C path execute what it can of buf[start:end]; returns the bytes it took."""
        s, ffi, res = self.session, self.ffi, self.res
        # While async copies are pending, Python answers synchronous requests (it sends the
        # copies' data first); the C path still runs the async frames. The C path sends its
        # reply itself when the transport holds nothing that must go first.
        out = ffi.NULL if s.d2h else self.out
        assert s.transport is not None  # (this runs in data_received)
        sock = s._sock_fd if not s.transport.get_write_buffer_size() else -1
        # The pipe is looked at even before the session's first kernel: the launches of this
        # very run may print, and the synchronization that ends it flushes what they printed.
        self.lib.fp_run(ffi.cast("const unsigned char *", ffi.from_buffer(buf)) + start,
                        end - start, out, OUT, sock, s._output_fd, res)
        n = res.consumed
        if not n:
            return 0
        if res.launches:
            s.counts["LAUNCH"] += res.launches
            s._may_print = True
        if res.records:
            s.counts["EVENT_RECORD"] += res.records
        if res.waits:
            s.counts["STREAM_WAIT_EVENT"] += res.waits
        s.backend.context_unknown()
        size = res.out_len
        if size:
            if res.sync_status:
                s._fault(res.sync_vdev, res.sync_status)  # before its reply
                s.errors[res.sync_status] += 1
            s.counts[BY_OP[res.sync_op].name] += 1
            s.round_trips += 1
            clock = s._clock(res.sync_vdev)
            if clock is not None:
                clock.add(res.sync_ns)
            s.busy.ns += res.sync_ns
            sent = res.out_sent
            if sent == size:
                s.bytes_out += size
                s._last_tx = time.monotonic()
            else:
                if not sent:
                    s._flush_output()  # device printf the synchronization flushed
                s.bytes_out += sent
                s._write(ffi.buffer(self.out + sent, size - sent)[:])
        if res.error:
            s._fault(res.error_vdev, res.error)
            s.errors[res.error] += 1
            s._write(encode_value(msg.ASYNC_ERROR(res.error, res.error_op), vdev=res.error_vdev))
        return n
