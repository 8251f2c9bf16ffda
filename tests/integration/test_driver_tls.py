"""The driver layer through TLS (FARCUDA_TLS=1), with certificates made at test time: the
same guarantees and the same lines as the Python client (tests/integration/test_auth.py).

Its core loads the system's OpenSSL with dlopen; the farcuda handshake runs inside TLS; a
server the client does not trust, a plain client at a TLS server, and a server that requires
a client certificate the client lacks each fail with one clear line.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import time
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "farcuda_test_service_helpers_tls", Path(__file__).with_name("service_helpers.py"))
helpers = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = helpers
_spec.loader.exec_module(helpers)

TOKENS = {"alice": "correct horse battery staple"}


def _lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("farcuda:")]


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
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


def test_static_program_through_tls(tls_daemon, pki, program, driver, fc):
    before = len(tls_daemon.log().splitlines())
    r = fc.run_driver(program("ci_memory", static=True), driver, tls_daemon.address, env={
        "FARCUDA_TLS": "1", "FARCUDA_TLS_CA": str(pki / "ca.crt"),
        "FARCUDA_TOKEN": TOKENS["alice"], "FARCUDA_REPORT": "1"})
    assert r.returncode == 0 and "PASSED" in r.stdout, r.stdout + r.stderr
    assert "equal: no" not in r.stdout
    assert len([ln for ln in r.stderr.splitlines() if "report:" in ln]) == 1
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        new = tls_daemon.log().splitlines()[before:]
        if any("tenant=alice" in ln and " tls" in ln for ln in new):
            break
        time.sleep(0.05)
    assert any("tenant=alice" in ln and " tls" in ln for ln in new), new


def test_tls_refusals_are_clear(tls_daemon, pki, program, driver, fc):
    exe = program("ci_devices", static=True)
    r = fc.run_driver(exe, driver, tls_daemon.address, env={
        "FARCUDA_TLS": "1", "FARCUDA_TLS_CA": str(pki / "other-ca.crt"),
        "FARCUDA_TOKEN": TOKENS["alice"]})
    assert r.returncode != 0
    (line,) = _lines(r.stderr)
    assert "TLS handshake failed" in line and "certificate" in line, line
    r = fc.run_driver(exe, driver, tls_daemon.address, env={
        "FARCUDA_TOKEN": TOKENS["alice"], "FARCUDA_CONNECT_TIMEOUT": "1"})
    assert r.returncode != 0
    (line,) = _lines(r.stderr)
    assert "FARCUDA_TLS=1" in line, line
    r = fc.run_driver(exe, driver, tls_daemon.address,
                      env={"FARCUDA_TLS_CA": str(pki / "ca.crt")})
    assert r.returncode != 0 and "set FARCUDA_TLS=1" in r.stderr


def test_client_certificates(tmp_path, pki, program, driver, fc):
    d = helpers.Farcudad(tmp_path, config={"tls": {
        "cert": str(pki / "server.crt"), "key": str(pki / "server.key"),
        "client_ca": str(pki / "ca.crt")}})
    try:
        exe = program("ci_devices", static=True)
        env = {"FARCUDA_TLS": "1", "FARCUDA_TLS_CA": str(pki / "ca.crt")}
        r = fc.run_driver(exe, driver, d.address, env=env)  # no certificate: refused
        assert r.returncode != 0
        (line,) = _lines(r.stderr)
        assert "FARCUDA_TLS_CERT" in line, line
        r = fc.run_driver(exe, driver, d.address, env=dict(
            env, FARCUDA_TLS_CERT=str(pki / "client.crt"),
            FARCUDA_TLS_KEY=str(pki / "client.key")))
        assert r.returncode == 0 and "PASSED" in r.stdout, r.stdout + r.stderr
        time.sleep(0.3)
        assert "tls cert=edge-device-7" in d.log()
    finally:
        d.stop()
