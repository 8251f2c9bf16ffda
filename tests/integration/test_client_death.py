"""Clients killed at random moments: the daemon frees everything they held, at once, and keeps
serving the others.

``ci_hold`` (nvcc-built, memory only) runs through the shim against a memory daemon and is
SIGKILLed during its start (before or during the handshake), right after a cudaMalloc, in the
middle of a transfer, or while it holds all its memory asleep. After each kill the daemon's
status (what ``farcuda status --json`` shows) must lose the session, and with it the memory it
held, within 2 s, and the worker process that served it must be gone. Meanwhile another
client runs ``ci_memory`` again and again through the same daemon: every run must pass.

FARCUDA_CLIENT_KILLS=N kills N clients instead of the default 12 (three per kind of moment).
The figures (kills per moment, memory held when killed, time to clean up, memory leaked,
concurrent runs) are printed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

from farcuda.interposer.cli import query_status

KILLS = int(os.environ.get("FARCUDA_CLIENT_KILLS") or 12)
MOMENTS = ("startup", "after-malloc", "mid-transfer", "holding")
BUFFERS, MIB, HOLD_S = 24, 2, 30
CLEANUP_LIMIT = 2.0


def _env(shim: Path, server: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA_")
           and k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")}
    env.update(LD_PRELOAD=str(shim), FARCUDA_SERVER=server, FARCUDA_LIVENESS_TIMEOUT="5")
    return env


class Client:
    """ci_hold in the background; its stdout lines are collected as they come."""

    def __init__(self, exe: Path, env: dict) -> None:
        self.proc = subprocess.Popen([str(exe), str(BUFFERS), str(MIB), str(HOLD_S)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, env=env)
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.strip())
                self.cond.notify_all()
        with self.cond:
            self.lines.append("<eof>")
            self.cond.notify_all()

    def _has(self, word: str) -> bool:
        return any(ln == word or ln.startswith(word + " ") for ln in self.lines)

    def wait_for(self, word: str, timeout: float = 30.0) -> None:
        """Until a line is ``word`` or starts with it and a space."""
        with self.cond:
            ok = self.cond.wait_for(lambda: self._has(word) or "<eof>" in self.lines, timeout)
            assert ok and self._has(word), f"waiting for {word!r}, got {self.lines[-5:]}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.thread.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def _sessions_of(status: dict, pid: int) -> list[dict]:
    return [t for t in status["tenants"] if t.get("identity", {}).get("pid") == pid]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose (the front reaps it as it notices)
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_killed_clients_free_everything(program, shim, fc, tmp_path, capsys):
    hold_exe, mem_exe = program("ci_hold"), program("ci_memory")
    daemon = fc.start_daemon(tmp_path, "memory", config={"prestart": 2})
    try:
        _kill_clients(hold_exe, mem_exe, shim, fc, daemon, capsys)
    finally:
        daemon.stop()


def _kill_clients(hold_exe: Path, mem_exe: Path, shim: Path, fc, daemon, capsys) -> None:
    rng = random.Random(int(os.environ.get("FARCUDA_FUZZ_SEED", "0") or 7))
    env = _env(shim, daemon.address)
    stop = threading.Event()
    survivor_runs: list[tuple[int, bool]] = []

    def survivor() -> None:
        while not stop.is_set():
            r = fc.run_remote(mem_exe, shim, daemon.address, timeout=60)
            survivor_runs.append((r.returncode, "PASSED" in r.stdout))
    other = threading.Thread(target=survivor)
    other.start()
    kills: dict[str, int] = dict.fromkeys(MOMENTS, 0)
    held_at_kill: list[int] = []
    cleanup: list[float] = []
    leaked = 0
    try:
        for i in range(KILLS):
            moment = MOMENTS[i % len(MOMENTS)]
            c = Client(hold_exe, env)
            try:
                if moment == "startup":  # before, during or just after the handshake
                    time.sleep(rng.uniform(0.0, 0.25))
                elif moment == "after-malloc":
                    c.wait_for(f"alloc {rng.randrange(BUFFERS)}")
                elif moment == "mid-transfer":  # the 2 MiB copies of a buffer are under way
                    c.wait_for(f"alloc {rng.randrange(BUFFERS)}")
                    time.sleep(rng.uniform(0.0, 0.004))
                else:
                    c.wait_for("holding")
            except BaseException:
                c.kill()
                raise
            pid = c.proc.pid
            before = _sessions_of(query_status(daemon.address, None), pid)
            held_at_kill.append(sum(t["memory_held"] for t in before))
            if moment == "holding":
                assert held_at_kill[-1] == BUFFERS * (MIB << 20), before
            workers = [t["pid"] for t in before if "pid" in t]
            c.kill()
            kills[moment] += 1
            t0 = time.monotonic()
            if moment == "startup":
                time.sleep(0.3)  # a hand-off under way may still create the session
            while True:
                mine = _sessions_of(query_status(daemon.address, None), pid)
                if not mine and not any(_alive(w) for w in workers):
                    break
                if time.monotonic() - t0 > CLEANUP_LIMIT + (0.3 if moment == "startup" else 0):
                    leaked += sum(t["memory_held"] for t in mine)
                    raise AssertionError(f"kill {i} ({moment}): session or worker still "
                                         f"there after {CLEANUP_LIMIT} s: {mine} {workers}")
                time.sleep(0.02)
            cleanup.append(time.monotonic() - t0 - (0.3 if moment == "startup" else 0))
            assert daemon.proc.poll() is None, daemon.log()[-3000:]
    finally:
        stop.set()
        other.join(120)
    assert survivor_runs and all(rc == 0 and ok for rc, ok in survivor_runs), survivor_runs
    deadline = time.monotonic() + 5
    while (st := query_status(daemon.address, None))["tenants"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert st["tenants"] == [], st["tenants"]
    assert all(g.get("memory_used", 0) == 0 for g in st["gpus"]), st["gpus"]
    text = daemon.log()
    assert "Traceback" not in text, text[text.find("Traceback") - 500:][:4000]
    with capsys.disabled():
        print(f"\n[client death] {sum(kills.values())} kills ({kills}); memory held at the kill: "
              f"{sum(held_at_kill) >> 20} MiB in all, up to {max(held_at_kill) >> 20} MiB; "
              f"cleaned up in {max(cleanup):.3f} s at most ({sum(cleanup) / len(cleanup):.3f} s "
              f"mean); memory leaked: {leaked} bytes; concurrent ci_memory runs: "
              f"{len(survivor_runs)}, all PASSED")
