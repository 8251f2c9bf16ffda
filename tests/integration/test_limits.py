"""The daemon's limits on what clients can make it hold ([limits], daemon/admission.py and
daemon/tenants.py), with real daemons on the memory backend and real nvcc-built clients.

- Sessions in all and per tenant: the clients over the limit get cudaErrorDevicesUnavailable
  and one line naming the limit, the daemon's processes and memory do not grow with them, and
  the log says it once per peer (not once per client).
- Per peer: new connections per second, and connections in their handshake at once; a
  connection that does not finish its handshake is dropped after handshake_timeout, and the
  log says at which step.
- A flood of connections from one address (127.0.0.2; loopback has every 127.x address)
  does not hold up another peer's handshake by more than FLOOD_BOUND seconds: the door sheds
  the flood's connections, which never get a worker or the others' handshake places.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from farcuda.wire import FrameReader, handshake

_spec = importlib.util.spec_from_file_location(
    "farcuda_test_service_helpers", Path(__file__).with_name("service_helpers.py"))
helpers = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = helpers
_spec.loader.exec_module(helpers)
TenantClient = helpers.TenantClient

UNAVAILABLE = 46  # cudaErrorDevicesUnavailable
TOKENS = {"alice": "alice-secret", "bob": "bob-secret"}
# Another peer's handshake (connect, SERVER_HELLO, HELLO, reply) under a flood, at most; it
# takes a few milliseconds without one. The flood is shed at the door, so what is left is the
# CPU the flood's connections take on a 2-core runner.
FLOOD_BOUND = 1.0


class Raw:
    """A connection as a client makes it, from a chosen source address, up to the
    handshake's reply."""

    def __init__(self, address: str, source: str = "127.0.0.1", timeout: float = 10.0):
        import socket
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout,
                                             source_address=(source, 0))
        self.reader = FrameReader("s2c")
        self.frames: list = []

    def frame(self):
        while not self.frames:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.frames += self.reader.feed(data)
        return self.frames.pop(0)

    def hello(self, identity: dict, token: str | None = None) -> tuple[int, str]:
        first = self.frame()
        assert first.msg.name == "SERVER_HELLO"
        _v, _flags, challenge = handshake.parse_server_hello(first.fixed)
        self.sock.sendall(handshake.client_hello(challenge, identity, token))
        rep = self.frame()
        return (int.from_bytes(rep.fixed[:4], "little"), bytes(rep.tail or b"").decode())

    def close(self) -> None:
        self.sock.close()


def shake(address: str, source: str = "127.0.0.1", purpose: str = "status",
          token: str | None = None) -> tuple[int, str]:
    """One handshake (a status query: no worker; or a session's: ``purpose`` "session")."""
    ident = {"pid": os.getpid(), "host": "limits-test"}
    if purpose == "status":
        ident["purpose"] = "status"
    c = Raw(address, source)
    try:
        return c.hello(ident, token)
    finally:
        c.close()


def children(pid: int) -> set[int]:
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.add(int(stat.parent.name))
    return kids


def rss(pids) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) << 10
        except OSError:
            pass
    return total


def until(fn, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def farcuda_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("farcuda:")]


def ended(daemon) -> int:
    """Sessions the front has seen end (and given their places back)."""
    return len(re.findall(r"logger=farcudad msg='session \d+: ended'", daemon.log()))


def refusal_lines(daemon, limit: str) -> list[str]:
    return [ln for ln in daemon.log().splitlines()
            if "refused:" in ln and f"limits.{limit}" in ln]


@pytest.fixture
def clients():
    made: list[TenantClient] = []
    yield made
    for c in made:
        c.kill()


# ---------------------------------------------------------------- sessions

