"""Command line of farcuda.pfm: the numpy reference, the data generator, conversion, comparison.

  python -m farcuda.pfm reference DATA [--r-method explicit|lemma] [--starts K] [--json [FILE]]
  python -m farcuda.pfm generate --n N --F F --k K --seed S --out FILE [--binary]
  python -m farcuda.pfm convert IN OUT [--text]
  python -m farcuda.pfm compare RESULT (REFERENCE | --data DATA) [--tol 1e-4] [--r-tol 1e-6]

RESULT and REFERENCE are JSON records (from the pfm program or ``reference --json``) or
prototype CSV files. Exit status: 0 ok (or results agree), 1 results differ or FM failed,
2 bad usage or input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import data as pfm_data
from .compare import compare_results
from .datagen import blobs
from .reference import DEFAULT_EPS1, DEFAULT_EPS2, DEFAULT_MAX_ITER, FMError, fm


def _cmd_reference(a: argparse.Namespace) -> int:
    X = pfm_data.load(a.data)
    t0 = time.perf_counter()
    res = fm(X, a.eps1, a.eps2, a.r_method, a.starts, a.max_iter)
    elapsed = time.perf_counter() - t0
    rec = res.to_record()
    rec["input"] = str(a.data)
    rec["times"] = {"total": elapsed}
    if a.out:
        pfm_data.write_text(a.out, res.prototypes)
    elif a.json != "-":
        np.savetxt(sys.stdout, res.prototypes, delimiter=",", fmt="%.17g")
    if a.json == "-":
        json.dump(rec, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif a.json:
        Path(a.json).write_text(json.dumps(rec, indent=2) + "\n")
    print(
        f"reference: n={X.shape[0]} F={X.shape[1]} r={res.r:.10g} "
        f"prototypes={len(res.prototypes)} unconverged={res.unconverged} ({elapsed:.2f} s)",
        file=sys.stderr,
    )
    return 0


def _cmd_generate(a: argparse.Namespace) -> int:
    b = blobs(a.n, a.F, a.k, seed=a.seed, spread=a.spread, separation=a.separation)
    if a.binary:
        pfm_data.write_binary(a.out, b.X)
    else:
        pfm_data.write_text(a.out, b.X)
    if a.labels:
        np.savetxt(a.labels, b.labels, fmt="%d")
    if a.centres:
        pfm_data.write_text(a.centres, b.centres)
    return 0


def _cmd_convert(a: argparse.Namespace) -> int:
    X = pfm_data.load(a.input)
    if a.text:
        pfm_data.write_text(a.output, X)
    else:
        pfm_data.write_binary(a.output, X)
    return 0


def _load_result(path: str) -> tuple[np.ndarray, float | None, float | None]:
    """(prototypes, r or None, scale or None) from a JSON record or a prototype CSV."""
    p = Path(path)
    if not p.is_file():
        raise pfm_data.DataError(f"{path}: no such file")
    text = p.read_text()
    if text.lstrip().startswith("{"):
        rec = json.loads(text)
        P = np.array(rec.get("prototypes", []), dtype=np.float64)
        return P.reshape(len(P), int(rec["F"])), rec.get("r"), rec.get("scale")
    if not text.strip():
        return np.zeros((0, 0)), None, None
    return pfm_data.parse_text(text, path), None, None


def _cmd_compare(a: argparse.Namespace) -> int:
    P, r, s = _load_result(a.result)
    if a.data:
        X = pfm_data.load(a.data)
        res = fm(X, a.eps1, a.eps2, a.r_method, a.starts, a.max_iter)
        Q, ref_r, ref_s = res.prototypes, res.r, res.scale
    elif a.reference:
        Q, ref_r, ref_s = _load_result(a.reference)
    else:
        print("compare: give a REFERENCE result or --data DATA", file=sys.stderr)
        return 2
    sc = a.scale or ref_s or s
    if sc is None:
        print("compare: unknown scale: give --scale, --data or a JSON record", file=sys.stderr)
        return 2
    if P.size == 0 and Q.ndim == 2:
        P = P.reshape(0, Q.shape[1])
    agreement = compare_results(P, Q, sc, r, ref_r, a.tol, a.r_tol)
    print(("OK: " if agreement.ok else "MISMATCH: ") + agreement.message)
    return 0 if agreement.ok else 1


def _fm_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--r-method", choices=["explicit", "lemma"], default="explicit")
    p.add_argument("--eps1", type=float, default=DEFAULT_EPS1)
    p.add_argument("--eps2", type=float, default=DEFAULT_EPS2)
    p.add_argument("--starts", type=int, default=None, help="every n/K-th point as a start")
    p.add_argument("--max-iter", type=int, default=DEFAULT_MAX_ITER)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m farcuda.pfm", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("reference", help="run the numpy reference FM on DATA")
    p.add_argument("data")
    _fm_options(p)
    p.add_argument("--out", help="prototype CSV (default: stdout)")
    p.add_argument(
        "--json", nargs="?", const="-", default=None, help="JSON record to FILE (or stdout)"
    )
    p.set_defaults(func=_cmd_reference)

    p = sub.add_parser("generate", help="seeded Gaussian blobs")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--F", type=int, required=True)
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spread", type=float, default=1.0)
    p.add_argument("--separation", type=float, default=10.0)
    p.add_argument("--out", required=True)
    p.add_argument("--binary", action="store_true", help="PFMD binary instead of CSV")
    p.add_argument("--labels", help="also write the labels here")
    p.add_argument("--centres", help="also write the true centres here (CSV)")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("convert", help="text/gz/PFMD to PFMD binary (or --text: CSV)")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--text", action="store_true")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("compare", help="compare a result with a reference result or DATA")
    p.add_argument("result")
    p.add_argument("reference", nargs="?")
    p.add_argument("--data", help="compute the reference from this data file")
    _fm_options(p)
    p.add_argument("--tol", type=float, default=1e-4, help="prototype tolerance / scale")
    p.add_argument("--r-tol", type=float, default=1e-6, help="relative r tolerance")
    p.add_argument("--scale", type=float, default=None)
    p.set_defaults(func=_cmd_compare)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (pfm_data.DataError, ValueError) as exc:  # DataError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2 if not isinstance(exc, FMError) else 1


if __name__ == "__main__":
    sys.exit(main())
