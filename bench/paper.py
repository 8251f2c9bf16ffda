"""The seed paper's experiment on one GPU: PFM through farcuda with several virtual GPUs.

    python bench/paper.py [--n N] [--F F] [--vgpus 1,2,4,8] [--links loopback,edge]
                          [--modes batched,exact] [--tenants 2,4] [--out FILE]

Part 1, virtual GPUs: the same pfm binary through farcuda, on one physical GPU, as
  - 1, 2, 4 and 8 virtual GPUs of the whole GPU (one CUDA context that they share in the
    session's worker, each with its own streams: their work overlaps),
  - an "edge GPU" stand-in: one virtual GPU limited to 8 SMs (a green context; the SM count
    of the Jetson AGX Xavier the paper used),
both PFM modes, over loopback and over an emulated edge link (a user-space proxy at
1 Gbit/s with 0.5 ms added each way: farcuda.daemon.linkproxy). For each run: the time of the
prototype phase and of the whole run (the program's own JSON record), the speed-up against
1 virtual GPU and the speed-up of the configuration against the 8-SM device (the paper's
3.2x), the GPU energy over the run (NVML's energy counter, when available), the client
process's CPU time, and an estimate of the edge device's energy from it (below).

Part 2, tenants: 2 and 4 clients (separate processes, so separate sessions and worker
processes), each running PFM on one virtual GPU of the whole GPU, started at once, over
loopback, first on a daemon without MPS and then on one with ``[gpu] mps = true``. For each:
the time until all finished, and the combined throughput against one tenant alone on the
same daemon (N * t_alone / t_all).

The edge energy estimate models an edge device whose CPU runs the client: idle power for the
run's wall time plus the power of a busy core for the client's CPU seconds
(``--edge-idle-w``, ``--edge-core-w``; defaults in the range of a Jetson AGX Xavier's module).
For the 8-SM device (the edge's own GPU, in the paper's comparison) the GPU energy NVML
measured is added in proportion of its SMs to the GPU's. These are estimates of a model, not
measurements of an edge device. The same data and starts for every configuration; results
are checked to agree.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EDGE_SMS = 8


def energy_mj() -> float | None:
    try:
        import pynvml
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        return float(pynvml.nvmlDeviceGetTotalEnergyConsumption(h))
    except Exception:
        return None


def gpu_sms() -> int:
    try:
        from cuda.bindings import driver as cu
        cu.cuInit(0)
        dev = cu.cuDeviceGet(0)[1]
        return int(cu.cuDeviceGetAttribute(
            cu.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev)[1])
    except Exception:
        return 132


def edge_energy(wall_s: float, cpu_s: float, idle_w: float, core_w: float,
                gpu_j: float | None = None, gpu_share: float = 0.0) -> float:
    """The edge device's energy over a run, estimated (see the module's header)."""
    e = idle_w * wall_s + core_w * cpu_s
    if gpu_j is not None:
        e += gpu_j * gpu_share
    return e


def start_daemon(config: dict | None, tmp: Path, timeout: float = 180.0
                 ) -> tuple[subprocess.Popen, str]:
    """farcudad on 127.0.0.1 (a free port), with the configuration given (TOML tables of
    scalars), its log in tmp."""
    from farcuda.interposer.cli import clean_environment
    cmd = [sys.executable, "-m", "farcuda.daemon.cli", "--listen", "127.0.0.1:0",
           "--log-level", "warning"]
    if config:
        lines = []
        for table, values in config.items():
            lines.append(f"[{table}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        conf = tmp / f"farcudad-{time.monotonic_ns()}.toml"
        conf.write_text("\n".join(lines) + "\n")
        cmd += ["--config", str(conf)]
    r, w = os.pipe()
    cmd += ["--ready-fd", str(w), "--prestart", "4"]
    log = open(tmp / f"farcudad-{time.monotonic_ns()}.log", "wb")
    proc = subprocess.Popen(cmd, pass_fds=(w,), env=clean_environment(os.environ),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    log.close()
    os.close(w)
    line = b""
    deadline = time.monotonic() + timeout
    with os.fdopen(r, "rb") as f:
        while time.monotonic() < deadline:
            chunk = f.readline()
            line += chunk
            if not chunk or line.endswith(b"\n"):
                break
    words = line.decode(errors="replace").split(None, 1)
    if not words or words[0] != "ready":
        proc.wait(timeout=30)
        raise RuntimeError(f"farcudad did not start: {line.decode(errors='replace').strip()}")
    host, port = words[1].split()
    return proc, f"{host}:{port}"


def stop_daemon(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
    ap.add_argument("--tenants", default="2,4", help="concurrent tenants ('' to skip part 2)")
    ap.add_argument("--tenant-mode", default="exact")
    ap.add_argument("--mps", default="off,on", help="part 2: off,on (MPS)")
    ap.add_argument("--separate", action="store_true",
                    help="also N vGPU with a context each ([gpu] shared_contexts = false), "
                    "loopback: the former way, for comparison")
    ap.add_argument("--edge-idle-w", type=float, default=5.0)
    ap.add_argument("--edge-core-w", type=float, default=2.5)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "paper.txt"))
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()

    from farcuda.daemon.linkproxy import ProxyThread
    from farcuda.interposer.cli import app_environment
    from farcuda.pfm import data as pfm_data
    from farcuda.pfm.datagen import blobs
    from farcuda.pfm.runner import build_pfm, run_pfm

    tmp = Path(tempfile.mkdtemp(prefix="farcuda-paper-"))
    binary = build_pfm(Path(tempfile.gettempdir()) / "farcuda-paper-build")
    X = blobs(args.n, args.F, args.k, seed=20240611).X
    data = Path(tempfile.gettempdir()) / f"paper-{args.n}-{args.F}.pfmd"
    pfm_data.write_binary(data, X)
    sms = gpu_sms()
    base_env = app_environment({k: v for k, v in os.environ.items()
                                if not k.startswith("FARCUDA")})
    reference: dict = {}

    def checked(run, key, what: str) -> dict:
        run.check()
        rec = run.record
        got = (rec["n_prototypes"], round(rec["r"], 9))
        if reference.setdefault(key, got) != got:
            raise RuntimeError(f"{what}: result differs ({got} against {reference[key]})")
        return rec

    def starts_for(mode: str, link: str) -> int:
        if mode == "batched":
            return args.starts_batched
        return args.starts_exact_edge if link == "edge" else args.starts_exact

    rows, tenant_rows, records = [], [], []
    sep: tuple[subprocess.Popen, str] | None = None
    daemon, server = start_daemon(None, tmp)
    proxy = None
    try:
        # ---------------------------------------------------------- part 1: virtual GPUs
        links = {"loopback": server}
        if "edge" in args.links:
            proxy = ProxyThread(server, delay=0.0005, rate=1e9).start()
            links["edge"] = proxy.address
        configs = [(f"{v} vGPU", [""] * v) for v in map(int, args.vgpus.split(","))]
        configs.append((f"{EDGE_SMS}-SM edge GPU", [f"@sm={EDGE_SMS}"]))
        if args.separate:  # a daemon whose virtual devices have a context each
            sep = start_daemon({"gpu": {"shared_contexts": False}}, tmp)
            configs += [(f"{v} vGPU sep", [""] * v) for v in map(int, args.vgpus.split(","))
                        if v > 1]
        for link in args.links.split(","):
            for mode in args.modes.split(","):
                starts = starts_for(mode, link)
                base: dict[str, float] = {}
                first = len(rows)
                for label, budgets in configs:
                    if label.endswith(" sep") and link != "loopback":
                        continue  # (the old way, on loopback only)
                    where = sep[1] if label.endswith(" sep") and sep else links[link]
                    env = dict(base_env,
                               FARCUDA_DEVICES=",".join(f"{where}/0{b}" for b in budgets))
                    e0 = energy_mj()
                    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                    run = run_pfm(binary, [str(data), "--mode", mode, "--starts", str(starts),
                                           "--quiet"], env=env, timeout=args.timeout)
                    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                    e1 = energy_mj()
                    rec = checked(run, (mode, starts), f"{label} {link} {mode}")
                    t = rec["times"]["total"] if "times" in rec else run.wall
                    tp = rec["times"].get("prototypes", t) if "times" in rec else t
                    if label == "1 vGPU":
                        base["1"] = tp
                    if label.endswith("edge GPU"):
                        base["edge"] = tp
                    cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
                    gpu_j = (e1 - e0) / 1000.0 if e0 is not None and e1 is not None else None
                    share = EDGE_SMS / sms if label.endswith("edge GPU") else 0.0
                    edge_j = edge_energy(run.wall, cpu, args.edge_idle_w, args.edge_core_w,
                                         gpu_j, share)
                    rows.append([link, mode, starts, label, tp, t, cpu, gpu_j, edge_j])
                    records.append({"part": "vgpus", "link": link, "mode": mode,
                                    "config": label, "devices": env["FARCUDA_DEVICES"],
                                    "record": rec, "cpu_s": cpu, "gpu_energy_j": gpu_j,
                                    "edge_energy_j": edge_j, "wall_s": run.wall})
                    print(f"{link:8} {mode:7} {label:14} prototypes {tp:8.3f} s  total "
                          f"{t:8.3f} s  cpu {cpu:6.2f} s  gpu "
                          f"{'n/a' if gpu_j is None else f'{gpu_j:.1f} J'}  edge~{edge_j:.1f} J",
                          flush=True)
                for r in rows[first:]:
                    r.append(base["1"] / r[4] if r[4] and "1" in base else 0.0)
                    r.append(base["edge"] / r[4] if r[4] and "edge" in base else 0.0)

        if sep is not None:  # (no other daemon's workers beside part 2's)
            stop_daemon(sep[0])
            sep = None

        # ---------------------------------------------------------- part 2: tenants
        counts = [int(x) for x in args.tenants.split(",") if x.strip()]
        if counts:
            mode = args.tenant_mode
            starts = starts_for(mode, "loopback")
            for mps in args.mps.split(","):
                if mps == "on":
                    stop_daemon(daemon)
                    try:
                        daemon, server = start_daemon({"gpu": {"mps": True}}, tmp)
                    except RuntimeError as exc:  # said, not faked
                        print(f"no MPS: {exc}", flush=True)
                        tenant_rows.append(["on", 0, mode, starts, 0.0, 0.0, 0.0, 0.0, None])
                        daemon, server = start_daemon(None, tmp)
                        continue
                env = dict(base_env, FARCUDA_DEVICES=f"{server}/0")
                argv = [str(data), "--mode", mode, "--starts", str(starts), "--quiet"]
                alone = None
                for n in [1, *counts]:
                    e0 = energy_mj()
                    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                    t0 = time.perf_counter()
                    with concurrent.futures.ThreadPoolExecutor(n) as pool:
                        futs = [pool.submit(run_pfm, binary, argv, env=env,
                                            timeout=args.timeout) for _ in range(n)]
                        runs = [f.result() for f in futs]
                    wall = time.perf_counter() - t0
                    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                    e1 = energy_mj()
                    recs = [checked(r, (mode, starts), f"{n} tenants, mps {mps}") for r in runs]
                    if n == 1:
                        alone = wall
                    protos = [r["times"].get("prototypes", 0.0) for r in recs if "times" in r]
                    cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
                    gpu_j = (e1 - e0) / 1000.0 if e0 is not None and e1 is not None else None
                    thr = n * alone / wall if alone else 0.0
                    mean_p = sum(protos) / len(protos) if protos else 0.0
                    tenant_rows.append([mps, n, mode, starts, wall, mean_p, thr, cpu, gpu_j])
                    records.append({"part": "tenants", "mps": mps, "tenants": n, "mode": mode,
                                    "wall_s": wall, "records": recs, "cpu_s": cpu,
                                    "gpu_energy_j": gpu_j})
                    print(f"mps {mps:3} tenants {n}  all done {wall:8.3f} s  mean prototypes "
                          f"{mean_p:8.3f} s  throughput x{thr:.2f}", flush=True)
    finally:
        if proxy is not None:
            proxy.stop()
        stop_daemon(daemon)
        if sep is not None:
            stop_daemon(sep[0])

    head = (f"PFM through farcuda on one GPU ({sms} SMs), n={args.n} F={args.F}, "
            f"{time.strftime('%Y-%m-%d %H:%M')}; edge link = 1 Gbit/s, +0.5 ms each way; "
            f"edge energy ~ {args.edge_idle_w} W idle + {args.edge_core_w} W per busy core")
    cols = ["link", "mode", "starts", "config", "proto_s", "total_s", "client_cpu_s",
            "gpu_energy_J", "edge_energy_J~", "x_vs_1vGPU", "x_vs_8SM"]
    lines = [head, "  ".join(f"{c:>14}" for c in cols)]
    for r in rows:
        cells = [r[0], r[1], str(r[2]), r[3], f"{r[4]:.3f}", f"{r[5]:.3f}", f"{r[6]:.2f}",
                 "n/a" if r[7] is None else f"{r[7]:.1f}", f"{r[8]:.1f}", f"{r[9]:.2f}",
                 f"{r[10]:.2f}"]
        lines.append("  ".join(f"{c:>14}" for c in cells))
    if tenant_rows:
        lines += ["", "Concurrent tenants (one process and one vGPU of the whole GPU each, "
                  "loopback), without and with MPS",
                  "  ".join(f"{c:>14}" for c in ["mps", "tenants", "mode", "starts",
                                                 "all_done_s", "mean_proto_s",
                                                 "throughput_x", "client_cpu_s",
                                                 "gpu_energy_J"])]
        for r in tenant_rows:
            cells = [r[0], str(r[1]), r[2], str(r[3]), f"{r[4]:.3f}", f"{r[5]:.3f}",
                     f"{r[6]:.2f}", f"{r[7]:.2f}", "n/a" if r[8] is None else f"{r[8]:.1f}"]
            lines.append("  ".join(f"{c:>14}" for c in cells))
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n\n" + json.dumps(records, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
