"""Tenant limits and isolation on one daemon (memory backend, real clients through the shim).

- limits.memory_per_tenant holds over all of a tenant's connections (the front keeps the
  count, daemon/tenants.py), exactly, also when they allocate at the same moment; a cudaMalloc
  over it fails with cudaErrorMemoryAllocation and other tenants are unaffected; what a
  client held returns to its tenant when it frees it or dies.
- limits.tenants_per_gpu refuses a further tenant's device with cudaErrorDevicesUnavailable
  and one line saying why, and admits it once a place is free.
- No client reaches another's memory. Device addresses are per-client windows (every client's
  window starts at the same address), so the same number names different memory in two
  clients: "foreign" is whatever this client did not allocate itself. Tested through the shim
  and, below the shim, with raw protocol frames (so the daemon's own check is what refuses).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from farcuda.wire import BY_NAME, FrameReader, encode, handshake

_spec = importlib.util.spec_from_file_location(
    "farcuda_test_service_helpers", Path(__file__).with_name("service_helpers.py"))
helpers = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = helpers
_spec.loader.exec_module(helpers)
TenantClient = helpers.TenantClient

MiB = 1 << 20
TOKENS = {"alice": "alice-secret", "bob": "bob-secret"}


@pytest.fixture
def exe(program):
    return program("ci_tenant")


@pytest.fixture
def clients():
    made: list[TenantClient] = []
    yield made
    for c in made:
        c.kill()


def _client(clients, exe, shim, daemon, token: str | None = None, **env) -> TenantClient:
    e = dict(env)
    if token:
        e["FARCUDA_TOKEN"] = TOKENS[token]
    c = TenantClient(exe, shim, daemon.address, e)
    clients.append(c)
    return c


def _until(fn, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


# ---------------------------------------------------------------- memory quota

@pytest.fixture
def quota_daemon(tmp_path, fc):
    d = fc.start_daemon(tmp_path, "memory", config={
        "log_level": "info", "prestart": 2, "auth": {"tokens": TOKENS},
        "limits": {"memory_per_tenant": "64MiB"}})
    yield d
    d.stop()


def test_quota_spans_a_tenants_connections(quota_daemon, exe, shim, clients):
    a1 = _client(clients, exe, shim, quota_daemon, "alice")
    a2 = _client(clients, exe, shim, quota_daemon, "alice")
    b = _client(clients, exe, shim, quota_daemon, "bob")
    p1 = a1.ok(f"malloc {40 * MiB}")[0]
    # alice's second connection: 40 + 40 MiB is over her 64 MiB
    assert a2.do(f"malloc {40 * MiB}") == "err cudaErrorMemoryAllocation"
    # bob is another tenant: unaffected
    pb = b.ok(f"malloc {40 * MiB}")[0]
    b.ok(f"fill {pb} {40 * MiB} 9")
    # what is left of alice's quota is still hers, and cudaMemGetInfo says how much
    a2.ok(f"malloc {20 * MiB}")
    assert int(a2.ok("meminfo")[0]) == 4 * MiB
    assert int(a1.ok("meminfo")[0]) == 4 * MiB
    assert a1.do(f"malloc {5 * MiB}") == "err cudaErrorMemoryAllocation"
    # a refusal is not sticky, and a free returns the bytes to the tenant
    a1.ok(f"free {p1}")
    a2.ok(f"malloc {40 * MiB}")
    assert b.ok(f"read {pb} 4096")[1] == str(9 * 4096)
    log = quota_daemon.log()
    assert "tenant 'alice' would hold" in log and "limits.memory_per_tenant" in log


def test_quota_is_exact_under_concurrent_allocations(quota_daemon, exe, shim, clients):
    """Two connections of one tenant allocate 1 MiB at a time, as fast as they can, at the
    same moment: exactly 64 succeed, never more."""
    a1 = _client(clients, exe, shim, quota_daemon, "alice")
    a2 = _client(clients, exe, shim, quota_daemon, "alice")
    a1.ok("count")
    a2.ok("count")
    n = 48
    for c in (a1, a2):  # queue all the commands first: both clients run them concurrently
        c.proc.stdin.write(f"malloc {MiB}\n" * n)
        c.proc.stdin.flush()
    answers = [c.lines.get(timeout=30) for c in (a1, a2) for _ in range(n)]
    ok = sum(a.startswith("ok") for a in answers)
    assert ok == 64, answers
    assert all(a.startswith("ok") or a == "err cudaErrorMemoryAllocation" for a in answers)
    assert int(a1.ok("meminfo")[0]) == 0


def test_quota_returns_when_a_client_dies(quota_daemon, exe, shim, clients):
    a1 = _client(clients, exe, shim, quota_daemon, "alice")
    a2 = _client(clients, exe, shim, quota_daemon, "alice")
    a1.ok(f"malloc {60 * MiB}")
    assert a2.do(f"malloc {40 * MiB}") == "err cudaErrorMemoryAllocation"
    a1.proc.send_signal(signal.SIGKILL)
    a1.proc.wait()
    assert _until(lambda: a2.do(f"malloc {40 * MiB}").startswith("ok")), a2.stderr()


# ---------------------------------------------------------------- tenants per GPU

def test_tenants_per_gpu(tmp_path, fc, exe, shim, clients):
    d = fc.start_daemon(tmp_path, "memory", config={
        "log_level": "info", "prestart": 2, "auth": {"tokens": TOKENS},
        "limits": {"tenants_per_gpu": 1}})
    try:
        a1 = _client(clients, exe, shim, d, "alice")
        a1.ok("malloc 4096")  # alice's device is open on GPU 0
        b = _client(clients, exe, shim, d, "bob")
        assert b.ok("count") == ["1"]  # connecting is fine; a device on the GPU is not
        assert b.do("malloc 4096") == "err cudaErrorDevicesUnavailable"
        assert b.do("malloc 4096") == "err cudaErrorDevicesUnavailable"
        rc, err = b.close()
        lines = [ln for ln in err.splitlines() if ln.startswith("farcuda:")]
        assert len(lines) == 1 and "limits.tenants_per_gpu" in lines[0], err
        assert "GPU 0" in lines[0]
        time.sleep(0.2)
        warnings = [ln for ln in d.log().splitlines() if "refused GPU 0" in ln]
        assert len(warnings) == 1, warnings  # one line on the server per refusal
        # the same tenant may open more devices there
        a2 = _client(clients, exe, shim, d, "alice")
        a2.ok("malloc 4096")
        # once alice is gone, bob gets the GPU (a refusal sticks to a process, as a failed
        # context creation does in CUDA: each try is a new process)
        a1.close()
        a2.close()
        assert _until(lambda: _client(clients, exe, shim, d, "bob").do("malloc 4096")
                      .startswith("ok"))
    finally:
        d.stop()


# ---------------------------------------------------------------- isolation

def test_foreign_memory_through_the_shim(memory_daemon, exe, shim, clients):
    a = _client(clients, exe, shim, memory_daemon)
    b = _client(clients, exe, shim, memory_daemon)
    pa = a.ok(f"malloc {MiB}")[0]
    pa2 = a.ok(f"malloc {4 * MiB}")[0]
    a.ok(f"fill {pa} {MiB} 170")  # 0xAA
    b.ok("count")
    # b has allocated nothing: a's addresses are not its memory, whatever it does
    for cmd in (f"read {pa} 16", f"fill {pa} 16 1", f"memset {pa} 16 1", f"free {pa}",
                f"read {pa2} 16", f"free {pa2}"):
        got = b.do(cmd)
        assert got.startswith("err "), (cmd, got)
    # b's own first allocation has the same number as a's (per-client windows) but is b's
    pb = b.ok(f"malloc {MiB}")[0]
    assert pb == pa
    b.ok(f"fill {pb} {MiB} 85")  # 0x55
    assert b.ok(f"read {pb} {MiB}") == ["85", str(85 * MiB)]
    assert a.ok(f"read {pa} {MiB}") == ["170", str(170 * MiB)]
    # beyond b's own allocation is still not b's, though a has memory there
    assert b.do(f"read {pa2} 16").startswith("err ")
    assert b.do(f"copy {pb} {pa2} 16").startswith("err ")
    b.ok(f"free {pb}")
    assert a.ok(f"read {pa} {MiB}") == ["170", str(170 * MiB)]
    a.ok(f"free {pa}")
    a.ok(f"free {pa2}")


class RawClient:
    """Protocol frames straight to the daemon, without the shim (and its own checks)."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.reader = FrameReader("s2c")
        self.pending: list = []
        hello = self.frame()
        _v, _f, challenge = handshake.parse_server_hello(hello.fixed)
        self.sock.sendall(handshake.client_hello(
            challenge, {"pid": os.getpid(), "host": "raw", "exe": "raw"}, None))
        status, _ = self._reply(self.frame())
        assert status == 0
        self.rid = 1

    def frame(self):
        while not self.pending:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("the daemon closed the connection")
            self.pending += self.reader.feed(data)
        return self.pending.pop(0)

    @staticmethod
    def _reply(f) -> tuple[int, bytes]:
        assert f.msg.name == "REPLY", f.msg.name
        return int.from_bytes(f.fixed[:4], "little"), bytes(f.tail or b"")

    def call(self, name: str, values: dict, tail: bytes = b"") -> tuple[int, bytes]:
        self.rid += 1
        self.sock.sendall(encode(BY_NAME[name], values, tail, rid=self.rid))
        while True:
            f = self.frame()
            if f.msg.name == "REPLY" and f.rid == self.rid:
                return self._reply(f)
            assert f.msg.name in ("HEARTBEAT", "DATA"), f.msg.name

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("backend", ["memory", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_foreign_memory_refused_by_the_daemon(backend, tmp_path, exe, shim, clients, fc):
    """On the GPU the daemon's C path answers small copies and idle synchronizations itself,
    with its own copy of the session's memory: it must refuse exactly what Python refuses."""
    from farcuda.daemon.errors import E
    daemon = fc.start_daemon(tmp_path, backend)
    try:
        _foreign_memory_refused(daemon, exe, shim, clients, E)
    finally:
        for c in clients:
            c.kill()
        daemon.stop()


def _foreign_memory_refused(daemon, exe, shim, clients, E) -> None:
    a = _client(clients, exe, shim, daemon)
    pa = a.ok(f"malloc {MiB}")[0]
    a.ok(f"fill {pa} {MiB} 170")
    ptr = int(pa, 16)
    raw = RawClient(daemon.address)
    try:
        # the same window as a's: its addresses are numerically valid here too
        status, _ = raw.call("DEVICE_OPEN", {"gpu": 0, "window_base": 0x200000000000,
                                             "window_size": 1 << 38})
        assert status == 0
        bad = E["cudaErrorInvalidValue"]
        assert raw.call("MEMCPY_DTOH", {"src": ptr, "size": 64})[0] == bad
        assert raw.call("MEMCPY_HTOD", {"dst": ptr}, b"\x01" * 64)[0] == bad
        assert raw.call("MEMSET", {"dst": ptr, "size": 64, "value": 1})[0] == bad
        assert raw.call("MEMCPY_DTOD", {"dst": ptr, "src": ptr + 64, "size": 64})[0] == bad
        assert raw.call("FREE", {"ptr": ptr})[0] == bad
        # its own allocation at that very address is its own memory
        status, rep = raw.call("MALLOC", {"size": 4096})
        assert status == 0 and int.from_bytes(rep[:8], "little") == ptr
        assert raw.call("MEMSET", {"dst": ptr, "size": 4096, "value": 0x55})[0] == 0
        status, data = raw.call("MEMCPY_DTOH", {"src": ptr, "size": 4096})
        assert status == 0 and data.endswith(b"\x55" * 4096)
        # ...and only as far as it reaches
        assert raw.call("MEMCPY_DTOH", {"src": ptr, "size": 8192})[0] == bad
        # with the device idle (what lets the C path answer), the same rules
        assert raw.call("DEVICE_SYNC", {})[0] == 0
        assert raw.call("STREAM_SYNC", {"stream": 0})[0] == 0
        status, data = raw.call("MEMCPY_DTOH", {"src": ptr + 4032, "size": 64})
        assert status == 0 and data == b"\x55" * 64
        assert raw.call("MEMCPY_DTOH", {"src": ptr + 4090, "size": 64})[0] == bad
        assert raw.call("MEMCPY_DTOH", {"src": ptr - 64, "size": 64})[0] == bad
        assert raw.call("MEMCPY_DTOH", {"src": ptr, "size": 4, "stream": 77})[0] == E[
            "cudaErrorInvalidResourceHandle"]
        assert raw.call("FREE", {"ptr": ptr})[0] == 0
        assert raw.call("MEMCPY_DTOH", {"src": ptr, "size": 64})[0] == bad
    finally:
        raw.close()
    assert a.ok(f"read {pa} {MiB}") == ["170", str(170 * MiB)]
