"""Client configuration: the device map, rCUDA's variables, precedence, and bad entries."""

from __future__ import annotations

import pytest
from farcuda.interposer.config import ConfigError, DeviceEntry, from_env, parse_devices


def test_device_map_entries():
    got = parse_devices("a:7420/0,a:7420/0, b/1@sm=8,[::1]:99/2,c")
    assert [(e.host, e.port, e.gpu, e.sm) for e in got] == [
        ("a", 7420, 0, 0), ("a", 7420, 0, 0), ("b", 7420, 1, 8), ("::1", 99, 2, 0),
        ("c", 7420, 0, 0)]


@pytest.mark.parametrize("bad, words", [
    ("a:x/0", "bad port"), ("a:70000/0", "bad port"), ("a:7420/z", "not a number"),
    ("a/0@sm=0", "sm=N"), ("a/0@gpus=1", "unknown option"), (",", "lists no device"),
    ("a:/0", "empty port"), ("a/0,,b/1", "entry 1"),
])
def test_bad_entries_name_themselves(bad, words):
    with pytest.raises(ConfigError, match=words):
        parse_devices(bad)


def test_precedence_and_rcuda_habit():
    env = {"FARCUDA_DEVICES": "a/0", "FARCUDA_DEVICE_COUNT": "1", "FARCUDA_DEVICE_0": "b",
           "FARCUDA_SERVER": "c"}
    assert from_env(env).devices == [DeviceEntry("a", 7420, 0, 0, "a/0")]
    del env["FARCUDA_DEVICES"]
    cfg = from_env(env)
    assert [(d.host, d.gpu) for d in cfg.devices] == [("b", 0)]
    assert cfg.source == "FARCUDA_DEVICE_COUNT"
    del env["FARCUDA_DEVICE_COUNT"]
    cfg = from_env(env)
    assert cfg.devices is None and cfg.server == ("c", 7420)
    assert not from_env({}).configured


def test_rcuda_habit_errors():
    with pytest.raises(ConfigError, match="FARCUDA_DEVICE_1 is not set"):
        from_env({"FARCUDA_DEVICE_COUNT": "2", "FARCUDA_DEVICE_0": "a:1/0"})
    with pytest.raises(ConfigError, match="positive"):
        from_env({"FARCUDA_DEVICE_COUNT": "zero"})


def test_timeouts():
    cfg = from_env({"FARCUDA_CONNECT_TIMEOUT": "1.5", "FARCUDA_LIVENESS_TIMEOUT": "3"})
    assert (cfg.connect_timeout, cfg.liveness_timeout) == (1.5, 3.0)
    with pytest.raises(ConfigError, match="FARCUDA_CONNECT_TIMEOUT"):
        from_env({"FARCUDA_CONNECT_TIMEOUT": "soon"})
