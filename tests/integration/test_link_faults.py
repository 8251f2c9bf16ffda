"""The nvcc-built ``ci_memory`` through an emulated link (farcuda.daemon.linkproxy) to a memory
daemon: slow links work, broken links fail cleanly.

- Delayed and throttled links (the benchmarks' edge link, 1 Gbit/s and 0.5 ms each way, and a
  slower one on which a 64 MiB copy outlasts the liveness timeout): the program's transcript,
  which prints checksums of every transfer including the 64 MiB round trip, is identical to a
  direct run's, and the bytes really went through.
- The link cut in the middle of the 64 MiB upload and of the 64 MiB download, three ways: a
  silent blackhole (only the client's FARCUDA_LIVENESS_TIMEOUT can notice), a reset and a
  close. The program fails with a CUDA error (cudaErrorDevicesUnavailable) within the
  liveness timeout plus a few seconds, never hangs, never prints a wrong result (what it
  printed before the cut matches the direct run line for line), and the daemon drops the
  session once the link is gone, serving others throughout.
- Half-close in either direction mid-transfer: the same.
- A one-way blackhole, caught by the client's liveness timeout either way: server-to-client
  because nothing arrives any more, client-to-server because the daemon's heartbeats stop
  acknowledging what the client sent (they keep arriving, so only the acknowledged count
  tells). The daemon's client_timeout stays long there, so it cannot be what ends the run.

FARCUDA_LIVENESS_TIMEOUT=3 keeps the file short (~40 s).
"""

from __future__ import annotations

import time

import pytest
from farcuda.daemon.linkproxy import ProxyThread

LIVENESS = 3.0
ENV = {"FARCUDA_LIVENESS_TIMEOUT": str(LIVENESS), "FARCUDA_CONNECT_TIMEOUT": "3"}
MIB = 1 << 20
# ci_memory sends about 9 MiB before its 64 MiB upload starts and receives about 9 MiB before
# its 64 MiB download (measured through the proxy: 75 MB up and 76 MB down in all). The cut
# limit counts both directions together.
MID_UPLOAD = 40 * MIB
MID_DOWNLOAD = 115 * MIB


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, fc):
    d = fc.start_daemon(tmp_path_factory.mktemp("linkd"), "memory")
    yield d
    d.stop()


@pytest.fixture(scope="module")
def exe(program):
    return program("ci_memory")


@pytest.fixture(scope="module")
def direct(exe, shim, daemon, fc) -> list[str]:
    """The transcript of a run without the proxy."""
    r = fc.run_remote(exe, shim, daemon.address, env=ENV)
    assert r.returncode == 0 and "PASSED" in r.stdout, r.stdout + r.stderr
    return r.stdout.splitlines()


def _sessions_gone(daemon, timeout: float = 5.0) -> bool:
    from farcuda.interposer.cli import query_status
    deadline = time.monotonic() + timeout
    while True:
        if not query_status(daemon.address, None)["tenants"]:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _assert_clean_failure(r, direct: list[str], took: float, limit: float) -> None:
    lines = r.stdout.splitlines()
    assert r.returncode != 0, r.stdout
    assert "PASSED" not in r.stdout
    assert lines and lines[-1].startswith("FAIL line") and "cudaError" in lines[-1], r.stdout
    assert "cudaErrorDevicesUnavailable" in lines[-1], lines[-1]
    # no wrong data: everything printed before the failure is what the direct run printed
    assert lines[:-1] == direct[:len(lines) - 1]
    # (the shim's "farcuda: lost the server ..." line is not required: fc_conn_fail wakes the
    # failed request before it writes that line, and a program that exits at once may beat it)
    assert took < limit, f"took {took:.1f} s, limit {limit:.1f} s"


@pytest.mark.parametrize("delay,rate", [(0.0005, 1e9), (0.004, 150e6)],
                         ids=["edge-1gbit-0.5ms", "150mbit-4ms"])
def test_slow_link_is_byte_exact(delay, rate, exe, shim, daemon, direct, fc):
    """On the slower link the 64 MiB upload and download each take longer than the liveness
    timeout: the acknowledgements advance through the upload, and the download (the client
    sends only PINGs meanwhile) is no failure either."""
    with ProxyThread(daemon.address, delay=delay, rate=rate) as p:
        t0 = time.monotonic()
        r = fc.run_remote(exe, shim, p.address, env=ENV, timeout=120)
        took = time.monotonic() - t0
        st = p.stats
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == direct  # every checksum identical
    assert st.bytes_c2s > 64 * MIB and st.bytes_s2c > 64 * MIB
    # the rate really applied: 64 MiB each way cannot beat it
    assert took > 2 * 64 * MIB * 8 / rate * 0.9


