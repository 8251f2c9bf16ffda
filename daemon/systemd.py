"""`farcudad install-unit`: install farcudad as a systemd service.

    farcudad install-unit [--prefix DIR] [--user NAME] [--config PATH] [--dry-run]

Writes DIR/etc/systemd/system/farcudad.service (DIR defaults to /) from the unit shipped with
the package (daemon/farcudad.service), with ExecStart naming the farcudad executable of this
installation and the service's user and configuration file substituted, and copies the
example configuration (daemon/farcudad.toml) to DIR/PATH unless a file is there already (an
existing configuration is never overwritten). Then it prints the steps left to the
administrator (the user account, the file's permissions, systemctl). With --dry-run it prints
the unit and writes nothing.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sys
import sysconfig
from importlib import resources
from pathlib import Path

from farcuda.wire.cli import OneLineParser

__all__ = ["render_unit", "farcudad_path", "main"]

DEFAULT_CONFIG = "/etc/farcuda/farcudad.toml"
UNIT_DIR = "etc/systemd/system"
_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def _packaged(name: str) -> str:
    return resources.files("farcuda.daemon").joinpath(name).read_text()


def farcudad_path() -> str:
    """The farcudad executable of this installation (a venv's bin/, ~/.local/bin, /usr/...)."""
    for scripts in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = os.path.join(scripts, "farcudad")
        if os.access(candidate, os.X_OK):
            return os.path.abspath(candidate)
    found = shutil.which("farcudad")
    if found:
        return os.path.abspath(found)
    raise FileNotFoundError("cannot find the farcudad executable of this installation; "
                            "reinstall farcuda with pip")


def _quote(arg: str) -> str:
    """One ExecStart argument, quoted for systemd when it needs it."""
    arg = arg.replace("%", "%%").replace("$", "$$")  # systemd expands % and $ in ExecStart
    if re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(exe: str, user: str = "farcuda", config: str = DEFAULT_CONFIG,
                template: str | None = None) -> str:
    """The unit file: the packaged one with ExecStart and User= of this installation."""
    text = _packaged("farcudad.service") if template is None else template
    exec_line = f"ExecStart={_quote(exe)} --config {_quote(config)}"
    text, n = re.subn(r"(?m)^ExecStart=.*$", lambda _m: exec_line, text)
    if n != 1:
        raise ValueError("the unit template has no single ExecStart= line")
    text, n = re.subn(r"(?m)^User=.*$", lambda _m: f"User={user}", text)
    if n != 1:
        raise ValueError("the unit template has no single User= line")
    return text


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(prog="farcudad install-unit",
                       description="install farcudad as a systemd service")
    ap.add_argument("--prefix", default="/", metavar="DIR",
                    help="root to install under (default /; e.g. a package's staging dir)")
    ap.add_argument("--user", default="farcuda", metavar="NAME",
                    help="the unprivileged user the service runs as (default farcuda)")
    ap.add_argument("--config", default=DEFAULT_CONFIG, metavar="PATH",
                    help=f"the configuration file the service reads (default {DEFAULT_CONFIG})")
    ap.add_argument("--dry-run", action="store_true", help="print the unit, write nothing")
    args = ap.parse_args(argv)
    if not _NAME.match(args.user) or args.user == "root":
        print(f"farcudad install-unit: {args.user!r} is not a valid unprivileged user name",
              file=sys.stderr)
        return 2
    if not os.path.isabs(args.config):
        print("farcudad install-unit: --config must be an absolute path", file=sys.stderr)
        return 2
    try:
        exe = farcudad_path()
    except FileNotFoundError as exc:
        print(f"farcudad install-unit: {exc}", file=sys.stderr)
        return 1
    unit = render_unit(exe, args.user, args.config)
    prefix = Path(args.prefix)
    unit_path = prefix / UNIT_DIR / "farcudad.service"
    config_path = prefix / args.config.lstrip("/")
    if args.dry_run:
        print(f"# would write {unit_path}")
        print(unit, end="")
        print(f"# would write {config_path} (example)" if not config_path.exists()
              else f"# would keep the existing {config_path}")
        return 0
    try:
        unit_path.parent.mkdir(parents=True, exist_ok=True)
        unit_path.write_text(unit)
        wrote_config = not config_path.exists()
        if wrote_config:
            config_path.parent.mkdir(parents=True, exist_ok=True)
            config_path.write_text(_packaged("farcudad.toml"))
            config_path.chmod(0o640)
    except OSError as exc:
        hint = (" (run it as root, or use --prefix)"
                if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else "")
        print(f"farcudad install-unit: {exc.filename}: {exc.strerror}{hint}", file=sys.stderr)
        return 1
    if exe.startswith("/tmp/"):  # PrivateTmp=yes: the service would not even find it
        print(f"warning: {exe} is under /tmp, which the service cannot see (PrivateTmp=yes); "
              "install farcuda elsewhere for the service", file=sys.stderr)
    print(f"wrote {unit_path}")
    print(f"wrote {config_path} (an example: edit it)" if wrote_config
          else f"kept the existing {config_path}")
    print("next steps:")
    print(f"  id {args.user} || useradd --system --no-create-home --shell /usr/sbin/nologin "
          f"--groups video {args.user}")
    print(f"  chown root:{args.user} {args.config} && chmod 640 {args.config}")
    print("  systemctl daemon-reload")
    print("  systemctl enable --now farcudad")
    print("  systemctl status farcudad; journalctl -u farcudad -f")
    return 0


if __name__ == "__main__":
    sys.exit(main())
