"""`farcuda`: run CUDA programs on a remote GPU.

    farcuda run [--server HOST:PORT] [--layer runtime|driver] [--explain] [--] PROGRAM [ARGS...]
    farcuda status [--server HOST:PORT ...] [--pool FILE] [--json]
    farcuda shim-path
    farcuda --version

`farcuda status` asks each server (the --server given, else those of FARCUDA_DEVICES /
FARCUDA_SERVER, else the local default) for its GPUs and connected tenants; it honours
FARCUDA_TOKEN and FARCUDA_TLS*. Readings a server cannot make (no NVML there: utilization,
power, energy) are shown as n/a, never guessed; it exits 1 when a server is unreachable.
Several servers (--server repeated) or a pool file (--pool, see cluster/pool.py) are shown as
one table, a line per GPU (farcuda.cluster.pool).

Every mistake of the user (arguments, environment, a program that is not there) is one line
on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from farcuda.wire.cli import OneLineParser, version

from . import config as configmod

SHIM_NAME = "libcudart.so.13"
DAEMON_LOG_LEVELS = ("debug", "info", "warning", "error")
# FARCUDA_SERVER_ORIGIN: what set the application's FARCUDA_SERVER, named in the shim's
# messages (interposer/config.py); only `farcuda run` sets it.
ORIGIN = "FARCUDA_SERVER_ORIGIN"


def shim_path() -> Path:
    return Path(__file__).resolve().parent / "lib" / SHIM_NAME


def driver_dir() -> Path:
    """The driver layer's folder: libcuda.so.1 (and libfarcuda.so.1, the client core)."""
    return Path(__file__).resolve().parent / "lib" / "driver"


def app_environment(base: dict, server: str | None = None, origin: str | None = None,
                    choice=None) -> dict:
    """The application's environment: the layers ``choice`` (interposer/layers.py) names
    preloaded and first on the library path (without one: the runtime shim); ``server`` (and
    what chose it, ``origin``) when `farcuda run` chose it."""
    env = dict(base)
    shim = shim_path()
    preload = [str(p) for p in choice.preload] if choice is not None else [str(shim)]
    libpath = [str(p) for p in choice.library_path] if choice is not None else [str(shim.parent)]
    env["LD_PRELOAD"] = ":".join(p for p in (*preload, base.get("LD_PRELOAD", "")) if p)
    env["LD_LIBRARY_PATH"] = ":".join(p for p in (*libpath, base.get("LD_LIBRARY_PATH", ""))
                                      if p)
    env.pop(ORIGIN, None)  # (one a farcuda run around this one set)
    if server:
        env["FARCUDA_SERVER"] = server
        if origin:
            env[ORIGIN] = origin
    return env


def clean_environment(base: dict) -> dict:
    """The daemon's environment: never the shim, never the driver layer."""
    env = dict(base)
    shim_dir = str(shim_path().parent)
    for var in ("LD_PRELOAD", "LD_LIBRARY_PATH"):
        parts = [p for p in env.get(var, "").split(":") if p and shim_dir not in p
                 and not p.endswith((SHIM_NAME, "libcuda.so.1", "libnvidia-ml.so.1"))]
        if parts:
            env[var] = ":".join(parts)
        else:
            env.pop(var, None)
    return env


def daemon_log_path() -> Path:
    """Where the daemon `farcuda run` starts logs (one file per farcuda run process)."""
    return Path(tempfile.gettempdir()) / f"farcudad-{os.getpid()}.log"


