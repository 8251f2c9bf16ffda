"""Helpers of the service tests (loaded with importlib: the tests run with
--import-mode=importlib).

- ``TenantClient``: a driver for tests/programs/ci_tenant, one real CUDA client (through the
  shim) per object, kept connected while the test tells it, line by line, what to do.
- ``Farcudad``: farcudad's own serving loop (daemon/cli.py ``run``: signal handlers, sd_notify,
  exit status) on uvloop as `farcudad` runs it, with the in-memory backend.
- ``make_pki``: a CA, a server certificate for 127.0.0.1/localhost and a client certificate,
  made with the openssl command (the `cryptography` package is not a dependency).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path


class TenantClient:
    def __init__(self, exe: Path, shim: Path, server: str, env: dict | None = None) -> None:
        e = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA_")
             and k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")}
        e["LD_PRELOAD"] = str(shim)
        e["FARCUDA_SERVER"] = server
        # the tests count bytes on the wire: none compressed (on a loaded machine the link
        # measured for FARCUDA_COMPRESS=auto may be slow enough to compress)
        e["FARCUDA_COMPRESS"] = "off"
        e.update(env or {})
        self.proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1, env=e)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._err: list[str] = []
        threading.Thread(target=self._read_out, daemon=True).start()
        self._err_thread = threading.Thread(target=self._read_err, daemon=True)
        self._err_thread.start()

    def _read_out(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _read_err(self) -> None:
        for line in self.proc.stderr:
            self._err.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def do(self, command: str, timeout: float = 30.0) -> str:
        """Send one command, return its answer line ("ok ..." / "err <name>")."""
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no answer to {command!r}; stderr: {self.stderr()}") from None
        if line is None:
            raise ConnectionError(f"the client exited during {command!r}; stderr: "
                                  f"{self.stderr()}")
        return line

    def ok(self, command: str, timeout: float = 30.0) -> list[str]:
        """``do`` that must succeed; returns the answer's words after "ok"."""
        got = self.do(command, timeout)
        assert got.split()[:1] == ["ok"], f"{command!r} -> {got!r}; stderr: {self.stderr()}"
        return got.split()[1:]

    def stderr(self) -> str:
        return "".join(self._err)

    def close(self, timeout: float = 30.0) -> tuple[int, str]:
        """End the program in order ("exit"); returns its exit code and stderr."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("exit\n")
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._err_thread.join(5)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return rc, self.stderr()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._err_thread.join(5)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass


_FARCUDAD = textwrap.dedent("""
    import json, sys
    from farcuda.daemon import cli, config
    from farcuda.daemon.logs import setup_logging
    cfg = config.from_dict(json.loads(sys.argv[1]))
    setup_logging(cfg.log_level)
    try:
        import uvloop
        run = uvloop.run
    except ImportError:
        import asyncio
        run = asyncio.run
    sys.exit(run(cli.run(cfg, ready_fd=int(sys.argv[2]), backend="memory")))
""")


class Farcudad:
    """farcudad's serving loop on the memory backend, in a process of its own."""

    def __init__(self, tmp: Path, config: dict | None = None, env: dict | None = None):
        cfg = {"listen": ["127.0.0.1:0"], "prestart": 1, "log_level": "info"}
        cfg.update(config or {})
        self.log_path = tmp / f"farcudad-{time.monotonic_ns()}.log"
        r, w = os.pipe()
        e = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        e.update(env or {})
        with open(self.log_path, "w") as logf:
            self.proc = subprocess.Popen([sys.executable, "-c", _FARCUDAD, json.dumps(cfg),
                                          str(w)], pass_fds=(w,), stderr=logf, env=e,
                                         stdout=subprocess.DEVNULL)
        os.close(w)
        with os.fdopen(r) as f:
            line = f.readline()
        if not line.startswith("ready"):
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"farcudad did not start: {line!r} {self.log()[-2000:]}")
        _, self.host, port = line.split()
        self.port = int(port)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> set[int]:
        """Process ids whose parent is the daemon (its workers)."""
        kids = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                kids.add(int(stat.parent.name))
        return kids

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _issue(ca_dir: Path, name: str, cn: str, ext: str) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=ca_dir)
    (ca_dir / f"{name}.ext").write_text(ext + "basicConstraints=CA:FALSE\n"
                                        "authorityKeyIdentifier=keyid\n"
                                        "subjectKeyIdentifier=hash\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile",
             f"{name}.ext", cwd=ca_dir)


def make_pki(d: Path) -> Path:
    """ca.crt (and other-ca.crt, trusted by nobody), server.crt/key for 127.0.0.1 and
    localhost, client.crt/key (CN edge-device-7), all in ``d``."""
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2", "-subj",
                 f"/CN=farcuda test {ca}", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _issue(d, "server", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
           "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
    _issue(d, "client", "edge-device-7", "keyUsage=digitalSignature\n"
           "extendedKeyUsage=clientAuth\n")
    return d
