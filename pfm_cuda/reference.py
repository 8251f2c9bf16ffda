"""Numpy reference of Fuzzy Minimals (FM): the r factor and the prototypes, in float64.

This module is the definition the CUDA program (``pfm.cu``) is checked against; it follows
docs/MISSION.md ("The FM algorithm") literally, and the CUDA kernels do the same arithmetic:

- scale ``s = sqrt(mean_i ||x_i - m||^2)``; every tolerance is relative to it;
- ``C_i = (1/n) sum_c (x_c - x_i)(x_c - x_i)^T``; ``log|C_i|`` from an LU factorisation with
  partial pivoting (``numpy.linalg.slogdet`` is LAPACK getrf: ``sum log|U_jj|``);
- lemma form: ``log|C_i| = log|S| + log1p((x_i-m)^T S^-1 (x_i-m))``, S the covariance about m;
- ``log f1 = logsumexp(-log|C_i| / 2)``; fixed point ``r_0 = 1/s``,
  ``log r_{k+1} = (log f1 + log sum_i 1/(1 + r_k^2 d_i^2) - log n) / F`` until
  ``|r_{k+1} - r_k| <= 1e-9 r_k``; failing after ``n*F`` steps raises :class:`FMError`;
- prototypes: from every start ``v = x_k`` iterate ``v' = sum mu^2 x / sum mu^2`` with
  ``mu = 1/(1 + r^2 ||x - v||^2)`` until ``||v' - v|| < eps1*s`` (at most ``max_iter`` steps;
  starts that hit the cap are counted, not hidden), then merge in start order: ``v`` joins V
  when ``||v - w||^2 > eps2*s^2`` for every w already in V (the sequential first-found order).

Invariant: the result does not depend on how the work is chunked; chunk sizes only bound memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "DEFAULT_EPS1",
    "DEFAULT_EPS2",
    "DEFAULT_MAX_ITER",
    "R_TOL",
    "FMError",
    "FMResult",
    "RFactor",
    "StartsResult",
    "converge_starts",
    "fm",
    "log_dets",
    "log_dets_explicit",
    "log_dets_lemma",
    "merge",
    "r_factor",
    "r_fixed_point",
    "scale",
    "start_indices",
]

DEFAULT_EPS1 = 1e-6
DEFAULT_EPS2 = 1e-5
#: Cap on fixed-point steps per start (same default as the CUDA program's --max-iter).
DEFAULT_MAX_ITER = 10000
#: Relative stopping tolerance of the r fixed point.
R_TOL = 1e-9
#: Elements per temporary block (bounds memory: 4M doubles = 32 MiB).
_BLOCK_ELEMS = 4_000_000


class FMError(ValueError):
    """The data or the iteration does not allow an FM result (message says why)."""


def _check(X: np.ndarray) -> np.ndarray:
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise FMError(f"X must be 2-dimensional (n, F), got shape {X.shape}")
    n, nf = X.shape
    if n < 2:
        raise FMError(f"need at least 2 points, got n={n}")
    if nf < 1:
        raise FMError("need at least 1 feature")
    if not np.isfinite(X).all():
        raise FMError("X contains NaN or inf")
    return X


def scale(X: np.ndarray) -> float:
    """s = sqrt(mean_i ||x_i - m||^2): the data's scale, the unit of every tolerance."""
    X = np.asarray(X, dtype=np.float64)
    d2 = ((X - X.mean(axis=0)) ** 2).sum(axis=1)
    return float(math.sqrt(d2.mean()))