def start_local_daemon(timeout: float = 180.0) -> tuple[subprocess.Popen, str]:
    """Start farcudad on 127.0.0.1 (a free port) for the length of one run; its log goes to
    ``daemon_log_path()`` (level FARCUDA_DAEMON_LOG, default warning)."""
    level = os.environ.get("FARCUDA_DAEMON_LOG", "").strip().lower() or "warning"
    if level not in DAEMON_LOG_LEVELS:
        raise configmod.ConfigError(f"FARCUDA_DAEMON_LOG={level!r} is not one of "
                                    f"{', '.join(DAEMON_LOG_LEVELS)}")
    r, w = os.pipe()
    cmd = [sys.executable, "-m", "farcuda.daemon.cli", "--listen", "127.0.0.1:0",
           "--ready-fd", str(w), "--log-level", level]
    # the daemon's own log goes to a file: the program's stderr stays the program's
    log = open(daemon_log_path(), "wb")
    proc = subprocess.Popen(cmd, pass_fds=(w,), env=clean_environment(os.environ),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    log.close()
    os.close(w)
    deadline = time.monotonic() + timeout
    line = b""
    with os.fdopen(r, "rb") as f:
        os.set_blocking(r, True)
        while time.monotonic() < deadline:
            chunk = f.readline()
            line += chunk
            if not chunk or line.endswith(b"\n"):
                break
    words = line.decode(errors="replace").split(None, 1)
    if not words or words[0] != "ready":
        reason = words[1].strip() if len(words) > 1 else "it exited without saying why"
        proc.wait(timeout=10)
        raise RuntimeError(reason)
    host, port = words[1].split()
    return proc, f"{host}:{port}"


def find_program(name: str, env: dict) -> str | None:
    """Why ``name`` cannot be run (None: it can), checked before any daemon is started, so
    that a typo is reported as such and not as a missing GPU."""
    if os.sep in name:
        if not os.path.exists(name):
            return "no such file"
        if os.path.isdir(name):
            return "it is a directory"
        if not os.access(name, os.X_OK):
            return "not executable (chmod +x?)"
        return None
    if shutil.which(name, path=env.get("PATH", os.defpath)) is None:
        return "not found on PATH"
    return None


def cmd_run(args) -> int:
    if not args.program:
        print("farcuda run: no program given (farcuda run -- PROGRAM [ARGS])", file=sys.stderr)
        return 2
    if not shim_path().exists():
        print(f"farcuda: the shim is missing at {shim_path()}; reinstall farcuda",
              file=sys.stderr)
        return 2
    env = dict(os.environ)
    daemon = None
    server, origin = args.server, None
    try:
        cfg = configmod.from_env(env)
        if server is not None:
            host, port = configmod.parse_hostport(server, "--server")
            server = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            origin = "--server of farcuda run"
    except configmod.ConfigError as exc:
        print(f"farcuda: {exc}", file=sys.stderr)
        return 2
    why = find_program(args.program[0], env)
    if why:
        print(f"farcuda: cannot run {args.program[0]}: {why}", file=sys.stderr)
        return 127
    from .layers import choose
    choice = choose(args.program[0], env, shim_path(), driver_dir(), args.layer)
    if not (driver_dir() / "libcuda.so.1").exists():
        print(f"farcuda: the driver layer is missing at {driver_dir()}; reinstall farcuda",
              file=sys.stderr)
        return 2
    if args.explain:
        for line in choice.explain():
            print(f"farcuda: {line}", file=sys.stderr)
    if server:
        for var in ("FARCUDA_DEVICES", "FARCUDA_DEVICE_COUNT"):
            env.pop(var, None)
    elif not cfg.configured:
        from farcuda.daemon import SERVER_EXTRA, missing_dependencies
        missing = missing_dependencies()
        if missing:
            print(f"farcuda: no server is configured and this installation cannot start a local "
                  f"one: the server's dependencies ({', '.join(missing)}) are not installed "
                  f"(pip install '{SERVER_EXTRA}'); or point it at a GPU server: "
                  "FARCUDA_SERVER=host:port farcuda run -- ...", file=sys.stderr)
            return 1
        try:
            daemon, server = start_local_daemon()
        except configmod.ConfigError as exc:
            print(f"farcuda: {exc}", file=sys.stderr)
            return 2
        except (RuntimeError, OSError) as exc:
            print(f"farcuda: cannot start a local GPU server: {exc} (its log: "
                  f"{daemon_log_path()}). With no GPU here, point farcuda at a remote one: "
                  "FARCUDA_SERVER=host:port farcuda run -- ...", file=sys.stderr)
            return 1
        origin = "farcuda run's local farcudad"
        print(f"farcuda: started a local farcudad on {server} for this run; it logs to "
              f"{daemon_log_path()}", file=sys.stderr)
    try:
        child = subprocess.Popen(args.program, env=app_environment(env, server, origin, choice))
    except OSError as exc:
        print(f"farcuda: cannot run {args.program[0]}: {exc.strerror}", file=sys.stderr)
        if daemon:
            daemon.terminate()
            daemon.wait()
        return 127

    def forward(sig, _frame):
        child.send_signal(sig)
    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        rc = child.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if daemon:
            daemon.terminate()
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
    return rc if rc >= 0 else 128 - rc


def query_status(server: str, token: str | None, timeout: float = 5.0,
                 tls_config: configmod.ClientConfig | None = None) -> dict:
    """The server's status (daemon/server.py ``Daemon.status``); TLS when ``tls_config.tls``."""
    from farcuda.wire import FrameReader, ProtocolError, handshake
    host, port = configmod.parse_hostport(server, "--server")
    raw = socket.create_connection((host, port), timeout=timeout)
    if tls_config is not None and tls_config.tls:
        from farcuda.wire.tls import client_context
        ctx = client_context(tls_config.tls_ca, tls_config.tls_cert, tls_config.tls_key)
        try:
            raw = ctx.wrap_socket(raw, server_hostname=host)
        except BaseException:
            raw.close()
            raise
    with raw as sock:
        reader = FrameReader("s2c")

        def frame():
            while True:
                data = sock.recv(1 << 20)
                if not data:
                    raise ConnectionError("the server closed the connection")
                try:
                    got = reader.feed(data)
                except ProtocolError as exc:
                    raise ConnectionError(f"not a farcuda server ({exc})") from None
                if got:
                    return got[0]
        hello = frame()
        _v, _f, challenge = handshake.parse_server_hello(hello.fixed)
        sock.sendall(handshake.client_hello(challenge, {"purpose": "status", "pid": os.getpid()},
                                            token))
        rep = frame()
        status = int.from_bytes(rep.fixed[:4], "little")
        text = bytes(rep.tail or b"").decode(errors="replace")
        if status != 0:
            raise ConnectionError(text)
        return json.loads(text)


def _joules(j) -> str:
    if j is None:
        return "n/a"
    return f"{j / 1000:.2f} kJ" if j >= 10000 else f"{j:.2f} J"


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def cmd_status(args) -> int:
    try:
        cfg = configmod.from_env()
        if args.server:
            servers = []
            for given in args.server:
                host, port = configmod.parse_hostport(given, "--server")
                servers.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        elif cfg.devices:
            servers = sorted({f"{d.host}:{d.port}" for d in cfg.devices})
        elif cfg.server:
            servers = [f"{cfg.server[0]}:{cfg.server[1]}"]
        else:
            servers = [f"127.0.0.1:{configmod.DEFAULT_PORT}"]
    except configmod.ConfigError as exc:
        print(f"farcuda: {exc}", file=sys.stderr)
        return 2
    if args.pool or len(servers) > 1:
        from farcuda.cluster.pool import status_main
        return status_main([] if args.pool and not args.server else servers, args.pool,
                           args.json, cfg.token, cfg)
    out, rc = {}, 0
    for s in servers:
        try:
            out[s] = query_status(s, cfg.token, timeout=cfg.connect_timeout, tls_config=cfg)
        except (OSError, ConnectionError, ValueError) as exc:
            text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            out[s] = {"error": text or type(exc).__name__}
            rc = 1
    if args.json:
        print(json.dumps(out, indent=2))
        return rc
    for s, st in out.items():
        if "error" in st:
            print(f"farcuda: {s}: unreachable: {st['error']}", file=sys.stderr)
            continue
        extras = [x for x, on in (("TLS", st.get("tls")), ("tokens", st.get("auth"))) if on]
        if st.get("open"):
            extras.append("OPEN: no token or client certificate required")
        energy = st.get("energy", {})
        print(f"{s}: driver {st.get('driver')}, {len(st.get('gpus', []))} GPU(s)"
              + (f", {' + '.join(extras)}" if extras else "")
              + ("" if energy.get("available") else ", energy n/a (no NVML on the server)"))
        for g in st.get("gpus", []):
            line = f"  GPU {g['gpu']}: {g.get('name', '?')}"
            if g.get("memory_used") is not None:
                src = " (held by tenants)" if g.get("memory_source") == "tenants" else ""
                line += (f", memory {_human(g['memory_used'])} / "
                         f"{_human(g.get('memory_total', 0))}{src}")
            elif g.get("memory_total"):
                line += f", memory {_human(g['memory_total'])}"
            util = g.get("utilization")
            line += f", utilization {'n/a' if util is None else f'{util}%'}"
            power = g.get("power_w")
            line += f", power {'n/a' if power is None else f'{power:.0f} W'}"
            line += f", energy {_joules(g.get('energy_j'))}"
            if "tenants" in g:
                line += f", tenants {g['tenants']}"
            print(line)
        tenants = st.get("tenants", [])
        print(f"  sessions: {len(tenants)}")
        for t in tenants:
            ident = t.get("identity", {})
            devs = ",".join(f"{v}->gpu{d['gpu']}" + (" DEAD" if d.get("dead") else "")
                            for v, d in t.get("devices", {}).items())
            print(f"    session {t.get('session')} tenant={t.get('tenant')} "
                  f"peer={t.get('peer')} exe={ident.get('exe', '?')} devices=[{devs}] "
                  f"memory={_human(t.get('memory_held', 0))} calls={t.get('calls', 0)} "
                  f"round_trips={t.get('round_trips', 0)} "
                  f"sync_round_trips={t.get('sync_round_trips', 0)} "
                  f"in={_human(t.get('bytes_in', 0))} out={_human(t.get('bytes_out', 0))} "
                  f"since={time.strftime('%H:%M:%S', time.localtime(t.get('since', 0)))} "
                  f"energy={_joules(t.get('energy_j'))}")
            for v, d in t.get("devices", {}).items():
                if d.get("dead"):
                    print(f"      device {v} is unusable: {d['dead']['culprit']} failed with "
                          f"{d['dead']['error']}")
    return rc


RUN_HELP = """\
PROGRAM and ARGS are the CUDA program and its arguments; put them after `--` when they start
with a dash. What the program's files say chooses the layer (--explain says which, and why):
a program built with nvcc -cudart shared gets farcuda's libcudart.so.13 and its driver
layer; any other (nvcc's default -cudart static, Python with PyTorch or CuPy, scripts) the
driver layer only (farcuda's libcuda.so.1 and libnvidia-ml.so.1). They are preloaded and
first on LD_LIBRARY_PATH, so its CUDA calls go to the GPU server:

  --server HOST:PORT                   every GPU of that server
  FARCUDA_DEVICES, FARCUDA_DEVICE_COUNT/_<i>, FARCUDA_SERVER   the same from the environment
  none of these                        a farcudad started on 127.0.0.1 for this run (needs a GPU
                                       here and farcuda[server]); it logs to
                                       $TMPDIR/farcudad-<pid>.log, at FARCUDA_DAEMON_LOG's level

The exit status is the program's (128+N if signal N killed it); signals to farcuda go to the
program. The other FARCUDA_* variables (token, TLS, timeouts) are described in README.md.
"""


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="farcuda", description="run CUDA programs on a remote GPU")
    ap.add_argument("--version", action="version", version=f"farcuda {version()}")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND",
                            parser_class=OneLineParser)
    p = sub.add_parser("run", help="run a CUDA program through farcuda",
                       description="Run a CUDA program through farcuda.", epilog=RUN_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", metavar="HOST:PORT",
                   help="use this server (all its GPUs) instead of the environment's")
    p.add_argument("--layer", choices=("runtime", "driver"), default=None,
                   help="the layer to load instead of the one the program's files call for")
    p.add_argument("--explain", action="store_true",
                   help="say on stderr which layers are loaded for the program, and why")
    p.add_argument("program", nargs=argparse.REMAINDER, metavar="PROGRAM [ARGS...]",
                   help="the program to run, and its arguments")
    p = sub.add_parser("status", help="servers, GPUs and tenants",
                       description="Show the servers' GPUs and connected sessions.")
    p.add_argument("--server", metavar="HOST:PORT", action="append",
                   help="ask this server (repeatable; default: the environment's, else "
                        "127.0.0.1:7420)")
    p.add_argument("--pool", metavar="FILE", help="every server of this pool file")
    p.add_argument("--json", action="store_true", help="print JSON")
    sub.add_parser("shim-path", help="print where libcudart.so.13 of farcuda is",
                   description="Print where farcuda's libcudart.so.13 is.")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "run":
        if args.program and args.program[0] == "--":
            args.program = args.program[1:]
        return cmd_run(args)
    if args.cmd == "status":
        return cmd_status(args)
    if not shim_path().exists():
        print(f"farcuda: the shim is missing at {shim_path()}; reinstall farcuda",
              file=sys.stderr)
        return 1
    print(shim_path())
    return 0


if __name__ == "__main__":
    sys.exit(main())
