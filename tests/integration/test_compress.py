"""Bulk copies compressed where the link is slow (wire/compress.py), through the shim and the
in-memory daemon: random, zero and mixed payloads arrive exactly (checksums), compressed or not
as FARCUDA_COMPRESS and the measured link decide."""

from __future__ import annotations

import pytest
from farcuda.daemon.linkproxy import ProxyThread
from farcuda.wire import compress

pytestmark = pytest.mark.skipif(not compress.available(), reason="needs the lz4 package")


def _run(program, shim, address, fc, kind, mib, mode):
    r = fc.run_remote(program("ci_bulk"), shim, address, args=(kind, mib),
                      env={"FARCUDA_REPORT": "1", "FARCUDA_COMPRESS": mode}, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1] == "PASSED", r.stdout
    (line,) = [ln for ln in r.stderr.splitlines() if "report:" in ln]
    fields = dict(kv.split("=") for kv in line.split("report:")[1].split())
    raw, sent = (int(x) for x in fields["compressed"].split("->"))  # both directions
    _run.rate = fields["link_MBps"]  # type: ignore[attr-defined]
    return raw, sent, int(fields["bytes_to_server"]), int(fields["bytes_from_server"])


@pytest.mark.parametrize("kind", ["random", "zeros", "mixed"])
def test_payloads_arrive_exactly_compressed_where_worth_it(program, shim, memory_daemon, fc,
                                                            kind):
    mib = 24
    raw, sent, out, back = _run(program, shim, memory_daemon.address, fc, kind, mib, "on")
    if kind == "random":  # every piece sampled, none worth it
        assert raw == 0 and out > mib << 20 and back > mib << 20
    elif kind == "zeros":  # each way
        assert raw == 2 * mib << 20 and sent < raw / 100 and out < 1 << 20 and back < 1 << 20
    else:  # two thirds of it compresses, the random third stays as it is
        assert raw >= mib << 20 and sent < 0.6 * raw and back < 0.8 * (mib << 20)


def test_off_sends_everything_as_it_is(program, shim, memory_daemon, fc):
    raw, _, out, back = _run(program, shim, memory_daemon.address, fc, "zeros", 8, "off")
    assert raw == 0 and out > 8 << 20 and back > 8 << 20


def test_auto_compresses_on_a_slow_link_only(program, shim, memory_daemon, fc):
    target = (memory_daemon.host, memory_daemon.port)
    raw, _, _, _ = _run(program, shim, memory_daemon.address, fc, "zeros", 8, "auto")
    fast = float(_run.rate)  # type: ignore[attr-defined]
    # loopback: faster than the compressor, so as it is (on a loaded machine the probe may
    # measure less: then the decision must follow what it measured)
    assert (raw == 0) == (fast >= compress.AUTO_BELOW / 1e6), fast
    # the project's emulated edge link: 1 Gbit/s, 0.5 ms each way
    with ProxyThread(f"{target[0]}:{target[1]}", delay=0.0005, rate=1e9) as p:
        raw, sent, out, back = _run(program, shim, p.address, fc, "zeros", 8, "auto")
    assert 60 < float(_run.rate) < 140  # type: ignore[attr-defined]  # 1 Gbit/s: 125 MB/s
    assert raw == 2 * 8 << 20 and out < 5 << 20 and back < 1 << 20  # (out: the probe's 4 MiB)