def test_sessions_total_bounds_the_daemon(tmp_path, fc, program, shim, clients):
    d = fc.start_daemon(tmp_path, "memory", config={
        "log_level": "info", "prestart": 1, "limits": {"sessions_total": 3}})
    try:
        exe = program("ci_tenant")
        for _ in range(3):
            c = TenantClient(exe, shim, d.address)
            clients.append(c)
            assert c.ok("count") == ["1"]
        # three sessions and the idle worker ready for the next one
        assert until(lambda: len(children(d.proc.pid)) == 4), children(d.proc.pid)
        time.sleep(0.5)
        before = children(d.proc.pid)
        rss_before = rss(before | {d.proc.pid})
        # more clients than allowed: real programs, then a burst of raw sessions
        for _ in range(4):
            c = TenantClient(exe, shim, d.address)
            clients.append(c)
            assert c.do("count") == "err cudaErrorDevicesUnavailable"
            rc, err = c.close()
            (line,) = farcuda_lines(err)
            assert "refused this client" in line and "limits.sessions_total" in line, line
        for _ in range(30):
            status, text = shake(d.address, purpose="session")
            assert status == UNAVAILABLE and "limits.sessions_total" in text, text
        after = children(d.proc.pid)
        assert after == before, "the refused clients made processes"
        grown = rss(after | {d.proc.pid}) - rss_before
        assert grown < 16 << 20, f"the daemon grew by {grown >> 20} MiB"
        # logged once for this peer, not once per client
        assert len(refusal_lines(d, "sessions_total")) == 1, refusal_lines(d, "sessions_total")
        # a place that frees up is taken again
        clients[0].close()
        assert until(lambda: ended(d) == 1)
        c = TenantClient(exe, shim, d.address)
        clients.append(c)
        assert c.ok("count") == ["1"]
    finally:
        d.stop()
    assert "Traceback" not in d.log()


def test_sessions_per_tenant(tmp_path, fc, program, shim, clients):
    d = fc.start_daemon(tmp_path, "memory", config={
        "log_level": "info", "prestart": 1, "auth": {"tokens": TOKENS},
        "limits": {"sessions_per_tenant": 2}})
    try:
        exe = program("ci_tenant")

        def client(tenant):
            c = TenantClient(exe, shim, d.address, {"FARCUDA_TOKEN": TOKENS[tenant]})
            clients.append(c)
            return c
        a1, a2, a3 = client("alice"), client("alice"), client("alice")
        assert a1.ok("count") == ["1"] and a2.ok("count") == ["1"]
        assert a3.do("count") == "err cudaErrorDevicesUnavailable"
        _, err = a3.close()
        (line,) = farcuda_lines(err)
        assert "tenant 'alice' already has 2 sessions" in line, line
        assert "limits.sessions_per_tenant" in line
        b = client("bob")  # another tenant is not held back by alice's limit
        assert b.ok("count") == ["1"]
        a1.close()
        assert until(lambda: ended(d) == 1)
        a4 = client("alice")
        assert a4.ok("count") == ["1"]
    finally:
        d.stop()


# ---------------------------------------------------------------- at the door

def test_handshake_places_and_timeout(tmp_path, fc, program, shim):
    d = fc.start_daemon(tmp_path, "memory", config={
        "log_level": "info", "limits": {"handshakes_per_peer": 3, "handshake_timeout": 1.5}})
    try:
        # three connections of 127.0.0.2 stay in their handshake: two send nothing, one
        # half of its HELLO
        stuck = [Raw(d.address, "127.0.0.2") for _ in range(3)]
        t0 = time.monotonic()
        for c in stuck:
            assert c.frame().msg.name == "SERVER_HELLO"
        hello = handshake.client_hello(b"\0" * 32, {"pid": 1}, None)
        stuck[2].sock.sendall(hello[:len(hello) - 5])
        # a fourth is refused, and told why
        status, text = shake(d.address, "127.0.0.2")
        assert status == UNAVAILABLE and "limits.handshakes_per_peer" in text, text
        # another peer is not: a real program runs meanwhile
        r = fc.run_remote(program("ci_memory"), shim, d.address)
        assert r.returncode == 0 and "PASSED" in r.stdout, r.stdout + r.stderr
        # the stuck ones are dropped once the timeout has passed
        for c in stuck:
            with pytest.raises(ConnectionError):
                c.frame()
            c.close()
        took = time.monotonic() - t0
        assert 1.3 < took < 1.5 + 2.0, took
        log = d.log()
        assert log.count("timed out before its HELLO, after 1.5 s "
                         "(limits.handshake_timeout)") == 2, log[-3000:]
        assert "timed out in the middle of its HELLO" in log
        # and the peer may connect again
        assert shake(d.address, "127.0.0.2")[0] == 0
    finally:
        d.stop()


