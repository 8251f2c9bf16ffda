"""Tenants side by side under CUDA MPS ([gpu] mps = true) on the GPU.

Different clients are different worker processes, whose contexts take turns on a GPU; with the
daemon's MPS option they are clients of one MPS server and their kernels overlap. Two clients
each run vdev_overlap's one-block kernel of a fixed amount of work at the same time: under MPS
each takes about the time it takes alone. (Without MPS, about twice: not asserted, printed.)
"""

from __future__ import annotations

import concurrent.futures
import re
import shutil

import pytest

pytestmark = pytest.mark.gpu

_LINE = re.compile(r"devices 1 iters (\d+) alone_ms ([\d.]+) together_ms ([\d.]+)")


def _times(r) -> tuple[int, float]:
    assert r.returncode == 0 and "PASSED" in r.stdout, r.stdout + r.stderr
    m = _LINE.search(r.stdout)
    assert m, r.stdout
    return int(m.group(1)), float(m.group(3))


def _two_at_once(fc, exe, shim, address, iters):
    env = {"FARCUDA_DEVICES": f"{address}/0"}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: fc.run_remote(exe, shim, None, args=["1", str(iters)],
                                                     env=env), range(2)))
    return [_times(r)[1] for r in runs]


@pytest.fixture(scope="module")
def mps_daemon(tmp_path_factory, fc):
    if shutil.which("nvidia-cuda-mps-control") is None:
        pytest.skip("nvidia-cuda-mps-control is not installed here")
    tmp = tmp_path_factory.mktemp("mpsd")
    d = fc.start_daemon(tmp, "cuda", config={"prestart": 2, "gpu": {
        "mps": True, "mps_pipe_directory": str(tmp / "pipe"),
        "mps_log_directory": str(tmp / "log")}})
    yield d
    d.stop()  # (and the MPS control daemon it started)


def test_kernels_of_two_tenants_overlap_under_mps(program, shim, mps_daemon, cuda_daemon, fc):
    exe = program("vdev_overlap")
    iters, alone = _times(fc.run_remote(exe, shim, None, args=["1"],
                                        env={"FARCUDA_DEVICES": f"{mps_daemon.address}/0"}))
    plain = _two_at_once(fc, exe, shim, cuda_daemon.address, iters)
    both = _two_at_once(fc, exe, shim, mps_daemon.address, iters)
    print(f"one tenant alone {alone:.0f} ms; two at once: without MPS {plain} ms, "
          f"with MPS {both} ms")
    assert max(both) < 1.5 * alone, (alone, both, mps_daemon.log()[-2000:])
