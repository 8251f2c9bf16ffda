"""Many tenants at once: helpers of the load tests and of bench/load.py (loaded with importlib:
the tests run with --import-mode=importlib).

A tenant is one process of tests/programs/load.cu through the shim, with a device map of its
own. ``start`` starts them all, waits until every one has set up (contexts, streams, pinned
buffers: it prints "ready") and only then starts their timed loops together (a line on each
stdin), so that the figures of all tenants cover the same window of time. ``merge`` adds up
their reports: operations and throughput per kind, and latency percentiles over the merged
histograms of all tenants (buckets of 2^(1/16), 4.4% wide: percentiles of percentiles would
mean nothing). ``requests_lost`` compares the calls each client made (its FARCUDA_REPORT line)
with the requests the daemon's worker counted for that client's session (its "ended;
counts=" log line): a request lost on the way, in either direction, shows as a difference.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
import subprocess
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

KINDS = ("iteration", "malloc", "free", "h2d", "h2d_pinned", "d2h", "d2h_pinned", "d2d",
         "memset", "launch", "event", "sync")


@dataclass
class Tenant:
    mode: str  # mixed | nokernels | flood | fault (see tests/programs/load.cu)
    seed: int
    devices: str  # its FARCUDA_DEVICES
    duration: float
    max_kib: int = 2048
    label: str = ""


def device_maps(address: str, n: int, budgeted: int = 0, sm: int = 8) -> list[str]:
    """Device maps of ``n`` tenants on GPU 0 of one daemon. The first ``budgeted`` get a device
    of ``sm`` SMs (a green context made of SM groups that no other budgeted device of the host
    holds: daemon/backends/cuda/partitions.py claims them with file locks, so only as many
    budgets as the GPU has groups can be held at once) and an unbudgeted one; of the others
    every second one gets two virtual devices, the rest one. Unbudgeted devices share the
    whole GPU."""
    maps = []
    for i in range(n):
        if i < budgeted:
            maps.append(f"{address}/0@sm={sm},{address}/0")
        elif i % 2:
            maps.append(f"{address}/0,{address}/0")
        else:
            maps.append(f"{address}/0")
    return maps


class Client:
    """One tenant's process; its output lines are collected as they come."""

    def __init__(self, exe: Path, shim: Path, tenant: Tenant, env: dict | None = None) -> None:
        self.tenant = tenant
        e = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA_")
             and k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")}
        # Many handshakes at once: each may wait for the daemon to start a worker process.
        e.update(LD_PRELOAD=str(shim), FARCUDA_DEVICES=tenant.devices, FARCUDA_REPORT="1",
                 FARCUDA_CONNECT_TIMEOUT="60")
        e.update(env or {})
        self.proc = subprocess.Popen(
            [str(exe), f"{tenant.duration:g}", str(tenant.seed), tenant.mode,
             str(tenant.max_kib), "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, bufsize=1, env=e)
        self.out: list[str] = []
        self.err: list[str] = []
        self.ready = threading.Event()
        self.ended_at: float | None = None  # time.monotonic() when its stdout closed
        self._threads = [threading.Thread(target=self._read_out, daemon=True),
                         threading.Thread(target=self._read_err, daemon=True)]
        for t in self._threads:
            t.start()

    def _read_out(self) -> None:
        for line in self.proc.stdout:
            self.out.append(line.rstrip("\n"))
            if line.startswith("ready"):
                self.ready.set()
        self.ended_at = time.monotonic()
        self.ready.set()  # an early exit wakes whoever waits for it

    def _read_err(self) -> None:
        for line in self.proc.stderr:
            self.err.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def go(self) -> None:
        try:
            self.proc.stdin.write("go\n")
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass  # it exited already: its return code tells

    def wait(self, timeout: float) -> int | None:
        """Its exit status once it has exited (its output all read, its pipes closed), or None
        if it is still running after ``timeout`` seconds."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        for t in self._threads:
            t.join(10)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait(30)

    @property
    def report(self) -> dict | None:
        """The program's final JSON line, if it got that far."""
        for line in reversed(self.out):
            if line.startswith("{"):
                return json.loads(line)
        return None

    @property
    def calls(self) -> int | None:
        """The calls the shim sent to the server (FARCUDA_REPORT's line), if it exited."""
        for line in reversed(self.err):
            m = re.search(r"report: calls=(\d+)", line)
            if m:
                return int(m.group(1))
        return None

    @property
    def progress(self) -> str:
        lines = [ln for ln in self.out if ln.startswith("progress")]
        return lines[-1] if lines else ""

    def passed(self) -> bool:
        rep = self.report
        return self.proc.returncode == 0 and rep is not None and rep["errors"] == 0

    def describe(self) -> str:
        return (f"{self.tenant.label or self.tenant.mode} seed {self.tenant.seed} pid {self.pid} "
                f"devices {self.tenant.devices}: exit {self.proc.returncode}\n  stdout: "
                f"{' | '.join(ln[:300] for ln in self.out[-4:])}\n  stderr: "
                f"{''.join(self.err)[-1500:]}")


def start(exe: Path, shim: Path, tenants: list[Tenant], env: dict | None = None,
          ready_timeout: float = 120.0) -> tuple[list[Client], float]:
    """Start every tenant, wait until all have set up, then let them go at once. Returns the
    clients and the seconds their setup took (the slowest one's)."""
    t0 = time.monotonic()
    clients = [Client(exe, shim, t, env) for t in tenants]
    deadline = t0 + ready_timeout
    for c in clients:
        c.ready.wait(max(0.0, deadline - time.monotonic()))
    late = [c for c in clients if not c.ready.is_set() or c.proc.poll() is not None]
    if late:
        for c in clients:
            c.kill()
        raise AssertionError(f"{len(late)} of {len(clients)} tenants did not set up within "
                             f"{ready_timeout:.0f} s:\n" + "\n".join(c.describe() for c in late))
    setup_s = time.monotonic() - t0
    for c in clients:
        c.go()
    return clients, setup_s


def finish(clients: list[Client], timeout: float) -> list[Client]:
    """Wait for every client until ``timeout`` seconds from now; kill and return those still
    running then."""
    deadline = time.monotonic() + timeout
    hung = []
    for c in clients:
        if c.wait(max(0.0, deadline - time.monotonic())) is None:
            hung.append(c)
            c.kill()
    return hung


# ------------------------------------------------------------------ figures

def bucket_us(b: int) -> float:
    """The value of latency bucket b (its geometric middle), in microseconds."""
    return 2 ** ((b + 0.5) / 16) / 1000


def percentile(hist: Counter, q: float) -> float:
    total = sum(hist.values())
    rank = max(1, math.ceil(q * total))
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return bucket_us(b)
    return float("nan")


def merge(reports: list[dict]) -> dict:
    """Figures of many tenants: totals, throughput (the sum of each tenant's own rate, over
    windows that start together) and p50/p99 latency over all their operations, per kind."""
    kinds = {}
    for k in KINDS:
        hist: Counter = Counter()
        ops, rate = 0, 0.0
        for r in reports:
            for b, n in r["hist"].get(k, []):
                hist[b] += n
            n = r["ops"].get(k, 0)
            ops += n
            rate += n / r["duration_s"]
        if ops:
            kinds[k] = {"ops": ops, "ops_per_s": rate, "p50_us": percentile(hist, 0.50),
                        "p99_us": percentile(hist, 0.99)}
    return {
        "tenants": len(reports),
        "iterations": sum(r["iterations"] for r in reports),
        "errors": sum(r["errors"] for r in reports),
        "iterations_per_s": sum(r["iterations"] / r["duration_s"] for r in reports),
        "copy_mb_per_s": sum((r["bytes_h2d"] + r["bytes_d2h"]) / r["duration_s"]
                             for r in reports) / 1e6,
        "duration_s": max((r["duration_s"] for r in reports), default=0.0),
        "kinds": kinds,
    }


def table(summary: dict, title: str) -> str:
    """One line of totals, then one line per kind: ops, ops/s, p50 and p99 in microseconds."""
    lines = [f"{title}: {summary['tenants']} tenants, {summary['duration_s']:.1f} s, "
             f"{summary['iterations']} iterations ({summary['iterations_per_s']:.0f}/s), "
             f"copies {summary['copy_mb_per_s']:.0f} MB/s, errors {summary['errors']}",
             f"  {'kind':<11} {'ops':>10} {'ops/s':>10} {'p50 us':>9} {'p99 us':>9}"]
    for k, f in summary["kinds"].items():
        lines.append(f"  {k:<11} {f['ops']:>10} {f['ops_per_s']:>10.0f} {f['p50_us']:>9.1f} "
                     f"{f['p99_us']:>9.1f}")
    return "\n".join(lines)


_SESSION = re.compile(r"session (\d+): client \S+ tenant=\S+ exe=\S+ pid=(\d+)")
_ENDED = re.compile(r"session (\d+): ended; counts=(\{[^}]*\})")


def session_counts(daemon_log: str) -> dict[int, Counter]:
    """The requests each client process's sessions got served, by client pid, from the log
    of a daemon (level info or debug)."""
    pid_of = {int(m.group(1)): int(m.group(2)) for m in _SESSION.finditer(daemon_log)}
    by_pid: dict[int, Counter] = defaultdict(Counter)
    for m in _ENDED.finditer(daemon_log):
        by_pid[pid_of.get(int(m.group(1)), -1)].update(ast.literal_eval(m.group(2)))
    return by_pid


def sessions_of(daemon_log: str, pid: int) -> list[int]:
    """The session ids a client process got."""
    return [int(m.group(1)) for m in _SESSION.finditer(daemon_log) if int(m.group(2)) == pid]


def session_end(daemon_log: str, session: int) -> str:
    """How a session ended, from the daemon's log: "clean" (its worker counted what it served
    and exited with status 0), "failed" (its worker exited with another status), or "open"."""
    if re.search(rf"session {session}: worker exited with status", daemon_log):
        return "failed"
    if (re.search(rf"session {session}: ended; counts=", daemon_log)
            and re.search(rf"session {session}: ended['\"]", daemon_log)):
        return "clean"
    return "open"


def requests_lost(clients: list[Client], daemon_log: str) -> tuple[int, list[str]]:
    """Calls a client sent that its session did not serve, or the other way round, over the
    clients that exited by themselves (a killed one's queued calls die with it). The daemon
    also counts the report's own STATUS request, sent after the client's figures are read,
    and heartbeats, which the client does not count as calls."""
    counts = session_counts(daemon_log)
    lost, notes = 0, []
    for c in clients:
        if c.calls is None:
            continue
        served = counts.get(c.pid, Counter())
        n = sum(served.values()) - served.get("STATUS", 0) - served.get("PING", 0)
        if n != c.calls:
            lost += abs(c.calls - n)
            notes.append(f"pid {c.pid}: client sent {c.calls} calls, its sessions served {n}")
    return lost, notes


# ------------------------------------------------------------------ the host

def children(pid: int) -> set[int]:
    """Process ids whose parent is ``pid`` (a daemon's worker processes)."""
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.add(int(stat.parent.name))
    return kids


def gpu_memory_used(gpu: int = 0) -> int:
    """Bytes in use on a GPU, all processes together (nvidia-smi)."""
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                          "-i", str(gpu)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0]) << 20


def emit(capsys, name: str, text: str) -> None:
    """Show figures whatever pytest's capture (-s or not), and keep them in $OUT/<name>.txt
    where OUT is set."""
    if capsys is not None:
        with capsys.disabled():
            print(f"\n{text}", flush=True)
    else:
        print(text, flush=True)
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{name}.txt").write_text(text + "\n")
