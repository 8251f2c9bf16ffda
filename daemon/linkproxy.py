"""A user-space TCP proxy that emulates a network link between a client and farcudad.

Tests use it to put a slow, throttled or failing link between the shim and a daemon;
benchmarks use it to emulate an edge link (say 1 Gbit/s, 0.5 ms each way) on one machine.
Each direction of each connection is modelled on its own:

- **delay**: every chunk read from one end is stamped with a deadline (now + delay) and
  written to the other end once the deadline passes. Chunks are pipelined: many are in flight
  at once, so a delay adds latency, never a per-chunk stall (throughput is not delay-bound).
  asyncio's timers are only as fine as the selector's millisecond timeout, so the last
  ``spin`` seconds before a deadline are waited by yielding to the loop instead of sleeping.
- **rate**: a token bucket (``rate`` bits per second, ``burst`` bytes). A chunk takes its size
  in tokens; its deadline counts from the moment the bucket has paid for it (its last byte
  has left the emulated link), and the proxy reads nothing more from that end until then, so
  the sender feels the limit as TCP back-pressure, as on a real link.
- **cut** (after ``cut_after_bytes`` bytes in both directions together, or on ``cut()``;
  with ``cut_direction``, after that many bytes of that direction):
  ``blackhole`` stops all traffic silently with both sockets left open (a pulled cable: the
  ends only learn it from their own timeouts; ``cut_direction`` blackholes one way only),
  ``reset`` aborts both sockets (RST), ``close`` ends both with a FIN. New connections after
  a ``cut()`` are served normally.
- **half-close** (after ``half_close_after_bytes`` bytes in ``half_close_direction``): the
  bytes up to the limit are delivered, then the receiving end of that direction gets a FIN;
  further bytes of that direction are read and dropped, the other direction keeps flowing.

Python API::

    async with LinkProxy("127.0.0.1:7420", delay=0.0005, rate=1e9) as p:
        run_client(p.address)                       # "127.0.0.1:PORT"

    with ProxyThread("127.0.0.1:7420", delay=0.01) as p:   # for synchronous tests
        ...; p.cut(); ...

Command line (the listening address goes to stdout, and to ``--ready-fd`` as "HOST PORT")::

    python -m farcuda.daemon.linkproxy --listen 127.0.0.1:0 --target HOST:PORT \\
        [--delay-ms X] [--rate-mbit R] [--cut-after-bytes N] [--half-close-after-bytes N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

__all__ = ["LinkProxy", "ProxyThread", "LinkStats", "CUT_MODES", "main"]

CUT_MODES = ("blackhole", "reset", "close")
_CHUNK = 256 * 1024  # largest read from one end
_SEND_BATCH = 1 << 20  # due chunks are joined into one send up to this size

# Queue markers (compared by identity).
_EOF = object()  # the source sent a FIN: pass it on
_CUT = object()  # the cut threshold was reached: cut the connection
_HALF = object()  # the half-close threshold was reached: FIN the receiver, drop the rest


def _split_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


@dataclass
class LinkStats:
    """Totals over all connections (bytes counted as read from each end)."""

    connections: int = 0
    active: int = 0
    bytes_c2s: int = 0
    bytes_s2c: int = 0
    cuts: int = 0
    half_closes: int = 0


class _Bucket:
    """Token bucket: ``rate`` bytes per second, at most ``burst`` bytes of credit."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.t = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now

    def take(self, n: int, now: float) -> float:
        """Pay for n bytes; returns the time their last byte has left the link."""
        self._refill(now)
        self.tokens -= n
        return now if self.tokens >= 0 else now + -self.tokens / self.rate

    def ready_at(self, now: float) -> float:
        """When the bucket is out of debt (reading more before then would exceed the rate)."""
        self._refill(now)
        return now if self.tokens >= 0 else now + -self.tokens / self.rate


