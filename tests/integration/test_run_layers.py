"""`farcuda run` picks the layer from the program's own files, and --explain says which and why:
a -cudart shared program gets the runtime shim and the driver layer, a static-runtime one and
a Python program the driver layer only (and then the shim is not on the library path, or it
would replace the program's own libcudart). Whatever the layer, the driver layer's
libcuda.so.1 is preloaded: no lookup of the CUDA driver can find a local GPU's.
"""

from __future__ import annotations

import os
import subprocess
import sys

from farcuda.interposer.layers import elf_needed, program_kind

FARCUDA = [sys.executable, "-m", "farcuda.interposer.cli"]

_ENV_PROBE = """import os
print("PRELOAD=" + os.environ.get("LD_PRELOAD", ""))
print("LIBPATH=" + os.environ.get("LD_LIBRARY_PATH", ""))
"""


def _run(args, server: str, timeout: float = 120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA_")
           and k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")}
    return subprocess.run([*FARCUDA, "run", "--server", server, "--explain", "--", *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


def _explained(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("farcuda: ")]


def test_static_program_gets_the_driver_layer(program, shared_memory_daemon, driver):
    exe = program("ci_devices", static=True)
    r = _run([str(exe)], shared_memory_daemon.address)
    assert r.returncode == 0 and "PASSED" in r.stdout, r.stdout + r.stderr
    lines = _explained(r.stderr)
    assert "carries the CUDA runtime inside itself (nvcc -cudart static)" in lines[0], lines
    assert "layers: the driver layer (libcuda.so.1, libnvidia-ml.so.1)" in lines[1], lines
    assert "libcudart.so.13" not in lines[2] and str(driver / "libcuda.so.1") in lines[2]
    assert "the runtime shim is not on the library path" in lines[4]


def test_shared_runtime_program_gets_the_shim(program, shared_memory_daemon, shim, driver):
    exe = program("ci_devices")
    r = _run([str(exe)], shared_memory_daemon.address)
    assert r.returncode == 0 and "PASSED" in r.stdout, r.stdout + r.stderr
    lines = _explained(r.stderr)
    assert "links libcudart.so.13 (nvcc -cudart shared)" in lines[0], lines
    assert "the runtime shim (libcudart.so.13) and the driver layer" in lines[1], lines
    assert lines[2] == (f"farcuda: preloaded: {shim}, {driver / 'libcuda.so.1'}, "
                        f"{driver / 'libnvidia-ml.so.1'}")


def test_python_program_gets_the_driver_layer_only(shared_memory_daemon, shim, driver,
                                                   tmp_path):
    """A Python interpreter (PyTorch, CuPy bring their own libcudart): the shim must not be
    on its library path; the driver layer is preloaded."""
    r = _run([sys.executable, "-c", _ENV_PROBE], shared_memory_daemon.address)
    assert r.returncode == 0, r.stderr
    assert "a Python interpreter" in _explained(r.stderr)[0]
    env = dict(line.split("=", 1) for line in r.stdout.splitlines())
    assert str(shim) not in env["PRELOAD"] and str(shim.parent) + ":" not in env["LIBPATH"] + ":"
    assert env["PRELOAD"].split(":")[:2] == [str(driver / "libcuda.so.1"),
                                             str(driver / "libnvidia-ml.so.1")]
    assert env["LIBPATH"].split(":")[0] == str(driver)
    script = tmp_path / "probe.py"
    script.write_text("#!/usr/bin/env python3\n" + _ENV_PROBE)
    script.chmod(0o755)
    r = _run([str(script)], shared_memory_daemon.address)
    assert r.returncode == 0, r.stderr
    assert "a Python script" in _explained(r.stderr)[0]
    assert str(shim) not in r.stdout


def test_layer_can_be_forced(program, shared_memory_daemon):
    exe = program("ci_devices", static=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA_")}
    r = subprocess.run([*FARCUDA, "run", "--server", shared_memory_daemon.address, "--layer",
                        "driver", "--explain", "--", str(exe)], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "asked for with --layer driver" in r.stderr


def test_program_kinds(program, tmp_path):
    shared, static = program("ci_devices"), program("ci_devices", static=True)
    assert "libcudart.so.13" in elf_needed(shared)
    assert not any(n.startswith("libcudart") for n in elf_needed(static))
    assert program_kind(str(shared))[0] == "shared-runtime"
    assert program_kind(str(static))[0] == "driver-program"
    assert program_kind(sys.executable)[0] == "python"
    sh = tmp_path / "run.sh"
    sh.write_text("#!/bin/sh\nexec ./prog\n")
    assert program_kind(str(sh))[0] == "script"
    assert elf_needed(sh) is None
