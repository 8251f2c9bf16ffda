"""`farcuda-slurm`: remote GPUs of a farcuda pool, handed out by Slurm.

    farcuda-slurm install --pool FILE [--dest DIR] [--ledger FILE] [--rundir DIR] ...
    farcuda-slurm licenses --pool FILE        the slurm.conf Licenses= line of the pool
    farcuda-slurm ledger [--json]             who holds what (on the controller)
    farcuda-slurm reconcile                   give back what jobs Slurm no longer runs held
    farcuda-slurm prolog-slurmctld | epilog-slurmctld | prolog | epilog | task-prolog

The resource model: a pool's GPUs are cluster-wide licenses, ``<pool>_gpu`` for whole GPUs
and ``<pool>_vgpu`` for SM-budgeted slices (see cluster/pool.py), so a job on a node with no
GPU asks for them the Slurm way (``sbatch -L farcuda_gpu:2``) and Slurm alone decides when
it may run. Which units it gets is the ledger's answer (cluster/ledger.py), on the controller:

- ``PrologSlurmctld`` (SlurmUser, on the controller, before the job starts) claims the units
  for the job's licenses and records their device map in the job's AdminComment
  (``farcuda=host:port/gpu,...``), which only Slurm's administrators can set.
- ``Prolog`` (root, on each of the job's nodes) reads that map back with scontrol and writes
  it, with the pool's token and the job's label, to a file only the job's user can read.
- ``TaskProlog`` (the user, before each task) turns the file into ``export`` lines:
  FARCUDA_DEVICES, FARCUDA_TOKEN and FARCUDA_JOB=slurm:JOBID. With FARCUDA_BIND=task in the
  job's environment each task gets its own share of the devices instead of all of them.
- ``Epilog`` removes the file; ``EpilogSlurmctld`` gives the units back. Slurm runs it for
  every end of a job that started (completion, scancel, time limit, a node that failed), on
  the controller, so a dead node cannot keep a claim.

Slurm gives a job's licenses back when the job starts completing, before EpilogSlurmctld has
run; a job started in that moment waits (``--claim-wait``) for the units to come back. A claim
whose EpilogSlurmctld never came (the controller was down) is reaped when units run short:
jobs that squeue no longer shows running hold nothing.

Slurm runs its hooks with no search path and a bare environment, so ``install`` writes each
hook as a small script with every path spelled out (from cluster/deploy/slurm/hook.sh.in).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .ledger import Ledger, LedgerError
from .pool import KINDS, Pool, PoolError, load

__all__ = ["main", "parse_licenses", "job_fields", "task_exports", "HOOKS", "conf_lines",
           "owner_of"]

HOOKS = ("prolog-slurmctld", "epilog-slurmctld", "prolog", "epilog", "task-prolog")
CONF_KEYS = {"prolog-slurmctld": "PrologSlurmctld", "epilog-slurmctld": "EpilogSlurmctld",
             "prolog": "Prolog", "epilog": "Epilog", "task-prolog": "TaskProlog"}
DEFAULTS = {"dest": "/etc/slurm/farcuda", "ledger": "/var/lib/farcuda/slurm-ledger.json",
            "rundir": "/run/farcuda/slurm"}
TEMPLATE = Path(__file__).resolve().parent / "deploy" / "slurm" / "hook.sh.in"
ADMIN_TAG = "farcuda="
# squeue states of a job that is over (or back in the queue, where its claim is stale)
_OVER = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
         "OUT_OF_MEMORY", "PENDING", "PREEMPTED", "REQUEUED", "REQUEUE_FED", "REVOKED",
         "SPECIAL_EXIT", "TIMEOUT"}


class HookError(RuntimeError):
    pass


def owner_of(job: str) -> str:
    """The ledger's owner and the sessions' label for a Slurm job."""
    return f"slurm:{job}"


def parse_licenses(text: str, pool: Pool) -> dict[str, int]:
    """{kind: count} of this pool's licenses in a job's license list (``a:2,b``)."""
    names = {pool.license(k): k for k in KINDS}
    want: dict[str, int] = {}
    for item in filter(None, (x.strip() for x in (text or "").split(","))):
        name, count = item, "1"
        if m := re.fullmatch(r"([^:*]+)[:*](.*)", item):
            name, count = m.group(1), m.group(2)
        if name in names:
            if not count.isdigit():
                raise HookError(f"license {item!r}: {count!r} is not a count")
            want[names[name]] = want.get(names[name], 0) + int(count)
    return want


def _env(name: str, default: str | None = None) -> str:
    v = os.environ.get(name, default)
    if v is None:
        raise HookError(f"{name} is not set (is this hook run by Slurm, installed by "
                        "`farcuda-slurm install`?)")
    return v


def _pool() -> Pool:
    return load(_env("FARCUDA_POOL"))


def _scontrol(*args: str, timeout: float = 30) -> str:
    exe = shutil.which("scontrol") or "scontrol"
    r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise HookError(f"scontrol {' '.join(args)}: {(r.stderr or r.stdout).strip()}")
    return r.stdout


def _job_fields(job: str) -> dict[str, str]:
    return job_fields(_scontrol("show", "job", job))


def job_fields(text: str) -> dict[str, str]:
    """Licenses and AdminComment of a job, from scontrol's many-line form, where AdminComment
    starts its own line: the job's name or Comment cannot pass for it. (A path or comment
    with a line break in it could; that would give a job nothing its user cannot do anyway
    with FARCUDA_DEVICES: the pool's token is the only barrier, see cluster/README.md.)"""
    out: dict[str, str] = {}
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("AdminComment=") and "admin" not in out:
            out["admin"] = s[len("AdminComment="):]
        for tok in s.split():
            if tok.startswith("Licenses=") and "licenses" not in out:
                out["licenses"] = tok[len("Licenses="):]
    return out


