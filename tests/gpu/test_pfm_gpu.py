"""The CUDA pfm program against the numpy reference, on a GPU (marker ``gpu``).

How the binary runs is a parameter: the ``pfm_runner`` fixture of the suite's conftest
(``farcuda.pfm.runner.PfmRunner``: a command prefix or an environment, and the number of
devices the program will see) runs it through farcuda, with one virtual device and with four
virtual devices of one GPU (with ``PFM_TEST_NATIVE=1``: natively, as many devices as
``PFM_TEST_DEVICES`` says, default 1). Every case runs with one device and, when the runner
offers several, with all of them. Invariant: every comparison is r to 1e-6 relative,
same prototype count, prototypes in first-found order within 1e-4 of the scale.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest
from farcuda.pfm import data as pfm_data
from farcuda.pfm.compare import compare_results
from farcuda.pfm.datagen import blobs
from farcuda.pfm.reference import FMError, FMResult, fm
from farcuda.pfm.runner import BuildError, PfmRun, PfmRunner, build_pfm, find_nvcc, run_pfm

pytestmark = pytest.mark.gpu

SOURCE = Path(__file__).resolve().parents[2] / "pfm_cuda"
R_TOL = 1e-6
P_TOL = 1e-4

# (n, F, k, starts for exact mode, starts for batched mode); None = every point.
SHAPES = {
    "n2000-F2": (2000, 2, 5, 400, None),
    "n3000-F8": (3000, 8, 6, 300, None),
    "n1500-F49": (1500, 49, 4, 150, 300),
}


@pytest.fixture(scope="module")
def pfm_binary() -> Path:
    if find_nvcc() is None:
        pytest.skip("nvcc not found (CUDA_HOME/bin/nvcc or PATH): cannot build pfm")
    try:
        return build_pfm(source_dir=SOURCE)
    except BuildError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def runner(pfm_runner: PfmRunner) -> PfmRunner:
    return pfm_runner


@pytest.fixture(scope="module")
def datadir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pfm-data")
    for name, (n, nf, k, _, _) in SHAPES.items():
        pfm_data.write_binary(d / f"{name}.pfmd", blobs(n, nf, k, seed=7).X)
    for name in ("r15", "s1"):
        pfm_data.write_binary(
            d / f"{name}.pfmd", pfm_data.load(SOURCE / "data" / f"{name}.data.gz")
        )
    return d


@cache
def reference(path: str, r_method: str, starts: int | None) -> FMResult:
    return fm(pfm_data.load(path), r_method=r_method, starts=starts)


def device_counts(runner: PfmRunner) -> list[int]:
    return sorted({1, runner.devices})


def check_against_reference(run: PfmRun, ref: FMResult) -> None:
    run.check()
    rec = run.record
    assert rec is not None, "no JSON record"
    P = np.array(rec["prototypes"], dtype=np.float64).reshape(rec["n_prototypes"], rec["F"])
    agreement = compare_results(P, ref.prototypes, ref.scale, rec["r"], ref.r, P_TOL, R_TOL)
    assert agreement.ok, agreement.message
    assert rec["unconverged"] == ref.unconverged
    assert rec["starts"] == len(ref.starts)


@pytest.mark.parametrize("r_method", ["explicit", "lemma"])
@pytest.mark.parametrize("mode", ["exact", "batched"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_matches_reference(
    pfm_binary: Path, runner: PfmRunner, datadir: Path, shape: str, mode: str, r_method: str
) -> None:
    _, _, k, starts_exact, starts_batched = SHAPES[shape]
    starts = starts_exact if mode == "exact" else starts_batched
    path = datadir / f"{shape}.pfmd"
    ref = reference(str(path), r_method, starts)
    assert len(ref.prototypes) == k  # the data is what the test means it to be
    for ndev in device_counts(runner):
        args = [path, "--mode", mode, "--r-method", r_method, "--devices", str(ndev)]
        if starts is not None:
            args += ["--starts", str(starts)]
        run = runner.run(pfm_binary, args, timeout=480)
        check_against_reference(run, ref)
        assert run.record is not None and run.record["devices"] == ndev
        assert run.record["mode"] == mode and run.record["r_method"] == r_method


@pytest.mark.parametrize("name,starts_exact", [("r15", None), ("s1", 500)])
def test_real_data_15_prototypes(
    pfm_binary: Path, runner: PfmRunner, datadir: Path, name: str, starts_exact: int | None
) -> None:
    path = datadir / f"{name}.pfmd"
    for mode, starts in (("batched", None), ("exact", starts_exact)):
        ref = reference(str(path), "explicit", starts)
        args = [path, "--mode", mode, "--devices", str(runner.devices)]
        if starts is not None:
            args += ["--starts", str(starts)]
        run = runner.run(pfm_binary, args, timeout=480)
        check_against_reference(run, ref)
        assert run.record is not None and run.record["n_prototypes"] == 15


def test_modes_and_methods_agree(pfm_binary: Path, runner: PfmRunner, datadir: Path) -> None:
    path = datadir / "n3000-F8.pfmd"
    recs = []
    for mode in ("exact", "batched"):
        for r_method in ("explicit", "lemma"):
            args = [path, "--mode", mode, "--r-method", r_method, "--starts", "200"]
            recs.append(runner.run(pfm_binary, args, timeout=480).check().record)
    base = recs[0]
    for rec in recs[1:]:
        P = np.array(rec["prototypes"])
        Q = np.array(base["prototypes"])
        agreement = compare_results(P, Q, base["scale"], rec["r"], base["r"], P_TOL, 1e-9)
        assert agreement.ok, agreement.message


def test_csv_output_and_repeatability(
    pfm_binary: Path, runner: PfmRunner, datadir: Path, tmp_path: Path
) -> None:
    path = datadir / "r15.pfmd"
    out = tmp_path / "p.csv"
    a = runner.run(pfm_binary, [path, "--out", out], timeout=120).check()
    b = runner.run(pfm_binary, [path], timeout=120).check()
    P = pfm_data.load_text(out)
    assert P.shape == (15, 2)
    # Deterministic reductions: the same device count gives the same bits.
    assert a.record is not None and b.record is not None
    assert a.record["r"] == b.record["r"]
    assert np.array_equal(P, pfm_data.parse_text(b.stdout))


def test_unconverged_starts_are_reported(
    pfm_binary: Path, runner: PfmRunner, datadir: Path
) -> None:
    run = runner.run(pfm_binary, [datadir / "r15.pfmd", "--max-iter", "2"], timeout=120).check()
    assert run.record is not None and run.record["unconverged"] > 0
    assert "did not converge" in run.stderr


def test_too_many_devices_is_an_error(pfm_binary: Path, runner: PfmRunner, datadir: Path) -> None:
    run = runner.run(pfm_binary, [datadir / "r15.pfmd", "--devices", "1024"], timeout=120)
    assert run.returncode == 2
    assert "device(s) visible" in run.stderr


@pytest.mark.parametrize("mode", ["exact", "batched"])
@pytest.mark.parametrize("r_method", ["explicit", "lemma"])
def test_virtual_devices_split_the_work(
    pfm_binary: Path, runner: PfmRunner, datadir: Path, mode: str, r_method: str
) -> None:
    """PFM_VIRTUAL_DEVICES maps 3 devices onto the GPU(s): the multi-device paths, one GPU."""
    path = datadir / "n3000-F8.pfmd"
    ref = reference(str(path), r_method, 240)
    env = {**(runner.env or {}), "PFM_VIRTUAL_DEVICES": "3"}
    multi = PfmRunner(prefix=runner.prefix, env=env, devices=3)
    for ndev in (2, 3):
        args = [path, "--mode", mode, "--r-method", r_method, "--starts", "240"]
        run = multi.run(pfm_binary, [*args, "--devices", str(ndev)], timeout=480)
        check_against_reference(run, ref)
        assert run.record is not None and run.record["devices"] == ndev


@pytest.mark.parametrize("mode", ["exact", "batched"])
def test_more_devices_than_points(
    pfm_binary: Path, runner: PfmRunner, tmp_path: Path, mode: str
) -> None:
    """n=9 points over 10 devices: some shares (points and starts) are empty."""
    path = tmp_path / "tiny.pfmd"
    pfm_data.write_binary(path, blobs(9, 4, 2, seed=0).X)
    ref = fm(pfm_data.load(path))
    env = {**(runner.env or {}), "PFM_VIRTUAL_DEVICES": "10"}
    run = run_pfm(pfm_binary, [path, "--mode", mode], env=env, prefix=runner.prefix, timeout=120)
    check_against_reference(run, ref)
    assert run.record is not None and run.record["devices"] == 10


def test_one_feature(pfm_binary: Path, runner: PfmRunner, tmp_path: Path) -> None:
    """F=1, the smallest kernel shape (one matrix entry, 256 thread groups)."""
    path = tmp_path / "f1.pfmd"
    pfm_data.write_binary(path, blobs(1000, 1, 3, seed=1).X)
    ref = fm(pfm_data.load(path), starts=200)
    for mode in ("exact", "batched"):
        run = runner.run(pfm_binary, [path, "--mode", mode, "--starts", "200"], timeout=120)
        check_against_reference(run, ref)


def test_r_not_converging_fails_loudly(pfm_binary: Path, runner: PfmRunner, tmp_path: Path) -> None:
    """With F=1 the r fixed point often oscillates: exit 1 after n*F steps, as the reference."""
    path = tmp_path / "osc.pfmd"
    pfm_data.write_binary(path, blobs(200, 1, 2, seed=0).X)
    with pytest.raises(FMError, match="did not converge"):
        fm(pfm_data.load(path))
    run = runner.run(pfm_binary, [path], timeout=120)
    assert run.returncode == 1
    assert "r factor fixed point did not converge in n*F = 200 steps" in run.stderr
