"""End-to-end benchmark: native CUDA, farcuda over loopback, and the raw link, in one run.

    python bench/e2e.py [--out FILE] [--launches N] [--rtt N] [--bytes N] [--server HOST:PORT]

Builds the benchmark programs of bench/programs with nvcc (-cudart shared), starts a local
farcudad (unless --server is given), runs each program natively and through farcuda on the
same GPU, measures the link floor (two-process TCP ping-pong in Python and C, bulk TCP), and
prints one table of ratios against the targets of issue 4. Every program checks its own work
(launch counts via an atomic, copied data via checksums) and fails loudly otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NVCC = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"


def build(out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    exes = {}
    for name in ("bench_launch", "bench_rtt", "bench_bw"):
        exe = out / name
        src = HERE / "programs" / f"{name}.cu"
        if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
            subprocess.run([str(NVCC), "-cudart", "shared", "-O2", "-gencode",
                            "arch=compute_90,code=sm_90", "-o", str(exe), str(src)], check=True)
        exes[name] = exe
    pp = out / "pingpong"
    subprocess.run(["gcc", "-O2", "-o", str(pp), str(HERE / "programs" / "pingpong.c")],
                   check=True)
    exes["pingpong"] = pp
    return exes


def parse(line: str) -> dict:
    return {k: float(v) if re.fullmatch(r"[-\d.]+", v) else v
            for k, v in re.findall(r"(\w+)=(\S+)", line)}


def run(cmd: list[str], env: dict | None = None, timeout: float = 300) -> dict:
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return parse(p.stdout.strip().splitlines()[-1])


def start_daemon() -> tuple[subprocess.Popen, str]:
    from farcuda.interposer.cli import start_local_daemon
    return start_local_daemon()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results/e2e.txt")
    ap.add_argument("--launches", type=int, default=100000)
    ap.add_argument("--rtt", type=int, default=20000)
    ap.add_argument("--bytes", type=int, default=1 << 30)
    ap.add_argument("--server")
    ap.add_argument("--build", default="/tmp/farcuda-bench")
    args = ap.parse_args()
    from farcuda.interposer.cli import shim_path
    exes = build(Path(args.build))
    daemon = None
    server = args.server
    if not server:
        daemon, server = start_daemon()
    native_env = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA")}
    remote_env = dict(native_env, LD_PRELOAD=str(shim_path()), FARCUDA_SERVER=server)
    rows = []
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True).stdout.strip() or "?"
        res: dict[str, dict] = {}
        sys.path.insert(0, str(HERE))
        import linkfloor
        # The link floor is measured before and after the CUDA runs (the loopback's speed
        # drifts between runs on a shared machine) and its best is what farcuda is held to.
        floors = [(linkfloor.pingpong(args.rtt, 4), linkfloor.bulk(args.bytes, 3))]
        for label, env in (("native", native_env), ("farcuda", remote_env)):
            res[f"launch_{label}"] = run([str(exes["bench_launch"]), str(args.launches)], env)
            res[f"rtt_{label}"] = run([str(exes["bench_rtt"]), str(args.rtt)], env)
            res[f"bw_{label}"] = run([str(exes["bench_bw"]), str(args.bytes), "3"], env)
        floors.append((linkfloor.pingpong(args.rtt, 4), linkfloor.bulk(args.bytes, 3)))
        py_pp = min((f[0] for f in floors), key=lambda r: r["median_us"])
        bulk = max((f[1] for f in floors), key=lambda r: r["GBps"])
        c_pp = run([str(exes["pingpong"]), str(args.rtt), "4"])
        ln, lf = res["launch_native"], res["launch_farcuda"]
        rn, rf = res["rtt_native"], res["rtt_farcuda"]
        bn, bf = res["bw_native"], res["bw_farcuda"]
        rate_ratio = lf["launches_per_s"] / ln["launches_per_s"]
        rtt_budget = 1.25 * (py_pp["median_us"] + rn["median_us"])
        rows = [
            ("async launch, us/launch", f"{ln['us_per_launch']:.2f}", f"{lf['us_per_launch']:.2f}",
             f"rate {rate_ratio:.2f}x native", ">= 0.5x (0.8x wanted)",
             "ok" if rate_ratio >= 0.5 else "MISS"),
            ("4 B cudaMemcpy D2H round trip, median us", f"{rn['median_us']:.1f}",
             f"{rf['median_us']:.1f}",
             f"{rf['median_us'] / (py_pp['median_us'] + rn['median_us']):.2f}x "
             f"(py ping-pong {py_pp['median_us']:.1f} + native)",
             "<= 1.25x", "ok" if rf["median_us"] <= rtt_budget else "MISS"),
            ("1 GiB pageable H2D, GB/s", f"{bn['h2d_GBps']:.2f}", f"{bf['h2d_GBps']:.2f}",
             f"{bf['h2d_GBps'] / bulk['GBps']:.2f}x raw TCP ({bulk['GBps']:.2f})", ">= 0.85x",
             "ok" if bf["h2d_GBps"] >= 0.85 * bulk["GBps"] else "MISS"),
            ("1 GiB pageable D2H, GB/s", f"{bn['d2h_GBps']:.2f}", f"{bf['d2h_GBps']:.2f}",
             f"{bf['d2h_GBps'] / bulk['GBps']:.2f}x raw TCP ({bulk['GBps']:.2f})", ">= 0.85x",
             "ok" if bf["d2h_GBps"] >= 0.85 * bulk["GBps"] else "MISS"),
        ]
        header = (f"farcuda e2e benchmark, {gpu}, {time.strftime('%Y-%m-%d %H:%M')}, "
                  f"loopback; link floor: Python ping-pong {py_pp['median_us']:.1f} us, "
                  f"C ping-pong {c_pp['median_us']:.1f} us, bulk TCP {bulk['GBps']:.2f} GB/s")
        widths = [44, 10, 10, 46, 22, 5]
        lines = [header, "  ".join(h.ljust(w) for h, w in zip(
            ("measure", "native", "farcuda", "ratio", "target", ""), widths, strict=True))]
        lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)) for r in rows]
        text = "\n".join(lines)
        print(text)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n\n" + json.dumps({"results": res, "py_pingpong": py_pp,
                                                     "c_pingpong": c_pp, "bulk": bulk,
                                                     "floors": floors}, indent=1) + "\n")
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
