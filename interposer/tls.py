"""The client's TLS relays: FARCUDA_TLS=1 puts each connection to a server through one.

``ClientRelay.connect`` opens the TCP connection, runs the TLS handshake and returns one end of
a socketpair for the C transport; one thread per process (an asyncio loop) pumps bytes between
the other end and the TLS stream (wire/tls.py has the pump and the contexts, which the daemon's
front shares).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time

from farcuda.wire.tls import CHUNK, pump

__all__ = ["ClientRelay", "client_relay"]


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
                                    ssl_handshake_timeout=timeout, limit=CHUNK), timeout)
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            local = await asyncio.open_unix_connection(sock=theirs, limit=CHUNK)
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
