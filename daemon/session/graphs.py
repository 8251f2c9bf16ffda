"""Stream capture and graphs (the client's csrc/streams.c, second half). Host memory in a
captured copy is read and written when the graph runs, as in CUDA: the daemon captures a host
node that fetches the bytes from the client (FETCH, answered with HOST_DATA) or pushes them to
it (PUSH, answered with PUSH_DONE) at each replay."""

from __future__ import annotations

from typing import TYPE_CHECKING

from farcuda.wire import Frame, encode_value
from farcuda.wire import messages as msg

from .table import handler

if TYPE_CHECKING:
    from .core import Session


@handler
def CAPTURE_HTOD(s: Session, f: Frame, m: msg.CAPTURE_HTOD):
    d, vdev, node = s.dev(f), f.vdev, m.node
    d.check(m.dst, m.size)

    def fetch():
        s.d2h.deliver()
        s._write(encode_value(msg.FETCH(node), vdev=vdev))
    d.be.capture_htod(m.dst, m.size, m.stream, node, fetch)


@handler
def CAPTURE_DTOH(s: Session, f: Frame, m: msg.CAPTURE_DTOH):
    d, vdev, node = s.dev(f), f.vdev, m.node
    d.check(m.src, m.size)

    def push(view) -> None:
        for off in range(0, len(view), msg.PIECE):
            last = off + msg.PIECE >= len(view)
            s._write(encode_value(msg.PUSH(node, int(last), off), view[off:off + msg.PIECE],
                                  vdev=vdev))
    d.be.capture_dtoh(m.src, m.size, m.stream, node, push)


@handler
def HOST_DATA(s: Session, f: Frame, m: msg.HOST_DATA):
    s.dev(f).be.host_data(m.node, m.offset, f.tail or b"")


@handler
def PUSH_DONE(s: Session, f: Frame, m: msg.PUSH_DONE):
    s.dev(f).be.push_done(m.node)


@handler
def CAPTURE_BEGIN(s: Session, f: Frame, m: msg.CAPTURE_BEGIN):
    s.dev(f).be.capture_begin(m.stream, m.mode)


@handler
def CAPTURE_END(s: Session, f: Frame, m: msg.CAPTURE_END):
    s.dev(f).be.capture_end(m.stream, m.graph)


@handler
def CAPTURE_STATUS(s: Session, f: Frame, m: msg.CAPTURE_STATUS):
    return msg.CAPTURE_STATUS_REPLY(s.dev(f).be.capture_status(m.stream))


@handler
def GRAPH_INSTANTIATE(s: Session, f: Frame, m: msg.GRAPH_INSTANTIATE):
    s.dev(f).be.graph_instantiate(m.graph, m.exec, m.flags)


@handler
def GRAPH_LAUNCH(s: Session, f: Frame, m: msg.GRAPH_LAUNCH):
    s._may_print = True
    s.dev(f).be.graph_launch(m.exec, m.stream)


@handler
def GRAPH_UPLOAD(s: Session, f: Frame, m: msg.GRAPH_UPLOAD):
    # Uploading ahead is an optimization the first launch performs anyway.
    s.dev(f).be.graph_check(m.exec)


@handler
def GRAPH_DESTROY(s: Session, f: Frame, m: msg.GRAPH_DESTROY):
    s.dev(f).be.graph_destroy(m.graph)


@handler
def GRAPH_EXEC_DESTROY(s: Session, f: Frame, m: msg.GRAPH_EXEC_DESTROY):
    s.dev(f).be.graph_exec_destroy(m.exec)
