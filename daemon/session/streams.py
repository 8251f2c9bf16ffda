"""Streams, events and host callbacks (the client's csrc/streams.c, first half). Stream and
event ids are the client's; a host callback runs on the client: the stream waits until the
client says it is done."""

from __future__ import annotations

from typing import TYPE_CHECKING

from farcuda.wire import Frame, encode_value
from farcuda.wire import messages as msg

from ..errors import CudaError, E
from .table import handler

if TYPE_CHECKING:
    from .core import Session


@handler
def STREAM_CREATE(s: Session, f: Frame, m: msg.STREAM_CREATE):
    s.dev(f).be.stream_create(m.stream, m.flags, m.priority)


@handler
def STREAM_DESTROY(s: Session, f: Frame, m: msg.STREAM_DESTROY):
    s.dev(f).be.stream_destroy(m.stream)


@handler
def STREAM_SYNC(s: Session, f: Frame, m: msg.STREAM_SYNC):
    return s.dev(f).be.stream_sync(m.stream)


@handler
def STREAM_QUERY(s: Session, f: Frame, m: msg.STREAM_QUERY):
    if not s.dev(f).be.stream_query(m.stream):
        raise CudaError(E["cudaErrorNotReady"])


@handler
def STREAM_WAIT_EVENT(s: Session, f: Frame, m: msg.STREAM_WAIT_EVENT):
    d = s.dev(f)
    peer = s.peer(m.event_vdev) if m.event_vdev != f.vdev else d
    d.be.stream_wait_event(m.stream, peer.be, m.event, m.flags)


@handler
def STREAM_SET_ATTR(s: Session, f: Frame, m: msg.STREAM_SET_ATTR):
    s.dev(f).be.stream_set_attr(m.stream, m.attr, bytes(f.tail or b""))


@handler
def EVENT_CREATE(s: Session, f: Frame, m: msg.EVENT_CREATE):
    s.dev(f).be.event_create(m.event, m.flags)


@handler
def EVENT_DESTROY(s: Session, f: Frame, m: msg.EVENT_DESTROY):
    s.dev(f).be.event_destroy(m.event)


@handler
def EVENT_RECORD(s: Session, f: Frame, m: msg.EVENT_RECORD):
    s.dev(f).be.event_record(m.event, m.stream, m.flags)


@handler
def EVENT_SYNC(s: Session, f: Frame, m: msg.EVENT_SYNC):
    return s.dev(f).be.event_sync(m.event)


@handler
def EVENT_QUERY(s: Session, f: Frame, m: msg.EVENT_QUERY):
    if not s.dev(f).be.event_query(m.event):
        raise CudaError(E["cudaErrorNotReady"])


@handler
def EVENT_ELAPSED(s: Session, f: Frame, m: msg.EVENT_ELAPSED):
    return msg.EVENT_ELAPSED_REPLY(s.dev(f).be.event_elapsed(m.start, m.end))


@handler
def HOST_FUNC(s: Session, f: Frame, m: msg.HOST_FUNC):
    cb, vdev = m.callback, f.vdev
    if cb in s.callbacks:
        raise CudaError(E["cudaErrorInvalidValue"], "callback id reused")

    def reached():
        s.d2h.deliver()  # copies before the callback in its stream are complete
        s._write(encode_value(msg.CALLBACK(cb), vdev=vdev))
    persistent = m.captured == 1  # captured into a graph: it runs at every replay
    s.callbacks[cb] = (s.dev(f).be.host_func(m.stream, reached, persistent), persistent)


@handler
def CALLBACK_DONE(s: Session, f: Frame, m: msg.CALLBACK_DONE):
    done, persistent = s.callbacks.get(m.callback, (None, False))
    if done is None:
        raise CudaError(E["cudaErrorInvalidValue"], "unknown callback")
    if not persistent:
        del s.callbacks[m.callback]
    done()
