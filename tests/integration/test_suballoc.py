"""Client-side sub-allocation: small cudaMalloc calls are placed by the client in arenas the
daemon maps for it, and cost no round trip, with every semantic of the daemon's own placement.

tests/programs/ci_suballoc runs each way, with sub-allocation (the default) and without
(FARCUDA_SUBALLOC=0), against the in-memory daemon: the transcripts must be equal (alignment,
disjointness, contents, frees in any order, reuse, cudaMemGetInfo, the out-of-memory point,
under a quota too), while the round trips differ as they should; and a client that dies holds
nothing afterwards.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

MiB = 1 << 20


def _run(program, shim, address, fc, *args, suballoc=True):
    env = {"FARCUDA_REPORT": "1"}
    if not suballoc:
        env["FARCUDA_SUBALLOC"] = "0"
    r = fc.run_remote(program("ci_suballoc"), shim, address, args=args, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    (line,) = [ln for ln in r.stderr.splitlines() if "report:" in ln]
    fields = dict(kv.split("=") for kv in line.split("report:")[1].split())
    return r.stdout.splitlines(), int(fields["sync_round_trips"])


def test_layout_alignment_reuse_and_free_memory(program, shim, memory_daemon, fc):
    out, rt = _run(program, shim, memory_daemon.address, fc, "strict")
    plain, rt_plain = _run(program, shim, memory_daemon.address, fc, "strict", suballoc=False)
    assert out == plain == [
        "allocations 18: misaligned 0, overlapping 0, wrong bytes 0",
        "a copy past the end of a small allocation: refused",
        "after frees in any order: wrong bytes 0, double free cudaErrorInvalidValue",
        "reuse after free: yes", "free memory back: yes", "PASSED"]
    assert rt_plain - rt >= 14  # at least the 14 small allocations (and an arena more)


@pytest.mark.parametrize("size", [4096, 1000, 700000, MiB])
def test_out_of_memory_at_the_same_point(program, shim, fc, tmp_path, size):
    d = fc.start_daemon(tmp_path, "memory", backend_options={"capacity": 16 * MiB})
    try:
        out, _ = _run(program, shim, d.address, fc, "oom", str(size))
        plain, _ = _run(program, shim, d.address, fc, "oom", str(size), suballoc=False)
    finally:
        d.stop()
    assert out == plain
    per_arena = (2 * MiB) // (-(-size // 512) * 512) if size < MiB else 1
    count = 8 * per_arena  # arenas (or extents) of 2 MiB in 16 MiB
    assert out == [f"allocations of {size}: {count}, then cudaErrorMemoryAllocation "
                   "(last error cudaErrorMemoryAllocation)", "free memory when full: 0",
                   "after a free: one more fits", "then 4 MiB: cudaErrorMemoryAllocation",
                   f"free memory at the end: {16 * MiB}", "PASSED"]


def test_a_quota_stays_exact(program, shim, fc, tmp_path):
    """Under a memory quota the daemon decides each allocation: no arenas are offered."""
    d = fc.start_daemon(tmp_path, "memory", config={"limits": {"memory_per_tenant": "6MiB"}})
    try:
        out, rt = _run(program, shim, d.address, fc, "oom", "4096")
        plain, rt_plain = _run(program, shim, d.address, fc, "oom", "4096", suballoc=False)
    finally:
        d.stop()
    assert out[0] == ("allocations of 4096: 1536, then cudaErrorMemoryAllocation (last error "
                      "cudaErrorMemoryAllocation)")
    assert out == plain and rt == rt_plain


def test_malloc_and_free_in_a_loop_cost_no_round_trip(program, shim, memory_daemon, fc):
    _, once = _run(program, shim, memory_daemon.address, fc, "loop", "1")
    _, many = _run(program, shim, memory_daemon.address, fc, "loop", "41")
    # per loop: 1 KiB allocated and freed here; 1 MiB allocated by the daemon (one round
    # trip) and freed without waiting (nothing can be pending on the device)
    assert many - once == 40


def test_a_dead_clients_arenas_are_freed(program, shim, fc, tmp_path):
    d = fc.start_daemon(tmp_path, "memory", backend_options={"capacity": 16 * MiB})
    try:
        full, _ = _run(program, shim, d.address, fc, "oom", "4096")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA_")
               and k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")}
        env.update(LD_PRELOAD=str(shim), FARCUDA_SERVER=d.address)
        with subprocess.Popen([str(program("ci_suballoc")), "hold", "3000"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=env) as p:
            try:
                assert p.stdout is not None
                assert p.stdout.readline().strip() == "holding 3000"
            finally:
                p.kill()
        deadline = time.monotonic() + 20
        while True:  # the daemon sees the connection end, and frees what it held
            out, _ = _run(program, shim, d.address, fc, "oom", "4096")
            if out == full or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert out == full
    finally:
        d.stop()
