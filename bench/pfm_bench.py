#!/usr/bin/env python3
"""End-to-end PFM benchmark: the same pfm binary natively and through farcuda, same run, same GPU.

For every n in --sizes, F in --features and mode in --modes it generates seeded Gaussian blobs
(farcuda.pfm.datagen, fixed seed), runs ``pfm`` natively and behind ``--farcuda-cmd`` (default
``farcuda run --``), checks that both give the same result (prototype count, prototypes within
--tol of the scale, r within 1e-9 relative) and reads the per-phase times from the JSON records.
It prints one table (native, farcuda, ratio per phase) and writes it, plus the raw records as
JSON, under bench/results/.

--starts-exact / --starts-batched cap the starting points per size (``N=K,...``) so that each
command fits in --timeout seconds over a slow link; the defaults keep every command under
8 minutes on an H100 (see pfm_cuda/README.md for the timings they come from).

    python bench/pfm_bench.py                       # the full grid, native and farcuda
    python bench/pfm_bench.py --native-only --sizes 10000 --features 2,8
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
try:
    from farcuda.pfm import data as pfm_data
    from farcuda.pfm.compare import compare_results
    from farcuda.pfm.datagen import blobs
    from farcuda.pfm.runner import PfmRun, build_pfm, run_pfm
except ImportError:  # a source checkout without `pip install .`
    sys.exit("bench/pfm_bench.py: cannot import farcuda.pfm; install the project (pip install .)")

PHASES = ("load", "init", "r_factor", "prototypes", "total")
# Default caps on starting points (None: every point). Exact mode costs one launch and one
# blocking copy per fixed-point step and device (about 10-20 steps per start).
DEFAULT_STARTS_EXACT = "10000=2000,50000=500"
DEFAULT_STARTS_BATCHED = "10000=all,50000=all"


def parse_int_list(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def parse_starts(s: str) -> dict[int, int | None]:
    out: dict[int, int | None] = {}
    for item in s.split(","):
        if not item.strip():
            continue
        n, _, k = item.partition("=")
        out[int(n)] = None if k.strip() in ("all", "0", "") else int(k)
    return out


def dataset(cache: Path, n: int, nf: int, k: int, seed: int) -> Path:
    path = cache / f"blobs-n{n}-F{nf}-k{k}-s{seed}.pfmd"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        pfm_data.write_binary(path, blobs(n, nf, k, seed=seed).X)
    return path


def check_agree(native: PfmRun, remote: PfmRun, tol: float) -> str:
    a, b = native.record, remote.record
    if a is None or b is None:
        return "no record"
    P = np.array(b["prototypes"], dtype=np.float64).reshape(b["n_prototypes"], b["F"])
    Q = np.array(a["prototypes"], dtype=np.float64).reshape(a["n_prototypes"], a["F"])
    agreement = compare_results(P, Q, a["scale"], b["r"], a["r"], tol, 1e-9)
    return "ok" if agreement.ok else agreement.message


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,50000", help="n values (comma-separated)")
    ap.add_argument("--features", default="2,8,49", help="F values (comma-separated)")
    ap.add_argument("--modes", default="exact,batched")
    ap.add_argument("--k", type=int, default=8, help="blobs per data set")
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--r-method", default="explicit", choices=["explicit", "lemma"])
    ap.add_argument("--starts-exact", default=DEFAULT_STARTS_EXACT, help="N=K,... (K or all)")
    ap.add_argument("--starts-batched", default=DEFAULT_STARTS_BATCHED, help="N=K,...")
    ap.add_argument("--devices", type=int, default=None, help="pass --devices N to pfm")
    ap.add_argument("--farcuda-cmd", default="farcuda run --", help="command prefix for farcuda")
    ap.add_argument("--native-only", action="store_true", help="skip the farcuda runs")
    ap.add_argument("--binary", type=Path, default=None, help="pfm binary (default: build it)")
    ap.add_argument("--timeout", type=float, default=480, help="seconds per command")
    ap.add_argument("--tol", type=float, default=1e-4, help="prototype tolerance / scale")
    ap.add_argument("--results", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--data-cache", type=Path, default=None, help="default: RESULTS/data")
    a = ap.parse_args(argv)

    binary = a.binary or build_pfm(source_dir=REPO / "pfm_cuda")
    prefix = shlex.split(a.farcuda_cmd)
    starts_by_mode = {
        "exact": parse_starts(a.starts_exact),
        "batched": parse_starts(a.starts_batched),
    }
    cache = a.data_cache or a.results / "data"
    a.results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")

    rows: list[list[str]] = []
    raw: list[dict] = []
    failures = 0
    for n in parse_int_list(a.sizes):
        for nf in parse_int_list(a.features):
            path = dataset(cache, n, nf, a.k, a.seed)
            for mode in a.modes.split(","):
                starts = starts_by_mode[mode].get(n)
                args = [str(path), "--mode", mode, "--r-method", a.r_method, "--quiet"]
                if starts:
                    args += ["--starts", str(starts)]
                if a.devices:
                    args += ["--devices", str(a.devices)]
                label = f"n={n} F={nf} {mode} starts={starts or n}"
                print(f"[pfm_bench] {label}: native ...", file=sys.stderr, flush=True)
                native = run_pfm(binary, args, timeout=a.timeout)
                remote = None
                if not a.native_only:
                    print(f"[pfm_bench] {label}: farcuda ...", file=sys.stderr, flush=True)
                    remote = run_pfm(binary, args, prefix=prefix, timeout=a.timeout)
                status = "ok"
                if native.returncode != 0:
                    status = f"native failed ({native.returncode}): {native.stderr.strip()[-200:]}"
                elif remote is not None and remote.returncode != 0:
                    status = f"farcuda failed ({remote.returncode}): {remote.stderr.strip()[-200:]}"
                elif remote is not None:
                    status = check_agree(native, remote, a.tol)
                failures += status != "ok"
                nt = (native.record or {}).get("times", {})
                rt = ((remote.record if remote else None) or {}).get("times", {})
                for ph in PHASES:
                    t_n, t_r = nt.get(ph), rt.get(ph)
                    ratio = f"{t_r / t_n:.2f}" if t_n and t_r else "-"
                    rows.append(
                        [str(n), str(nf), mode, str(starts or n), ph, fmt(t_n), fmt(t_r), ratio]
                    )
                rows[-1].append(status if status == "ok" else "FAIL")
                raw.append(
                    {
                        "n": n,
                        "F": nf,
                        "mode": mode,
                        "starts": starts or n,
                        "status": status,
                        "native": native.record,
                        "farcuda": remote.record if remote else None,
                        "native_wall": native.wall,
                        "farcuda_wall": remote.wall if remote else None,
                    }
                )
                if status != "ok":
                    print(f"[pfm_bench] {label}: {status}", file=sys.stderr)

    head = ["n", "F", "mode", "starts", "phase", "native_s", "farcuda_s", "ratio", "check"]
    widths = [max(len(head[i]), *(len(r[i]) for r in rows if len(r) > i)) for i in range(len(head))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip())
    table = "\n".join(lines)
    print(table)
    out_txt = a.results / f"pfm_bench-{stamp}.txt"
    out_txt.write_text(
        f"# pfm_bench {stamp}: binary {binary}, farcuda prefix {a.farcuda_cmd!r}"
        f"{' (native only)' if a.native_only else ''}, r-method {a.r_method}\n{table}\n"
    )
    (a.results / f"pfm_bench-{stamp}.json").write_text(json.dumps(raw, indent=1) + "\n")
    print(f"[pfm_bench] wrote {out_txt}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
