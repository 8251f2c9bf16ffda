"""Tenant limits, kept by the front for all of a tenant's connections at once.

A tenant is the token's name when the daemon has tokens, else one client process (see
``Daemon._tenant_of``); a tenant may hold several sessions (connections, each served by a
worker process of its own). The front is one asyncio thread, so each operation here is atomic
with respect to every other: two workers of one tenant reserving at the same moment are
served one after the other, and the sum of the grants never exceeds the quota.

Invariants:
- ``used[t]`` is the sum of the bytes granted to the live sessions of tenant t and not yet
  released; it never exceeds ``memory_per_tenant``.
- a session's grants and GPUs are dropped in one step by ``forget`` when its worker ends
  (however it ends), so a dead client's memory returns to its tenant at once.
- a GPU has at most ``tenants_per_gpu`` distinct tenants with a device open on it; a tenant
  already on the GPU may always open more devices there.
- live sessions plus those admitted and not started yet never exceed ``sessions_total``, nor a
  tenant's ``sessions_per_tenant``: a place is taken by ``admit`` before the front waits for
  a worker (two handshakes finishing at once cannot both take the last place) and becomes
  the session's in ``join``, or goes back in ``withdraw``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["TenantLedger"]


@dataclass
class _Session:
    tenant: str
    held: int = 0
    gpus: set[int] = field(default_factory=set)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class TenantLedger:
    def __init__(self, memory_per_tenant: int | None = None,
                 tenants_per_gpu: int | None = None, sessions_total: int | None = None,
                 sessions_per_tenant: int | None = None) -> None:
        self.memory_per_tenant = memory_per_tenant
        self.tenants_per_gpu = tenants_per_gpu
        self.sessions_total = sessions_total
        self.sessions_per_tenant = sessions_per_tenant
        self.used: dict[str, int] = {}  # tenant -> bytes granted
        self._sessions: dict[int, _Session] = {}
        self._admitted: Counter[str] = Counter()  # tenant -> places taken, not joined yet
        self._live: Counter[str] = Counter()  # tenant -> live sessions

    def admit(self, tenant: str) -> tuple[str, str] | None:
        """Take a session place for ``tenant`` (None), or say which limit refuses it:
        (the limit's name, a one-line reason)."""
        total = len(self._sessions) + self._admitted.total()
        if self.sessions_total is not None and total >= self.sessions_total:
            return ("sessions_total", f"this server already serves {total} sessions, its "
                    "limit (limits.sessions_total); try again later")
        mine = self._live[tenant] + self._admitted[tenant]
        if self.sessions_per_tenant is not None and mine >= self.sessions_per_tenant:
            return ("sessions_per_tenant", f"tenant {tenant!r} already has {mine} sessions, "
                    "the limit of this server (limits.sessions_per_tenant)")
        self._admitted[tenant] += 1
        return None

    def withdraw(self, tenant: str) -> None:
        """An admitted session did not start: its place is free again."""
        if self._admitted[tenant] > 0:
            self._admitted[tenant] -= 1
        if self._admitted[tenant] <= 0:
            del self._admitted[tenant]

    def join(self, session: int, tenant: str) -> None:
        """The session starts (in the place ``admit`` took for it, if it did)."""
        if tenant in self._admitted:
            self.withdraw(tenant)
        self._sessions[session] = _Session(tenant)
        self._live[tenant] += 1

    def sessions_of(self) -> dict[str, int]:
        """Live sessions by tenant."""
        return dict(self._live)

    def reserve(self, session: int, nbytes: int) -> str | None:
        """Grant ``nbytes`` to the session, or say why not (None: granted)."""
        s = self._sessions.get(session)
        if s is None:
            return "unknown session"
        if nbytes < 0:
            return "negative size"
        quota = self.memory_per_tenant
        have = self.used.get(s.tenant, 0)
        if quota is not None and have + nbytes > quota:
            return (f"tenant {s.tenant!r} would hold {_size(have + nbytes)} of device memory; "
                    f"its quota (limits.memory_per_tenant) is {_size(quota)}")
        self.used[s.tenant] = have + nbytes
        s.held += nbytes
        return None

    def release(self, session: int, nbytes: int) -> None:
        s = self._sessions.get(session)
        if s is None:
            return
        n = max(0, min(nbytes, s.held))  # never more than it was granted
        s.held -= n
        self._take(s.tenant, n)

    def _take(self, tenant: str, n: int) -> None:
        left = self.used.get(tenant, 0) - n
        if left > 0:
            self.used[tenant] = left
        else:
            self.used.pop(tenant, None)

    def tenants_on(self, gpu: int) -> set[str]:
        return {s.tenant for s in self._sessions.values() if gpu in s.gpus}

    def open_gpu(self, session: int, gpu: int) -> str | None:
        """Admit the session's tenant to ``gpu`` (None), or say why not."""
        s = self._sessions.get(session)
        if s is None:
            return "unknown session"
        on = self.tenants_on(gpu)
        limit = self.tenants_per_gpu
        if s.tenant not in on and limit is not None and len(on) >= limit:
            return (f"GPU {gpu} already serves {len(on)} tenant(s), the limit of this server "
                    "(limits.tenants_per_gpu); try again later or use another GPU")
        s.gpus.add(gpu)
        return None

    def close_gpu(self, session: int, gpu: int) -> None:
        s = self._sessions.get(session)
        if s is not None:
            s.gpus.discard(gpu)

    def forget(self, session: int) -> None:
        """The session ended: everything it held returns to its tenant."""
        s = self._sessions.pop(session, None)
        if s is not None:
            self._take(s.tenant, s.held)
            self._live[s.tenant] -= 1
            if self._live[s.tenant] <= 0:
                del self._live[s.tenant]

    def held(self, session: int) -> int:
        s = self._sessions.get(session)
        return s.held if s is not None else 0

    def tenant_used(self, session: int) -> int:
        s = self._sessions.get(session)
        return self.used.get(s.tenant, 0) if s is not None else 0
