"""The link-emulating TCP proxy (farcuda.daemon.linkproxy) against plain local TCP peers.

What is checked: the one-way delay it adds (round trips through an echo server, both a
large delay and the 0.5 ms of the benchmarks' edge link), the throughput limit of its token
bucket, that a delay does not bound throughput (chunks are pipelined), byte-exact data in both
directions under delay and throttling, FIN propagation, the three kinds of cut (blackhole,
reset, close; after N bytes and on demand), half-close in both directions, a refused target,
the asyncio API and the command line. Timing tolerances are wide enough for a loaded 2-core
CI runner.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from farcuda.daemon.linkproxy import LinkProxy, ProxyThread


class Peer:
    """A TCP server on 127.0.0.1 running ``handler(conn)`` for each connection in a thread."""

    def __init__(self, handler: Callable[[socket.socket], None]) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.handler = handler
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._run, args=(c,), daemon=True).start()

    def _run(self, c: socket.socket) -> None:
        try:
            self.handler(c)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def _echo(c: socket.socket) -> None:
    while True:
        d = c.recv(1 << 20)
        if not d:
            c.shutdown(socket.SHUT_WR)
            return
        c.sendall(d)


def recv_all(s: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything until EOF."""
    s.settimeout(timeout)
    out = bytearray()
    while True:
        d = s.recv(1 << 20)
        if not d:
            return bytes(out)
        out += d


def recv_n(s: socket.socket, n: int, timeout: float = 10.0) -> bytes:
    s.settimeout(timeout)
    out = bytearray()
    while len(out) < n:
        d = s.recv(n - len(out))
        if not d:
            break
        out += d
    return bytes(out)


@pytest.fixture
def echo() -> Iterator[Peer]:
    p = Peer(_echo)
    yield p
    p.close()


class Sink:
    """A peer that reads everything it gets and records bytes and arrival times."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.eof = threading.Event()
        self.first: float | None = None
        self.last = 0.0
        self.peer = Peer(self._handle)

    def _handle(self, c: socket.socket) -> None:
        while True:
            d = c.recv(1 << 20)
            if not d:
                self.eof.set()
                c.close()
                return
            now = time.monotonic()
            self.first = self.first or now
            self.last = now
            self.data += d


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.peer.close()


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _round_trips(port: int, n: int, size: int = 64) -> list[float]:
    out = []
    with _connect(port) as s:
        for _ in range(n):
            t0 = time.perf_counter()
            s.sendall(b"p" * size)
            assert len(recv_n(s, size)) == size
            out.append(time.perf_counter() - t0)
    return out


@pytest.mark.parametrize("delay", [0.0005, 0.010])
def test_delay_each_way(echo, delay):
    """A round trip through the proxy takes twice the one-way delay, plus little."""
    with ProxyThread(echo.address, delay=delay) as p:
        rtts = _round_trips(p.port, 30)
    med = statistics.median(rtts)
    assert med >= 2 * delay * 0.98, (delay, med)
    assert med <= 2 * delay + 0.003, (delay, med)  # the proxy's own cost stays small
    assert min(rtts) >= 2 * delay * 0.98


def test_no_delay_is_transparent(echo):
    with ProxyThread(echo.address) as p:
        rtts = _round_trips(p.port, 30)
    assert statistics.median(rtts) < 0.003


def _push(port: int, data: bytes) -> float:
    t0 = time.monotonic()
    with _connect(port) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(30)
        s.recv(1)  # the sink never answers: returns at the proxy's FIN
    return t0


@pytest.mark.parametrize("mbit", [40, 200])
def test_rate_limit(sink, mbit):
    """Throughput of a long transfer is the configured rate (token bucket)."""
    data = os.urandom(mbit * 1_000_000 // 8 // 2)  # half a second at the rate
    with ProxyThread(sink.peer.address, rate=mbit * 1e6) as p:
        t0 = _push(p.port, data)
        assert sink.eof.wait(20)
    took = sink.last - t0
    measured = len(data) * 8 / took / 1e6
    assert bytes(sink.data) == data
    assert mbit * 0.8 <= measured <= mbit * 1.1, (mbit, measured)


def test_delay_does_not_bound_throughput(sink):
    """20 ms each way and 256 KiB reads: if every chunk waited its delay in turn, 16 MiB
    would take seconds; pipelined, it takes the rate's time plus one delay."""
    mbit, delay = 400, 0.020
    data = os.urandom(16 << 20)
    with ProxyThread(sink.peer.address, delay=delay, rate=mbit * 1e6) as p:
        t0 = _push(p.port, data)
        assert sink.eof.wait(30)
    assert sink.first is not None and sink.first - t0 >= delay * 0.98
    took = sink.last - t0
    ideal = len(data) * 8 / (mbit * 1e6) + delay
    assert took < ideal * 1.3, (took, ideal)
    assert bytes(sink.data) == data


