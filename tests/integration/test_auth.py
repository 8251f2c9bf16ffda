"""Token authentication end to end, and TLS (optional) with certificates made at test time.

Tokens: the right one works; a wrong one or none gives the client one clear line and a CUDA
error, and the server one log line; a HELLO recorded on one connection is useless on another
(each connection has a fresh challenge), and so is a HELLO whose identity (the tenant's name
comes from it) was altered. TLS: the farcuda handshake and everything after it runs inside
TLS; a client that does not trust the server's certificate, or a server that requires a
client certificate the client lacks, fails with one clear line; the daemon's
acknowledgements count through the TLS relays, so a link silent towards the server fails the
client within its liveness timeout there too.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest
from farcuda.interposer.cli import query_status
from farcuda.wire import BY_NAME, FrameReader, handshake

_spec = importlib.util.spec_from_file_location(
    "farcuda_test_service_helpers", Path(__file__).with_name("service_helpers.py"))
helpers = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = helpers
_spec.loader.exec_module(helpers)

TOKENS = {"alice": "correct horse battery staple", "ci": "another-secret"}


@pytest.fixture(scope="module")
def token_daemon(tmp_path_factory, fc):
    d = fc.start_daemon(tmp_path_factory.mktemp("authd"), "memory",
                        config={"auth": {"tokens": TOKENS}, "log_level": "info"})
    yield d
    d.stop()


def _new_log_lines(d, before: int) -> list[str]:
    time.sleep(0.3)  # the front logs right after it answers
    return d.log().splitlines()[before:]


def _farcuda_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("farcuda:")]


def test_right_token(token_daemon, program, shim, fc):
    before = len(token_daemon.log().splitlines())
    r = fc.run_remote(program("ci_memory"), shim, token_daemon.address,
                      env={"FARCUDA_TOKEN": TOKENS["alice"]})
    assert r.returncode == 0 and "PASSED" in r.stdout, r.stdout + r.stderr
    assert any("tenant=alice" in ln for ln in _new_log_lines(token_daemon, before))


@pytest.mark.parametrize("token", ["wrong-token", TOKENS["alice"] + "x"])
def test_wrong_token(token_daemon, program, shim, fc, token):
    before = len(token_daemon.log().splitlines())
    r = fc.run_remote(program("ci_memory"), shim, token_daemon.address,
                      env={"FARCUDA_TOKEN": token})
    assert r.returncode != 0
    assert "cudaErrorDevicesUnavailable" in r.stdout
    (line,) = _farcuda_lines(r.stderr)
    assert "refused this client" in line and "authentication failed" in line
    assert "FARCUDA_TOKEN" in line
    new = [ln for ln in _new_log_lines(token_daemon, before) if "level=warning" in ln]
    assert len(new) == 1 and "authentication failed" in new[0], new


def test_no_token(token_daemon, program, shim, fc):
    before = len(token_daemon.log().splitlines())
    r = fc.run_remote(program("ci_memory"), shim, token_daemon.address)
    assert r.returncode != 0
    (line,) = _farcuda_lines(r.stderr)
    assert "requires a token" in line and "FARCUDA_TOKEN" in line
    new = [ln for ln in _new_log_lines(token_daemon, before) if "level=warning" in ln]
    assert len(new) == 1 and "handshake failed" in new[0], new


class _Conn:
    """A raw connection up to the handshake."""

    def __init__(self, address: str):
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.reader = FrameReader("s2c")
        hello = self.frame()
        assert hello.msg.name == "SERVER_HELLO"
        _v, flags, self.challenge = handshake.parse_server_hello(hello.fixed)
        assert flags & handshake.FLAG_AUTH

    def frame(self):
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            got = self.reader.feed(data)
            if got:
                return got[0]

    def answer(self, hello: bytes) -> tuple[int, str]:
        self.sock.sendall(hello)
        rep = self.frame()
        assert rep.msg.name == "REPLY"
        status = int.from_bytes(rep.fixed[:4], "little")
        return status, bytes(rep.tail or b"").decode(errors="replace")

    def close(self):
        self.sock.close()


def test_replayed_hello_is_rejected(token_daemon):
    identity = {"pid": os.getpid(), "host": "replay-test", "exe": "raw", "purpose": "status"}
    first, second = _Conn(token_daemon.address), _Conn(token_daemon.address)
    try:
        assert first.challenge != second.challenge  # a fresh challenge per connection
        recorded = handshake.client_hello(first.challenge, identity, TOKENS["ci"])
        status, text = second.answer(recorded)  # replayed on another connection
        assert status != 0 and "authentication failed" in text
        status, text = first.answer(recorded)  # on its own connection it was valid
        assert status == 0 and json.loads(text)["auth"] is True
    finally:
        first.close()
        second.close()


def test_altered_identity_is_rejected(token_daemon):
    """The MAC covers the identity, so nobody can take another tenant's name (or pid)."""
    c = _Conn(token_daemon.address)
    try:
        good = handshake.client_hello(c.challenge, {"pid": 1, "purpose": "status"},
                                      TOKENS["ci"])
        forged = good.replace(b'"pid": 1', b'"pid": 2')
        assert forged != good
        status, text = c.answer(forged)
        assert status != 0 and "authentication failed" in text
    finally:
        c.close()


