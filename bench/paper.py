"""The seed paper's experiment on one GPU: PFM through farcuda with several virtual GPUs.

    python bench/paper.py [--n N] [--F F] [--starts-batched K] [--starts-exact K] [--out FILE]

Runs the same pfm binary through farcuda, on one physical GPU, as
  - 1, 2, 4 and 8 virtual GPUs of the whole GPU (one context each, in one worker process),
  - an "edge GPU" stand-in: one virtual GPU limited to 8 SMs (a green context; the SM count
    of the Jetson AGX Xavier the paper used),
both PFM modes, over loopback and over an emulated edge link (a user-space proxy at
1 Gbit/s with 0.5 ms added each way: farcuda.daemon.linkproxy). For each run: the time of the
prototype phase and of the whole run (the program's own JSON record), the speed-up against
1 virtual GPU and against the 8-SM device, the GPU energy over the run (NVML's energy
counter, when available) and the client process's CPU time. The same data and starts for
every configuration; results are checked to agree.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def energy_mj() -> float | None:
    try:
        import pynvml
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        return float(pynvml.nvmlDeviceGetTotalEnergyConsumption(h))
    except Exception:
        return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--F", type=int, default=8)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--starts-batched", type=int, default=50000)
    ap.add_argument("--starts-exact", type=int, default=200)
    ap.add_argument("--starts-exact-edge", type=int, default=40)
    ap.add_argument("--vgpus", default="1,2,4,8")
    ap.add_argument("--links", default="loopback,edge")
    ap.add_argument("--modes", default="batched,exact")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "paper.txt"))
    ap.add_argument("--timeout", type=float, default=300)
    args = ap.parse_args()

    from farcuda.daemon.linkproxy import ProxyThread
    from farcuda.interposer.cli import app_environment, start_local_daemon
    from farcuda.pfm import data as pfm_data
    from farcuda.pfm.datagen import blobs
    from farcuda.pfm.runner import build_pfm, run_pfm

    binary = build_pfm(Path(tempfile.gettempdir()) / "farcuda-paper-build")
    X = blobs(args.n, args.F, args.k, seed=20240611).X
    data = Path(tempfile.gettempdir()) / f"paper-{args.n}-{args.F}.pfmd"
    pfm_data.write_binary(data, X)
    daemon, server = start_local_daemon()
    proxy = None
    rows, records = [], []
    try:
        links = {"loopback": server}
        if "edge" in args.links:
            proxy = ProxyThread(server, delay=0.0005, rate=1e9).start()
            links["edge"] = proxy.address
        configs = [(f"{v} vGPU", [""] * v) for v in map(int, args.vgpus.split(","))]
        configs.append(("8-SM edge GPU", ["@sm=8"]))
        reference = {}
        for link in args.links.split(","):
            for mode in args.modes.split(","):
                starts = args.starts_batched if mode == "batched" else (
                    args.starts_exact_edge if link == "edge" else args.starts_exact)
                base = {}
                for label, budgets in configs:
                    devices = ",".join(f"{links[link]}/0{b}" for b in budgets)
                    env = app_environment({k: v for k, v in os.environ.items()
                                           if not k.startswith("FARCUDA")})
                    env["FARCUDA_DEVICES"] = devices
                    e0 = energy_mj()
                    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                    run = run_pfm(binary, [str(data), "--mode", mode, "--starts", str(starts),
                                           "--quiet"], env=env, timeout=args.timeout)
                    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                    e1 = energy_mj()
                    run.check()
                    rec = run.record
                    key = (mode, starts)
                    protos = rec["n_prototypes"]
                    if key in reference and reference[key] != (protos, round(rec["r"], 9)):
                        raise RuntimeError(f"{label} {link} {mode}: result differs")
                    reference.setdefault(key, (protos, round(rec["r"], 9)))
                    t = rec["times"]["total"] if "times" in rec else run.wall
                    tp = rec["times"].get("prototypes", t) if "times" in rec else t
                    base.setdefault("1 vGPU", tp) if label == "1 vGPU" else None
                    if label == "8-SM edge GPU":
                        base["edge"] = tp
                    cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
                    energy = (e1 - e0) / 1000.0 if e0 is not None and e1 is not None else None
                    rows.append([link, mode, starts, label, tp, t, cpu, energy])
                    records.append({"link": link, "mode": mode, "config": label,
                                    "devices": devices, "record": rec, "cpu_s": cpu,
                                    "energy_j": energy})
                    print(f"{link:8} {mode:7} {label:14} prototypes {tp:8.3f} s  total {t:8.3f} s"
                          f"  cpu {cpu:6.2f} s  energy "
                          f"{'n/a' if energy is None else f'{energy:.1f} J'}", flush=True)
                for r in rows:
                    if r[0] == link and r[1] == mode:
                        r.append(base.get("1 vGPU", 0) / r[4] if r[4] else 0)
                        r.append(base.get("edge", 0) / r[4] if r[4] else 0)
    finally:
        if proxy is not None:
            proxy.stop()
        daemon.terminate()
        daemon.wait(timeout=30)
    head = (f"PFM through farcuda on one GPU, n={args.n} F={args.F}, "
            f"{time.strftime('%Y-%m-%d %H:%M')}; edge link = 1 Gbit/s, +0.5 ms each way")
    cols = ["link", "mode", "starts", "config", "proto_s", "total_s", "client_cpu_s",
            "gpu_energy_J", "speedup_vs_1vGPU", "speedup_vs_8SM"]
    lines = [head, "  ".join(f"{c:>14}" for c in cols)]
    for r in rows:
        cells = [r[0], r[1], str(r[2]), r[3], f"{r[4]:.3f}", f"{r[5]:.3f}", f"{r[6]:.2f}",
                 "n/a" if r[7] is None else f"{r[7]:.1f}", f"{r[8]:.2f}", f"{r[9]:.2f}"]
        lines.append("  ".join(f"{c:>14}" for c in cells))
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n\n" + json.dumps(records, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
