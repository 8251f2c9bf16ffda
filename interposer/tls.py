"""TLS for farcuda connections, built as relays around plain sockets.

Both ends of farcuda move frames through plain file descriptors: the shim's C transport reads
and writes one, and the daemon's front hands one to each worker process. TLS therefore never
reaches those layers. Instead:

- on the client, ``ClientRelay.connect`` opens the TCP connection, runs the TLS handshake and
  returns one end of a socketpair; a background thread (one per process, an asyncio loop)
  pumps bytes between the other end and the TLS stream. The farcuda handshake (HELLO, token)
  then runs through the relay like any later frame, so it is inside TLS.
- on the daemon, the front terminates TLS (asyncio with ssl) and ``pump``s between the client's
  TLS stream and a socketpair whose other end goes to the worker.

Invariants: bytes leave a relay in the order they came in, in both directions; when either
side ends (EOF, error, reset), both sides are closed, so the peer of a dead link sees EOF and
never a half-open connection. TLS costs CPU on both ends (encryption, and one more copy of
every byte through the relay): bench/tls_cost.py measures it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Callable

__all__ = ["client_context", "server_context", "pump", "ClientRelay", "peer_name"]

_CHUNK = 1 << 18


def client_context(cafile: str | None = None, certfile: str | None = None,
                   keyfile: str | None = None) -> ssl.SSLContext:
    """Verify the server against ``cafile`` (else the system's CAs) and its host name;
    present a client certificate when ``certfile`` is given."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if certfile:
        ctx.load_cert_chain(certfile, keyfile or None)
    return ctx


def server_context(certfile: str, keyfile: str, client_ca: str | None = None) -> ssl.SSLContext:
    """The daemon's side; with ``client_ca`` every client must present a certificate it
    signed."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile)
    if client_ca:
        ctx.load_verify_locations(cafile=client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def peer_name(writer: asyncio.StreamWriter) -> str | None:
    """The common name of the peer's certificate, when it presented one."""
    cert = writer.get_extra_info("peercert")
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        data = await reader.read(_CHUNK)
        if not data:
            return
        writer.write(data)
        await writer.drain()


async def pump(a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
               b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
               on_error: Callable[[BaseException], None] | None = None) -> None:
    """Copy a -> b and b -> a until either side ends; then close both. ``on_error`` hears
    of the error that ended it, if one did, before anything is closed."""
    tasks = [asyncio.ensure_future(_copy(a[0], b[1])), asyncio.ensure_future(_copy(b[0], a[1]))]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if on_error is not None and not t.cancelled() and t.exception() is not None:
                on_error(t.exception())
                break
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except (asyncio.CancelledError, OSError, ssl.SSLError, ConnectionError):
                pass
        for w in (a[1], b[1]):
            w.close()
        for w in (a[1], b[1]):
            try:
                await w.wait_closed()
            except (OSError, ssl.SSLError, ConnectionError):
                pass


class ClientRelay:
    """The client's TLS relays: one daemon thread running an asyncio loop, shared by all of
    the process's TLS connections (started on first use)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._pumps: set[asyncio.Task] = set()
        self._ended: dict[int, str] = {}  # local socket's fd -> the TLS error that ended it

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                try:  # uvloop's TLS is several times cheaper than asyncio's
                    import uvloop
                    loop = uvloop.new_event_loop()
                except ImportError:
                    loop = asyncio.new_event_loop()
                t = threading.Thread(target=loop.run_forever, name="farcuda-tls", daemon=True)
                t.start()
                self._loop = loop
            return self._loop

    def connect(self, host: str, port: int, ctx: ssl.SSLContext, timeout: float) -> socket.socket:
        """A plain socket whose bytes travel over TLS to host:port (the TLS handshake is
        done when this returns). Raises OSError/ssl.SSLError/TimeoutError."""
        loop = self._ensure()
        fut = asyncio.run_coroutine_threadsafe(self._open(host, port, ctx, timeout), loop)
        try:
            return fut.result(timeout + 1.0)
        except TimeoutError:
            fut.cancel()
            raise

    async def _open(self, host: str, port: int, ctx: ssl.SSLContext,
                    timeout: float) -> socket.socket:
        tls = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ctx, server_hostname=host,
                                    ssl_handshake_timeout=timeout, limit=_CHUNK), timeout)
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            local = await asyncio.open_unix_connection(sock=theirs, limit=_CHUNK)
        except BaseException:
            mine.close()
            theirs.close()
            tls[1].close()
            raise
        fd = mine.fileno()
        self._ended.pop(fd, None)

        def ended(exc: BaseException) -> None:
            self._ended[fd] = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
        task = asyncio.ensure_future(pump(tls, local, ended))
        self._pumps.add(task)
        task.add_done_callback(self._pumps.discard)
        return mine


    def why_closed(self, sock: socket.socket, wait: float = 0.2) -> str | None:
        """The TLS error that ended the relay of ``sock`` (e.g. the server's alert when it
        wants a client certificate, which TLS 1.3 sends after the handshake), if any."""
        fd = sock.fileno()
        for _ in range(int(wait / 0.05)):
            if fd in self._ended:
                break
            time.sleep(0.05)
        return self._ended.get(fd)


_relay: ClientRelay | None = None


def client_relay() -> ClientRelay:
    global _relay
    if _relay is None:
        _relay = ClientRelay()
    return _relay