def _gone_jobs(owners: set[str]) -> set[str]:
    """The owners whose Slurm jobs are over (squeue no longer shows them running)."""
    exe = shutil.which("squeue") or "squeue"
    try:
        r = subprocess.run([exe, "-h", "-t", "all", "-o", "%A %T"], capture_output=True,
                           text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return set()
    if r.returncode != 0:
        return set()  # no answer is no evidence: reap nothing
    state = dict(line.split(None, 1) for line in r.stdout.splitlines() if " " in line)
    gone = set()
    for o in owners:
        kind, _, job = o.partition(":")
        if kind == "slurm" and state.get(job, "GONE").strip() in _OVER | {"GONE"}:
            gone.add(o)
    return gone


def _say(msg: str) -> None:
    print(f"farcuda-slurm: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the hooks

def hook_prolog_slurmctld() -> int:
    job = _env("SLURM_JOB_ID")
    pool = _pool()
    want = parse_licenses(os.environ.get("SLURM_JOB_LICENSES", ""), pool)
    if not want:
        return 0
    ledger = Ledger(_env("FARCUDA_SLURM_LEDGER"), pool)
    units = ledger.claim(owner_of(job), want, wait=float(_env("FARCUDA_SLURM_WAIT", "30")),
                         reap=_gone_jobs)
    devices = ",".join(u.device for u in units)
    try:
        old = _job_fields(job).get("admin", "")
        keep = " ".join(w for w in old.split() if not w.startswith(ADMIN_TAG))
        _scontrol("update", f"JobId={job}",
                  f"AdminComment={ADMIN_TAG}{devices}" + (f" {keep}" if keep else ""))
    except (HookError, OSError, subprocess.TimeoutExpired):
        ledger.release(owner_of(job))
        raise
    _say(f"job {job}: {devices}")
    return 0


def hook_epilog_slurmctld() -> int:
    job = _env("SLURM_JOB_ID")
    gone = Ledger(_env("FARCUDA_SLURM_LEDGER"), _pool()).release(owner_of(job))
    if gone:
        _say(f"job {job} ended: released {', '.join(gone)}")
    return 0


def _env_file(job: str) -> Path:
    return Path(_env("FARCUDA_SLURM_RUNDIR")) / f"job-{job}.env"


def hook_prolog() -> int:
    job = _env("SLURM_JOB_ID")
    pool = _pool()
    fields = _job_fields(job)
    want = parse_licenses(fields.get("licenses", ""), pool)
    if not want:
        return 0
    # PrologSlurmctld has finished before the nodes' prologs start; wait a little all the same
    # (a controller that runs its prolog late), never for ever
    deadline = time.monotonic() + float(_env("FARCUDA_SLURM_WAIT", "30"))
    while not (m := re.search(rf"(?:^|\s){ADMIN_TAG}(\S+)", fields.get("admin", ""))):
        if time.monotonic() > deadline:
            raise HookError(f"job {job} asked for {want} but has no device map (is "
                            "PrologSlurmctld farcuda-slurm's?)")
        time.sleep(0.5)
        fields = _job_fields(job)
    devices = m.group(1)
    if len(devices.split(",")) != sum(want.values()):
        raise HookError(f"job {job}: device map {devices} does not match licenses {want}")
    token = pool.read_token()
    lines = [f"FARCUDA_DEVICES={devices}", f"FARCUDA_JOB={owner_of(job)}"]
    if token:
        if any(c in token for c in "\n\r"):
            raise HookError("the pool's token holds a line break")
        lines.append(f"FARCUDA_TOKEN={token}")
    path = _env_file(job)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    # the job's user reads it in its task prolog; nobody else may (it holds the token)
    os.chown(tmp, int(_env("SLURM_JOB_UID", str(os.getuid()))),
             int(_env("SLURM_JOB_GID", str(os.getgid()))))
    os.replace(tmp, path)
    return 0


def hook_epilog() -> int:
    try:
        _env_file(_env("SLURM_JOB_ID")).unlink()
    except FileNotFoundError:
        pass
    return 0


def task_exports(values: dict[str, str], env: dict[str, str]) -> dict[str, str]:
    """What one task gets: everything, or with FARCUDA_BIND=task its share of the devices
    (task i of n gets the devices i, i+n, ...; with fewer devices than tasks, device i mod
    count)."""
    out = dict(values)
    if env.get("FARCUDA_BIND", "").strip().lower() == "task" and "FARCUDA_DEVICES" in out:
        devs = out["FARCUDA_DEVICES"].split(",")
        n = max(1, int(env.get("SLURM_NTASKS", "1") or 1))
        i = int(env.get("SLURM_PROCID", "0") or 0)
        share = devs[i::n] if len(devs) >= n else [devs[i % len(devs)]]
        out["FARCUDA_DEVICES"] = ",".join(share)
    return out


def hook_task_prolog() -> int:
    try:
        text = _env_file(_env("SLURM_JOB_ID")).read_text()
    except FileNotFoundError:
        return 0  # a job without remote GPUs
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    for k, v in task_exports(values, dict(os.environ)).items():
        print(f"export {k}={v}")
    return 0


_HOOKS = {"prolog-slurmctld": hook_prolog_slurmctld, "epilog-slurmctld": hook_epilog_slurmctld,
          "prolog": hook_prolog, "epilog": hook_epilog, "task-prolog": hook_task_prolog}


# ---------------------------------------------------------------- install

def conf_lines(pool: Pool, dest: Path, pool_path: str) -> list[str]:
    lic = ",".join(f"{k}:{n}" for k, n in pool.licenses().items())
    return [f"# farcuda pool {pool.name!r} ({pool_path}); merge with lines you already have",
            f"Licenses={lic}",
            *(f"{CONF_KEYS[h]}={dest / h}" for h in HOOKS),
            "PrologFlags=Alloc  # the node prolog at allocation: batch scripts get devices too"]


def render_hook(hook: str, values: dict[str, str]) -> str:
    text = TEMPLATE.read_text()
    for k, v in dict(values, HOOK=hook).items():
        text = text.replace(f"@{k}@", shlex.quote(v) if k != "HOOK" else v)
    return text


def cmd_install(args) -> int:
    try:
        pool = load(args.pool)
    except PoolError as exc:
        print(f"farcuda-slurm: {exc}", file=sys.stderr)
        return 2
    dest = Path(args.dest)
    bindir = os.path.dirname(shutil.which("scontrol") or "/usr/bin/scontrol")
    values = {"PYTHON": args.python, "POOL": str(Path(args.pool).resolve()),
              "LEDGER": args.ledger, "RUNDIR": args.rundir, "WAIT": str(args.claim_wait),
              "PATH": f"{bindir}:/usr/bin:/bin", "SLURM_CONF": args.slurm_conf or ""}
    if not args.dry_run:
        dest.mkdir(parents=True, exist_ok=True)
        for h in HOOKS:
            p = dest / h
            p.write_text(render_hook(h, values))
            p.chmod(0o755)
    print("\n".join(conf_lines(pool, dest, values["POOL"])))
    if args.dry_run:
        print(f"# (dry run: nothing written; hooks would go to {dest})")
    return 0


def cmd_licenses(args) -> int:
    try:
        pool = load(args.pool)
    except PoolError as exc:
        print(f"farcuda-slurm: {exc}", file=sys.stderr)
        return 2
    print("Licenses=" + ",".join(f"{k}:{n}" for k, n in pool.licenses().items()))
    return 0


def _ledger_from(args) -> Ledger:
    return Ledger(args.ledger or os.environ.get("FARCUDA_SLURM_LEDGER", DEFAULTS["ledger"]),
                  load(args.pool or os.environ.get("FARCUDA_POOL", "/etc/farcuda/pool.toml")))


def cmd_ledger(args) -> int:
    claims = _ledger_from(args).claims()
    if args.json:
        print(json.dumps(claims, indent=2))
    else:
        for owner, units in sorted(claims.items()):
            print(f"{owner}: {', '.join(units)}")
        if not claims:
            print("no claims")
    return 0


def cmd_reconcile(args) -> int:
    ledger = _ledger_from(args)
    for owner in sorted(_gone_jobs(set(ledger.claims()))):
        print(f"{owner}: released {', '.join(ledger.release(owner))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in _HOOKS:
        try:
            return _HOOKS[argv[0]]()
        except (HookError, PoolError, LedgerError, OSError, ValueError,
                subprocess.TimeoutExpired) as exc:
            # a failing prolog makes Slurm requeue the job (and drain the node, for the
            # node's prolog): say why where Slurm keeps hook output
            _say(f"{argv[0]}: {exc}")
            return 1
    ap = argparse.ArgumentParser(prog="farcuda-slurm",
                                 description="remote GPUs of a farcuda pool, handed out by Slurm")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("install", help="write the hooks, print the slurm.conf lines")
    p.add_argument("--pool", required=True, metavar="FILE", help="the pool file")
    p.add_argument("--dest", default=DEFAULTS["dest"], help="folder for the hook scripts")
    p.add_argument("--ledger", default=DEFAULTS["ledger"], metavar="FILE",
                   help="the ledger's state file (on the controller, writable by SlurmUser)")
    p.add_argument("--rundir", default=DEFAULTS["rundir"], metavar="DIR",
                   help="where node prologs leave each job's settings")
    p.add_argument("--slurm-conf", metavar="FILE",
                   help="slurm.conf for the hooks' scontrol (when not the default)")
    p.add_argument("--python", default=sys.executable, help="the Python with farcuda")
    p.add_argument("--claim-wait", type=float, default=30.0, metavar="S",
                   help="seconds a claim waits for units a finished job still holds")
    p.add_argument("--dry-run", action="store_true")
    p = sub.add_parser("licenses", help="print the pool's Licenses= line")
    p.add_argument("--pool", required=True, metavar="FILE")
    for name, text in (("ledger", "show who holds what"),
                       ("reconcile", "release claims of jobs that are over")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--pool", metavar="FILE", help="default: $FARCUDA_POOL")
        p.add_argument("--ledger", metavar="FILE", help="default: $FARCUDA_SLURM_LEDGER")
        if name == "ledger":
            p.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        return {"install": cmd_install, "licenses": cmd_licenses, "ledger": cmd_ledger,
                "reconcile": cmd_reconcile}[args.cmd](args)
    except (PoolError, LedgerError) as exc:
        print(f"farcuda-slurm: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
