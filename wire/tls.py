"""TLS for farcuda connections, built as relays around plain sockets: the pieces both ends use.

Both ends of farcuda move frames through plain file descriptors: the shim's C transport reads
and writes one, and the daemon's front hands one to each worker process. TLS therefore never
reaches those layers. Instead:

- on the client, a relay (interposer/tls.py) opens the TCP connection, runs the TLS handshake
  and returns one end of a socketpair; a background thread pumps bytes between the other end
  and the TLS stream. The farcuda handshake (HELLO, token) then runs through the relay like
  any later frame, so it is inside TLS.
- on the daemon, the front terminates TLS (asyncio with ssl) and ``pump``s between the client's
  TLS stream and a socketpair whose other end goes to the worker.

Invariants: bytes leave a relay in the order they came in, in both directions; when either
side ends (EOF, error, reset), both sides are closed, so the peer of a dead link sees EOF and
never a half-open connection. TLS costs CPU on both ends (encryption, and one more copy of
every byte through the relay): bench/tls_cost.py measures it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

__all__ = ["CHUNK", "client_context", "server_context", "pump", "peer_name"]

CHUNK = 1 << 18  # bytes a relay moves per read


def client_context(cafile: str | None = None, certfile: str | None = None,
                   keyfile: str | None = None) -> ssl.SSLContext:
    """Verify the server against ``cafile`` (else the system's CAs) and its host name;
    present a client certificate when ``certfile`` is given."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if certfile:
        ctx.load_cert_chain(certfile, keyfile or None)
    return ctx


def server_context(certfile: str, keyfile: str | None,
                   client_ca: str | None = None) -> ssl.SSLContext:
    """The daemon's side (``keyfile`` None: the key is in ``certfile``); with ``client_ca``
    every client must present a certificate it signed."""
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
        data = await reader.read(CHUNK)
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
            exc = None if t.cancelled() else t.exception()
            if on_error is not None and exc is not None:
                on_error(exc)
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