class _Direction:
    """One direction of one connection: read ``src``, hold each chunk until its deadline,
    write it to ``dst``."""

    def __init__(self, conn: _Conn, name: str, src: socket.socket, dst: socket.socket) -> None:
        self.conn = conn
        self.name = name
        self.src = src
        self.dst = dst
        link = conn.link
        now = link.loop.time()
        self.bucket = _Bucket(link.rate / 8.0, link.burst, now) if link.rate else None
        self.queue: deque[tuple[float, object]] = deque()
        self.queued = 0  # payload bytes in the queue
        self.wake = asyncio.Event()  # the writer has something to look at
        self.room = asyncio.Event()  # the reader may queue more
        self.read_bytes = 0
        half = link.half_close_after_bytes
        self.half_limit = half if half is not None and link.half_close_direction == name \
            else None
        self.dropping = False  # past a half-close: read and discard

    def _cut_left(self) -> int | None:
        """Bytes this direction may still read before the cut (None: no limit on it). The
        limit counts both directions together, or only the one a one-way cut stops."""
        link = self.conn.link
        if link.cut_after_bytes is None or link.cut_direction not in (None, self.name):
            return None
        used = self.conn.total if link.cut_direction is None else self.read_bytes
        return max(0, link.cut_after_bytes - used)

    def _queue_cut(self, deadline: float) -> None:
        """The cut limit is reached: cut once the bytes before it are delivered (whichever
        direction gets there first queues it)."""
        if not self.conn.cut_queued:
            self.conn.cut_queued = True
            self._push(deadline, _CUT)

    def _push(self, deadline: float, item: object, size: int = 0) -> None:
        self.queue.append((deadline, item))
        self.queued += size
        self.wake.set()

    async def reader(self) -> None:
        link, loop = self.conn.link, self.conn.link.loop
        while True:
            if self.half_limit is not None and not self.dropping \
                    and self.read_bytes >= self.half_limit:  # (a limit of 0)
                self._push(loop.time() + link.delay, _HALF)
                self.dropping = True
            if self.bucket is not None:
                await link.until(self.bucket.ready_at(loop.time()))
            while self.queued >= link.max_inflight:
                self.room.clear()
                await self.room.wait()
            want = _CHUNK if self.bucket is None else max(1, min(_CHUNK, int(link.burst)))
            if self.half_limit is not None and not self.dropping:
                want = min(want, self.half_limit - self.read_bytes)
            cut_left = self._cut_left()
            if cut_left == 0:
                self._queue_cut(loop.time() + link.delay)
                return
            if cut_left is not None:
                want = min(want, cut_left)
            data = await loop.sock_recv(self.src, max(1, want))
            if not data:
                if not self.dropping:
                    self._push(loop.time() + link.delay, _EOF)
                return
            if self.dropping:
                continue
            cut_left = self._cut_left()
            if cut_left is not None and len(data) > cut_left:
                data = data[:cut_left]  # the other direction used the rest meanwhile
            now = loop.time()
            depart = self.bucket.take(len(data), now) if self.bucket is not None else now
            if data:
                self._push(depart + link.delay, data, len(data))
                self.read_bytes += len(data)
                self.conn.total += len(data)
                if self.name == "c2s":
                    link.stats.bytes_c2s += len(data)
                else:
                    link.stats.bytes_s2c += len(data)
            if self._cut_left() == 0:
                self._queue_cut(depart + link.delay)
                return
            if self.half_limit is not None and self.read_bytes >= self.half_limit:
                self._push(depart + link.delay, _HALF)
                self.dropping = True

    async def writer(self) -> None:
        link, loop = self.conn.link, self.conn.link.loop
        while True:
            while not self.queue:
                self.wake.clear()
                await self.wake.wait()
            await link.until(self.queue[0][0])
            # Everything already due goes out in one send.
            now = loop.time()
            parts: list[bytes] = []
            size = 0
            marker = None
            while self.queue and self.queue[0][0] <= now and size < _SEND_BATCH:
                _, item = self.queue.popleft()
                if not isinstance(item, bytes):
                    marker = item
                    break
                parts.append(item)
                size += len(item)
            self.queued -= size
            self.room.set()
            if parts:
                await loop.sock_sendall(self.dst, parts[0] if len(parts) == 1
                                        else b"".join(parts))
            if marker is _EOF or marker is _HALF:
                with contextlib.suppress(OSError):
                    self.dst.shutdown(socket.SHUT_WR)
                if marker is _HALF:
                    link.stats.half_closes += 1
                return
            if marker is _CUT:
                self.conn.cut(link.cut_mode, link.cut_direction)
                return


