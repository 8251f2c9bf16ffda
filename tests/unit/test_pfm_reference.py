"""The numpy FM reference (farcuda.pfm): blobs, r both ways, the shared benchmark sets, I/O.

No GPU needed. Invariant checked throughout: the vectorised reference is the literal algorithm
of docs/MISSION.md ("The FM algorithm"), which ``literal_fm`` below spells out loop by loop.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
from farcuda.pfm import __main__ as cli
from farcuda.pfm import data as pfm_data
from farcuda.pfm import reference as ref
from farcuda.pfm.compare import compare_results
from farcuda.pfm.datagen import blobs, true_centres

DATA = Path(__file__).resolve().parents[2] / "pfm_cuda" / "data"


def literal_fm(X: np.ndarray, eps1: float = 1e-6, eps2: float = 1e-5) -> tuple[float, np.ndarray]:
    """MISSION.md's FM, one point and one step at a time (slow: small n only)."""
    n, nf = X.shape
    m = X.mean(axis=0)
    d2 = np.array([float((x - m) @ (x - m)) for x in X])
    s = math.sqrt(d2.mean())
    logdets = []
    for i in range(n):
        C = np.zeros((nf, nf))
        for c in range(n):
            y = X[c] - X[i]
            C += np.outer(y, y)
        logdets.append(np.linalg.slogdet(C / n)[1])
    h = -0.5 * np.array(logdets)
    log_f1 = h.max() + math.log(np.exp(h - h.max()).sum())
    r = 1.0 / s
    for _ in range(n * nf):
        total = sum(1.0 / (1.0 + r * r * q) for q in d2)
        r_new = math.exp((log_f1 + math.log(total) - math.log(n)) / nf)
        done = abs(r_new - r) <= 1e-9 * r
        r = r_new
        if done:
            break
    V: list[np.ndarray] = []
    for k in range(n):
        v = X[k].copy()
        while True:
            mu = np.array([1.0 / (1.0 + r * r * float((x - v) @ (x - v))) for x in X])
            v_new = (mu**2) @ X / (mu**2).sum()
            E = math.sqrt(float((v_new - v) @ (v_new - v)))
            v = v_new
            if E < eps1 * s:
                break
        if all(float((v - w) @ (v - w)) > eps2 * s * s for w in V):
            V.append(v)
    return r, np.array(V)


def matched_error(P: np.ndarray, centres: np.ndarray, s: float) -> float:
    """Largest distance / s from each centre to its nearest prototype, requiring the nearest
    prototypes to be distinct (one prototype per centre)."""
    d = np.sqrt(((P[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2))
    nearest = d.argmin(axis=0)
    assert len(set(nearest.tolist())) == len(centres), "two centres share a prototype"
    return float(d.min(axis=0).max() / s)


def test_reference_is_the_literal_algorithm() -> None:
    b = blobs(90, 2, 3, seed=11)
    r_lit, P_lit = literal_fm(b.X)
    res = ref.fm(b.X)
    assert res.r == pytest.approx(r_lit, rel=1e-12)
    agreement = compare_results(res.prototypes, P_lit, res.scale, tol=1e-6)
    assert agreement.ok, agreement.message


@pytest.mark.parametrize(
    "n,nf,k,seed",
    [(600, 2, 4, 0), (1000, 3, 7, 2), (800, 5, 3, 1), (1200, 8, 6, 3), (1500, 49, 4, 4)],
)
def test_blobs_centres_found(n: int, nf: int, k: int, seed: int) -> None:
    b = blobs(n, nf, k, seed=seed)
    res = ref.fm(b.X)
    assert len(res.prototypes) == k
    assert res.unconverged == 0
    # Each blob's sample mean has its own prototype, well inside the blob (spread is 1).
    err = matched_error(res.prototypes, true_centres(b.X, b.labels), 1.0)
    assert err < 0.5


@pytest.mark.parametrize("n,nf,k", [(500, 2, 4), (700, 8, 5), (300, 13, 3), (300, 49, 2)])
def test_r_explicit_equals_lemma(n: int, nf: int, k: int) -> None:
    X = blobs(n, nf, k, seed=5).X
    ld_e = ref.log_dets_explicit(X)
    ld_l = ref.log_dets_lemma(X)
    np.testing.assert_allclose(ld_e, ld_l, rtol=0, atol=1e-9 * max(1.0, np.abs(ld_e).max()))
    r_e, r_l = ref.r_factor(X, "explicit").r, ref.r_factor(X, "lemma").r
    assert r_l == pytest.approx(r_e, rel=1e-10)


@pytest.mark.parametrize("name", ["r15", "s1"])
def test_benchmark_sets_have_15_prototypes(name: str) -> None:
    X = pfm_data.load(DATA / f"{name}.data.gz")
    labels = pfm_data.load_labels(DATA / f"{name}.labels0.gz")
    res = ref.fm(X)
    assert len(res.prototypes) == 15
    assert matched_error(res.prototypes, true_centres(X, labels, noise=0), res.scale) < 0.06


def test_r15_explicit_r() -> None:
    X = pfm_data.load(DATA / "r15.data.gz")
    rf = ref.r_factor(X, "explicit")
    assert rf.r == pytest.approx(1.7676247420148, rel=1e-9)
    assert rf.r == pytest.approx(ref.r_factor(X, "lemma").r, rel=1e-12)


def test_merge_keeps_first_found_order() -> None:
    a, b = np.array([0.0, 0.0]), np.array([5.0, 5.0])
    V = np.array([b, a, b + 1e-6, a - 1e-6, b])
    P = ref.merge(V, s=1.0, eps2=1e-5)
    np.testing.assert_array_equal(P, np.array([b, a]))


def test_start_indices() -> None:
    np.testing.assert_array_equal(ref.start_indices(10), np.arange(10))
    np.testing.assert_array_equal(ref.start_indices(10, 0), np.arange(10))
    np.testing.assert_array_equal(ref.start_indices(10, 20), np.arange(10))
    np.testing.assert_array_equal(ref.start_indices(10, 4), [0, 2, 5, 7])


def test_chunking_does_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    X = blobs(500, 3, 4, seed=9).X
    a = ref.fm(X)
    monkeypatch.setattr(ref, "_BLOCK_ELEMS", 2000)
    b = ref.fm(X)
    assert a.r == b.r
    np.testing.assert_allclose(a.prototypes, b.prototypes, rtol=0, atol=1e-12 * a.scale)


def test_max_iter_reports_unconverged() -> None:
    res = ref.fm(blobs(300, 2, 3, seed=1).X, max_iter=1)
    assert res.unconverged == 300
    assert res.iterations.max() == 1


def test_r_fixed_point_failure_is_loud() -> None:
    # F = 1: the step's elasticity can reach 2/F = 2, so the iteration oscillates.
    with pytest.raises(ref.FMError, match=r"did not converge in n\*F = 200 steps"):
        ref.r_factor(blobs(200, 1, 2, seed=0).X)


def test_bad_input_rejected() -> None:
    with pytest.raises(ref.FMError, match="at least 2 points"):
        ref.fm(np.zeros((1, 2)))
    with pytest.raises(ref.FMError, match="NaN"):
        ref.fm(np.array([[0.0, 1.0], [np.nan, 2.0], [3.0, 1.0]]))
    with pytest.raises(ref.FMError, match="singular"):
        ref.r_factor(np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]]), "lemma")


