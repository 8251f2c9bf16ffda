"""Seeded Gaussian blobs with known centres: test and benchmark data for FM/PFM.

Invariant: the same (n, F, k, seed, spread, separation) always gives the same bytes (numpy's
PCG64 through ``default_rng``), so benchmarks and tests can regenerate data instead of storing it.
Centres are drawn uniformly in a box and rejected until every pair is at least ``separation``
cluster standard deviations apart, so each blob is a clear cluster that FM should find once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Blobs", "blobs", "true_centres"]


@dataclass(frozen=True)
class Blobs:
    X: np.ndarray  # (n, F) points
    labels: np.ndarray  # (n,) blob index of each point
    centres: np.ndarray  # (k, F) the centres the points were drawn around


def blobs(
    n: int,
    F: int,
    k: int,
    seed: int = 0,
    spread: float = 1.0,
    separation: float = 10.0,
) -> Blobs:
    """n points in R^F around k centres (isotropic Gaussians of std ``spread``).

    Blob sizes differ by at most one (point i belongs to blob ``i % k``; rows are shuffled).
    Centres lie in a cube whose side grows with k^(1/F), at least ``separation * spread`` apart.
    """
    if n < 2 or F < 1 or k < 1 or k > n:
        raise ValueError(f"need n >= 2, F >= 1, 1 <= k <= n (got n={n}, F={F}, k={k})")
    rng = np.random.default_rng(seed)
    min_d = separation * spread
    # Side of the cube: room for k balls of diameter ~min_d, with slack so rejection ends fast.
    side = 2.0 * min_d * max(1.0, math.ceil(k ** (1.0 / F)))
    centres = np.empty((k, F))
    got = 0
    tries = 0
    while got < k:
        c = rng.uniform(-side / 2, side / 2, size=F)
        if got == 0 or np.sqrt(((centres[:got] - c) ** 2).sum(axis=1)).min() >= min_d:
            centres[got] = c
            got += 1
        tries += 1
        if tries > 100000:  # pragma: no cover - only for absurd (k, F, separation)
            raise ValueError("could not place the centres; lower k or separation")
    labels = np.arange(n) % k
    rng.shuffle(labels)
    X = centres[labels] + rng.normal(0.0, spread, size=(n, F))
    return Blobs(X=np.ascontiguousarray(X), labels=labels.astype(np.int64), centres=centres)


def true_centres(X: np.ndarray, labels: np.ndarray, noise: int | None = None) -> np.ndarray:
    """The mean of each label's points, in increasing label order, skipping label ``noise``.

    The benchmark collection's ``labels0`` files use 0 for noise: pass ``noise=0`` for them.
    """
    labs = [lab for lab in np.unique(labels) if noise is None or lab != noise]
    return np.array([X[labels == lab].mean(axis=0) for lab in labs])
