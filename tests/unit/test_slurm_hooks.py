"""The Slurm hooks' pieces that need no Slurm: license lists, scontrol's answer, each task's
share, the hook scripts and slurm.conf lines that `farcuda-slurm install` writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from farcuda.cluster.pool import from_dict
from farcuda.cluster.slurm import HOOKS, job_fields, parse_licenses, task_exports

DATA = Path(__file__).resolve().parents[1] / "data"
POOL = from_dict({"servers": [{"address": "a:1", "gpus": 2},
                              {"address": "b:1", "gpus": [0], "slices": 2, "sm": 64}]})


@pytest.mark.parametrize("text, want", [
    ("farcuda_gpu:2", {"gpu": 2}),
    ("matlab:1,farcuda_vgpu*3,farcuda_gpu", {"vgpu": 3, "gpu": 1}),
    ("farcuda_gpu:1,farcuda_gpu:1", {"gpu": 2}),
    ("(null)", {}),
    ("", {}),
    ("other_gpu:4", {}),
])
def test_licenses_of_the_pool(text, want):
    assert parse_licenses(text, POOL) == want


def test_scontrol_answer_forged_name_and_comment():
    # a real `scontrol show job` (Slurm 22.05) of a job named "AdminComment=farcuda=evil"
    # with --comment "x AdminComment=farcuda=10.9.9.9:1/0,10.9.9.9:1/1"
    f = job_fields((DATA / "scontrol_show_job.txt").read_text())
    assert f == {"licenses": "farcuda_gpu:2", "admin": "farcuda=127.0.0.1:1/0,127.0.0.1:1/1"}


def test_each_task_its_share():
    v = {"FARCUDA_DEVICES": "d0,d1,d2,d3", "FARCUDA_TOKEN": "t"}
    assert task_exports(v, {"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}) == v
    bind = {"FARCUDA_BIND": "task", "SLURM_NTASKS": "2"}
    assert task_exports(v, dict(bind, SLURM_PROCID="0"))["FARCUDA_DEVICES"] == "d0,d2"
    assert task_exports(v, dict(bind, SLURM_PROCID="1"))["FARCUDA_DEVICES"] == "d1,d3"
    bind["SLURM_NTASKS"] = "6"
    assert task_exports(v, dict(bind, SLURM_PROCID="5"))["FARCUDA_DEVICES"] == "d1"
    assert task_exports(v, dict(bind, SLURM_PROCID="5"))["FARCUDA_TOKEN"] == "t"


def _slurm(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "farcuda.cluster.slurm", *args],
                          capture_output=True, text=True, timeout=60, env=env)


def test_install_writes_hooks_that_name_every_path(tmp_path):
    pool = tmp_path / "pool with space.toml"
    pool.write_text('[[servers]]\naddress = "a:1"\ngpus = 3\n')
    r = _slurm("install", "--pool", str(pool), "--dest", str(tmp_path / "hooks"),
               "--ledger", str(tmp_path / "l.json"), "--rundir", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "Licenses=farcuda_gpu:3" in lines and any(x.startswith("PrologFlags=Alloc")
                                                     for x in lines)
    for h in HOOKS:
        text = (tmp_path / "hooks" / h).read_text()
        assert f"-m farcuda.cluster.slurm {h}\n" in text and "@" not in text
        assert f"FARCUDA_POOL='{pool}'" in text and "unset LD_PRELOAD" in text
    # a hook run outside Slurm says what is missing and fails (Slurm would requeue the job)
    r = subprocess.run([str(tmp_path / "hooks" / "epilog-slurmctld")], capture_output=True,
                       text=True, timeout=60, env={})
    assert r.returncode == 1 and "SLURM_JOB_ID is not set" in r.stderr
    env = {"SLURM_JOB_ID": "77"}
    r = subprocess.run([str(tmp_path / "hooks" / "task-prolog")], capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.returncode == 0 and r.stdout == ""  # a job without farcuda's devices
    # a claim whose device map cannot be recorded (no Slurm to ask here) is given back
    env["SLURM_JOB_LICENSES"] = "farcuda_gpu:2"
    r = subprocess.run([str(tmp_path / "hooks" / "prolog-slurmctld")], capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.returncode == 1 and "prolog-slurmctld" in r.stderr
    state = json.loads((tmp_path / "l.json").read_text())
    assert state["claims"] == {} and len(state["released"]) == 2
    r = _slurm("install", "--pool", str(pool), "--dry-run", "--dest", str(tmp_path / "none"))
    assert r.returncode == 0 and not (tmp_path / "none").exists()


def test_ledger_and_licenses_commands(tmp_path):
    pool = tmp_path / "pool.toml"
    pool.write_text('name = "lab"\n[[servers]]\naddress = "a:1"\ngpus = 2\nslices = 2\n')
    assert _slurm("licenses", "--pool", str(pool)).stdout == "Licenses=lab_vgpu:4\n"
    (tmp_path / "l.json").write_text(json.dumps({"claims": {"slurm:5": {
        "units": ["a:1/0#0"], "since": 0}}}))
    r = _slurm("ledger", "--pool", str(pool), "--ledger", str(tmp_path / "l.json"), "--json")
    assert json.loads(r.stdout) == {"slurm:5": ["a:1/0#0"]}
    r = _slurm("ledger", "--pool", str(tmp_path / "missing.toml"))
    assert r.returncode == 2 and "does not exist" in r.stderr
