"""Many tenants at once: throughput and latency of tests/programs/load.cu for several numbers
of concurrent clients.

    python bench/load.py [--clients 8,16,32] [--seconds 20] [--max-kib 2048]
                         [--server HOST:PORT | --memory] [--out FILE]

Builds the load program, starts a local farcudad on the GPU (``--memory``: a daemon with the
in-memory backend and the kernel-free workload, no GPU needed) unless ``--server`` is given,
and for each number of clients runs that many tenants together, one virtual device each, all
started at once after their setup (the code of the load tests:
tests/integration/load_helpers.py). Every tenant checks every result; a failed tenant fails
the run. Prints one table: clients, kind, operations per second over all tenants, and p50/p99
latency (microseconds, over the merged histograms of all tenants).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


load = _module("farcuda_load_helpers", ROOT / "tests" / "integration" / "load_helpers.py")
programs = _module("farcuda_test_programs_build", ROOT / "tests" / "programs" / "build.py")


def run(exe: Path, shim: Path, server: str, clients: int, seconds: float, mode: str,
        max_kib: int) -> dict:
    tenants = [load.Tenant(mode, 1000 + i, f"{server}/0", seconds, max_kib)
               for i in range(clients)]
    started, setup_s = load.start(exe, shim, tenants, ready_timeout=300)
    try:
        hung = load.finish(started, seconds + 120)
        failed = [c for c in started if c in hung or not c.passed()]
        if failed:
            raise SystemExit(f"{len(failed)} of {clients} tenants failed:\n" +
                             "\n".join(c.describe() for c in failed))
        summary = load.merge([c.report for c in started])
        summary["setup_s"] = setup_s
        return summary
    finally:
        for c in started:
            c.kill()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="8,16,32", help="comma-separated client counts")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--max-kib", type=int, default=None,
                    help="largest copy (default 2048 on the GPU, 64 with --memory)")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--server", help="an existing farcudad (HOST:PORT)")
    where.add_argument("--memory", action="store_true",
                       help="a local daemon with the in-memory backend (no kernels)")
    ap.add_argument("--out", help="also write the table here")
    args = ap.parse_args(argv)

    from farcuda.interposer.cli import shim_path, start_local_daemon
    mode = "nokernels" if args.memory else "mixed"
    max_kib = args.max_kib or (64 if args.memory else 2048)
    exe = programs.build("load", Path(tempfile.gettempdir()) / "farcuda-bench-programs")
    daemon = proc = None
    if args.server:
        server = args.server
    elif args.memory:
        conftest = _module("farcuda_tests_conftest", ROOT / "tests" / "conftest.py")
        daemon = conftest.start_daemon(Path(tempfile.mkdtemp(prefix="farcuda-load-")), "memory",
                                       config={"log_level": "warning"},
                                       backend_options={"record_path": None})
        server = daemon.address
    else:
        proc, server = start_local_daemon()
    rows = [f"{'clients':>7}  {'kind':<11} {'ops/s':>10} {'p50 us':>9} {'p99 us':>9}"]
    try:
        for n in (int(x) for x in args.clients.split(",")):
            s = run(exe, shim_path(), server, n, args.seconds, mode, max_kib)
            print(load.table(s, f"{n} clients ({mode}, setup {s['setup_s']:.1f} s)"),
                  flush=True)
            for kind, f in s["kinds"].items():
                rows.append(f"{n:>7}  {kind:<11} {f['ops_per_s']:>10.0f} {f['p50_us']:>9.1f} "
                            f"{f['p99_us']:>9.1f}")
    finally:
        if daemon is not None:
            daemon.stop()
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    text = "\n".join(rows)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
