"""Queries whose answers cannot change are answered on the client after the first time.

tests/programs/ci_queries asks device properties and attributes, a kernel's attributes and
occupancy (also through cudaOccupancyMaxPotentialBlockSize, which asks many) again and again:
the answers must be the daemon's (here the in-memory backend's), every repetition must give
the first one's, and repetitions must cost no round trip; changing a kernel's attribute must
make the next question go to the daemon again.
"""

from __future__ import annotations

from types import SimpleNamespace

from farcuda.daemon.backends.memory import ATTRS_H100, MemoryDevice


def _run(program, shim, address, fc, *args):
    r = fc.run_remote(program("ci_queries"), shim, address, args=args,
                      env={"FARCUDA_REPORT": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    (line,) = [ln for ln in r.stderr.splitlines() if "report:" in ln]
    fields = dict(kv.split("=") for kv in line.split("report:")[1].split())
    return r.stdout.splitlines(), int(fields["round_trips"]), int(fields["sync_round_trips"])


def test_cached_answers_are_the_daemons(program, shim, memory_daemon, fc):
    out, _, _ = _run(program, shim, memory_daemon.address, fc, "5")
    be = SimpleNamespace(kernels={1: {}})  # a kernel whose attributes were never set
    fa = MemoryDevice.func_attrs(be, 1)  # what the daemon answers FUNC_ATTRS with
    occ = [MemoryDevice.occupancy(be, 1, b, s, 0) for b, s in ((128, 0), (256, 1024))]
    attr = {n: ATTRS_H100[n] for n in (1, 16, 75, 76, 97, 10)}  # ci_queries' ATTRS, in order
    assert out[1] == "attributes: " + " ".join(str(v) for v in attr.values())
    assert out[2] == (f"scale: maxThreadsPerBlock {fa['maxThreadsPerBlock']} numRegs "
                      f"{fa['numRegs']} maxDynamicSharedSizeBytes "
                      f"{fa['maxDynamicSharedSizeBytes']} ptx {fa['ptxVersion']}")
    assert out[3] == f"occupancy: {occ[0]} blocks of 128, {occ[1]} blocks of 256 with 1 KiB"
    assert out[5] == "cluster size: cudaSuccess 8"
    assert out[-2:] == ["repetitions 5, mismatches 0", "PASSED"]


def test_repeated_queries_cost_no_round_trip(program, shim, memory_daemon, fc):
    once, rt1, sync1 = _run(program, shim, memory_daemon.address, fc, "1")
    many, rt9, sync9 = _run(program, shim, memory_daemon.address, fc, "9")
    assert once[:-2] == many[:-2]
    assert (rt9, sync9) == (rt1, sync1)
    # a changed attribute: its FUNC_SET_ATTR, then one FUNC_ATTRS (the second is kept)
    _, rt_set, sync_set = _run(program, shim, memory_daemon.address, fc, "9", "set")
    assert (rt_set, sync_set) == (rt1 + 2, sync1 + 2)
