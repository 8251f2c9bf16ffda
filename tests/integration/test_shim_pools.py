"""Stream-ordered allocation and memory pools through the shim, against in-memory daemons.

``ci_pool`` (tests/programs) allocates with cudaMallocAsync/cudaMallocFromPoolAsync, copies
through that memory, frees in stream order (also behind a host function that holds the
stream, while a copy that needs the memory waits there), creates, sets and destroys pools,
reads their attributes and makes every error farcuda answers. Here its transcript is checked
against what farcuda must answer, the daemon's session is watched while a free is pending
and at the end (0 bytes held), a tenant quota makes an allocation wait for a pending free,
and virtual devices of one GPU, of another GPU and of another server share pools as far as
farcuda can let them.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading

import pytest
from farcuda.interposer.cli import query_status

MiB = 1 << 20

# What farcuda must print (the whole single-device transcript, in order).
TRANSCRIPT = f"""\
ci_pool
devices: 1
current pool is the default one: yes
cudaMemGetDefaultMemPool gives it: yes
cudaMemGetMemPool gives it: yes
reuse flags: 1 1 1, release threshold: 0
release threshold set: 18446744073709551615
opportunistic reuse set to 0: 0
default: used=0 reserved=0 used_high=0 reserved_high=0
default after 4 MiB + 3 MiB + 1000 B: used={7 * MiB + 1024} reserved={8 * MiB + 1024} \
used_high={7 * MiB + 1024} reserved_high={8 * MiB + 1024}
copies and memset through async memory: equal
pointer attributes: type 2 device 0
size 0: null
default after the frees: used=0 reserved=0 used_high={7 * MiB + 1024} \
reserved_high={8 * MiB + 1024}
cudaFreeAsync returned while its stream waited: yes
pause pending-free
copy queued before the free saw the memory: yes
same size, same stream: the pending free's memory: yes
allocation after a pending free: ok
default after 200 allocate/free rounds: used=0 reserved=0 used_high={44 * MiB} \
reserved_high={44 * MiB}
pool created, not the default one: yes
pool: used={4 * MiB} reserved={4 * MiB} used_high={4 * MiB} reserved_high={4 * MiB}
default: used=0 reserved=0 used_high={44 * MiB} reserved_high={44 * MiB}
current pool after cudaDeviceSetMemPool: the new one
pool after cudaMallocAsync: used={5 * MiB} reserved={6 * MiB} used_high={5 * MiB} \
reserved_high={6 * MiB}
pool after resetting the highs and a free: used={3 * MiB} reserved={4 * MiB} \
used_high={5 * MiB} reserved_high={6 * MiB}
destroyed with 2 allocations out; current pool: the default
allocate from a destroyed pool: cudaErrorInvalidValue
attribute of a destroyed pool: cudaErrorInvalidValue
set a destroyed pool current: cudaErrorInvalidValue
destroy it again: cudaErrorInvalidValue
made-up pool handle: cudaErrorInvalidValue
null pool handle: cudaErrorInvalidValue
destroy the default pool: cudaErrorInvalidValue
free inside an allocation: cudaErrorInvalidValue
free host memory: cudaErrorInvalidValue
free null: cudaErrorInvalidValue
free it twice: cudaErrorInvalidValue
cudaFree after cudaFreeAsync: cudaErrorInvalidValue
null result pointer: cudaErrorInvalidValue
set UsedMemHigh to 5: cudaErrorInvalidValue
set UsedMemCurrent: cudaErrorInvalidValue
unknown attribute: cudaErrorInvalidValue
default pool of device 999: cudaErrorInvalidDevice
set a pool for device 999: cudaErrorInvalidDevice
create a host pool: cudaErrorNotSupported
create an IPC pool: cudaErrorNotSupported
create a managed pool: cudaErrorNotSupported
create a pool of no type: cudaErrorInvalidValue
create a pool on device 999: cudaErrorInvalidDevice
create a pool with reserved bytes set: cudaErrorInvalidValue
past the pool's maxSize: cudaErrorMemoryAllocation
cudaMallocAsync in a capturing stream: cudaErrorStreamCaptureUnsupported
cudaFreeAsync in a capturing stream: cudaErrorStreamCaptureUnsupported
cudaFreeAsync of cudaMalloc'd memory: cudaSuccess
access of device 0 to its pool: 3
grant device 0 read/write: cudaSuccess
take device 0's access away: cudaErrorInvalidDevice
access for device 999: cudaErrorInvalidDevice
default at the end: used=0 reserved=0 used_high={44 * MiB} reserved_high={44 * MiB}
pause end
PASSED
"""

# One line on stderr for each thing farcuda refuses, once.
REFUSALS = ("pools of host memory", "shareable (IPC) handle types", "managed memory pools",
            "capturing stream (graph memory nodes)")


def _farcuda_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("farcuda:")]


@pytest.mark.parametrize("mode", ["preload", "dropin"])
def test_pool_transcript(mode, program, shim, memory_daemon, fc):
    r = fc.run_remote(program("ci_pool"), shim, memory_daemon.address, mode=mode)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == TRANSCRIPT, r.stdout
    lines = _farcuda_lines(r.stderr)
    assert len(lines) == len(REFUSALS), r.stderr
    for what in REFUSALS:
        assert sum(what in ln for ln in lines) == 1, r.stderr


def test_pool_transcript_per_thread_default_stream(tmp_path, shim, memory_daemon, fc):
    """Built with --default-stream per-thread, the program calls the _ptsz entry points."""
    nvcc = fc.programs_build.nvcc_path()
    if not nvcc.exists():
        pytest.skip("nvcc not found")
    exe = tmp_path / "ci_pool_ptsz"
    subprocess.run([str(nvcc), "-cudart", "shared", "-O2", "-std=c++17",
                    "--default-stream", "per-thread", "-gencode", "arch=compute_90,code=sm_90",
                    "-o", str(exe), str(fc.programs_build.HERE / "ci_pool.cu"), "-lpthread"],
                   check=True)
    imported = subprocess.run(["nm", "-D", str(exe)], capture_output=True, text=True).stdout
    assert "cudaMallocAsync_ptsz" in imported and "cudaFreeAsync_ptsz" in imported
    r = fc.run_remote(exe, shim, memory_daemon.address)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == TRANSCRIPT, r.stdout


def _session_memory(address: str, pid: int) -> int:
    mine = [t for t in query_status(address, None)["tenants"]
            if t.get("identity", {}).get("pid") == pid]
    assert len(mine) == 1, mine
    return mine[0]["memory_held"]


def test_pending_free_holds_memory_until_the_stream_gets_there(tmp_path, program, shim,
                                                              memory_daemon):
    """While cudaFreeAsync waits behind a host function its memory is still the client's (and
    a copy queued before the free still reads it); once the program freed everything and
    synchronized, its session holds 0 bytes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA_")
           and k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")}
    env.update(LD_PRELOAD=str(shim), FARCUDA_SERVER=memory_daemon.address)
    err = tmp_path / "stderr.txt"
    lines: queue.Queue[str | None] = queue.Queue()
    with open(err, "w") as errf, subprocess.Popen(
            [str(program("ci_pool")), "--pause"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=errf, text=True, env=env) as proc:

        def read() -> None:
            for ln in proc.stdout:
                lines.put(ln.rstrip("\n"))
            lines.put(None)
        reader = threading.Thread(target=read, daemon=True)
        reader.start()

        def until(word: str) -> list[str]:
            seen = []
            while True:
                ln = lines.get(timeout=60)
                assert ln is not None, "\n".join(seen) + err.read_text()
                seen.append(ln)
                if ln == word:
                    return seen

        def go_on() -> None:
            proc.stdin.write("\n")
            proc.stdin.flush()

        try:
            until("pause pending-free")
            # the 4 MiB being freed (behind the host function) and the 4 MiB the copy writes
            assert _session_memory(memory_daemon.address, proc.pid) == 8 * MiB
            go_on()
            seen = until("pause end")
            assert "copy queued before the free saw the memory: yes" in seen
            assert _session_memory(memory_daemon.address, proc.pid) == 0
            go_on()
            assert until("PASSED")
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            reader.join(timeout=10)


def test_allocation_waits_for_a_pending_free_under_a_quota(tmp_path, program, shim, fc):
    """48 MiB per tenant: a 44 MiB allocation fits only once a 40 MiB one's stream-ordered
    free happened; the daemon waits for it instead of refusing."""
    d = fc.start_daemon(tmp_path, "memory", config={"limits": {"memory_per_tenant": "48MiB"},
                                                    "log_level": "info"})
    try:
        r = fc.run_remote(program("ci_pool"), shim, d.address)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout == TRANSCRIPT
        assert "would hold 84.0 MiB" in d.log()  # it did have to wait
    finally:
        d.stop()


def test_pools_across_devices_and_servers(tmp_path, program, shim, fc):
    """Devices 0 and 1 are the same GPU of one server (a pool's memory is reachable from
    both), device 2 another GPU of that server, device 3 a GPU of another server. A pool of
    each device is used and freed in the order of a stream of device 0."""
    a = fc.start_daemon(tmp_path, "memory", backend_options={"gpus": 2})
    b = fc.start_daemon(tmp_path, "memory")
    try:
        devices = f"{a.address}/0,{a.address}/0,{a.address}/1,{b.address}/0"
        r = fc.run_remote(program("ci_pool"), shim, None, env={"FARCUDA_DEVICES": devices})
        assert r.returncode == 0, r.stdout + r.stderr
        assert "devices: 4" in r.stdout
        granted = {1: "cudaSuccess, access now 3", 2: "cudaErrorNotSupported, access now 0",
                   3: "cudaErrorNotSupported, access now 0"}
        for dev, what in granted.items():
            assert f"device {dev}: grant read/write: {what}\n" in r.stdout, r.stdout
            assert (f"device {dev}: its pool on a stream of device 0: equal, used after the "
                    "free 0\n") in r.stdout, r.stdout
        assert r.stdout.endswith("pause end\nPASSED\n")
        lines = _farcuda_lines(r.stderr)
        assert sum("from another GPU" in ln for ln in lines) == 1, r.stderr
    finally:
        a.stop()
        b.stop()
