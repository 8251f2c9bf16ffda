"""GPU power and energy, and its attribution to sessions.

The front samples every GPU through NVML (``pynvml``, from the nvidia-ml-py package) when it is
installed and initializes; each GPU of the daemon is found in NVML by its UUID (CUDA's device
order and NVML's may differ). The energy of a GPU is NVML's total energy counter where the GPU
has one (Volta and later), else the integral of its power readings (trapezoids between
samples).

Attribution: over a sampling interval of ``dt`` seconds, GPU g consumed dE_g joules, and
session s was busy on it for db_sg seconds (the session's busy clock: the union of the times a
call of s was executing for g and of the times a request of s was waiting for its work on g to
complete, see daemon/session/busy.py ``BusyClock``). Session s is attributed

    dE_g * db_sg / max(dt, sum over sessions of db_g)

so the energy of a GPU nobody kept busy stays unattributed (idle power belongs to no tenant),
one tenant keeping a GPU busy the whole interval is attributed all of it, and tenants busy at
the same time share it in proportion to their busy times.

Without NVML, or for a GPU on which neither the counter nor the power reading works, energy is
``None`` ("unavailable"): never estimated, never invented.
"""

from __future__ import annotations

import logging
import time

__all__ = ["GpuMeter", "EnergyLedger", "nvml_uuid"]

log = logging.getLogger("farcudad.energy")


def nvml_uuid(raw_hex: str) -> str:
    """CUDA's 16 UUID bytes (hex) in NVML's spelling: GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx."""
    h = raw_hex.lower()
    return f"GPU-{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


class GpuMeter:
    """NVML readings of the daemon's GPUs (blocking calls: run ``sample`` off the event loop)."""

    def __init__(self, nvml, handles: list) -> None:
        self.nvml = nvml
        self.handles = handles  # per daemon GPU: an NVML handle, or None

    @classmethod
    def open(cls, uuids: list[str]) -> GpuMeter | None:
        """A meter for the GPUs with these CUDA UUIDs (hex), or None without NVML."""
        try:
            import pynvml as nvml
        except ImportError:
            log.info("energy and GPU utilization unavailable: pynvml (nvidia-ml-py) is not "
                     "installed")
            return None
        try:
            nvml.nvmlInit()
        except Exception as exc:  # NVMLError and its many subclasses
            log.info("energy and GPU utilization unavailable: NVML: %s", exc)
            return None
        by_uuid = {}
        try:
            for i in range(nvml.nvmlDeviceGetCount()):
                h = nvml.nvmlDeviceGetHandleByIndex(i)
                u = nvml.nvmlDeviceGetUUID(h)
                by_uuid[u.decode() if isinstance(u, bytes) else str(u)] = h
        except Exception as exc:
            log.info("energy and GPU utilization unavailable: NVML: %s", exc)
            return None
        handles = [by_uuid.get(nvml_uuid(u)) if u else None for u in uuids]
        if not any(h is not None for h in handles):
            log.info("energy unavailable: NVML knows none of this daemon's GPUs")
            return None
        return cls(nvml, handles)

    def _try(self, fn, *args):
        try:
            return fn(*args)
        except Exception:
            return None

    def sample(self) -> list[dict]:
        """Per GPU: memory_used, memory_total (bytes), utilization (%), power_w, energy_j (the
        counter, J), each None when NVML cannot tell."""
        out = []
        nv = self.nvml
        for h in self.handles:
            r: dict = {"memory_used": None, "memory_total": None, "utilization": None,
                       "power_w": None, "energy_j": None}
            if h is not None:
                mem = self._try(nv.nvmlDeviceGetMemoryInfo, h)
                if mem is not None:
                    r["memory_used"], r["memory_total"] = int(mem.used), int(mem.total)
                util = self._try(nv.nvmlDeviceGetUtilizationRates, h)
                if util is not None:
                    r["utilization"] = int(util.gpu)
                mw = self._try(nv.nvmlDeviceGetPowerUsage, h)
                if mw is not None:
                    r["power_w"] = mw / 1000.0
                mj = self._try(nv.nvmlDeviceGetTotalEnergyConsumption, h)
                if mj is not None:
                    r["energy_j"] = mj / 1000.0
            out.append(r)
        return out

    def close(self) -> None:
        self._try(self.nvml.nvmlShutdown)


class EnergyLedger:
    """Energy of each GPU since the daemon started, and its attribution to sessions."""

    def __init__(self, ngpus: int) -> None:
        self.ngpus = ngpus
        self.gpu_j: list[float | None] = [None] * ngpus  # consumed since the first sample
        self.session_j: dict[int, float] = {}  # attributed to each session
        self.unattributed_j = 0.0
        self._last_t: float | None = None
        self._last: list[dict] = [{} for _ in range(ngpus)]
        self._busy: dict[int, dict[int, float]] = {}  # session -> gpu -> busy seconds seen

    def update(self, samples: list[dict], busy: dict[int, dict[int, float]],
               now: float | None = None) -> None:
        """One interval: ``samples`` from GpuMeter.sample, ``busy`` the sessions' busy clocks
        (session -> gpu -> seconds, cumulative)."""
        now = time.monotonic() if now is None else now
        dt = None if self._last_t is None else max(now - self._last_t, 1e-9)
        self._last_t = now
        delta: dict = {}
        for s, by_gpu in busy.items():
            seen = self._busy.setdefault(s, {})
            self.session_j.setdefault(s, 0.0)
            for g, b in by_gpu.items():
                d = max(0.0, b - seen.get(g, 0.0))
                seen[g] = b
                if dt is not None:
                    delta.setdefault(g, {})[s] = min(d, dt)  # busy at most the interval
        for g in range(self.ngpus):
            cur = samples[g] if g < len(samples) else {}
            prev, self._last[g] = self._last[g], cur
            if dt is None:
                continue
            de = None
            if cur.get("energy_j") is not None and prev.get("energy_j") is not None:
                de = max(0.0, cur["energy_j"] - prev["energy_j"])
            elif cur.get("power_w") is not None and prev.get("power_w") is not None:
                de = (cur["power_w"] + prev["power_w"]) / 2 * dt
            if de is None:
                continue
            self.gpu_j[g] = (self.gpu_j[g] or 0.0) + de
            shares = delta.get(g, {})
            denom = max(dt, sum(shares.values()))
            given = 0.0
            for s, b in shares.items():
                part = de * b / denom
                self.session_j[s] = self.session_j.get(s, 0.0) + part
                given += part
            self.unattributed_j += de - given

    @property
    def available(self) -> bool:
        return any(j is not None for j in self.gpu_j) or self._last_t is not None and any(
            s.get("energy_j") is not None or s.get("power_w") is not None for s in self._last)

    def of(self, session: int) -> float | None:
        return self.session_j.get(session, 0.0) if self.available else None

    def forget(self, session: int) -> None:
        self.session_j.pop(session, None)
        self._busy.pop(session, None)
