"""CUDA MPS as a daemon option ([gpu] mps = true), without a GPU: the configuration, the MPS
control program found or clearly missing, a control daemon joined or started (and stopped
again) through a stand-in of nvidia-cuda-mps-control, and the workers started as MPS clients
with the per-session limits in their environment."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from farcuda.daemon.config import ConfigError, from_dict
from farcuda.daemon.mps import Mps, MpsError

# A stand-in of nvidia-cuda-mps-control: `-d` "starts" a control daemon (its pipe appears),
# commands arrive on stdin; every call is logged next to the pipe.
FAKE_CONTROL = textwrap.dedent("""\
    #!{python}
    import os, sys
    d = os.environ["CUDA_MPS_PIPE_DIRECTORY"]
    pipe = os.path.join(d, "control")
    cmd = "-d" if sys.argv[1:] == ["-d"] else sys.stdin.read().strip()
    with open(os.path.join(d, "calls.log"), "a") as f:
        f.write(cmd + "\\n")
    if cmd == "-d":
        open(pipe, "w").close()
    elif not os.path.exists(pipe):
        sys.exit(1)
    elif cmd == "quit":
        os.remove(pipe)
""")


@pytest.fixture
def control(tmp_path) -> Path:
    p = tmp_path / "nvidia-cuda-mps-control"
    p.write_text(FAKE_CONTROL.format(python=sys.executable))
    p.chmod(0o755)
    return p


def calls(pipe: Path) -> list[str]:
    log = pipe / "calls.log"
    return log.read_text().split() if log.exists() else []


def test_the_gpu_table():
    cfg = from_dict({"gpu": {"mps": True, "mps_pipe_directory": "/p", "mps_log_directory": "/l",
                             "mps_control": "/bin/ctl", "active_thread_percentage": 25,
                             "pinned_memory_limit": "2GiB"}})
    assert (cfg.mps, cfg.mps_pipe_directory, cfg.mps_log_directory, cfg.mps_control) == (
        True, "/p", "/l", "/bin/ctl")
    assert (cfg.mps_active_thread_percentage, cfg.mps_pinned_memory_limit) == (25, 2 << 30)
    assert not from_dict({}).mps and from_dict({}).shared_contexts
    assert not from_dict({"gpu": {"shared_contexts": False}}).shared_contexts


@pytest.mark.parametrize("gpu,says", [
    ({"mps": "yes"}, "mps must be true or false"),
    ({"shared_contexts": 0}, "shared_contexts must be true or false"),
    ({"mps": True, "active_thread_percentage": 0}, "from 1 to 100"),
    ({"mps": True, "active_thread_percentage": 101}, "from 1 to 100"),
    ({"mps": True, "pinned_memory_limit": "lots"}, "is not a size"),
    ({"active_thread_percentage": 50}, "they need mps = true"),
    ({"mps": True, "mps_control": ""}, "mps_control must be a path"),
    ({"mps": True, "threads": 3}, "unknown setting(s) threads"),
])
def test_bad_gpu_tables_are_refused(gpu, says):
    with pytest.raises(ConfigError, match=None) as exc:
        from_dict({"gpu": gpu})
    assert says in str(exc.value)


def test_separate_contexts_reach_the_cuda_backend_only():
    from farcuda.daemon.server import Daemon
    separate = from_dict({"gpu": {"shared_contexts": False}})
    assert Daemon(separate, "cuda").backend_options == {"share": False}
    assert Daemon(separate, "memory").backend_options == {}
    assert Daemon(from_dict({}), "cuda").backend_options == {}


def test_a_missing_control_program_is_one_clear_error(tmp_path):
    cfg = from_dict({"gpu": {"mps": True, "mps_control": str(tmp_path / "absent"),
                             "mps_pipe_directory": str(tmp_path / "p")}})
    with pytest.raises(MpsError) as exc:
        Mps.open(cfg)
    assert "was not found" in str(exc.value) and "mps = false" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_a_control_daemon_is_started_and_stopped_again(tmp_path, control):
    pipe, logs = tmp_path / "pipe", tmp_path / "log"
    cfg = from_dict({"gpus": [0, 1], "gpu": {
        "mps": True, "mps_control": str(control), "mps_pipe_directory": str(pipe),
        "mps_log_directory": str(logs), "active_thread_percentage": 40,
        "pinned_memory_limit": "1GiB"}})
    mps = Mps.open(cfg)
    assert mps.started and (pipe / "control").exists()
    assert mps.env == {"CUDA_MPS_PIPE_DIRECTORY": str(pipe), "CUDA_MPS_LOG_DIRECTORY": str(logs),
                       "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "40",
                       "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=1G,1=1G"}
    mps.close()
    assert calls(pipe) == ["-d", "get_server_list", "quit"]
    assert not (pipe / "control").exists()
    cfg.mps_pinned_memory_limit = 1536 << 20
    again = Mps.open(cfg)
    assert again.env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=1536MB,1=1536MB"
    again.close()


def test_a_running_control_daemon_is_joined_and_left_running(tmp_path, control):
    pipe = tmp_path / "pipe"
    pipe.mkdir()
    (pipe / "control").touch()  # someone else's control daemon
    cfg = from_dict({"gpu": {"mps": True, "mps_control": str(control),
                             "mps_pipe_directory": str(pipe)}})
    mps = Mps.open(cfg)
    assert not mps.started
    mps.close()
    assert calls(pipe) == ["get_server_list"] and (pipe / "control").exists()


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def test_the_workers_are_mps_clients(tmp_path, control, fc):
    pipe = tmp_path / "pipe"
    d = fc.start_daemon(tmp_path, "memory", config={"gpu": {
        "mps": True, "mps_control": str(control), "mps_pipe_directory": str(pipe),
        "active_thread_percentage": 30}})
    try:
        deadline = time.monotonic() + 30
        workers: list[int] = []
        while not workers and time.monotonic() < deadline:
            workers = _children(d.proc.pid)
            time.sleep(0.05)
        assert workers, d.log()[-2000:]
        env = dict(kv.split("=", 1) for kv in
                   Path(f"/proc/{workers[0]}/environ").read_text().split("\0") if "=" in kv)
        assert env["CUDA_MPS_PIPE_DIRECTORY"] == str(pipe)
        assert env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "30"
    finally:
        d.stop()
    assert calls(pipe)[-1] == "quit" and not (pipe / "control").exists()


def test_farcudad_says_in_one_line_that_mps_is_missing(tmp_path):
    conf = tmp_path / "farcudad.toml"
    conf.write_text(f'[gpu]\nmps = true\nmps_control = "{tmp_path / "absent"}"\n')
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    r = subprocess.run([sys.executable, "-m", "farcuda.daemon.cli", "--config", str(conf),
                        "--listen", "127.0.0.1:0", "--prestart", "0"], capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.returncode == 1, r.stderr
    said = [ln for ln in r.stderr.splitlines() if "was not found" in ln]
    assert len(said) == 1 and "cannot start" in said[0], r.stderr
