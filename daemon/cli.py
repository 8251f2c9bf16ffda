"""`farcudad`: the GPU server.

    farcudad [--listen HOST:PORT ...] [--config FILE] [--log-level LEVEL] [--prestart N]
    farcudad install-unit [--prefix DIR] [--user NAME] [--config PATH] [--dry-run]
                                             (see daemon/systemd.py)
    farcudad --version

A mistake in the arguments or the configuration file is one line on stderr and exit status 2;
a daemon that cannot start (no GPU, an address in use) says why in one line and exits 1.

Under systemd (Type=notify) it says READY=1 once it listens, and STOPPING=1 as soon as a
SIGTERM starts the graceful shutdown; it exits 0 after a graceful shutdown.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from farcuda.wire.addresses import ConfigError, parse_hostport
from farcuda.wire.cli import OneLineParser, version

from . import SERVER_EXTRA, missing_dependencies
from . import config as configmod
from .logs import setup_logging
from .server import Daemon, DaemonError

log = logging.getLogger("farcudad")

EPILOG = """\
commands:
  install-unit   install farcudad as a systemd service (farcudad install-unit --help)

The configuration file (daemon/farcudad.toml is an annotated example) holds what has no flag:
tokens, limits, TLS, metrics. Flags override it."""


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative (0: start workers on demand)")
    return n


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="farcudad", description="farcuda's GPU server", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       usage="%(prog)s [options]\n       %(prog)s install-unit [options]")
    ap.add_argument("--version", action="version", version=f"farcudad {version()}")
    ap.add_argument("--listen", action="append", metavar="HOST:PORT",
                    help="address to listen on (repeatable; default 127.0.0.1:7420)")
    ap.add_argument("--config", metavar="FILE", help="TOML configuration file")
    ap.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    ap.add_argument("--prestart", type=_count, metavar="N",
                    help="idle workers kept ready (default 1; at most limits.sessions_total)")
    ap.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    return ap


def make_config(args) -> configmod.DaemonConfig:
    cfg = configmod.load(args.config)
    if args.listen:
        cfg.listen = [parse_hostport(x, "--listen", allow_zero=True) for x in args.listen]
    if args.log_level:
        cfg.log_level = args.log_level
    if args.prestart is not None:
        if args.prestart > cfg.sessions_total:
            raise ConfigError(f"--prestart {args.prestart} is more than limits.sessions_total "
                              f"({cfg.sessions_total})")
        cfg.prestart = args.prestart
    return cfg


async def run(cfg: configmod.DaemonConfig, ready_fd: int | None = None,
              backend: str = "cuda", backend_options: dict | None = None) -> int:
    """Serve until SIGTERM/SIGINT. ``backend`` is for tests (the in-memory GPU); the
    command line always serves real GPUs."""
    daemon = Daemon(cfg, backend=backend, backend_options=backend_options)
    try:
        addresses = await daemon.start()
    except DaemonError as exc:
        log.error("cannot start: %s", exc)
        if ready_fd is not None:
            os.write(ready_fd, f"error {exc}\n".encode())
            os.close(ready_fd)
        await daemon.shutdown(0)
        return 1
    except OSError as exc:  # a listening socket of a family this host lacks, say
        log.error("cannot start: %s", exc.strerror or exc)
        await daemon.shutdown(0)
        return 1
    loop = asyncio.get_running_loop()

    def stop() -> None:
        _notify_systemd("STOPPING=1")  # systemd: the stop has begun (the drain may take a while)
        asyncio.ensure_future(daemon.shutdown())
    # handlers before the ready line: a SIGTERM right after it must drain, not kill
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    if ready_fd is not None:
        os.write(ready_fd, f"ready {addresses[0][0]} {addresses[0][1]}\n".encode())
        os.close(ready_fd)
    _notify_systemd("READY=1")
    assert daemon.stopped is not None  # (daemon.start made it)
    await daemon.stopped
    return 0


def _notify_systemd(state: str) -> None:
    """sd_notify, for Type=notify units; a no-op outside systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    import socket
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.connect(addr)
            s.sendall(state.encode())
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["install-unit"]:
        from .systemd import main as unit_main
        return unit_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        cfg = make_config(args)
    except ConfigError as exc:
        print(f"farcudad: {exc}", file=sys.stderr)
        return 2
    missing = missing_dependencies()
    if missing:
        print(f"farcudad: the server's dependencies ({', '.join(missing)}) are not installed: "
              f"pip install '{SERVER_EXTRA}'", file=sys.stderr)
        return 1
    if args.ready_fd is not None:
        try:
            os.fstat(args.ready_fd)
        except OSError:
            print(f"farcudad: --ready-fd {args.ready_fd} is not an open descriptor",
                  file=sys.stderr)
            return 2
    setup_logging(cfg.log_level)
    try:
        import uvloop
        return uvloop.run(run(cfg, args.ready_fd))
    except ImportError:
        return asyncio.run(run(cfg, args.ready_fd))


if __name__ == "__main__":
    sys.exit(main())
