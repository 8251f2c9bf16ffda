"""A real Slurm on loopback for the tests: munged, slurmctld and one slurmd (node ``ci1``),
configured in a temporary folder with farcuda's hooks as `farcuda-slurm install` writes them.

Needs Debian's slurmctld, slurmd, slurm-client and munge (.ci/run installs them) and root
(slurmd starts jobs as their users). ``SlurmCluster.start`` raises ``Unavailable`` with the
reason when either is missing, so that the tests skip saying why.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scancel", "scontrol", "squeue",
         "sinfo")


class Unavailable(Exception):
    pass


def _free_ports(n: int) -> list[int]:
    """n distinct ports free now, below the ephemeral range (32768 and up), where another
    program's outgoing connection cannot take one between this check and Slurm's bind."""
    ports: list[int] = []
    while len(ports) < n:
        port = random.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
    return ports


def _wait(pred, timeout: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


class SlurmCluster:
    def __init__(self, root: Path, pool_path: Path, slurmd_timeout: int = 5) -> None:
        self.root = root
        self.pool_path = pool_path
        self.slurmd_timeout = slurmd_timeout
        self.conf = root / "slurm.conf"
        self.ledger = root / "ledger.json"
        self.rundir = root / "run"
        self.hooks = root / "hooks"
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("FARCUDA_", "SLURM_")) and k != "LD_PRELOAD"}
        self.env["SLURM_CONF"] = str(self.conf)

    # ------------------------------------------------------------ life
    def start(self) -> SlurmCluster:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> SlurmCluster:
        missing = [t for t in TOOLS if shutil.which(t) is None
                   and not Path("/usr/sbin", t).exists()]
        if missing:
            raise Unavailable(f"Slurm is not installed (missing {', '.join(missing)}): "
                              "apt-get install slurmctld slurmd slurm-client munge")
        if os.geteuid() != 0:
            raise Unavailable("a test Slurm needs root (slurmd runs jobs as their users)")
        for d in ("munge", "state", "spool", "log", "run"):
            (self.root / d).mkdir(mode=0o755, exist_ok=True)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        sock = self.root / "munge" / "munge.sock"
        self._spawn("munged", [self._tool("munged"), "-F", "--force", f"--socket={sock}",
                               f"--key-file={key}", f"--pid-file={self.root}/munge/pid",
                               f"--seed-file={self.root}/munge/seed",
                               f"--log-file={self.root}/log/munged.log"])
        _wait(sock.exists, 20, "munged's socket")
        install = subprocess.run(
            [sys.executable, "-m", "farcuda.cluster.slurm", "install", "--pool",
             str(self.pool_path), "--dest", str(self.hooks), "--ledger", str(self.ledger),
             "--rundir", str(self.rundir), "--slurm-conf", str(self.conf),
             "--claim-wait", "20"], capture_output=True, text=True, env=self.env, timeout=60)
        if install.returncode != 0:
            raise RuntimeError(f"farcuda-slurm install: {install.stderr}")
        self.conf_lines = install.stdout
        for attempt in range(3):  # a port taken meanwhile: slurmctld exits at once
            self._configure(*_free_ports(2))
            self._spawn("slurmctld", [self._tool("slurmctld"), "-D", "-f", str(self.conf)])
            time.sleep(1.0)
            if self.procs["slurmctld"].poll() is None or attempt == 2:
                break
        self._spawn("slurmd", [self._tool("slurmd"), "-D", "-N", "ci1", "-f", str(self.conf)])
        self.wait_node("idle", 60)
        return self

    def _configure(self, ctld_port: int, slurmd_port: int) -> None:
        sock = self.root / "munge" / "munge.sock"
        host = socket.gethostname().split(".")[0]
        r = self.root
        self.conf.write_text(f"""\
ClusterName=farcuda-ci
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=0
MinJobAge=600
KillWait=2
SlurmdTimeout={self.slurmd_timeout}
MessageTimeout=5
InactiveLimit=0
{self.conf_lines}
NodeName=ci1 NodeHostname={host} NodeAddr=127.0.0.1 CPUs=8 State=UNKNOWN
PartitionName=ci Nodes=ci1 Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
""")

    def _tool(self, name: str) -> str:
        return shutil.which(name) or f"/usr/sbin/{name}"

    def _spawn(self, name: str, cmd: list[str]) -> None:
        with open(self.root / "log" / f"{name}.out", "w") as out:
            self.procs[name] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, env=self.env)

    def stop(self) -> None:
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            try:  # whatever Slurm answers, the daemons below are stopped
                subprocess.run(["scancel", "--full", "-u", "root"], env=self.env,
                               capture_output=True, timeout=30)
                _wait(lambda: not self.squeue(), 20, "the jobs to end")
            except (TimeoutError, RuntimeError, subprocess.SubprocessError):
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGCONT)  # one a test stopped must still hear the TERM
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def log(self, name: str) -> str:
        p = self.root / "log" / f"{name}.log"
        return p.read_text(errors="replace")[-4000:] if p.exists() else ""

    # ------------------------------------------------------------ Slurm's commands
    def run(self, *cmd: str, env: dict | None = None, timeout: float = 60,
            check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                           env=dict(self.env, **(env or {})))
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {r.returncode}: {r.stderr}{r.stdout}\n"
                               f"slurmctld: {self.log('slurmctld')}")
        return r

    def sbatch(self, script: str, *opts: str, env: dict | None = None) -> str:
        path = self.root / f"job-{time.monotonic_ns()}.sh"
        path.write_text(script)
        out = self.run("sbatch", "--parsable", f"--output={self.root}/out-%j.txt",
                       f"--chdir={self.root}", *opts, str(path), env=env).stdout
        return out.strip().split(";")[0]

    def output(self, job: str) -> str:
        p = self.root / f"out-{job}.txt"
        return p.read_text() if p.exists() else ""

    def wait_output(self, job: str, text: str, timeout: float = 60) -> str:
        try:
            _wait(lambda: text in self.output(job), timeout, f"job {job} to print {text!r}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; it printed {self.output(job)!r}; "
                               f"{self.job(job)}") from None
        return self.output(job)

    def job(self, job: str) -> dict[str, str]:
        r = self.run("scontrol", "show", "job", "-o", job, check=False)
        return dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", r.stdout))

    def wait_state(self, job: str, states: set[str], timeout: float = 60) -> dict:
        return _wait(lambda: (j := self.job(job)).get("JobState") in states and j, timeout,
                     f"job {job} to be {'/'.join(sorted(states))}")

    def squeue(self) -> list[str]:
        return self.run("squeue", "-h", "-o", "%A").stdout.split()

    def licenses(self) -> dict[str, tuple[int, int]]:
        """{name: (total, used)}"""
        out = self.run("scontrol", "show", "license", "-o").stdout
        got = {}
        for line in out.splitlines():
            f = dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", line))
            got[f["LicenseName"]] = (int(f["Total"]), int(f["Used"]))
        return got

    def node_state(self) -> str:
        return self.run("sinfo", "-h", "-n", "ci1", "-o", "%T").stdout.strip().lower()

    def wait_node(self, state: str, timeout: float) -> None:
        try:
            _wait(lambda: self.node_state().rstrip("*") == state, timeout,
                  f"node ci1 to be {state}", step=0.25)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc} (it is {self.node_state()!r})\nslurmctld: "
                               f"{self.log('slurmctld')}\nslurmd: {self.log('slurmd')}") \
                from None