class _Conn:
    """One proxied connection: two directions, four tasks."""

    def __init__(self, link: LinkProxy, client: socket.socket, server: socket.socket) -> None:
        self.link = link
        self.client = client
        self.server = server
        self.total = 0  # bytes read from both ends
        self.cut_queued = False
        self.silent: set[str] = set()  # directions blackholed one at a time
        self.state = "open"  # "open", "cut" (blackhole: sockets kept), "closed"
        self.tasks: list[asyncio.Task] = []
        self.c2s = _Direction(self, "c2s", client, server)
        self.s2c = _Direction(self, "s2c", server, client)

    async def run(self) -> None:
        loop = self.link.loop
        self.tasks = [loop.create_task(self._guard(d.reader if r else d.writer))
                      for d in (self.c2s, self.s2c) for r in (True, False)]
        try:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        finally:  # both directions ended, or the proxy is stopping
            if self.state == "open":
                self.close()

    async def _guard(self, fn) -> None:
        # The coroutine is made here, not by the caller: a task cancelled before its first
        # step (a cut right at the start) then leaves no coroutine that was never awaited.
        try:
            await fn()
        except OSError:
            # An end failed (reset, broken pipe): pass the failure on, as a router's RST would.
            self._abort()

    def _cancel(self) -> None:
        me = asyncio.current_task()
        for t in self.tasks:
            if t is not me:
                t.cancel()

    def cut(self, mode: str, direction: str | None = None) -> None:
        if self.state != "open" or direction in self.silent:
            return
        self.link.stats.cuts += 1
        if mode == "blackhole" and direction is not None:
            # One way only: that direction's tasks stop, the other keeps flowing (and the
            # connection ends when it does).
            first = 0 if direction == "c2s" else 2
            for t in self.tasks[first:first + 2]:
                if t is not asyncio.current_task():
                    t.cancel()
            self.silent.add(direction)
            if len(self.silent) == 2:  # both ways now: a whole blackhole
                self.state = "cut"
            return
        if mode == "blackhole":
            self.state = "cut"  # sockets stay open, silent, until the proxy stops
            self._cancel()
        elif mode == "reset":
            self._abort()
        else:
            for s in (self.client, self.server):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            self.close()

    def _abort(self) -> None:
        """Close both ends with a reset (SO_LINGER 0), not a FIN."""
        if self.state == "closed":
            return
        for s in (self.client, self.server):
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def close(self) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        self._cancel()
        self.client.close()
        self.server.close()
        self.link.stats.active -= 1
        self.link._conns.discard(self)