def test_idle_client_is_acknowledged(program, shim, daemon, fc):
    """A client that holds its memory for two liveness timeouts, sending only its idle PINGs:
    the daemon acknowledges them as they come, and the program ends normally."""
    r = fc.run_remote(program("ci_hold"), shim, daemon.address, args=("2", "1", str(2 * LIVENESS)),
                      env=ENV)
    assert r.returncode == 0 and "PASSED" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("mode", ["blackhole", "reset", "close"])
@pytest.mark.parametrize("at", [MID_UPLOAD, MID_DOWNLOAD], ids=["upload", "download"])
def test_cut_mid_transfer(mode, at, exe, shim, daemon, direct, fc):
    with ProxyThread(daemon.address, cut_after_bytes=at, cut_mode=mode) as p:
        t0 = time.monotonic()
        r = fc.run_remote(exe, shim, p.address, env=ENV, timeout=LIVENESS + 60)
        took = time.monotonic() - t0
        assert p.stats.cuts == 1
    # a blackhole is noticed by the liveness timeout; a reset or a close at once
    _assert_clean_failure(r, direct, took, (LIVENESS if mode == "blackhole" else 0) + 4.0)
    assert daemon.proc.poll() is None
    assert _sessions_gone(daemon), "the daemon kept the session of a dead link"


@pytest.mark.parametrize("direction,at", [("c2s", 30 * MIB), ("s2c", 40 * MIB)],
                         ids=["client-to-server", "server-to-client"])
def test_half_close_mid_transfer(direction, at, exe, shim, daemon, direct, fc):
    with ProxyThread(daemon.address, half_close_after_bytes=at,
                     half_close_direction=direction) as p:
        t0 = time.monotonic()
        r = fc.run_remote(exe, shim, p.address, env=ENV, timeout=LIVENESS + 60)
        took = time.monotonic() - t0
        assert p.stats.half_closes == 1
        assert _sessions_gone(daemon)
    _assert_clean_failure(r, direct, took, LIVENESS + 4.0)


@pytest.mark.parametrize("direction", ["c2s", "s2c"])
def test_one_way_blackhole(direction, exe, shim, direct, fc, tmp_path):
    """Half the link goes silent mid-upload, and the client's liveness timeout fails it.
    Server-to-client: nothing arrives any more. Client-to-server: heartbeats keep arriving,
    but the count of bytes they acknowledge stops advancing. The daemon's client_timeout is
    60 s, far beyond the limit, so the client alone noticed."""
    d = fc.start_daemon(tmp_path, "memory", config={"client_timeout": 60})
    try:
        at = 30 * MIB if direction == "c2s" else 5 * MIB  # this direction's bytes only
        with ProxyThread(d.address, cut_after_bytes=at, cut_direction=direction) as p:
            t0 = time.monotonic()
            r = fc.run_remote(exe, shim, p.address, env=ENV, timeout=60)
            took = time.monotonic() - t0
            assert p.stats.cuts == 1
            if direction == "c2s":
                # the daemon still holds the session: its side of the link is quiet, not
                # broken (the proxy's close below ends it)
                assert not _sessions_gone(d, timeout=0)
        _assert_clean_failure(r, direct, took, LIVENESS + 4.0)
        if direction == "c2s":
            assert ("has not received what this client sent for 3 s (FARCUDA_LIVENESS_TIMEOUT)"
                    in r.stderr), r.stderr
        assert _sessions_gone(d)
    finally:
        d.stop()


def test_daemon_serves_others_during_a_blackhole(exe, shim, daemon, direct, fc):
    """While one client's link is blackholed (its session still open on the daemon), another
    client runs to completion."""
    import threading

    with ProxyThread(daemon.address, cut_after_bytes=MID_UPLOAD) as p:
        result: dict = {}

        def victim() -> None:
            result["r"] = fc.run_remote(exe, shim, p.address, env=ENV, timeout=LIVENESS + 60)
        t = threading.Thread(target=victim)
        t.start()
        deadline = time.monotonic() + 20
        while p.stats.cuts == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert p.stats.cuts == 1
        other = fc.run_remote(exe, shim, daemon.address, env=ENV)
        assert other.returncode == 0 and other.stdout.splitlines() == direct
        t.join(LIVENESS + 30)
        assert not t.is_alive()
    assert result["r"].returncode != 0