def test_blobs_are_seeded() -> None:
    a, b, c = blobs(100, 4, 3, seed=1), blobs(100, 4, 3, seed=1), blobs(100, 4, 3, seed=2)
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.array_equal(a.X, c.X)
    assert np.bincount(a.labels).tolist() == [34, 33, 33]


# ---- data files ---------------------------------------------------------------------------


def test_binary_round_trip(tmp_path: Path) -> None:
    X = blobs(50, 3, 2, seed=0).X
    pfm_data.write_binary(tmp_path / "x.pfmd", X)
    raw = (tmp_path / "x.pfmd").read_bytes()
    assert raw[:4] == b"PFMD" and len(raw) == 24 + 8 * X.size
    np.testing.assert_array_equal(pfm_data.load(tmp_path / "x.pfmd"), X)
    (tmp_path / "t.pfmd").write_bytes(raw[:-8])
    with pytest.raises(pfm_data.DataError, match="does not match header"):
        pfm_data.load(tmp_path / "t.pfmd")


def test_text_and_gzip(tmp_path: Path) -> None:
    text = "# comment\n1, 2\n\n3\t4\r\n5 6\n"
    (tmp_path / "a.txt").write_text(text)
    (tmp_path / "a.gz").write_bytes(gzip.compress(text.encode()))
    want = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    np.testing.assert_array_equal(pfm_data.load(tmp_path / "a.txt"), want)
    np.testing.assert_array_equal(pfm_data.load(tmp_path / "a.gz"), want)


@pytest.mark.parametrize(
    "text,message",
    [
        ("1,2\n3,4,5\n", "ragged row"),
        ("1 2\nnan 4\n", "non-finite"),
        ("1 2\ninf 4\n", "non-finite"),
        ("1 2\nx 4\n", "not a number"),
        ("# nothing\n\n", "no data rows"),
    ],
)
def test_text_errors(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.txt").write_text(text)
    with pytest.raises(pfm_data.DataError, match=message):
        pfm_data.load(tmp_path / "bad.txt")


def test_missing_file() -> None:
    with pytest.raises(pfm_data.DataError, match="no such file"):
        pfm_data.load("/nonexistent/file.csv")


# ---- command line ---------------------------------------------------------------------------


def test_cli_generate_reference_compare(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "b.pfmd"
    assert cli.main(["generate", "--n", "300", "--F", "3", "--k", "3", "--seed", "4",
                     "--out", str(data), "--binary"]) == 0  # fmt: skip
    rec_path = tmp_path / "ref.json"
    assert cli.main(["reference", str(data), "--json", str(rec_path)]) == 0
    rec = json.loads(rec_path.read_text())
    assert rec["n"] == 300 and rec["F"] == 3 and rec["n_prototypes"] == 3
    capsys.readouterr()
    assert cli.main(["compare", str(rec_path), "--data", str(data), "--r-method", "lemma"]) == 0
    assert capsys.readouterr().out.startswith("OK")
    # A result with a prototype moved by 1e-3 * scale disagrees.
    rec["prototypes"][0][0] += 1e-3 * rec["scale"]
    (tmp_path / "moved.json").write_text(json.dumps(rec))
    assert cli.main(["compare", str(tmp_path / "moved.json"), str(rec_path)]) == 1
    assert cli.main(["convert", str(data), str(tmp_path / "b.csv"), "--text"]) == 0
    np.testing.assert_array_equal(pfm_data.load(tmp_path / "b.csv"), pfm_data.load(data))