def log_dets_explicit(X: np.ndarray) -> np.ndarray:
    """log|C_i| for every point, C_i summed explicitly over all c (O(n^2 F^2))."""
    X = _check(X)
    n, nf = X.shape
    out = np.empty(n)
    block = max(1, _BLOCK_ELEMS // (n * nf))
    for i0 in range(0, n, block):
        i1 = min(n, i0 + block)
        Y = X[None, :, :] - X[i0:i1, None, :]  # (b, n, F): x_c - x_i
        C = np.matmul(Y.transpose(0, 2, 1), Y) / n  # (b, F, F)
        sign, ld = np.linalg.slogdet(C)
        bad = np.flatnonzero(sign <= 0)
        if bad.size:
            raise FMError(f"fuzzy covariance of point {i0 + bad[0]} is singular")
        out[i0:i1] = ld
    return out


def log_dets_lemma(X: np.ndarray) -> np.ndarray:
    """log|C_i| by the matrix determinant lemma: log|S| + log1p(u_i^T S^-1 u_i) (O(n F^2))."""
    X = _check(X)
    n = X.shape[0]
    U = X - X.mean(axis=0)
    S = (U.T @ U) / n
    sign, ld_s = np.linalg.slogdet(S)
    if sign <= 0:
        raise FMError("covariance matrix of the data is singular (constant or dependent features)")
    q = np.einsum("ij,ji->i", U, np.linalg.solve(S, U.T))
    return ld_s + np.log1p(q)


def log_dets(X: np.ndarray, method: str = "explicit") -> np.ndarray:
    """log|C_i| by ``method`` ("explicit" or "lemma")."""
    if method == "explicit":
        return log_dets_explicit(X)
    if method == "lemma":
        return log_dets_lemma(X)
    raise ValueError(f"unknown r method {method!r} (explicit|lemma)")


@dataclass(frozen=True)
class RFactor:
    r: float
    iterations: int
    log_f1: float
    scale: float


def r_fixed_point(log_det: np.ndarray, d2: np.ndarray, nf: int) -> RFactor:
    """The r fixed point from log|C_i| and d_i^2 = ||x_i - m||^2, in log space."""
    n = d2.shape[0]
    h = -0.5 * np.asarray(log_det, dtype=np.float64)
    hmax = float(h.max())
    log_f1 = hmax + math.log(float(np.exp(h - hmax).sum()))
    s = math.sqrt(float(d2.mean()))
    if not s > 0:
        raise FMError("all points are identical (scale s = 0)")
    r = 1.0 / s
    log_n = math.log(n)
    for k in range(n * nf):
        total = float((1.0 / (1.0 + (r * r) * d2)).sum())
        r_new = math.exp((log_f1 + math.log(total) - log_n) / nf)
        if abs(r_new - r) <= R_TOL * r:
            return RFactor(r=r_new, iterations=k + 1, log_f1=log_f1, scale=s)
        r = r_new
    raise FMError(f"r factor fixed point did not converge in n*F = {n * nf} steps")


def r_factor(X: np.ndarray, method: str = "explicit") -> RFactor:
    """The r factor of X (MISSION.md), log-determinants by ``method``."""
    X = _check(X)
    ld = log_dets(X, method)
    d2 = ((X - X.mean(axis=0)) ** 2).sum(axis=1)
    return r_fixed_point(ld, d2, X.shape[1])


def start_indices(n: int, starts: int | None = None) -> np.ndarray:
    """Indices of the starting points: all n, or every n/K-th one: ``(j*n) // K``, j < K.

    The CUDA program's ``--starts K`` uses the same formula (0 or K >= n means all points).
    """
    if starts is None or starts <= 0 or starts >= n:
        return np.arange(n, dtype=np.int64)
    return (np.arange(starts, dtype=np.int64) * n) // starts


@dataclass
class StartsResult:
    V: np.ndarray  # (K, F) converged v of every start, in start order
    iterations: np.ndarray  # (K,) fixed-point steps taken
    converged: np.ndarray  # (K,) bool: E < eps1*s reached within max_iter


def converge_starts(
    X: np.ndarray,
    r: float,
    starts: np.ndarray,
    eps1: float = DEFAULT_EPS1,
    max_iter: int = DEFAULT_MAX_ITER,
) -> StartsResult:
    """Run the prototype fixed point from every start independently (all starts at once).

    Distances come from ``|x|^2 - 2 x.v + |v|^2`` on centred data (one matrix product per step);
    centring keeps the cancellation error far below eps1. Starts leave the active set as they
    converge, so the cost follows the slowest starts only where they are.
    """
    X = _check(X)
    n, nf = X.shape
    m = X.mean(axis=0)
    Xc = X - m
    s = scale(X)
    tol = eps1 * s
    r2 = r * r
    xsq = (Xc * Xc).sum(axis=1)
    starts = np.asarray(starts, dtype=np.int64)
    K = starts.shape[0]
    V = Xc[starts].copy()
    iters = np.zeros(K, dtype=np.int64)
    conv = np.zeros(K, dtype=bool)
    block = max(1, _BLOCK_ELEMS // n)
    for k0 in range(0, K, block):
        idx = np.arange(k0, min(K, k0 + block))
        Va = V[idx]
        for it in range(1, max_iter + 1):
            d2 = xsq[None, :] - 2.0 * (Va @ Xc.T) + (Va * Va).sum(axis=1)[:, None]
            np.maximum(d2, 0.0, out=d2)
            w = 1.0 / (1.0 + r2 * d2)
            w *= w
            Vn = (w @ Xc) / w.sum(axis=1)[:, None]
            E = np.sqrt(((Vn - Va) ** 2).sum(axis=1))
            done = E < tol
            if done.any():
                V[idx[done]] = Vn[done]
                iters[idx[done]] = it
                conv[idx[done]] = True
            keep = ~done
            idx, Va = idx[keep], Vn[keep]
            if idx.size == 0:
                break
        if idx.size:  # hit the cap: keep the last iterate, report it unconverged
            V[idx] = Va
            iters[idx] = max_iter
    return StartsResult(V=V + m, iterations=iters, converged=conv)


def merge(V: np.ndarray, s: float, eps2: float = DEFAULT_EPS2) -> np.ndarray:
    """First-found merge in start order: keep v if ||v - w||^2 > eps2*s^2 for all kept w."""
    thr = eps2 * s * s
    kept: list[np.ndarray] = []
    for v in np.asarray(V, dtype=np.float64):
        if all(float(((v - w) ** 2).sum()) > thr for w in kept):
            kept.append(v)
    nf = V.shape[1] if V.ndim == 2 else 0
    return np.array(kept, dtype=np.float64).reshape(len(kept), nf)


@dataclass
class FMResult:
    r: float
    prototypes: np.ndarray  # (P, F) in first-found order
    scale: float
    r_iterations: int
    log_f1: float
    starts: np.ndarray  # start indices used
    iterations: np.ndarray  # per start
    unconverged: int  # starts that hit max_iter
    n: int
    r_method: str = "explicit"
    extra: dict = field(default_factory=dict)

    def to_record(self) -> dict:
        """A JSON-able record with the same key names as the CUDA program's --json output."""
        return {
            "program": "pfm-reference",
            "n": self.n,
            "F": int(self.prototypes.shape[1]),
            "r": self.r,
            "r_method": self.r_method,
            "r_iterations": self.r_iterations,
            "log_f1": self.log_f1,
            "scale": self.scale,
            "starts": int(self.starts.shape[0]),
            "n_prototypes": int(self.prototypes.shape[0]),
            "unconverged": self.unconverged,
            "max_iterations_used": int(self.iterations.max()) if self.iterations.size else 0,
            "prototypes": self.prototypes.tolist(),
            **self.extra,
        }


def fm(
    X: np.ndarray,
    eps1: float = DEFAULT_EPS1,
    eps2: float = DEFAULT_EPS2,
    r_method: str = "explicit",
    starts: int | None = None,
    max_iter: int = DEFAULT_MAX_ITER,
    r: float | None = None,
) -> FMResult:
    """Fuzzy Minimals: r factor, then prototypes in first-found order.

    ``starts`` limits the starting points as the CUDA program's ``--starts`` does; ``r`` skips
    the r computation (to check prototypes against a given r).
    """
    X = _check(X)
    n, nf = X.shape
    if r is None:
        rf = r_factor(X, r_method)
    else:
        rf = RFactor(r=float(r), iterations=0, log_f1=float("nan"), scale=scale(X))
    idx = start_indices(n, starts)
    res = converge_starts(X, rf.r, idx, eps1, max_iter)
    P = merge(res.V, rf.scale, eps2)
    return FMResult(
        r=rf.r,
        prototypes=P,
        scale=rf.scale,
        r_iterations=rf.iterations,
        log_f1=rf.log_f1,
        starts=idx,
        iterations=res.iterations,
        unconverged=int((~res.converged).sum()),
        n=n,
        r_method=r_method,
        extra={"eps1": eps1, "eps2": eps2},
    )
