"""What TLS costs: the same programs through farcuda with and without FARCUDA_TLS=1.

    python bench/tls_cost.py [--out FILE] [--rtt N] [--bytes N] [--backend memory|cuda]

CPU-only by default: a daemon with the in-memory backend (no GPU needed), so what is measured
is the link and the relays, not a GPU. Runs bench_rtt (4-byte synchronous round trips) and
bench_bw (large copies both ways) against one daemon plain and against one with [tls], with
certificates made for the run (openssl command), and reports round-trip latency, bandwidth,
and the CPU seconds spent by the client process and by the daemon's front (which relays every
byte of a TLS session: interposer/tls.py) for each. Printed as a table and as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NVCC = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"

_DAEMON = textwrap.dedent("""
    import asyncio, json, sys
    from farcuda.daemon.server import Daemon
    from farcuda.daemon.config import from_dict
    from farcuda.daemon.logs import setup_logging
    async def main():
        setup_logging("warning")
        d = Daemon(from_dict(json.loads(sys.argv[1])), backend=sys.argv[2])
        addrs = await d.start()
        print("ready", addrs[0][0], addrs[0][1], flush=True)
        await d.stopped
    try:
        import uvloop
        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
""")


def build(out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    exes = {}
    for name in ("bench_rtt", "bench_bw"):
        exe = out / name
        src = HERE / "programs" / f"{name}.cu"
        if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
            subprocess.run([str(NVCC), "-cudart", "shared", "-O2", "-gencode",
                            "arch=compute_90,code=sm_90", "-o", str(exe), str(src)], check=True)
        exes[name] = exe
    return exes


def certificates(d: Path) -> dict[str, str]:
    def ossl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ossl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj",
         "/CN=bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign")
    ossl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                           "basicConstraints=CA:FALSE\nauthorityKeyIdentifier=keyid\n")
    ossl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "ext")
    return {"ca": str(d / "ca.crt"), "cert": str(d / "server.crt"),
            "key": str(d / "server.key")}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(config: dict, backend: str) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    p = subprocess.Popen([sys.executable, "-c", _DAEMON, json.dumps(config), backend],
                         stdout=subprocess.PIPE, text=True, env=env)
    line = p.stdout.readline()
    if not line.startswith("ready"):
        p.kill()
        raise RuntimeError(f"the daemon did not start: {line!r}")
    _, host, port = line.split()
    return p, f"{host}:{port}"


def run(exe: Path, args: list[str], server: str, env: dict, daemon_pid: int) -> dict:
    from farcuda.interposer.cli import shim_path
    e = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA_")}
    e.update(env, LD_PRELOAD=str(shim_path()), FARCUDA_SERVER=server)
    front0 = cpu_seconds(daemon_pid)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    p = subprocess.run([str(exe), *args], capture_output=True, text=True, env=e, timeout=600)
    wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise RuntimeError(f"{exe.name} failed: {p.stdout}\n{p.stderr}")
    res = {k: float(v) if re.fullmatch(r"[-\d.]+", v) else v
           for k, v in re.findall(r"(\w+)=(\S+)", p.stdout.strip().splitlines()[-1])}
    res["wall_s"] = round(wall, 3)
    res["client_cpu_s"] = round(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime, 3)
    res["front_cpu_s"] = round(cpu_seconds(daemon_pid) - front0, 3)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="write the JSON results here too")
    ap.add_argument("--rtt", type=int, default=5000, help="round trips (bench_rtt)")
    ap.add_argument("--bytes", type=int, default=256 << 20, help="copy size (bench_bw)")
    ap.add_argument("--backend", default="memory", choices=["memory", "cuda"])
    ap.add_argument("--build", default=os.path.join(tempfile.gettempdir(), "farcuda-bench"))
    args = ap.parse_args()
    exes = build(Path(args.build))
    results: dict = {"rtt_n": args.rtt, "bytes": args.bytes, "backend": args.backend}
    with tempfile.TemporaryDirectory() as tmp:
        pki = certificates(Path(tmp))
        base = {"listen": ["127.0.0.1:0"], "prestart": 1, "log_level": "warning"}
        for mode, extra, env in (
                ("plain", {}, {}),
                ("tls", {"tls": {"cert": pki["cert"], "key": pki["key"]}},
                 {"FARCUDA_TLS": "1", "FARCUDA_TLS_CA": pki["ca"]})):
            daemon, server = start(dict(base, **extra), args.backend)
            try:
                results[mode] = {
                    "rtt": run(exes["bench_rtt"], [str(args.rtt)], server, env, daemon.pid),
                    "bw": run(exes["bench_bw"], [str(args.bytes), "3"], server, env,
                              daemon.pid)}
            finally:
                daemon.terminate()
                daemon.wait(30)
    p, t = results["plain"], results["tls"]
    rows = [("round trip median (us)", p["rtt"]["median_us"], t["rtt"]["median_us"]),
            ("round trip p99 (us)", p["rtt"]["p99_us"], t["rtt"]["p99_us"]),
            ("host->device (GB/s)", p["bw"]["h2d_GBps"], t["bw"]["h2d_GBps"]),
            ("device->host (GB/s)", p["bw"]["d2h_GBps"], t["bw"]["d2h_GBps"]),
            ("client CPU, bandwidth run (s)", p["bw"]["client_cpu_s"], t["bw"]["client_cpu_s"]),
            ("front CPU, bandwidth run (s)", p["bw"]["front_cpu_s"], t["bw"]["front_cpu_s"]),
            ("client CPU, round trips (s)", p["rtt"]["client_cpu_s"], t["rtt"]["client_cpu_s"]),
            ("front CPU, round trips (s)", p["rtt"]["front_cpu_s"], t["rtt"]["front_cpu_s"])]
    print(f"{'':32} {'plain':>10} {'TLS':>10} {'TLS/plain':>10}")
    for name, a, b in rows:
        print(f"{name:32} {a:10.3f} {b:10.3f} {b / a if a else float('nan'):10.2f}")
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
