"""farcudad as a systemd service: the shipped unit, `farcudad install-unit`, the example
configuration.

`systemd-analyze verify` checks the generated unit the way systemd would load it (directives,
values, and that ExecStart names an executable: the farcudad of this installation). It is
installed on the CI machines; only where it is missing is that test skipped."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from farcuda.daemon import config as configmod
from farcuda.daemon import systemd

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def install_unit(*args: str) -> subprocess.CompletedProcess:
    """`farcudad install-unit ARGS` as an administrator would run it."""
    return subprocess.run([sys.executable, "-m", "farcuda.daemon.cli", "install-unit", *args],
                          capture_output=True, text=True, timeout=60)


def directives(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def verify(path: Path) -> subprocess.CompletedProcess:
    # --man=no: do not look for the man pages that Documentation= could name
    return subprocess.run([ANALYZE, "verify", "--man=no", str(path)], capture_output=True,
                          text=True, timeout=60)


@needs_analyze
def test_generated_unit_passes_systemd_analyze_verify(tmp_path):
    r = install_unit("--prefix", str(tmp_path))
    assert r.returncode == 0, r.stderr
    unit_path = tmp_path / "etc/systemd/system/farcudad.service"
    unit = unit_path.read_text()
    exe = directives(unit)["ExecStart"][0].split()[0]
    assert os.path.samefile(exe, systemd.farcudad_path())  # the installed farcudad
    assert os.access(exe, os.X_OK)
    v = verify(unit_path)
    assert v.returncode == 0, v.stdout + v.stderr
    assert "farcudad.service" not in v.stdout + v.stderr, v.stdout + v.stderr  # no warnings
    assert "systemctl daemon-reload" in r.stdout and "systemctl enable --now farcudad" in r.stdout


@needs_analyze
def test_verify_rejects_a_broken_unit(tmp_path):
    """The check above can fail: a unit whose ExecStart is not an executable does."""
    unit_path = tmp_path / "farcudad.service"
    unit_path.write_text(systemd.render_unit(str(tmp_path / "no-such-farcudad")))
    v = verify(unit_path)
    assert v.returncode != 0
    assert "no-such-farcudad" in v.stdout + v.stderr


def test_unit_is_a_notify_service_run_unprivileged(tmp_path):
    r = install_unit("--prefix", str(tmp_path), "--user", "gpusvc", "--config",
                     "/srv/farcuda/daemon.toml")
    assert r.returncode == 0, r.stderr
    d = directives((tmp_path / "etc/systemd/system/farcudad.service").read_text())
    assert d["Type"] == ["notify"]
    assert d["Restart"] == ["on-failure"]
    assert d["User"] == ["gpusvc"]
    assert "video" in d["SupplementaryGroups"][0].split()  # /dev/nvidia* where group-only
    assert "PrivateDevices" not in d  # it would hide the GPU
    assert d["ExecStart"][0].endswith(" --config /srv/farcuda/daemon.toml")
    # The graceful drain: SIGTERM to the front only, and time enough for shutdown_grace.
    assert d["KillMode"] == ["mixed"]
    assert float(d["TimeoutStopSec"][0]) > configmod.DaemonConfig().shutdown_grace + 5
    assert d["WantedBy"] == ["multi-user.target"]
    assert (tmp_path / "srv/farcuda/daemon.toml").is_file()


def test_example_config_is_written_once_and_parses(tmp_path):
    cfg_path = tmp_path / "etc/farcuda/farcudad.toml"
    assert install_unit("--prefix", str(tmp_path)).returncode == 0
    text = cfg_path.read_text()
    cfg = configmod.from_dict(tomllib.loads(text), str(cfg_path))
    assert cfg.listen == [("0.0.0.0", 7420)]
    assert oct(cfg_path.stat().st_mode & 0o777) == "0o640"  # it will hold tokens
    # the commented-out sections are valid settings too once uncommented (except [tls],
    # whose files do not exist here)
    uncommented = re.sub(r"(?m)^# ?((?:tokens|memory_per_tenant|tenants_per_gpu) = .*)$",
                         r"\1", text)
    cfg2 = configmod.from_dict(tomllib.loads(uncommented), str(cfg_path))
    assert cfg2.tokens and cfg2.memory_per_tenant == 16 << 30 and cfg2.tenants_per_gpu == 8
    # an administrator's file is never overwritten
    cfg_path.write_text('listen = ["127.0.0.1:7421"]\n')
    r = install_unit("--prefix", str(tmp_path))
    assert r.returncode == 0 and "kept the existing" in r.stdout
    assert cfg_path.read_text() == 'listen = ["127.0.0.1:7421"]\n'


def test_dry_run_writes_nothing(tmp_path):
    r = install_unit("--prefix", str(tmp_path), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "Type=notify" in r.stdout and "ExecStart=" in r.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["--user", "root"], ["--user", "bad name"],
                                  ["--config", "relative.toml"]])
def test_bad_arguments_are_refused(tmp_path, args):
    r = install_unit("--prefix", str(tmp_path), *args)
    assert r.returncode == 2 and "install-unit" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_exec_start_quoting():
    unit = systemd.render_unit("/opt/my env/bin/farcudad", config="/etc/far%cuda/x.toml")
    line = directives(unit)["ExecStart"][0]
    assert line == '"/opt/my env/bin/farcudad" --config /etc/far%%cuda/x.toml'
