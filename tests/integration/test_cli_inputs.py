"""Every command-line entry point over a table of bad arguments and environments: each must
answer with exactly one line on stderr that says what is wrong, and a non-zero exit status,
never a traceback. Then what the commands must say when all is well (--version, --help), and
the lines a real client prints for a server that `farcuda run --server` chose.

The entry points run as their console scripts do (``python -m`` of the same modules), in an
environment with no FARCUDA_* variable but the case's own.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

FARCUDA = [sys.executable, "-m", "farcuda.interposer.cli"]
FARCUDAD = [sys.executable, "-m", "farcuda.daemon.cli"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once it is closed


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("inputs")
    made = {}

    def put(name: str, data: bytes | str, mode: int = 0o644) -> None:
        p = d / name
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        p.chmod(mode)
        made[name] = str(p)
    put("latin1.toml", "listen = [\"caf\xe9:7420\"]\n".encode("latin-1"))
    put("broken.toml", "listen = \n")
    put("unknown.toml", "lisen = [\"127.0.0.1:7420\"]\n")
    put("listen5.toml", "listen = 5\n")
    put("zero-sessions.toml", "[limits]\nsessions_total = 0\n")
    put("timeout-text.toml", "[limits]\nhandshake_timeout = \"5\"\n")
    put("bad-metrics.toml", "[metrics]\nlisten = \"x:y\"\n")
    put("prestart.toml", "prestart = 5\n[limits]\nsessions_total = 2\n")
    put("token-number.toml", "[auth]\ntokens = { a = 5 }\n")
    put("tls-missing.toml", "[tls]\ncert = \"nope.crt\"\nkey = \"nope.key\"\n")
    put("plain.txt", "not a program\n")
    put("not-pem.crt", "not a certificate\n")
    made["dir"] = str(d)
    return made


@pytest.fixture(scope="module")
def junk_server():
    """A TCP server that is not a farcuda server: it answers anything with an HTTP error."""
    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                try:
                    conn.sendall(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n" * 4)
                except OSError:
                    pass
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield f"127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    t.join(5)
    srv.close()


def _env(extra: dict) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA_")
         and k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")}
    e.update(extra)
    return e


def run(cmd: list[str], env: dict | None = None, timeout: float = 120):
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(env or {}),
                          timeout=timeout, stdin=subprocess.DEVNULL)


CLOSED = f"127.0.0.1:{_closed_port()}"
DEVICES_65 = ",".join(["h:1/0"] * 65)

# (id, entry point, arguments, environment, words the line must contain)
CASES = [
    # farcuda
    ("no-command", FARCUDA, [], {}, "COMMAND"),
    ("bad-command", FARCUDA, ["launch"], {}, "invalid choice"),
    ("bad-option", FARCUDA, ["--bogus", "status"], {}, "unrecognized arguments: --bogus"),
    ("run-nothing", FARCUDA, ["run"], {}, "no program given"),
    ("run-server-no-value", FARCUDA, ["run", "--server"], {}, "expected one argument"),
    ("run-server-bad-port", FARCUDA, ["run", "--server", "foo:xx", "--", "true"], {},
     "'foo:xx' has a bad port 'xx'"),
    ("run-server-port-0", FARCUDA, ["run", "--server", "foo:0", "--", "true"], {}, "bad port"),
    ("run-server-empty", FARCUDA, ["run", "--server", "", "--", "true"], {},
     "is not host[:port]"),
    ("run-server-port-big", FARCUDA, ["run", "--server", "h:70000", "true"], {}, "bad port"),
    ("run-server-v6-open", FARCUDA, ["run", "--server", "[::1", "--", "true"], {},
     "is not host[:port]"),
    ("run-missing-no-server", FARCUDA, ["run", "--", "./no-such-program"], {},
     "cannot run ./no-such-program: no such file"),
    ("run-missing-server", FARCUDA, ["run", "--server", CLOSED, "--", "./no-such-program"], {},
     "no such file"),
    ("run-missing-on-path", FARCUDA, ["run", "no-such-program-on-path"], {},
     "not found on PATH"),
    ("run-directory", FARCUDA, ["run", "--", "/"], {}, "it is a directory"),
    ("run-not-executable", FARCUDA, ["run", "--", "@plain.txt@"], {}, "not executable"),
    ("run-bad-option", FARCUDA, ["run", "--bogus", "--", "true"], {},
     "unrecognized arguments: --bogus"),
    ("run-bad-devices", FARCUDA, ["run", "--", "true"], {"FARCUDA_DEVICES": "bogus:port/1"},
     "FARCUDA_DEVICES entry 0 'bogus:port/1'"),
    ("run-bad-server-env", FARCUDA, ["run", "--", "true"], {"FARCUDA_SERVER": "foo:xx"},
     "FARCUDA_SERVER"),
    ("run-bad-count", FARCUDA, ["run", "--", "true"], {"FARCUDA_DEVICE_COUNT": "two"},
     "FARCUDA_DEVICE_COUNT='two'"),
    ("run-count-hole", FARCUDA, ["run", "--", "true"],
     {"FARCUDA_DEVICE_COUNT": "2", "FARCUDA_DEVICE_0": "h"}, "FARCUDA_DEVICE_1 is not set"),
    ("run-bad-timeout", FARCUDA, ["run", "--server", CLOSED, "true"],
     {"FARCUDA_CONNECT_TIMEOUT": "soon"}, "FARCUDA_CONNECT_TIMEOUT='soon'"),
    ("run-daemon-log", FARCUDA, ["run", "--", "true"], {"FARCUDA_DAEMON_LOG": "loud"},
     "FARCUDA_DAEMON_LOG='loud'"),
    ("status-bad-server", FARCUDA, ["status", "--server", "foo:xx"], {}, "bad port"),
    ("status-unreachable", FARCUDA, ["status", "--server", CLOSED], {}, "unreachable"),
    ("status-not-farcuda", FARCUDA, ["status", "--server", "@junk@"], {}, "farcuda server"),
    ("status-bad-devices", FARCUDA, ["status"], {"FARCUDA_DEVICES": "bogus:port/1"},
     "bad port 'port'"),
    ("status-empty-devices", FARCUDA, ["status"], {"FARCUDA_DEVICES": ","},
     "lists no device"),
    ("status-gpu-index", FARCUDA, ["status"], {"FARCUDA_DEVICES": "h:1/x"}, "not a number"),
    ("status-sm-option", FARCUDA, ["status"], {"FARCUDA_DEVICES": "h:1/0@sm=0"}, "sm=N"),
    ("status-65-devices", FARCUDA, ["status"], {"FARCUDA_DEVICES": DEVICES_65},
     "at most 64"),
    ("status-bad-liveness", FARCUDA, ["status"], {"FARCUDA_LIVENESS_TIMEOUT": "-1"},
     "must be positive"),
    ("status-bad-spin", FARCUDA, ["status"], {"FARCUDA_SPIN_US": "lots"}, "FARCUDA_SPIN_US"),
    ("status-bad-tls", FARCUDA, ["status"], {"FARCUDA_TLS": "maybe"}, "FARCUDA_TLS"),
    ("status-ca-without-tls", FARCUDA, ["status"], {"FARCUDA_TLS_CA": "/etc/hostname"},
     "set FARCUDA_TLS=1"),
    ("status-missing-ca", FARCUDA, ["status"],
     {"FARCUDA_TLS": "1", "FARCUDA_TLS_CA": "/no/such/ca.pem"}, "no such file"),
    ("status-not-pem-ca", FARCUDA, ["status", "--server", "@junk@"],
     {"FARCUDA_TLS": "1", "FARCUDA_TLS_CA": "@not-pem.crt@"}, "unreachable"),
    ("status-bad-option", FARCUDA, ["status", "--jsn"], {}, "unrecognized arguments"),
    ("shim-path-extra", FARCUDA, ["shim-path", "x"], {}, "unrecognized arguments"),
    # farcudad
    ("d-bad-option", FARCUDAD, ["--bogus"], {}, "unrecognized arguments: --bogus"),
    ("d-bad-command", FARCUDAD, ["install-units"], {}, "unrecognized arguments"),
    ("d-listen-no-value", FARCUDAD, ["--listen"], {}, "expected one argument"),
    ("d-listen-bad-port", FARCUDAD, ["--listen", "foo:xx"], {}, "--listen: 'foo:xx'"),
    ("d-listen-not-here", FARCUDAD, ["--listen", "192.0.2.1:7420"], {},
     "cannot listen on 192.0.2.1:7420"),
    ("d-config-missing", FARCUDAD, ["--config", "/no/such.toml"], {}, "does not exist"),
    ("d-config-dir", FARCUDAD, ["--config", "@dir@"], {}, "is a directory"),
    ("d-config-latin1", FARCUDAD, ["--config", "@latin1.toml@"], {}, "not UTF-8"),
    ("d-config-broken", FARCUDAD, ["--config", "@broken.toml@"], {}, "broken.toml"),
    ("d-config-unknown", FARCUDAD, ["--config", "@unknown.toml@"], {}, "unknown setting"),
    ("d-config-listen5", FARCUDAD, ["--config", "@listen5.toml@"], {}, "listen must be"),
    ("d-config-sessions0", FARCUDAD, ["--config", "@zero-sessions.toml@"], {},
     "limits.sessions_total must be an integer >= 1"),
    ("d-config-timeout-text", FARCUDAD, ["--config", "@timeout-text.toml@"], {},
     "limits.handshake_timeout must be a positive number"),
    ("d-config-metrics", FARCUDAD, ["--config", "@bad-metrics.toml@"], {}, "[metrics] listen"),
    ("d-config-prestart", FARCUDAD, ["--config", "@prestart.toml@"], {},
     "prestart (5) is more than limits.sessions_total (2)"),
    ("d-config-token", FARCUDAD, ["--config", "@token-number.toml@"], {},
     "tokens must map names to non-empty strings"),
    ("d-config-tls", FARCUDAD, ["--config", "@tls-missing.toml@"], {}, "does not exist"),
    ("d-prestart-negative", FARCUDAD, ["--prestart", "-5"], {}, "-5 is negative"),
    ("d-prestart-text", FARCUDAD, ["--prestart", "many"], {}, "'many' is not a whole number"),
    ("d-prestart-too-many", FARCUDAD, ["--prestart", "1000"], {},
     "--prestart 1000 is more than limits.sessions_total (64)"),
    ("d-log-level", FARCUDAD, ["--log-level", "loud"], {}, "invalid choice: 'loud'"),
    ("d-ready-fd", FARCUDAD, ["--ready-fd", "99"], {}, "not an open descriptor"),
    ("unit-root", FARCUDAD, ["install-unit", "--user", "root", "--dry-run"], {},
     "not a valid unprivileged user name"),
    ("unit-relative-config", FARCUDAD, ["install-unit", "--config", "x.toml", "--dry-run"], {},
     "--config must be an absolute path"),
    ("unit-bad-option", FARCUDAD, ["install-unit", "--bogus"], {}, "unrecognized arguments"),
    ("unit-prefix-file", FARCUDAD, ["install-unit", "--prefix", "@plain.txt@"], {},
     "Not a directory"),
]


@pytest.mark.parametrize("cmd, args, env, words", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(cmd, args, env, words, files, junk_server):
    sub = dict(files, junk=junk_server)

    def fill(text: str) -> str:  # "@name@": a file of the fixture, or the junk server
        return re.sub(r"@([a-z0-9.\-]+)@", lambda m: sub[m.group(1)], text)
    args = [fill(a) for a in args]
    env = {k: fill(v) for k, v in env.items()}
    r = run(cmd + args, env)
    assert r.returncode != 0, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), r.stderr
    assert words in lines[0], lines[0]


def test_version_and_help():
    for cmd, name in ((FARCUDA, "farcuda"), (FARCUDAD, "farcudad")):
        r = run(cmd + ["--version"])
        assert r.returncode == 0 and r.stderr == ""
        assert r.stdout.split()[0] == name and r.stdout.split()[1][0].isdigit(), r.stdout
    r = run(FARCUDAD + ["--help"])
    assert r.returncode == 0 and "install-unit" in r.stdout and "--prestart" in r.stdout
    r = run(FARCUDA + ["run", "--help"])
    assert r.returncode == 0
    for words in ("PROGRAM", "--server", "FARCUDA_SERVER", "FARCUDA_DAEMON_LOG", "--"):
        assert words in r.stdout, words
    r = run(FARCUDAD + ["install-unit", "--help"])
    assert r.returncode == 0 and "--prefix" in r.stdout


def test_local_daemon_names_its_log():
    """With no server, `farcuda run` starts farcudad and says where it logs; where it cannot
    (no GPU here) it says why in one line, and that log exists."""
    r = run(FARCUDA + ["run", "--", "true"], timeout=300)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    log = Path(lines[0].rsplit(" ", 1)[1].rstrip(").")) if r.returncode == 0 else None
    if r.returncode == 0:
        assert "started a local farcudad on 127.0.0.1:" in lines[0], lines[0]
    else:
        assert "cannot start a local GPU server" in lines[0] and "its log: " in lines[0]
        log = Path(lines[0].split("its log: ", 1)[1].split(")", 1)[0])
    assert log.is_file(), log
    assert "Traceback" not in log.read_text()


def test_server_of_farcuda_run_is_named_as_such(program, shim):
    """A client started by `farcuda run --server` names that flag, not FARCUDA_SERVER."""
    r = run(FARCUDA + ["run", "--server", CLOSED, "--", str(program("ci_memory"))])
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("farcuda:")]
    assert len(lines) == 1, r.stderr
    assert f"cannot reach the GPU server {CLOSED} (set by --server of farcuda run)" in lines[0]
    assert "FARCUDA_SERVER" not in lines[0], lines[0]
