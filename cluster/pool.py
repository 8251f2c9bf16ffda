"""A pool of remote GPUs: the pool file, its units, and the pool seen whole.

The pool file (TOML) lists the servers and how their GPUs are handed out::

    name = "farcuda"                       # Slurm licenses farcuda_gpu, farcuda_vgpu
    token_file = "pool.token"              # FARCUDA_TOKEN for the pool's jobs (optional)
    resource_domain = "farcuda.io"         # Kubernetes: farcuda.io/gpu, farcuda.io/vgpu

    [[servers]]
    address = "gpu-a:7420"
    gpus = [0, 1]                          # or a count: gpus = 2 (GPUs 0 and 1)

    [[servers]]
    address = "gpu-b:7420"
    gpus = [0]
    slices = 4                             # each GPU as 4 virtual GPUs ...
    sm = 32                                # ... of 32 SMs each (0: no budget, time-shared)
    nodes = ["edge-1", "edge-2"]           # Kubernetes: only these client nodes offer them

A *unit* is what one job holds exclusively: a whole GPU (kind ``gpu``) or one slice of a GPU
(kind ``vgpu``). A GPU is either whole or sliced, never both, so that the count of each kind
that a scheduler keeps (Slurm's licenses, the kubelet's devices) is exactly the number of
units there are: whatever the scheduler grants, the ledger can always give.

The pool seen whole: ``survey`` asks every server for its status (what ``farcuda status``
shows of one) at once, and ``gpu_rows`` turns the answers into one row per GPU: memory free,
the sessions on it with their tenants and jobs, and its SM groups (the SM budget of each
virtual device open on it).
"""

from __future__ import annotations

import os
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from farcuda.wire.addresses import ConfigError, parse_hostport

__all__ = ["PoolError", "Unit", "Pool", "load", "from_dict", "survey", "gpu_rows",
           "render_table", "unit_health", "KINDS"]

KINDS = ("gpu", "vgpu")


class PoolError(ValueError):
    """The pool file is malformed; the message names the file and the setting."""


@dataclass(frozen=True)
class Unit:
    """One exclusively held thing: a whole GPU, or one slice (``index``) of a sliced GPU."""
    server: str  # host:port
    gpu: int
    kind: str = "gpu"
    sm: int = 0  # SM budget of a slice, 0: none
    index: int = 0  # slice number on its GPU
    nodes: tuple[str, ...] = ()  # Kubernetes nodes that offer it (empty: every node)

    @property
    def id(self) -> str:
        """Stable name in the ledger and towards the kubelet (at most 63 characters there)."""
        base = f"{self.server}/{self.gpu}"
        return base if self.kind == "gpu" else f"{base}#{self.index}"

    @property
    def device(self) -> str:
        """This unit as a FARCUDA_DEVICES entry."""
        return f"{self.server}/{self.gpu}" + (f"@sm={self.sm}" if self.sm else "")


@dataclass
class Pool:
    name: str = "farcuda"
    units: list[Unit] = field(default_factory=list)
    token_file: str | None = None
    token: str | None = None
    resource_domain: str = "farcuda.io"
    source: str = ""

    @property
    def servers(self) -> list[str]:
        return list(dict.fromkeys(u.server for u in self.units))

    def of_kind(self, kind: str) -> list[Unit]:
        return [u for u in self.units if u.kind == kind]

    def license(self, kind: str) -> str:
        """The Slurm license that counts this kind of unit."""
        return f"{self.name}_{kind}"

    def licenses(self) -> dict[str, int]:
        return {self.license(k): n for k in KINDS if (n := len(self.of_kind(k)))}

    def resource(self, kind: str) -> str:
        """The Kubernetes extended resource that advertises this kind of unit."""
        return f"{self.resource_domain}/{kind}"

    def unit(self, uid: str) -> Unit | None:
        return next((u for u in self.units if u.id == uid), None)

    def role_of(self, server: str, gpu: int) -> str | None:
        """How the pool hands out this GPU: 'gpu', 'vgpu NxSM', or None (not in the pool)."""
        mine = [u for u in self.units if u.server == server and u.gpu == gpu]
        if not mine:
            return None
        if mine[0].kind == "gpu":
            return "gpu"
        return f"vgpu {len(mine)}x{mine[0].sm or 'shared'}"

    def read_token(self) -> str | None:
        """The token the pool's jobs present (token_file is read now: it may be a Secret
        that changes under a running plugin)."""
        if self.token_file:
            try:
                text = Path(self.token_file).read_text().strip()
            except OSError as exc:
                raise PoolError(f"{self.source}: token_file {self.token_file}: "
                                f"{exc.strerror}") from None
            return text or None
        return self.token


_TOP = {"name", "token", "token_file", "resource_domain", "servers"}
_SERVER = {"address", "gpus", "slices", "sm", "nodes"}


