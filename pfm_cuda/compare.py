"""Compare FM results: r relative, prototypes in first-found order relative to the scale.

Invariant: two results agree when they have the same number of prototypes, prototype i of one
is within ``tol * scale`` (Euclidean) of prototype i of the other for every i, and the r values
agree to ``r_tol`` relative. Order matters: the first-found order is part of the FM result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Agreement", "compare_results"]


@dataclass(frozen=True)
class Agreement:
    ok: bool
    count: tuple[int, int]
    max_proto_err: float  # max_i ||p_i - q_i|| / scale (nan when the counts differ)
    r_rel_err: float  # |r_a - r_b| / |r_b| (nan when either r is unknown)
    message: str


def compare_results(
    protos: np.ndarray,
    ref_protos: np.ndarray,
    scale: float,
    r: float | None = None,
    ref_r: float | None = None,
    tol: float = 1e-4,
    r_tol: float = 1e-6,
) -> Agreement:
    P = np.asarray(protos, dtype=np.float64)
    Q = np.asarray(ref_protos, dtype=np.float64)
    P = P.reshape(len(P), -1) if P.size else P.reshape(0, Q.shape[1] if Q.ndim == 2 else 0)
    Q = Q.reshape(len(Q), -1) if Q.size else Q.reshape(0, P.shape[1])
    r_err = math.nan
    if r is not None and ref_r is not None:
        r_err = abs(r - ref_r) / abs(ref_r)
    problems = []
    if not math.isnan(r_err) and r_err > r_tol:
        problems.append(f"r differs: {r!r} vs {ref_r!r} (relative {r_err:.3g} > {r_tol:g})")
    err = math.nan
    if P.shape != Q.shape:
        problems.append(f"prototype count/shape differs: {P.shape} vs {Q.shape}")
    else:
        err = float(np.sqrt(((P - Q) ** 2).sum(axis=1)).max() / scale) if len(P) else 0.0
        if err > tol:
            i = int(np.argmax(np.sqrt(((P - Q) ** 2).sum(axis=1))))
            problems.append(
                f"prototype {i} differs by {err:.3g} * scale > {tol:g} (in first-found order)"
            )
    ok = not problems
    msg = (
        f"agree: {len(P)} prototypes, max error {err:.3g} * scale, r relative error {r_err:.3g}"
        if ok
        else "; ".join(problems)
    )
    return Agreement(ok, (len(P), len(Q)), err, r_err, msg)
