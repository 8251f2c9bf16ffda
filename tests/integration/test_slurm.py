"""Remote GPUs handed out by a real Slurm (slurmctld + slurmd + munged on loopback) from a
pool of two farcuda daemons (in-memory backend), through farcuda's hooks as
`farcuda-slurm install` writes them: jobs ask with licenses, run an nvcc-built program
through `farcuda run`, and the daemons' own status says which job holds which GPU.

The pool: server A's GPUs 0 and 1 and server B's GPU 0 whole (farcuda_gpu:3), server B's GPU
1 as two slices of 64 SMs (farcuda_vgpu:2). Skipped, saying why, where Slurm is not
installed (.ci/run installs it) or the tests do not run as root.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "farcuda_test_slurm_helpers", Path(__file__).with_name("slurm_helpers.py"))
helpers = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = helpers
_spec.loader.exec_module(helpers)

pytestmark = pytest.mark.slow

TOKEN = "slurm-pool-secret"


class Env:
    def __init__(self, cluster, a, b, ci_cluster: Path) -> None:
        self.slurm, self.a, self.b, self.ci_cluster = cluster, a, b, ci_cluster

    def hold_script(self, release: Path) -> str:
        return (f"#!/bin/sh\necho \"devices=$FARCUDA_DEVICES\"\necho \"job=$FARCUDA_JOB\"\n"
                f"echo \"token=${{FARCUDA_TOKEN:+given}}\"\n"
                f"exec {sys.executable} -m farcuda.interposer.cli run -- {self.ci_cluster} "
                f"{release} 120\n")

    def submit_hold(self, licenses: str, *opts: str) -> tuple[str, Path]:
        release = self.slurm.root / f"release-{time.monotonic_ns()}"
        return self.slurm.sbatch(self.hold_script(release), "-L", licenses, *opts), release

    def devices_of(self, job: str) -> list[str]:
        out = self.slurm.wait_output(job, "holding")
        (line,) = [x for x in out.splitlines() if x.startswith("devices=")]
        return line[len("devices="):].split(",")

    def sessions(self) -> dict[tuple[str, int], set[str]]:
        """{(server, gpu): labels of the jobs with a device open on it}, as
        `farcuda status --json` over the pool tells them"""
        r = subprocess.run([sys.executable, "-m", "farcuda.interposer.cli", "status",
                            "--server", self.a.address, "--server", self.b.address, "--json"],
                           capture_output=True, text=True, timeout=60,
                           env=dict(self.slurm.env, FARCUDA_TOKEN=TOKEN))
        assert r.returncode == 0, r.stderr
        got: dict[tuple[str, int], set[str]] = {}
        for server, st in json.loads(r.stdout).items():
            for g in st["gpus"]:
                if g["jobs"]:
                    got[(server, g["gpu"])] = set(g["jobs"])
        return got

    def jobs_on_daemons(self) -> set[str]:
        return {j for labels in self.sessions().values() for j in labels}

    def claims(self) -> dict[str, list[str]]:
        if not self.slurm.ledger.exists():
            return {}
        return {o: c["units"] for o, c in json.loads(self.slurm.ledger.read_text())
                ["claims"].items()}


@pytest.fixture(scope="module")
def env(tmp_path_factory, program, fc):
    root = tmp_path_factory.mktemp("slurm")
    auth = {"auth": {"tokens": {"slurm": TOKEN}}}
    a = fc.start_daemon(root, "memory", config=auth, backend_options={"gpus": 2})
    b = fc.start_daemon(root, "memory", config=auth, backend_options={"gpus": 2})
    ci_cluster = program("ci_cluster")
    (root / "token").write_text(TOKEN + "\n")
    pool = root / "pool.toml"
    pool.write_text(f'token_file = "token"\n'
                    f'[[servers]]\naddress = "{a.address}"\ngpus = 2\n'
                    f'[[servers]]\naddress = "{b.address}"\ngpus = [0]\n'
                    f'[[servers]]\naddress = "{b.address}"\ngpus = [1]\nslices = 2\nsm = 64\n')
    cluster = helpers.SlurmCluster(root, pool)
    try:
        cluster.start()
    except helpers.Unavailable as exc:
        a.stop()
        b.stop()
        pytest.skip(str(exc))
    try:
        yield Env(cluster, a, b, ci_cluster)
    finally:
        try:
            cluster.stop()
        finally:
            a.stop()
            b.stop()


def test_install_prints_the_pool_licenses_and_hooks(env):
    lines = env.slurm.conf_lines.splitlines()
    assert "Licenses=farcuda_gpu:3,farcuda_vgpu:2" in lines
    for key, hook in (("PrologSlurmctld", "prolog-slurmctld"), ("TaskProlog", "task-prolog"),
                      ("EpilogSlurmctld", "epilog-slurmctld"), ("Prolog", "prolog"),
                      ("Epilog", "epilog")):
        assert f"{key}={env.slurm.hooks / hook}" in lines
        assert os.access(env.slurm.hooks / hook, os.X_OK)
    assert env.slurm.licenses() == {"farcuda_gpu": (3, 0), "farcuda_vgpu": (2, 0)}


def test_concurrent_jobs_get_what_they_asked_for_and_never_share(env):
    s = env.slurm
    j1, r1 = env.submit_hold("farcuda_gpu:2")
    j2, r2 = env.submit_hold("farcuda_gpu:1")
    j3, r3 = env.submit_hold("farcuda_vgpu:2")
    d1, d2, d3 = env.devices_of(j1), env.devices_of(j2), env.devices_of(j3)
    j4, r4 = env.submit_hold("farcuda_gpu:1")  # nothing whole is left: it must wait
    try:
        a, b = env.a.address, env.b.address
        whole = {f"{a}/0", f"{a}/1", f"{b}/0"}
        assert len(d1) == 2 and len(d2) == 1 and set(d1) | set(d2) == whole
        assert d3 == [f"{b}/1@sm=64", f"{b}/1@sm=64"]
        for job, n, sms in ((j1, 2, "132"), (j2, 1, "132"), (j3, 2, "64")):
            out = s.output(job)
            assert f"devices {n}\n" in out and f"job=slurm:{job}\n" in out
            assert "token=given\n" in out
            assert all(f"device {i} sms {sms}" in out for i in range(n)), out
        # what the daemons see: each whole GPU held by the one job it was given to
        held = env.sessions()
        for job, devs in ((j1, d1), (j2, d2)):
            for dev in devs:
                server, gpu = dev.split("/")
                assert held[(server, int(gpu))] == {f"slurm:{job}"}
        assert held[(b, 1)] == {f"slurm:{j3}"}
        assert set(held) == {(a, 0), (a, 1), (b, 0), (b, 1)}
        assert env.claims() == {f"slurm:{j1}": d1, f"slurm:{j2}": d2,
                                f"slurm:{j3}": [f"{b}/1#0", f"{b}/1#1"]}
        pending = helpers._wait(lambda: (j := s.job(j4)).get("Reason") != "None" and j, 30,
                                "the scheduler to look at the fourth job")
        assert pending["JobState"] == "PENDING" and pending["Reason"] == "Licenses", pending
        assert s.licenses() == {"farcuda_gpu": (3, 3), "farcuda_vgpu": (2, 2)}
        r2.touch()  # j2 ends: j4 gets the GPU j2 had, the only one free
        assert s.wait_state(j2, {"COMPLETED"})["ExitCode"] == "0:0"
        assert env.devices_of(j4) == d2
        assert f"slurm:{j2}" not in env.claims()
        assert env.sessions()[tuple_of(d2[0])] == {f"slurm:{j4}"}
    finally:
        for r in (r1, r2, r3, r4):
            r.touch()
    for job in (j1, j3, j4):
        assert s.wait_state(job, {"COMPLETED"})["ExitCode"] == "0:0", s.output(job)
        assert s.output(job).endswith("PASSED\n")
    helpers._wait(lambda: not env.claims(), 20, "the ledger to empty")
    helpers._wait(lambda: not env.jobs_on_daemons(), 20, "the sessions to end")
    assert s.licenses() == {"farcuda_gpu": (3, 0), "farcuda_vgpu": (2, 0)}


def tuple_of(dev: str) -> tuple[str, int]:
    server, gpu = dev.split("@")[0].split("/")
    return server, int(gpu)


def test_srun_tasks_see_all_devices_or_their_share(env):
    out = env.slurm.run("srun", "-n", "2", "-L", "farcuda_gpu:2", "sh", "-c",
                        "echo $SLURM_PROCID $FARCUDA_DEVICES").stdout.split("\n")
    lines = sorted(x for x in out if x)
    assert len(lines) == 2 and lines[0].split()[1] == lines[1].split()[1]
    assert len(lines[0].split()[1].split(",")) == 2
    out = env.slurm.run("srun", "-n", "2", "-L", "farcuda_gpu:2", "sh", "-c",
                        "echo $SLURM_PROCID $FARCUDA_DEVICES",
                        env={"FARCUDA_BIND": "task"}).stdout.split("\n")
    shares = dict(x.split() for x in out if x)
    assert set(shares) == {"0", "1"} and shares["0"] != shares["1"]
    assert all("," not in v for v in shares.values())
    helpers._wait(lambda: not env.claims(), 20, "the ledger to empty")


def test_a_job_without_licenses_gets_nothing(env):
    out = env.slurm.run("srun", "sh", "-c", "echo devices=${FARCUDA_DEVICES:-none}").stdout
    assert out == "devices=none\n"


def test_cancelled_job_gives_everything_back(env):
    s = env.slurm
    job, release = env.submit_hold("farcuda_gpu:3")
    try:
        assert len(env.devices_of(job)) == 3
        assert env.jobs_on_daemons() == {f"slurm:{job}"}
        s.run("scancel", job)
        s.wait_state(job, {"CANCELLED"})
        # the job's processes are killed, their sessions end on the daemons, the units
        # go back to the ledger and the licenses to Slurm
        helpers._wait(lambda: not env.jobs_on_daemons(), 20, "the cancelled job's sessions")
        helpers._wait(lambda: not env.claims(), 20, "the ledger to release the job")
        assert s.licenses()["farcuda_gpu"] == (3, 0)
        assert not (s.rundir / f"job-{job}.env").exists()
    finally:
        release.touch()


def test_a_dead_node_gives_its_jobs_gpus_back(env):
    """slurmd stops answering (as a node that died): the controller declares the node down
    and the job NODE_FAIL, and EpilogSlurmctld, which runs on the controller, gives its units
    back although the node never ran its epilog. The stopped node's processes live on, as on
    a node cut off from the controller; when it answers again Slurm kills them."""
    s = env.slurm
    job, release = env.submit_hold("farcuda_gpu:2")
    slurmd = s.procs["slurmd"]
    try:
        assert len(env.devices_of(job)) == 2
        slurmd.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        s.wait_state(job, {"NODE_FAIL"}, timeout=60)
        helpers._wait(lambda: not env.claims(), 20, "the ledger to release the job")
        assert s.licenses()["farcuda_gpu"] == (3, 0)
        print(f"node failure seen and released in {time.monotonic() - t0:.1f} s")
    finally:
        slurmd.send_signal(signal.SIGCONT)
    try:
        t1 = time.monotonic()
        helpers._wait(lambda: not env.jobs_on_daemons(), 60, "the dead node's sessions to end")
        print(f"sessions ended {time.monotonic() - t1:.1f} s after the node came back")
        s.wait_node("idle", 60)
        print(f"node idle {time.monotonic() - t1:.1f} s after")
    finally:
        release.touch()