def _int(v, lo: int, where: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise PoolError(f"{where} must be an integer >= {lo}")
    return v


def from_dict(data: dict, source: str = "") -> Pool:
    where = source or "pool"
    unknown = set(data) - _TOP
    if unknown:
        raise PoolError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
    pool = Pool(source=source)
    name = data.get("name", pool.name)
    # a Slurm license name and the stem of a Kubernetes resource: keep it to what both allow
    if not isinstance(name, str) or not name or not all(c.isalnum() or c == "_" for c in name):
        raise PoolError(f"{where}: name {name!r} must be letters, digits and '_'")
    pool.name = name
    domain = data.get("resource_domain", pool.resource_domain)
    if not isinstance(domain, str) or not domain or "/" in domain:
        raise PoolError(f"{where}: resource_domain {domain!r} must be a DNS name")
    pool.resource_domain = domain
    if "token" in data:
        if not isinstance(data["token"], str) or not data["token"]:
            raise PoolError(f"{where}: token must be a non-empty string")
        pool.token = data["token"]
    if "token_file" in data:
        if not isinstance(data["token_file"], str) or not data["token_file"]:
            raise PoolError(f"{where}: token_file must be a file path")
        base = Path(source).parent if source else Path.cwd()
        pool.token_file = str(base / Path(data["token_file"]).expanduser())
    servers = data.get("servers", [])
    if not isinstance(servers, list) or not servers:
        raise PoolError(f"{where}: no [[servers]]")
    seen: set[tuple[str, int]] = set()
    for i, s in enumerate(servers):
        at = f"{where}: servers[{i}]"
        if not isinstance(s, dict):
            raise PoolError(f"{at} must be a table")
        unknown = set(s) - _SERVER
        if unknown:
            raise PoolError(f"{at}: unknown setting(s) {', '.join(sorted(unknown))}")
        if "address" not in s or not isinstance(s["address"], str):
            raise PoolError(f"{at}: address (host:port) is missing")
        try:
            host, port = parse_hostport(s["address"], f"{at}: address")
        except ConfigError as exc:
            raise PoolError(str(exc)) from None
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        gpus = s.get("gpus", 1)
        if isinstance(gpus, int) and not isinstance(gpus, bool):
            gpus = list(range(_int(gpus, 1, f"{at}: gpus")))
        if not isinstance(gpus, list) or not gpus:
            raise PoolError(f"{at}: gpus must be a count or a list of GPU indices")
        slices = _int(s.get("slices", 0), 0, f"{at}: slices")
        sm = _int(s.get("sm", 0), 0, f"{at}: sm")
        if sm and not slices:
            raise PoolError(f"{at}: sm is the budget of a slice: set slices too")
        nodes = s.get("nodes", [])
        if not isinstance(nodes, list) or not all(isinstance(n, str) and n for n in nodes):
            raise PoolError(f"{at}: nodes must be a list of node names")
        k = 0  # units of this entry, dealt round robin over its nodes
        for g in gpus:
            _int(g, 0, f"{at}: gpus entry")
            if (address, g) in seen:
                raise PoolError(f"{at}: GPU {g} of {address} is listed twice")
            seen.add((address, g))
            for j in range(slices or 1):
                mine = (nodes[k % len(nodes)],) if nodes else ()
                pool.units.append(Unit(address, g, "vgpu" if slices else "gpu", sm, j, mine))
                k += 1
    return pool


def load(path: str | os.PathLike) -> Pool:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise PoolError(f"pool file {p} does not exist") from None
    except OSError as exc:
        raise PoolError(f"pool file {p}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PoolError(f"{p}: {exc}") from None
    return from_dict(data, str(p))


# ---------------------------------------------------------------- the pool seen whole

def survey(servers: list[str], token: str | None, tls_config=None,
           timeout: float = 5.0) -> dict[str, dict]:
    """Every server's status at once: {server: status, or {"error": why}}."""
    from farcuda.interposer.cli import query_status

    def one(server: str) -> dict:
        try:
            return query_status(server, token, timeout=timeout, tls_config=tls_config)
        except (OSError, ConnectionError, ValueError) as exc:
            return {"error": str(exc) or type(exc).__name__}
    if not servers:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(servers))) as ex:
        return dict(zip(servers, ex.map(one, servers), strict=True))


def _groups(status: dict, gpu: int) -> list[dict]:
    """The virtual devices open on one GPU: one SM group each (sm_budget 0: the whole GPU)."""
    out = []
    for t in status.get("tenants", []):
        for vdev, d in sorted(t.get("devices", {}).items(), key=lambda kv: int(kv[0])):
            if d.get("gpu") == gpu:
                out.append({"session": t.get("session"), "tenant": t.get("tenant"),
                            "job": t.get("identity", {}).get("job"), "device": int(vdev),
                            "sm_budget": d.get("sm_budget", 0),
                            "memory_held": d.get("memory_held", 0)})
    return out