def test_status_needs_the_token(token_daemon):
    with pytest.raises(ConnectionError, match="authentication failed"):
        query_status(token_daemon.address, "nope")
    assert query_status(token_daemon.address, TOKENS["ci"])["auth"] is True


# ---------------------------------------------------------------- TLS

@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, made now
    (with the openssl command: the `cryptography` package is not a dependency)."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make test certificates with")
    return helpers.make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_daemon(tmp_path_factory, fc, pki):
    d = fc.start_daemon(tmp_path_factory.mktemp("tlsd"), "memory", config={
        "log_level": "info", "auth": {"tokens": TOKENS},
        "tls": {"cert": str(pki / "server.crt"), "key": str(pki / "server.key")}})
    yield d
    d.stop()


def test_tls_handshake_on_loopback(tls_daemon, pki):
    """A plain TLS client (Python's ssl) completes the handshake, then the farcuda handshake
    runs inside: the SERVER_HELLO arrives encrypted."""
    import ssl

    from farcuda.wire import tls
    ctx = tls.client_context(str(pki / "ca.crt"))
    with socket.create_connection((tls_daemon.host, tls_daemon.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            assert s.version() in ("TLSv1.2", "TLSv1.3")
            reader = FrameReader("s2c")
            frames = []
            while not frames:
                frames = reader.feed(s.recv(4096))
            assert frames[0].msg is BY_NAME["SERVER_HELLO"]
    # a client that trusts another CA refuses the server
    bad = tls.client_context(str(pki / "other-ca.crt"))
    with socket.create_connection((tls_daemon.host, tls_daemon.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            bad.wrap_socket(raw, server_hostname="127.0.0.1")


def test_ci_memory_through_tls(tls_daemon, pki, program, shim, fc):
    before = len(tls_daemon.log().splitlines())
    r = fc.run_remote(program("ci_memory"), shim, tls_daemon.address, env={
        "FARCUDA_TLS": "1", "FARCUDA_TLS_CA": str(pki / "ca.crt"),
        "FARCUDA_TOKEN": TOKENS["alice"], "FARCUDA_REPORT": "1"})
    assert r.returncode == 0 and "PASSED" in r.stdout, r.stdout + r.stderr
    assert "equal: no" not in r.stdout
    assert len([ln for ln in r.stderr.splitlines() if "report:" in ln]) == 1
    assert any("tenant=alice" in ln and " tls" in ln
               for ln in _new_log_lines(tls_daemon, before))
    # `farcuda status` over TLS too
    from farcuda.interposer import config as configmod
    cfg = configmod.from_env({"FARCUDA_TLS": "1", "FARCUDA_TLS_CA": str(pki / "ca.crt")})
    assert query_status(tls_daemon.address, TOKENS["ci"], tls_config=cfg)["tls"] is True


def test_client_to_server_blackhole_through_tls(tls_daemon, pki, program, shim, fc):
    """Through both TLS relays (the client's and the front's) the daemon's acknowledgements
    still count what the client sent: a link gone silent towards the server fails the client
    within its liveness timeout (counted from the cut), the daemon's client_timeout far away."""
    import threading

    from farcuda.daemon.linkproxy import ProxyThread
    env = {"FARCUDA_TLS": "1", "FARCUDA_TLS_CA": str(pki / "ca.crt"),
           "FARCUDA_TOKEN": TOKENS["alice"], "FARCUDA_LIVENESS_TIMEOUT": "2"}
    with ProxyThread(tls_daemon.address, cut_after_bytes=20 << 20, cut_direction="c2s") as p:
        out: dict = {}
        t = threading.Thread(target=lambda: out.update(r=fc.run_remote(
            program("ci_memory"), shim, p.address, timeout=60, env=env),
            end=time.monotonic()))
        t.start()
        while p.stats.cuts == 0 and t.is_alive():
            time.sleep(0.01)
        cut = time.monotonic()
        t.join(60)
        assert p.stats.cuts == 1
    r = out["r"]
    assert r.returncode != 0 and "cudaErrorDevicesUnavailable" in r.stdout, r.stdout
    assert "has not received what this client sent" in r.stderr, r.stderr
    assert out["end"] - cut < 2 + 3.0, out["end"] - cut


def test_tls_refusals_are_clear(tls_daemon, pki, program, shim, fc):
    exe = program("ci_memory")
    # the client does not trust the server's certificate
    r = fc.run_remote(exe, shim, tls_daemon.address, env={
        "FARCUDA_TLS": "1", "FARCUDA_TLS_CA": str(pki / "other-ca.crt"),
        "FARCUDA_TOKEN": TOKENS["alice"]})
    assert r.returncode != 0
    (line,) = _farcuda_lines(r.stderr)
    assert "TLS handshake failed" in line and "certificate" in line, line
    # a plain client at a TLS server: no hang, a hint
    r = fc.run_remote(exe, shim, tls_daemon.address, env={
        "FARCUDA_TOKEN": TOKENS["alice"], "FARCUDA_CONNECT_TIMEOUT": "1"})
    assert r.returncode != 0
    (line,) = _farcuda_lines(r.stderr)
    assert "FARCUDA_TLS=1" in line, line
    # a bad client setting is named
    r = fc.run_remote(exe, shim, tls_daemon.address, env={"FARCUDA_TLS_CA": str(pki / "ca.crt")})
    assert r.returncode != 0 and "set FARCUDA_TLS=1" in r.stderr


def test_client_certificates(tmp_path, fc, pki, program, shim):
    """Client certificates, on farcudad's own serving loop (uvloop's TLS)."""
    d = helpers.Farcudad(tmp_path, config={"tls": {
        "cert": str(pki / "server.crt"), "key": str(pki / "server.key"),
        "client_ca": str(pki / "ca.crt")}})
    try:
        exe = program("ci_memory")
        env = {"FARCUDA_TLS": "1", "FARCUDA_TLS_CA": str(pki / "ca.crt")}
        r = fc.run_remote(exe, shim, d.address, env=env)  # no certificate: refused
        assert r.returncode != 0
        (line,) = _farcuda_lines(r.stderr)
        assert "FARCUDA_TLS_CERT" in line, line
        r = fc.run_remote(exe, shim, d.address, env=dict(
            env, FARCUDA_TLS_CERT=str(pki / "client.crt"),
            FARCUDA_TLS_KEY=str(pki / "client.key")))
        assert r.returncode == 0 and "PASSED" in r.stdout, r.stdout + r.stderr
        time.sleep(0.3)
        assert "tls cert=edge-device-7" in d.log()
    finally:
        d.stop()


def test_tls_config_errors(tmp_path):
    from farcuda.daemon.config import ConfigError, from_dict
    with pytest.raises(ConfigError, match="needs both cert and key"):
        from_dict({"tls": {"cert": "x.crt"}})
    with pytest.raises(ConfigError, match="does not exist"):
        from_dict({"tls": {"cert": str(tmp_path / "x.crt"), "key": str(tmp_path / "x.key")}})
    with pytest.raises(ConfigError, match="unknown"):
        from_dict({"tls": {"cert": "a", "key": "b", "ciphers": "ALL"}})
    # relative paths are relative to the configuration file
    (tmp_path / "s.crt").write_text("x")
    (tmp_path / "s.key").write_text("x")
    cfg = from_dict({"tls": {"cert": "s.crt", "key": "s.key"}}, str(tmp_path / "d.toml"))
    assert cfg.tls_cert == str(tmp_path / "s.crt") and cfg.tls