class LinkProxy:
    """The emulated link; an async context manager (see the module's docstring).

    ``target``: "HOST:PORT" or (host, port). ``delay``: seconds added one way, in each
    direction. ``rate``: bits per second in each direction (None: unlimited). ``burst``:
    token-bucket depth in bytes (default: 2 ms of ``rate``, at least 64 KiB).
    ``max_inflight``: bytes one direction may hold (default: twice the bandwidth-delay
    product, at least 8 MiB). ``spin``: the last seconds before a deadline are waited by
    yielding to the loop rather than by a (millisecond-grained) timer; 0 disables it.
    """

    def __init__(self, target: str | tuple[str, int], *, listen: str = "127.0.0.1:0",
                 delay: float = 0.0, rate: float | None = None, burst: int | None = None,
                 cut_after_bytes: int | None = None, cut_mode: str = "blackhole",
                 cut_direction: str | None = None,
                 half_close_after_bytes: int | None = None,
                 half_close_direction: str = "c2s", max_inflight: int | None = None,
                 spin: float = 0.0015) -> None:
        self.target: tuple[str, int] = (_split_hostport(target) if isinstance(target, str)
                                        else (target[0], target[1]))
        self.listen = _split_hostport(listen)
        if delay < 0 or (rate is not None and rate <= 0):
            raise ValueError("delay must be >= 0 and rate > 0")
        if cut_mode not in CUT_MODES:
            raise ValueError(f"cut_mode must be one of {CUT_MODES}")
        if cut_direction not in (None, "c2s", "s2c") or (cut_direction and
                                                          cut_mode != "blackhole"):
            raise ValueError("cut_direction is 'c2s' or 's2c', for a blackhole only")
        if half_close_direction not in ("c2s", "s2c"):
            raise ValueError("half_close_direction must be 'c2s' or 's2c'")
        self.delay = float(delay)
        self.rate = float(rate) if rate else None
        self.burst = float(burst if burst is not None
                           else max(64 << 10, (self.rate or 0) / 8 * 0.002))
        self.cut_after_bytes = cut_after_bytes
        self.cut_mode = cut_mode
        self.cut_direction = cut_direction
        self.half_close_after_bytes = half_close_after_bytes
        self.half_close_direction = half_close_direction
        bdp = (self.rate or 8e9) / 8 * self.delay
        self.max_inflight = max_inflight or max(8 << 20, int(2 * bdp))
        self.spin = spin
        self.stats = LinkStats()
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task | None = None
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task] = set()

    # -- life cycle --
    async def start(self) -> LinkProxy:
        self.loop = asyncio.get_running_loop()
        host, port = self.listen
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(128)
        s.setblocking(False)
        self._sock = s
        self._accepting = self.loop.create_task(self._accept_loop())
        return self

    async def stop(self) -> None:
        """Stop listening and close every connection (blackholed ones included)."""
        tasks = list(self._tasks)
        if self._accepting is not None:
            tasks.append(self._accepting)
            self._accepting = None
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for c in list(self._conns):
            c.close()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def __aenter__(self) -> LinkProxy:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    @property
    def host(self) -> str:
        assert self._sock is not None, "the proxy is not started"
        return self._sock.getsockname()[0]

    @property
    def port(self) -> int:
        assert self._sock is not None, "the proxy is not started"
        return self._sock.getsockname()[1]

    @property
    def address(self) -> str:
        """"HOST:PORT" to give to the client (e.g. FARCUDA_SERVER)."""
        return f"{self.host}:{self.port}"

    def cut(self, mode: str | None = None, direction: str | None = None) -> int:
        """Cut every open connection now (``mode`` defaults to ``cut_mode``; a blackhole may
        take one ``direction`` only); returns how many were cut. Call from the proxy's loop
        (ProxyThread.cut does so)."""
        mode = mode or self.cut_mode
        if mode not in CUT_MODES:
            raise ValueError(f"cut mode must be one of {CUT_MODES}")
        if direction not in (None, "c2s", "s2c") or (direction and mode != "blackhole"):
            raise ValueError("a one-way cut is a blackhole, 'c2s' or 's2c'")
        conns = [c for c in self._conns if c.state == "open"]
        for c in conns:
            c.cut(mode, direction)
        return len(conns)

    # -- internals --
    async def until(self, deadline: float) -> None:
        """Wait until loop.time() >= deadline, to well under a millisecond."""
        loop = self.loop
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return
            if left > self.spin:
                await asyncio.sleep(left - self.spin)
            else:
                await asyncio.sleep(0)

    async def _accept_loop(self) -> None:
        assert self._sock is not None
        while True:
            try:
                client, _addr = await self.loop.sock_accept(self._sock)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            t = self.loop.create_task(self._serve(client))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _serve(self, client: socket.socket) -> None:
        client.setblocking(False)
        host, port = self.target
        try:
            infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family, stype, proto, _cn, addr = infos[0]
            server = socket.socket(family, stype, proto)
        except OSError:
            client.close()
            return
        except asyncio.CancelledError:
            client.close()
            raise
        server.setblocking(False)
        try:
            await self.loop.sock_connect(server, addr)
        except OSError:
            with contextlib.suppress(OSError):  # as the target would: refuse with a reset
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            server.close()
            return
        except asyncio.CancelledError:
            client.close()
            server.close()
            raise
        for s in (client, server):
            with contextlib.suppress(OSError):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(self, client, server)
        self._conns.add(conn)
        self.stats.connections += 1
        self.stats.active += 1
        await conn.run()


