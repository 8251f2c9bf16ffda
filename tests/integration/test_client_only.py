"""A client-only install: `pip install farcuda` (no extra) into a fresh virtual environment
gets the shim and `farcuda` with cffi alone (none of the server's numpy, uvloop,
cuda-bindings), and an nvcc-built program runs through it against a daemon started from the
test environment. Without the server extra, the commands that would need it say so in one line.

The package is built from a copy of the source tree without its build outputs, so that what
an earlier build left in build/ cannot be what passes. pip fetches the build requirements
and cffi from the package index (the test is skipped where there is none).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER_DISTS = ("numpy", "uvloop", "cuda-bindings", "cuda_bindings")
pytestmark = pytest.mark.slow  # a wheel build and an install: some 15 s on 2 cores


def _clean_env() -> dict:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("FARCUDA_", "PYTHON", "VIRTUAL_ENV"))
            and k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")}


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("client-only")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", "*.so", "*.so.*", "*.o",
        ".pytest_cache", ".benchmarks", "results"))
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    probe = subprocess.run([str(py), "-m", "pip", "download", "-q", "--no-deps", "-d",
                            str(tmp / "probe"), "cffi"], capture_output=True, text=True,
                           env=_clean_env(), timeout=300)
    if probe.returncode != 0:
        pytest.skip(f"no package index reachable: {probe.stderr.strip()[-300:]}")
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", str(src)], capture_output=True,
                       text=True, env=_clean_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return env_dir


def _in_venv(env_dir: Path, *cmd: str, env: dict | None = None, timeout: float = 120):
    e = _clean_env()
    e["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{e.get('PATH', '')}"
    e.update(env or {})
    return subprocess.run(list(cmd), capture_output=True, text=True, env=e, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_client_only_install_runs_a_program(client_venv, memory_daemon, program):
    r = _in_venv(client_venv, str(client_venv / "bin" / "python"), "-m", "pip", "list",
                 "--format=freeze")
    installed = {line.split("==")[0].lower() for line in r.stdout.splitlines()}
    assert "farcuda" in installed and "cffi" in installed, installed
    assert not installed & set(SERVER_DISTS), installed
    r = _in_venv(client_venv, str(client_venv / "bin" / "python"), "-c",
                 "import numpy")
    assert r.returncode != 0
    exe = program("ci_memory")
    farcuda = str(client_venv / "bin" / "farcuda")
    r = _in_venv(client_venv, farcuda, "run", "--server", memory_daemon.address, "--",
                 str(exe))
    assert r.returncode == 0 and "PASSED" in r.stdout, r.stdout + r.stderr
    r = _in_venv(client_venv, farcuda, "status", "--server", memory_daemon.address)
    assert r.returncode == 0 and "1 GPU(s)" in r.stdout, r.stdout + r.stderr
    # the shim on its own, as a drop-in libcudart found on LD_LIBRARY_PATH
    shim = _in_venv(client_venv, farcuda, "shim-path").stdout.strip()
    assert shim.startswith(str(client_venv)), shim
    r = _in_venv(client_venv, str(exe), env={"LD_LIBRARY_PATH": str(Path(shim).parent),
                                               "FARCUDA_SERVER": memory_daemon.address})
    assert r.returncode == 0 and "PASSED" in r.stdout, r.stdout + r.stderr


def test_client_only_install_says_what_is_missing(client_venv, program):
    exe = program("ci_memory")
    r = _in_venv(client_venv, str(client_venv / "bin" / "farcuda"), "run", "--", str(exe))
    assert r.returncode == 1
    (line,) = r.stderr.splitlines()
    assert "cannot start a local one" in line and "pip install 'farcuda[server]'" in line
    assert "cuda-bindings" in line and "FARCUDA_SERVER=host:port" in line
    r = _in_venv(client_venv, str(client_venv / "bin" / "farcudad"))
    assert r.returncode == 1
    (line,) = r.stderr.splitlines()
    assert "server's dependencies (cuda-bindings) are not installed" in line, line
    assert "farcuda[server]" in line
    r = _in_venv(client_venv, str(client_venv / "bin" / "farcuda"), "--version")
    assert r.returncode == 0 and r.stdout.startswith("farcuda "), r.stdout + r.stderr


def test_the_test_extra_brings_the_server():
    """`pip install '.[test]'` (the README's second command) must be able to run daemons."""
    from importlib.metadata import requires
    reqs = requires("farcuda") or []
    base = [r for r in reqs if "extra ==" not in r]
    assert [r.split(">")[0].split("=")[0].strip() for r in base] == ["cffi"], base
    test = [r for r in reqs if 'extra == "test"' in r]
    assert any(r.startswith("farcuda[") and "server" in r.split("]")[0] for r in test), test
    server = {r.split(">")[0].strip() for r in reqs if 'extra == "server"' in r}
    assert {"numpy", "uvloop", "cuda-bindings"} <= server, server
