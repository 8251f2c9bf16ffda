"""The driver layer beside the runtime shim: the same programs through both.

    python bench/driver_layer.py [--out FILE] [--rtt N] [--bytes N] [--launches N]
                                 [--backend memory|cuda]

Each bench program is built twice with nvcc: ``-cudart shared`` (run on the runtime layer, the
shim preloaded) and ``-cudart static`` (run on the driver layer: NVIDIA's runtime inside the
program, farcuda's libcuda.so.1 under it). Measured per layer: start-up (a program that only
asks for the device count, wall time from exec to exit), round-trip latency (bench_rtt),
bandwidth (bench_bw) and asynchronous launch rate (bench_launch). What the daemon's module cache
saves the link is checked by tests/integration/test_driver_memory.py.

CPU-only by default: the in-memory backend, which runs no kernels, so bench_launch's count is
only checked with ``--backend cuda``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tls_cost import NVCC, start  # noqa: E402  (same daemon launcher)

HERE = Path(__file__).resolve().parent
_COUNT = r"""
#include <cstdio>
#include <cuda_runtime.h>
int main() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  printf("count n=%d err=%d\n", n, (int)e);
  return e != cudaSuccess;
}
"""


def build(out: Path) -> dict[tuple[str, str], Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_count.cu").write_text(_COUNT)
    exes = {}
    for name in ("bench_count", "bench_rtt", "bench_bw", "bench_launch"):
        src = out / f"{name}.cu" if name == "bench_count" else HERE / "programs" / f"{name}.cu"
        for cudart in ("shared", "static"):
            exe = out / f"{name}_{cudart}"
            if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
                subprocess.run([str(NVCC), "-cudart", cudart, "-O2", "-gencode",
                                "arch=compute_90,code=sm_90", "-o", str(exe), str(src)],
                               check=True)
            exes[name, cudart] = exe
    return exes


def environment(layer: str, server: str, extra: dict | None = None) -> dict:
    from farcuda.interposer.cli import driver_dir, shim_path
    e = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA_")
         and k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")}
    if layer == "runtime":
        e["LD_PRELOAD"] = str(shim_path())
    else:
        e["LD_LIBRARY_PATH"] = str(driver_dir())
    e["FARCUDA_SERVER"] = server
    e.update(extra or {})
    return e


def run(exe: Path, args: list[str], env: dict, check: bool = True) -> dict:
    t0 = time.monotonic()
    p = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=600)
    wall = time.monotonic() - t0
    if p.returncode != 0 and (check or not p.stdout.strip()):
        raise RuntimeError(f"{exe.name} failed ({p.returncode}): {p.stdout}\n{p.stderr}")
    res = {k: float(v) if re.fullmatch(r"[-\d.]+", v) else v
           for k, v in re.findall(r"(\w+)=(\S+)", p.stdout.strip().splitlines()[-1])}
    res["wall_s"] = round(wall, 4)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="write the JSON results here too")
    ap.add_argument("--rtt", type=int, default=5000, help="round trips (bench_rtt)")
    ap.add_argument("--bytes", type=int, default=256 << 20, help="copy size (bench_bw)")
    ap.add_argument("--launches", type=int, default=100000, help="launches (bench_launch)")
    ap.add_argument("--starts", type=int, default=5, help="start-ups timed per layer")
    ap.add_argument("--backend", default="memory", choices=["memory", "cuda"])
    ap.add_argument("--build", default=os.path.join(tempfile.gettempdir(), "farcuda-bench"))
    args = ap.parse_args()
    exes = build(Path(args.build))
    strict = args.backend == "cuda"
    results: dict = {"rtt_n": args.rtt, "bytes": args.bytes, "launches": args.launches,
                     "backend": args.backend}
    daemon, server = start({"listen": ["127.0.0.1:0"], "prestart": 1,
                            "log_level": "warning"}, args.backend)
    try:
        for layer, cudart in (("runtime", "shared"), ("driver", "static")):
            env = environment(layer, server)
            starts = []
            for _ in range(args.starts):
                time.sleep(1)  # the daemon's next worker is started: time the client only
                starts.append(run(exes["bench_count", cudart], [], env)["wall_s"])
            results[layer] = {
                "start_s": round(statistics.median(starts), 4),
                "rtt": run(exes["bench_rtt", cudart], [str(args.rtt)], env),
                "bw": run(exes["bench_bw", cudart], [str(args.bytes), "3"], env),
                "launch": run(exes["bench_launch", cudart], [str(args.launches)], env,
                              check=strict)}
    finally:
        daemon.terminate()
        daemon.wait(30)
    r, d = results["runtime"], results["driver"]
    rows = [("start-up, device count (s)", r["start_s"], d["start_s"]),
            ("round trip median (us)", r["rtt"]["median_us"], d["rtt"]["median_us"]),
            ("round trip p99 (us)", r["rtt"]["p99_us"], d["rtt"]["p99_us"]),
            ("host->device (GB/s)", r["bw"]["h2d_GBps"], d["bw"]["h2d_GBps"]),
            ("device->host (GB/s)", r["bw"]["d2h_GBps"], d["bw"]["d2h_GBps"]),
            ("launch (us each)", r["launch"]["us_per_launch"], d["launch"]["us_per_launch"])]
    print(f"{'':30} {'runtime':>10} {'driver':>10} {'drv/rt':>8}")
    for name, a, b in rows:
        print(f"{name:30} {a:10.3f} {b:10.3f} {b / a if a else float('nan'):8.2f}")
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
