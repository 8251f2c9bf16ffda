"""End-to-end benchmark: native CUDA, and farcuda over loopback and over the emulated edge link,
against each link's own floor, in one run.

    python bench/e2e.py [--out FILE] [--links loopback,edge] [--launches N] [--rtt N]
                        [--bytes N] [--edge-rtt N] [--edge-bytes N] [--server HOST:PORT]

Builds the benchmark programs of bench/programs with nvcc (-cudart shared), starts a local
farcudad (unless --server is given), runs each program natively and through farcuda on the
same GPU, once straight to the daemon (loopback) and once through the project's emulated edge
link (farcuda.daemon.linkproxy: 1 Gbit/s, 0.5 ms each way), and measures each link's floor
in C (bench/programs/linkfloor.c through the same link: ping-pong of 4 bytes, one-way bulk
TCP). Each row's ratio is to that link's floor: a synchronous call to (the link's round trip
+ the native call), a copy's rate to the link's bulk rate. Every program checks its own work
(launch counts via an atomic, copied data via checksums) and fails loudly otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
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


def _rows(link: str, native: dict, far: dict, floor: dict) -> list[tuple]:
    """The table's rows of one link: (measure, native, farcuda, ratio, target, verdict)."""
    rtt, bw = floor["median_us"], floor["GBps"]
    rows = []
    ln, lf = native["launch"], far["launch"]
    rate = lf["launches_per_s"] / ln["launches_per_s"]
    rows.append((f"{link}: async launch, us/launch", f"{ln['us_per_launch']:.2f}",
                 f"{lf['us_per_launch']:.2f}", f"rate {rate:.2f}x native", ">= 1.0x",
                 "ok" if rate >= 1.0 else "MISS"))
    for mode, label in (("launchsync", "launch + cudaDeviceSynchronize"),
                        ("d2h8", "8 B cudaMemcpy D2H"), ("h2d", "8 B cudaMemcpy H2D"),
                        ("query", "cudaStreamQuery"), ("mallocfree", "cudaMalloc+cudaFree 1 MiB")):
        n, f = native[mode]["median_us"], far[mode]["median_us"]
        ratio = f / (rtt + n)
        target = 1.0 if mode == "mallocfree" else 1.1
        rows.append((f"{link}: {label}, median us", f"{n:.1f}", f"{f:.1f}",
                     f"{ratio:.2f}x (link RTT {rtt:.1f} + native)", f"<= {target}x",
                     "ok" if ratio <= target else "MISS"))
    for kind in ("random", "zeros", "sparse"):
        for d in ("h2d", "d2h"):
            n, f = native[f"bw_{kind}"][f"{d}_GBps"], far[f"bw_{kind}"][f"{d}_GBps"]
            ratio = f / bw
            if link == "loopback":
                target = 0.95
            else:
                target = 0.95 if kind == "random" else 3.0
            rows.append((f"{link}: {far['bw_bytes'] >> 20} MiB pageable {d.upper()} {kind}, GB/s",
                         f"{n:.2f}", f"{f:.3f}", f"{ratio:.2f}x link ({bw:.3f} GB/s)",
                         f">= {target}x", "ok" if ratio >= target else "MISS"))
    return rows


def _programs(exes: dict, env: dict, launches: int, rtt: int, nbytes: int) -> dict:
    res: dict = {"launch": run([str(exes["bench_launch"]), str(launches)], env)}
    for mode in ("launchsync", "d2h8", "h2d", "query", "mallocfree"):
        res[mode] = run([str(exes["bench_rtt"]), str(rtt), mode], env)
    for kind in ("random", "zeros", "sparse"):
        res[f"bw_{kind}"] = run([str(exes["bench_bw"]), str(nbytes), "3", kind], env,
                                timeout=3600)
    res["bw_bytes"] = nbytes
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results/e2e.txt")
    ap.add_argument("--links", default="loopback,edge")
    ap.add_argument("--launches", type=int, default=100000)
    ap.add_argument("--rtt", type=int, default=20000)
    ap.add_argument("--bytes", type=int, default=1 << 30)
    ap.add_argument("--edge-rtt", type=int, default=1000)
    ap.add_argument("--edge-bytes", type=int, default=256 << 20)
    ap.add_argument("--server")
    ap.add_argument("--build", default="/tmp/farcuda-bench")
    args = ap.parse_args()
    from farcuda.daemon.linkproxy import ProxyThread
    from farcuda.interposer.cli import shim_path
    sys.path.insert(0, str(HERE))
    import linkfloor
    exes = build(Path(args.build))
    lf_exe = linkfloor.build_c(Path(args.build))
    daemon = None
    server = args.server
    if not server:
        daemon, server = start_daemon()
    native_env = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA")}
    links = [x for x in args.links.split(",") if x]
    rows: list[tuple] = []
    out_json: dict = {}
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True).stdout.strip() or "?"
        header = [f"farcuda e2e benchmark, {gpu}, {time.strftime('%Y-%m-%d %H:%M')}"]
        for link in links:
            edge = link == "edge"
            rtt_n, nbytes = (args.edge_rtt, args.edge_bytes) if edge else (args.rtt, args.bytes)
            native = _programs(exes, native_env, args.launches, args.rtt, nbytes)
            # the floor is measured before and after farcuda's runs (a shared machine's
            # loopback drifts) and its best is what farcuda is held to
            floors = [linkfloor.c_link(lf_exe, rtt_n, nbytes, 3, linkfloor.EDGE if edge else None)]
            with contextlib.ExitStack() as stack:
                address = server
                if edge:
                    host, _, port = server.rpartition(":")
                    address = stack.enter_context(ProxyThread(f"{host}:{port}",
                                                              **linkfloor.EDGE)).address
                remote_env = dict(native_env, LD_PRELOAD=str(shim_path()),
                                  FARCUDA_SERVER=address)
                far = _programs(exes, remote_env, args.launches, rtt_n, nbytes)
            floors.append(linkfloor.c_link(lf_exe, rtt_n, nbytes, 3,
                                           linkfloor.EDGE if edge else None))
            floor = {"median_us": min(f["median_us"] for f in floors),
                     "GBps": max(f["GBps"] for f in floors)}
            header.append(f"{link}: C floor round trip {floor['median_us']:.1f} us, bulk TCP "
                          f"{floor['GBps']:.3f} GB/s")
            rows += _rows(link, native, far, floor)
            out_json[link] = {"native": native, "farcuda": far, "floors": floors}
        widths = [50, 10, 10, 40, 10, 5]
        lines = header + ["  ".join(h.ljust(w) for h, w in zip(
            ("measure", "native", "farcuda", "ratio", "target", ""), widths, strict=True))]
        lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)) for r in rows]
        text = "\n".join(lines)
        print(text)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n\n" + json.dumps(out_json, indent=1) + "\n")
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