def test_byte_exact_both_ways(echo):
    """Random sizes and data both ways through delay and throttling arrive intact, in order."""
    rnd = os.urandom(1 << 16)
    msgs = [os.urandom(n) for n in (1, 7, 4096, 65536, 1 << 20, 3 << 20, 123457)]
    msgs.append(rnd * 40)
    want = b"".join(msgs)
    with ProxyThread(echo.address, delay=0.002, rate=800e6) as p, _connect(p.port) as s:
        got = bytearray()

        def read() -> None:
            got.extend(recv_n(s, len(want), timeout=30))
        t = threading.Thread(target=read)
        t.start()
        for m in msgs:
            s.sendall(m)
        t.join(60)
        st = p.stats
    assert hashlib.sha256(got).digest() == hashlib.sha256(want).digest()
    assert st.bytes_c2s == st.bytes_s2c == len(want)
    assert st.connections == 1


def test_fin_is_passed_on_after_the_data(echo):
    with ProxyThread(echo.address, delay=0.005) as p, _connect(p.port) as s:
        s.sendall(b"hello")
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b"hello"  # echoed, then the echo server's FIN


def test_cut_after_bytes_blackhole(sink):
    """After N bytes nothing more passes, and neither end is told: no FIN, no reset."""
    n = 100_000
    with ProxyThread(sink.peer.address, cut_after_bytes=n) as p, _connect(p.port) as s:
        s.sendall(os.urandom(3 * n))
        time.sleep(0.3)
        assert len(sink.data) == n
        assert not sink.eof.is_set()
        s.settimeout(0.3)
        with pytest.raises(TimeoutError):
            s.recv(1)  # silent: no EOF, no error
        assert p.stats.cuts == 1
    # stopping the proxy closes the blackholed sockets
    assert sink.eof.wait(5)


def test_cut_on_demand_reset(echo):
    with ProxyThread(echo.address) as p, _connect(p.port) as s:
        s.sendall(b"x" * 10)
        assert recv_n(s, 10) == b"x" * 10
        assert p.cut("reset") == 1
        s.settimeout(5)
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            for _ in range(100):  # a reset shows on the next read (or write)
                if not s.recv(1):
                    pytest.fail("got a FIN, expected a reset")
        assert p.cut() == 0  # nothing left to cut


def test_cut_on_demand_close(sink):
    with ProxyThread(sink.peer.address) as p, _connect(p.port) as s:
        s.sendall(b"abc")
        time.sleep(0.1)
        p.cut("close")
        assert recv_all(s) == b""
        assert sink.eof.wait(5)
        assert bytes(sink.data) == b"abc"


def test_cut_counts_both_directions(echo):
    """The cut limit counts both directions together: 10 bytes out and 10 back, then at 25
    the cut falls after 5 more bytes out, before their echo."""
    with ProxyThread(echo.address, cut_after_bytes=25, cut_mode="reset") as p, \
            _connect(p.port) as s:
        s.sendall(b"a" * 10)
        assert recv_n(s, 10) == b"a" * 10
        s.sendall(b"b" * 10)
        s.settimeout(5)
        with pytest.raises(ConnectionResetError):
            assert s.recv(100) == b"", "got data or a FIN, expected a reset"
        st = p.stats
        assert (st.bytes_c2s, st.bytes_s2c, st.cuts) == (15, 10, 1)


