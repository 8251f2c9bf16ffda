"""Prometheus metrics of the front: the text exposition format (version 0.0.4), served over a
minimal HTTP/1.0 endpoint (``GET /metrics``) on the front's own event loop.

The figures are those of `farcuda status` (the workers' counts, asked for at each scrape)
plus the front's own (refusals, handshake failures). Counters never go down: what a session
counted is kept, by tenant, when it ends (its worker's last word, see daemon/worker.py).

Tenant labels: the token's name when the daemon has tokens; without tokens each client process
is a tenant of its own, which would make a series per process, so the metrics count those by
the client's peer address instead. Labels are capped (``MAX_LABELS``; the rest count as
"other"), so a long-running daemon's exposition stays bounded.

The endpoint has no authentication and names tenants: listen on loopback or on a monitoring
network only (the daemon warns otherwise).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .errors import name_of

__all__ = ["MetricsLedger", "serve_http", "CONTENT_TYPE", "MAX_LABELS"]

log = logging.getLogger("farcudad.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_LABELS = 1000
_REQUEST_LIMIT = 8 << 10  # a scrape's request line and headers
_REQUEST_TIMEOUT = 5.0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Text:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: str) -> None:
        if labels:
            inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{inner}}} {float(value)!r}")
        else:
            self.lines.append(f"{name} {float(value)!r}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


@dataclass
class _Totals:
    calls: Counter = field(default_factory=Counter)  # message kind -> calls
    errors: Counter = field(default_factory=Counter)  # CUDA error name -> calls that failed
    bytes_in: int = 0
    bytes_out: int = 0
    energy_j: float = 0.0

    def add(self, st: dict, energy_j: float | None) -> None:
        self.calls.update(st.get("counts", {}))
        self.errors.update({name_of(int(k)): v for k, v in st.get("errors", {}).items()})
        self.bytes_in += int(st.get("bytes_in", 0))
        self.bytes_out += int(st.get("bytes_out", 0))
        self.energy_j += energy_j or 0.0


class MetricsLedger:
    """The totals of ended sessions, by tenant label, and the rendering of a scrape."""

    def __init__(self) -> None:
        self.retired: dict[str, _Totals] = {}
        self._labels: set[str] = set()

    def label(self, name: str) -> str:
        """The label a tenant is counted under (bounded: see the module's docstring)."""
        if name in self._labels:
            return name
        if len(self._labels) >= MAX_LABELS:
            return "other"
        self._labels.add(name)
        return name

    def retire(self, label: str, status: dict | None, energy_j: float | None) -> None:
        """A session ended: keep what it counted (its last known figures)."""
        self.retired.setdefault(label, _Totals()).add(status or {}, energy_j)

    def render(self, live: list[tuple[str, dict]], status: dict, front: dict) -> str:
        """``live``: (tenant label, session status) of each session now; ``status``: the
        daemon's (``Daemon.status``); ``front``: the front's own counts and gauges."""
        totals: dict[str, _Totals] = {}
        for label, t in self.retired.items():
            acc = totals.setdefault(label, _Totals())
            acc.calls.update(t.calls)
            acc.errors.update(t.errors)
            acc.bytes_in += t.bytes_in
            acc.bytes_out += t.bytes_out
            acc.energy_j += t.energy_j
        sessions: Counter[str] = Counter()
        memory: Counter[str] = Counter()
        in_flight: Counter[str] = Counter()
        for label, st in live:
            totals.setdefault(label, _Totals()).add(st, st.get("energy_j"))
            sessions[label] += 1
            memory[label] += int(st.get("memory_held", 0))
            in_flight[label] += int(st.get("pending", 0))
        out = _Text()
        out.family("farcudad_info", "gauge", "This daemon's version (the value is 1).")
        out.sample("farcudad_info", 1, version=front["version"])
        out.family("farcudad_limit", "gauge", "The limits of this daemon ([limits]).")
        for name, value in sorted(front["limits"].items()):
            if value is not None:
                out.sample("farcudad_limit", value, limit=name)
        out.family("farcudad_sessions", "gauge", "Sessions being served, by tenant.")
        for label in sorted(sessions):
            out.sample("farcudad_sessions", sessions[label], tenant=label)
        out.family("farcudad_sessions_started_total", "counter", "Sessions started.")
        out.sample("farcudad_sessions_started_total", front["sessions_started"])
        out.family("farcudad_calls_total", "counter",
                   "Requests served, by tenant and kind (the wire message).")
        for label in sorted(totals):
            for kind, n in sorted(totals[label].calls.items()):
                out.sample("farcudad_calls_total", n, tenant=label, kind=kind)
        out.family("farcudad_bytes_total", "counter",
                   "Bytes on the wire, by tenant and direction (in: from the client).")
        for label in sorted(totals):
            out.sample("farcudad_bytes_total", totals[label].bytes_in, tenant=label,
                       direction="in")
            out.sample("farcudad_bytes_total", totals[label].bytes_out, tenant=label,
                       direction="out")
        out.family("farcudad_call_errors_total", "counter",
                   "Requests answered with a CUDA error, by tenant and error.")
        for label in sorted(totals):
            for name, n in sorted(totals[label].errors.items()):
                out.sample("farcudad_call_errors_total", n, tenant=label, error=name)
        out.family("farcudad_refused_total", "counter",
                   "Connections refused, by reason (a limit's name, auth, version, ...).")
        for reason, n in sorted(front["refused"].items()):
            out.sample("farcudad_refused_total", n, reason=reason)
        out.family("farcudad_handshake_failures_total", "counter",
                   "Handshakes that failed, by reason (timeout, closed, malformed, tls).")
        for reason, n in sorted(front["handshake_failures"].items()):
            out.sample("farcudad_handshake_failures_total", n, reason=reason)
        out.family("farcudad_worker_failures_total", "counter",
                   "Worker processes that failed to start or exited with an error.")
        out.sample("farcudad_worker_failures_total", front["worker_failures"])
        out.family("farcudad_memory_held_bytes", "gauge",
                   "Device memory held by the sessions, by tenant.")
        for label in sorted(memory):
            out.sample("farcudad_memory_held_bytes", memory[label], tenant=label)
        out.family("farcudad_requests_in_flight", "gauge",
                   "Requests the sessions are still working on (waiting for the GPU, or "
                   "sending a result): their queue depth, by tenant.")
        for label in sorted(in_flight):
            out.sample("farcudad_requests_in_flight", in_flight[label], tenant=label)
        out.family("farcudad_handshakes_in_progress", "gauge",
                   "Connections accepted and not through their handshake yet.")
        out.sample("farcudad_handshakes_in_progress", front["handshakes"])
        out.family("farcudad_workers_idle", "gauge", "Worker processes started ahead of need.")
        out.sample("farcudad_workers_idle", front["idle"])
        out.family("farcudad_gpu_memory_used_bytes", "gauge",
                   "Device memory in use, by GPU (NVML's figure, else what sessions hold).")
        out.family("farcudad_gpu_memory_total_bytes", "gauge", "Device memory, by GPU.")
        for g in status.get("gpus", []):
            out.sample("farcudad_gpu_memory_used_bytes", g.get("memory_used") or 0,
                       gpu=str(g["gpu"]))
        for g in status.get("gpus", []):
            out.sample("farcudad_gpu_memory_total_bytes", g.get("memory_total") or 0,
                       gpu=str(g["gpu"]))
        energy = status.get("energy", {})
        if energy.get("available"):  # without NVML there is no figure: no series at all
            out.family("farcudad_energy_joules_total", "counter",
                       "GPU energy attributed to the sessions by busy time, by tenant.")
            for label in sorted(totals):
                out.sample("farcudad_energy_joules_total", totals[label].energy_j,
                           tenant=label)
            out.family("farcudad_gpu_energy_joules_total", "counter",
                       "GPU energy since the daemon started, by GPU (NVML).")
            for g in status.get("gpus", []):
                if g.get("energy_j") is not None:
                    out.sample("farcudad_gpu_energy_joules_total", g["energy_j"],
                               gpu=str(g["gpu"]))
            out.family("farcudad_energy_unattributed_joules_total", "counter",
                       "GPU energy no session kept the GPU busy for.")
            out.sample("farcudad_energy_unattributed_joules_total",
                       energy.get("unattributed_j") or 0.0)
        return out.text()


async def serve_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     render: Callable[[], Awaitable[str]]) -> None:
    """One scrape: ``GET /metrics`` answered with the exposition, then the connection ends."""
    try:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _REQUEST_TIMEOUT)
        except asyncio.IncompleteReadError as exc:
            head = exc.partial  # HTTP/0.9-style tools send a bare request line
        except asyncio.LimitOverrunError:
            return
        words = head.split(b"\r\n", 1)[0].split()
        if len(words) < 2:
            return
        method, path = words[0], words[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            status, body, ctype = "405 Method Not Allowed", b"only GET\n", "text/plain"
        elif path not in (b"/metrics", b"/"):
            status, body, ctype = "404 Not Found", b"see /metrics\n", "text/plain"
        else:
            status, body, ctype = "200 OK", (await render()).encode(), CONTENT_TYPE
        writer.write(f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
        if method != b"HEAD":
            writer.write(body)
        await writer.drain()
    except (TimeoutError, ConnectionError, OSError):
        pass
    except Exception:
        log.exception("metrics: a scrape failed")
    finally:
        writer.close()