def gpu_rows(statuses: dict[str, dict], pool: Pool | None = None) -> list[dict]:
    """One row per GPU of every server (and per pool GPU a server could not tell of)."""
    rows = []
    for server, st in statuses.items():
        pool_gpus = sorted({u.gpu for u in pool.units if u.server == server}) if pool else []
        if "error" in st:
            for g in pool_gpus or [None]:
                rows.append({"server": server, "gpu": g, "error": st["error"],
                             "pool": pool.role_of(server, g) if pool and g is not None
                             else None})
            continue
        have = {g["gpu"]: g for g in st.get("gpus", [])}
        for g in sorted(set(have) | set(pool_gpus)):
            role = pool.role_of(server, g) if pool else None
            if g not in have:
                rows.append({"server": server, "gpu": g, "pool": role,
                             "error": f"the server has no GPU {g}"})
                continue
            info = have[g]
            groups = _groups(st, g)
            total = info.get("memory_total") or 0
            used = info.get("memory_used") or 0
            rows.append({"server": server, "gpu": g, "name": info.get("name", "?"),
                         "memory_total": total, "memory_used": used,
                         "memory_free": max(0, total - used),
                         "memory_source": info.get("memory_source"),
                         "sm_count": info.get("sm_count"),
                         "sessions": len({x["session"] for x in groups}),
                         "tenant_names": sorted({x["tenant"] for x in groups if x["tenant"]}),
                         "jobs": sorted({x["job"] for x in groups if x["job"]}),
                         "sm_groups": groups, "pool": role})
    return rows


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _sm_text(row: dict) -> str:
    groups = row.get("sm_groups") or []
    if not groups:
        return "-"
    parts = ["all" if not g["sm_budget"] else str(g["sm_budget"]) for g in groups]
    return "+".join(parts)


def render_table(rows: list[dict]) -> str:
    """The pool in one table: a line per GPU (a GPU nobody could read: why, in its line)."""
    head = ("SERVER", "GPU", "NAME", "POOL", "FREE / TOTAL", "SMS", "SM GROUPS", "SESSIONS",
            "TENANTS", "JOBS")
    cells: list[tuple[str, ...] | tuple[str, str, str]] = []
    for r in rows:
        gpu = "-" if r.get("gpu") is None else str(r["gpu"])
        if "error" in r:
            why = r["error"] if r["error"].startswith("the server has no GPU") \
                else f"unreachable: {r['error']}"
            cells.append((r["server"], gpu, why + (f" (pool: {r['pool']})" if r.get("pool")
                                                    else "")))
            continue
        cells.append((r["server"], gpu, r["name"], r.get("pool") or "-",
                      f"{_human(r['memory_free'])} / {_human(r['memory_total'])}",
                      "?" if r.get("sm_count") is None else str(r["sm_count"]),
                      _sm_text(r), str(r["sessions"]), ",".join(r["tenant_names"]) or "-",
                      ",".join(r["jobs"]) or "-"))
    full = [c for c in cells if len(c) == len(head)]
    widths = [max([len(head[i])] + [len(c[i]) for c in full]) for i in range(len(head))]
    for c in cells:  # a line that only says why still lines up its server and GPU
        if len(c) != len(head):
            widths[0], widths[1] = max(widths[0], len(c[0])), max(widths[1], len(c[1]))

    def fmt(c) -> str:
        if len(c) != len(head):
            return f"{c[0].ljust(widths[0])}  {c[1].ljust(widths[1])}  {c[2]}"
        return "  ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)).rstrip()
    return "\n".join([fmt(head)] + [fmt(c) for c in cells])


def unit_health(pool: Pool, statuses: dict[str, dict]) -> dict[str, bool]:
    """A unit is healthy while its server answers and still has its GPU."""
    out = {}
    for u in pool.units:
        st = statuses.get(u.server, {"error": "not asked"})
        out[u.id] = "error" not in st and any(g.get("gpu") == u.gpu
                                              for g in st.get("gpus", []))
    return out


def enrich(statuses: dict[str, dict], rows: list[dict]) -> dict[str, dict]:
    """The servers' statuses with each GPU entry given its row's pool figures (fields added,
    none changed: a reader of one server's ``farcuda status --json`` reads a pool's too)."""
    for r in rows:
        st = statuses.get(r["server"], {})
        for g in st.get("gpus", []):
            if g.get("gpu") == r["gpu"] and "error" not in r:
                g.update({k: r[k] for k in ("memory_free", "sessions", "tenant_names",
                                            "jobs", "sm_groups", "pool")})
    return statuses


def status_main(servers: list[str], pool_path: str | None, as_json: bool,
                token: str | None, tls_config=None) -> int:
    """``farcuda status`` over several servers or a pool file: one table, or the JSON of
    every server; 1 when a server could not be read, 2 for a bad pool file."""
    import json
    import sys
    pool = None
    if pool_path:
        try:
            pool = load(pool_path)
            token = token or pool.read_token()
        except PoolError as exc:
            print(f"farcuda: {exc}", file=sys.stderr)
            return 2
        servers = list(dict.fromkeys(pool.servers + servers))
    statuses = survey(servers, token, tls_config)
    rows = gpu_rows(statuses, pool)
    rc = 1 if any("error" in st for st in statuses.values()) else 0
    if as_json:
        print(json.dumps(enrich(statuses, rows), indent=2))
    else:
        print(render_table(rows))
    return rc