def test_one_way_blackhole():
    """A blackhole of client-to-server only, after 10 bytes of it: the server's ticks keep
    reaching the client, the client's later bytes vanish, nobody is told."""
    got = bytearray()

    def server(c: socket.socket) -> None:
        def ticks() -> None:
            try:
                while True:
                    c.sendall(b"t")
                    time.sleep(0.02)
            except OSError:
                pass
        threading.Thread(target=ticks, daemon=True).start()
        while d := c.recv(100):
            got.extend(d)
    peer = Peer(server)
    try:
        with ProxyThread(peer.address, cut_after_bytes=10, cut_direction="c2s") as p, \
                _connect(p.port) as s:
            s.sendall(b"0123456789abcdef")
            time.sleep(0.2)
            s.sendall(b"more")
            n = len(recv_n(s, 10, timeout=2))
            assert n == 10  # ticks still arrive
            assert bytes(got) == b"0123456789"
            assert p.stats.cuts == 1
            assert p.cut("blackhole", "s2c") == 1  # now the other way too
            s.settimeout(0.3)
            time.sleep(0.1)
            with pytest.raises(TimeoutError):
                while s.recv(100):  # drain ticks sent before the cut, then silence
                    pass
    finally:
        peer.close()


def test_half_close_client_to_server():
    """After N bytes from the client the server reads EOF; it can still answer, and the
    client's later bytes are dropped."""
    n = 5000
    seen: dict[str, object] = {}

    def server(c: socket.socket) -> None:
        data = recv_all(c)
        seen["data"] = data
        c.sendall(b"bye")
        c.close()
    peer = Peer(server)
    try:
        with ProxyThread(peer.address, half_close_after_bytes=n) as p, _connect(p.port) as s:
            s.sendall(b"q" * (2 * n))
            assert recv_all(s) == b"bye"
            assert seen["data"] == b"q" * n
            assert p.stats.half_closes == 1
    finally:
        peer.close()


def test_half_close_server_to_client():
    n = 3000

    def server(c: socket.socket) -> None:
        c.sendall(b"s" * (2 * n))
        seen = recv_all(c)  # the client's bytes still arrive after its half-close
        c.sendall(b"never seen" + seen)
    peer = Peer(server)
    try:
        with ProxyThread(peer.address, half_close_after_bytes=n,
                         half_close_direction="s2c") as p, _connect(p.port) as s:
            assert recv_all(s) == b"s" * n
            s.sendall(b"up")
            s.shutdown(socket.SHUT_WR)
            time.sleep(0.2)
            assert p.stats.bytes_c2s == 2
    finally:
        peer.close()


def test_refused_target_resets_the_client():
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with ProxyThread(("127.0.0.1", port)) as p, pytest.raises(ConnectionResetError):
        with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
            s.recv(1)  # the reset may already come with the connect


def test_async_api(echo):
    async def main() -> float:
        async with LinkProxy(echo.address, delay=0.005) as p:
            assert p.address == f"127.0.0.1:{p.port}"
            r, w = await asyncio.open_connection("127.0.0.1", p.port)
            t0 = time.perf_counter()
            w.write(b"ping")
            assert await r.readexactly(4) == b"ping"
            rtt = time.perf_counter() - t0
            w.close()
            await w.wait_closed()
            return rtt
    rtt = asyncio.run(main())
    assert 0.0098 <= rtt < 0.030  # one sample: room for a loaded runner


def test_bad_arguments():
    with pytest.raises(ValueError):
        LinkProxy("127.0.0.1:1", cut_mode="explode")
    with pytest.raises(ValueError):
        LinkProxy("nonsense")
    with pytest.raises(ValueError):
        LinkProxy("127.0.0.1:1", rate=0)
    with pytest.raises(ValueError):
        LinkProxy("127.0.0.1:1", cut_mode="reset", cut_direction="c2s")


def test_command_line(echo):
    r, w = os.pipe()
    host, port = echo.address
    proc = subprocess.Popen([sys.executable, "-m", "farcuda.daemon.linkproxy", "--listen",
                             "127.0.0.1:0", "--target", f"{host}:{port}", "--delay-ms", "5",
                             "--rate-mbit", "100", "--ready-fd", str(w)], pass_fds=(w,),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.close(w)
    try:
        with os.fdopen(r) as ready:
            line = ready.readline()
        lhost, lport = line.split()
        assert lhost == "127.0.0.1"
        rtts = _round_trips(int(lport), 5)
        assert 0.0098 <= statistics.median(rtts) < 0.030
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "listening 127.0.0.1:" in out and "1 connection(s)" in out
