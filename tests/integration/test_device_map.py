"""A device map over two daemons: every call reaches the daemon of its virtual device.

Four virtual devices alternate between two in-memory daemons; the program gives each device
its own memory, copies between devices (staged through the client across daemons, on the
server within one) and launches one kernel per device with the device's index as argument,
so each daemon's launch record shows exactly which virtual devices it served.
"""

from __future__ import annotations

import time

import pytest


def test_four_devices_over_two_daemons(program, shim, tmp_path, fc):
    a = fc.start_daemon(tmp_path)
    b = fc.start_daemon(tmp_path)
    try:
        devices = f"{a.address}/0,{b.address}/0,{a.address}/0,{b.address}/0"
        r = fc.run_remote(program("ci_devices"), shim, None, env={"FARCUDA_DEVICES": devices})
        assert r.returncode == 0, r.stdout + r.stderr
        assert "devices 4" in r.stdout and "mismatches 0" in r.stdout
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(a.launches()) + len(b.launches()) < 4:
            time.sleep(0.05)
        tags = {name: sorted(int.from_bytes(bytes.fromhex(x["params"][:8]), "little")
                             for x in d.launches()) for name, d in (("a", a), ("b", b))}
        assert tags == {"a": [0, 2], "b": [1, 3]}
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize("spec, words", [
    ("127.0.0.1:1/0,bogus:port/1", "FARCUDA_DEVICES entry 1"),
    ("127.0.0.1:1/x", "GPU index"),
])
def test_bad_map_is_a_clear_error(spec, words, program, shim, fc):
    r = fc.run_remote(program("ci_devices"), shim, None, env={"FARCUDA_DEVICES": spec})
    assert r.returncode != 0
    assert words in r.stderr
    assert r.stderr.count("farcuda:") == 1, r.stderr


def test_missing_gpu_index_names_the_entry(shim, memory_daemon, program, fc):
    r = fc.run_remote(program("ci_devices"), shim, None,
                      env={"FARCUDA_DEVICES": f"{memory_daemon.address}/5"})
    assert r.returncode != 0
    assert "no GPU 5" in r.stderr and "FARCUDA_DEVICES" in r.stderr, r.stderr
