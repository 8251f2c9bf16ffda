"""Safe by default on a network: a daemon that listens beyond loopback with no way to
authenticate its clients warns at start, and `farcuda status` shows such a server as open;
with tokens (or client certificates) it is quiet and closed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _farcuda(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA_")
         and k != "LD_PRELOAD"}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "farcuda.interposer.cli", *args],
                          capture_output=True, text=True, env=e, timeout=60)


def _warnings(daemon) -> list[str]:
    return [ln for ln in daemon.log().splitlines()
            if "level=warning" in ln and "no authentication" in ln]


@pytest.mark.parametrize("auth", [False, True])
def test_open_to_the_network(tmp_path, fc, auth):
    config = {"listen": ["0.0.0.0:0"], "log_level": "info",
              "metrics": {"listen": "0.0.0.0:0"}}
    if auth:
        config["auth"] = {"tokens": {"ops": "ops-secret"}}
    d = fc.start_daemon(tmp_path, "memory", config=config)
    try:
        port = d.port
        env = {"FARCUDA_TOKEN": "ops-secret"} if auth else {}
        r = _farcuda("status", "--server", f"127.0.0.1:{port}", env=env)
        assert r.returncode == 0, r.stderr
        head = r.stdout.splitlines()[0]
        st = json.loads(_farcuda("status", "--server", f"127.0.0.1:{port}", "--json",
                                 env=env).stdout)[f"127.0.0.1:{port}"]
        if auth:
            assert _warnings(d) == []
            assert "OPEN" not in head and "tokens" in head, head
            assert st["open"] is False and st["auth"] is True
        else:
            (line,) = _warnings(d)
            assert f"listening on 0.0.0.0:{port} with no authentication" in line
            assert "[auth] tokens" in line
            assert "OPEN: no token or client certificate required" in head, head
            assert st["open"] is True
        # metrics beyond loopback: unauthenticated, and they name tenants
        assert "metrics on 0.0.0.0:" in d.log() and "open to anyone" in d.log()
        assert st["limits"]["sessions_total"] == 64
    finally:
        d.stop()


def test_loopback_is_quiet(memory_daemon):
    assert _warnings(memory_daemon) == []
    st = json.loads(_farcuda("status", "--server", memory_daemon.address, "--json").stdout)
    assert st[memory_daemon.address]["open"] is True  # open, but to this host only
