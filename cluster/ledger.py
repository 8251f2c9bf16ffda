"""Who holds which unit of a pool: a JSON state file, changed only under an exclusive lock.

A scheduler counts units (Slurm's licenses); the ledger names them. Every change is one
read-modify-write under ``flock`` on a lock file beside the state (``<state>.lock``), and the
new state replaces the old by rename, so two claims never see the same free unit and a crash
mid-write leaves the previous state whole.

State: ``{"version": 1, "claims": {owner: {"units": [unit ids], "since": t}},
"released": {unit id: t}}``. ``released`` remembers when each unit was last given back, so a
claim takes the unit that has been free the longest: a unit just given back may still have
the last job's processes dying on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .pool import Pool, Unit

__all__ = ["Ledger", "LedgerError", "Shortage"]


class LedgerError(RuntimeError):
    pass


class Shortage(LedgerError):
    """Not enough free units (the message says of which kind, and who holds them)."""


class Ledger:
    def __init__(self, path: str | os.PathLike, pool: Pool) -> None:
        self.path = Path(path)
        self.pool = pool
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict]:
        """The state, locked; what the block leaves in it is written back."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            state = self._read()
            before = json.dumps(state, sort_keys=True)
            yield state
            if json.dumps(state, sort_keys=True) != before:
                self._write(state)
        finally:
            os.close(fd)  # closing drops the lock

    def _read(self) -> dict:
        try:
            state = json.loads(self.path.read_text())
        except FileNotFoundError:
            state = {}
        except (OSError, ValueError) as exc:
            raise LedgerError(f"ledger {self.path} is unreadable: {exc}") from None
        if not isinstance(state, dict):
            raise LedgerError(f"ledger {self.path} is not a JSON object")
        state.setdefault("version", 1)
        state.setdefault("claims", {})
        state.setdefault("released", {})
        return state

    def _write(self, state: dict) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name + ".")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(state, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    # ------------------------------------------------------------ reading
    def claims(self) -> dict[str, list[str]]:
        with self._locked() as st:
            return {o: list(c["units"]) for o, c in st["claims"].items()}

    def held_by(self, owner: str) -> list[Unit]:
        with self._locked() as st:
            c = st["claims"].get(owner)
        return [u for uid in (c["units"] if c else []) if (u := self.pool.unit(uid))]

    # ------------------------------------------------------------ changing
    def claim(self, owner: str, want: dict[str, int], wait: float = 0.0,
              reap: Callable[[set[str]], set[str]] | None = None,
              poll: float = 0.2) -> list[Unit]:
        """Claim ``want`` ({kind: count}) for ``owner``: whole GPUs first, then slices, in
        the order of the device map they will make. Idempotent: an owner that already holds
        exactly that gets it again. When units are short, waits up to ``wait`` seconds for
        others to give theirs back; then, if ``reap`` is given, it is called with the other
        owners and returns those that are gone, whose claims are released, and the claim is
        tried once more."""
        want = {k: n for k, n in want.items() if n > 0}
        for k, n in want.items():
            total = len(self.pool.of_kind(k))
            if n > total:
                raise Shortage(f"{owner} wants {n} {k} unit(s); the pool {self.pool.name} "
                               f"has {total}")
        deadline = time.monotonic() + wait
        reaped = False
        while True:
            with self._locked() as st:
                got = self._try_claim(st, owner, want)
                if got is not None:
                    return got
                others = set(st["claims"]) - {owner}
            if time.monotonic() < deadline:
                time.sleep(poll)
                continue
            if reap is not None and not reaped and others:
                reaped = True
                gone = reap(others)
                for o in gone:
                    self.release(o)
                if gone:
                    continue
            with self._locked() as st:
                holders = ", ".join(f"{o} ({len(c['units'])})"
                                    for o, c in sorted(st["claims"].items())) or "nobody"
            raise Shortage(f"{owner}: not enough free units in pool {self.pool.name} for "
                           f"{want}; held by {holders}")

    def _try_claim(self, st: dict, owner: str, want: dict[str, int]) -> list[Unit] | None:
        mine = st["claims"].get(owner)
        if mine is not None:
            units = [self.pool.unit(uid) for uid in mine["units"]]
            have: dict[str, int] = {}
            for u in units:
                if u is not None:
                    have[u.kind] = have.get(u.kind, 0) + 1
            if have == want and None not in units:
                return [u for u in units if u is not None]
            self._release(st, owner)  # asked again for something else: start over
        taken = {uid for c in st["claims"].values() for uid in c["units"]}
        chosen: list[Unit] = []
        for kind in sorted(want, key=("gpu", "vgpu").index):
            free = [u for u in self.pool.of_kind(kind) if u.id not in taken]
            if len(free) < want[kind]:
                return None
            chosen += _choose(free, want[kind], st["released"])
        st["claims"][owner] = {"units": [u.id for u in chosen], "since": time.time()}
        return chosen

    def release(self, owner: str) -> list[str]:
        """Give back what ``owner`` holds (nothing held: nothing to do)."""
        with self._locked() as st:
            return self._release(st, owner)

    def _release(self, st: dict, owner: str) -> list[str]:
        c = st["claims"].pop(owner, None)
        if c is None:
            return []
        now = time.time()
        for uid in c["units"]:
            st["released"][uid] = now
        return list(c["units"])


def _choose(free: list[Unit], n: int, released: dict[str, float]) -> list[Unit]:
    """n of the free units: from as few groups (a server for whole GPUs, a GPU for slices)
    as will do, the smallest group that holds them all first (keeping the big ones whole
    for big jobs), and within a group the unit free the longest."""
    groups: dict[tuple, list[Unit]] = {}
    for u in free:
        key = (u.server,) if u.kind == "gpu" else (u.server, u.gpu)
        groups.setdefault(key, []).append(u)
    for g in groups.values():
        g.sort(key=lambda u: (released.get(u.id, 0.0), u.gpu, u.index))
    fits = [g for g in groups.values() if len(g) >= n]
    if fits:
        return min(fits, key=len)[:n]
    out: list[Unit] = []
    for g in sorted(groups.values(), key=len, reverse=True):
        out += g[:n - len(out)]
        if len(out) == n:
            break
    return out