def test_new_connections_per_second_of_one_peer(tmp_path, fc, program, shim):
    # one new connection every 4 s (the bucket holds one): slow enough that a program's
    # start, even on a busy runner, comes before the next
    d = fc.start_daemon(tmp_path, "memory", config={
        "log_level": "info", "limits": {"connections_per_second_per_peer": 0.25}})
    try:
        got = [shake(d.address, "127.0.0.3") for _ in range(8)]
        assert got[0][0] == 0, got[0]
        assert all(s == UNAVAILABLE for s, _ in got[1:]), got
        assert all("limits.connections_per_second_per_peer" in t for _, t in got[1:]), got
        # ...logged once for this peer
        (line,) = refusal_lines(d, "connections_per_second_per_peer")
        assert "127.0.0.3" in line
        # another address is served as usual
        r = fc.run_remote(program("ci_memory"), shim, d.address)
        assert r.returncode == 0 and "PASSED" in r.stdout, r.stdout + r.stderr
        # a real client of an address over the limit hears which one, in one line
        r = fc.run_remote(program("ci_memory"), shim, d.address)
        assert r.returncode != 0 and "cudaErrorDevicesUnavailable" in r.stdout, r.stdout
        (line,) = farcuda_lines(r.stderr)
        assert "refused this client" in line, line
        assert "limits.connections_per_second_per_peer" in line, line
    finally:
        d.stop()


FLOOD = textwrap.dedent("""
    # Connections from one source address as fast as they go, for some seconds; a few hundred
    # are kept open (never saying a word), the oldest closed. Prints the count of attempts.
    import collections, socket, sys, time
    host, port, source, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    held, n = collections.deque(), 0
    end = time.monotonic() + seconds
    print("go", flush=True)
    while time.monotonic() < end:
        s = socket.socket()
        s.setblocking(False)
        s.bind((source, 0))
        s.connect_ex((host, port))
        n += 1
        held.append(s)
        if len(held) > 400:
            held.popleft().close()
    print(n, flush=True)
""")


def test_a_flood_from_one_peer_does_not_hold_up_another(tmp_path, fc, program, shim):
    d = fc.start_daemon(tmp_path, "memory", config={"log_level": "info"})  # default limits
    flood = None
    try:
        calm = []
        for _ in range(5):
            t0 = time.monotonic()
            assert shake(d.address)[0] == 0
            calm.append(time.monotonic() - t0)
        flood = subprocess.Popen([sys.executable, "-c", FLOOD, d.host, str(d.port),
                                  "127.0.0.2", "8"], stdout=subprocess.PIPE, text=True)
        assert flood.stdout.readline().strip() == "go"
        time.sleep(1.0)
        under = []
        t_end = time.monotonic() + 4.0
        while time.monotonic() < t_end:
            t0 = time.monotonic()
            status, text = shake(d.address)
            under.append(time.monotonic() - t0)
            assert status == 0, text
            time.sleep(0.1)
        r = fc.run_remote(program("ci_memory"), shim, d.address)
        assert r.returncode == 0 and "PASSED" in r.stdout, r.stdout + r.stderr
        attempts = int(flood.stdout.readline())
        flood.wait(30)
        print(f"\n[limits] flood of {attempts} connections in 8 s from 127.0.0.2: another "
              f"peer's handshake {max(calm) * 1e3:.1f} ms at most without it, "
              f"{max(under) * 1e3:.1f} ms at most under it ({len(under)} tried)")
        assert attempts > 2000, "the flood was no flood"
        assert max(under) < FLOOD_BOUND, under
        # no session (nor worker) was made for the flood, and the log says it once per limit
        sessions = [ln for ln in d.log().splitlines() if re.search(r"session \d+: client", ln)]
        assert len(sessions) == 1 and "127.0.0.1:" in sessions[0], sessions
        assert until(lambda: len(children(d.proc.pid)) <= 1), children(d.proc.pid)
        flood_lines = [ln for ln in d.log().splitlines()
                       if "client 127.0.0.2:" in ln and "refused:" in ln]
        assert 1 <= len(flood_lines) <= 3, flood_lines
    finally:
        if flood is not None:
            if flood.poll() is None:
                flood.kill()
                flood.wait()
            flood.stdout.close()
        d.stop()
    assert "Traceback" not in d.log()