class ProxyThread:
    """A LinkProxy running on its own event loop in a thread, for synchronous code.

    Takes LinkProxy's arguments; ``start()`` (or ``with``) returns once it listens.
    """

    def __init__(self, target: str | tuple[str, int], **kwargs) -> None:
        self.proxy = LinkProxy(target, **kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="linkproxy", daemon=True)
        self._started = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.proxy.start())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.proxy.stop())
        self._loop.close()

    def start(self) -> ProxyThread:
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        return self

    def _call(self, fn, *args):
        fut = asyncio.run_coroutine_threadsafe(_call_async(fn, *args), self._loop)
        return fut.result(10)

    @property
    def address(self) -> str:
        return self.proxy.address

    @property
    def port(self) -> int:
        return self.proxy.port

    @property
    def stats(self) -> LinkStats:
        return self._call(lambda: LinkStats(**vars(self.proxy.stats)))

    def cut(self, mode: str | None = None, direction: str | None = None) -> int:
        """Cut every open connection now; returns how many were cut."""
        return self._call(self.proxy.cut, mode, direction)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> ProxyThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


async def _call_async(fn, *args):
    return fn(*args)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m farcuda.daemon.linkproxy",
                                 description="TCP proxy emulating a link (delay, rate, faults)")
    ap.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on")
    ap.add_argument("--target", required=True, help="HOST:PORT to forward to")
    ap.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay, each direction")
    ap.add_argument("--rate-mbit", type=float, default=None,
                    help="throughput limit of each direction, Mbit/s")
    ap.add_argument("--burst-bytes", type=int, default=None, help="token bucket depth")
    ap.add_argument("--cut-after-bytes", type=int, default=None,
                    help="cut each connection after this many bytes (both directions)")
    ap.add_argument("--cut-mode", choices=CUT_MODES, default="blackhole")
    ap.add_argument("--cut-direction", choices=("c2s", "s2c"), default=None,
                    help="blackhole one direction only")
    ap.add_argument("--half-close-after-bytes", type=int, default=None,
                    help="FIN the receiver of --half-close-direction after this many bytes")
    ap.add_argument("--half-close-direction", choices=("c2s", "s2c"), default="c2s")
    ap.add_argument("--no-spin", action="store_true",
                    help="wait deadlines with timers only (millisecond grain, less CPU)")
    ap.add_argument("--ready-fd", type=int, default=None,
                    help="write 'HOST PORT\\n' to this file descriptor once listening")
    return ap.parse_args(argv)


async def _main(args: argparse.Namespace) -> int:
    proxy = LinkProxy(args.target, listen=args.listen, delay=args.delay_ms / 1000.0,
                      rate=args.rate_mbit * 1e6 if args.rate_mbit else None,
                      burst=args.burst_bytes, cut_after_bytes=args.cut_after_bytes,
                      cut_mode=args.cut_mode, cut_direction=args.cut_direction,
                      half_close_after_bytes=args.half_close_after_bytes,
                      half_close_direction=args.half_close_direction,
                      spin=0.0 if args.no_spin else 0.0015)
    await proxy.start()
    print(f"listening {proxy.address} -> {args.target}", flush=True)
    if args.ready_fd is not None:
        os.write(args.ready_fd, f"{proxy.host} {proxy.port}\n".encode())
        os.close(args.ready_fd)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    t0 = time.monotonic()
    await stop.wait()
    await proxy.stop()
    st = proxy.stats
    print(f"stopped after {time.monotonic() - t0:.1f} s: {st.connections} connection(s), "
          f"{st.bytes_c2s} bytes c2s, {st.bytes_s2c} bytes s2c, {st.cuts} cut(s)", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except (ValueError, OSError) as exc:
        print(f"linkproxy: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
