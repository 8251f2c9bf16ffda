"""Where a daemon worker spends its time on one benchmark program: a cProfile of the session.

    python bench/profile_daemon.py [--top N] -- PROGRAM [ARGS]

Starts a local farcudad whose workers profile themselves (FARCUDAD_PROFILE), runs PROGRAM
through farcuda against it, stops the daemon and prints the worker's hottest functions (own
time and cumulative time). Needs a GPU for CUDA programs; the numbers include the profiler's
own overhead, so read them as proportions, not as absolute costs.
"""

from __future__ import annotations

import argparse
import os
import pstats
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("program", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    prog = [a for a in args.program if a != "--"]
    if not prog:
        ap.error("no program given")
    from farcuda.interposer.cli import shim_path, start_local_daemon
    out = Path(tempfile.mkdtemp(prefix="farcudad-profile-"))
    os.environ["FARCUDAD_PROFILE"] = str(out)
    daemon, server = start_local_daemon()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA")}
        env.update(LD_PRELOAD=str(shim_path()), FARCUDA_SERVER=server)
        r = subprocess.run(prog, env=env, capture_output=True, text=True, timeout=600)
        print(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "(no output)")
        if r.returncode:
            print(r.stderr, file=sys.stderr)
            return r.returncode
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
    profiles = sorted(out.glob("worker-*.prof"), key=lambda p: p.stat().st_size)
    if not profiles:
        print("no worker profile was written", file=sys.stderr)
        return 1
    stats = pstats.Stats(str(profiles[-1]))  # the session's worker (spares profile ~nothing)
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
