"""The front's admission rules, without sockets: per-peer connection rates and handshake
places (daemon/admission.py), session places per tenant and in all (daemon/tenants.py), the
log throttle, the [limits] and [metrics] settings, and the metrics' counters across the end
of a session (daemon/metrics.py)."""

from __future__ import annotations

import re
from importlib import resources

import pytest
from farcuda.daemon.admission import SPOKEN_PER_PEER, Admission, LogThrottle, peer_key
from farcuda.daemon.config import ConfigError, DaemonConfig, from_dict
from farcuda.daemon.metrics import MetricsLedger
from farcuda.daemon.tenants import TenantLedger

# (packages of the test extra are not on the offline GPU machine: skipped there)
text_string_to_metric_families = pytest.importorskip(
    "prometheus_client.parser").text_string_to_metric_families


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_rate_is_a_bucket_of_twice_the_rate_per_peer():
    clock = Clock()
    a = Admission(rate=5, handshakes_per_peer=100, handshakes_total=1000, clock=clock)
    for _ in range(10):  # a burst of twice the rate passes
        assert a.connect("10.0.0.1") is None
        a.handshake_done("10.0.0.1")
    limit, reason = a.connect("10.0.0.1")
    assert limit == "connections_per_second_per_peer"
    assert "limits.connections_per_second_per_peer" in reason and "10.0.0.1" in reason
    assert a.connect("10.0.0.2") is None  # another peer has its own bucket
    clock.t += 0.2  # one more token (5 a second)
    assert a.connect("10.0.0.1") is None
    assert a.connect("10.0.0.1")[0] == "connections_per_second_per_peer"
    clock.t += 60  # refilled, up to the burst and no further
    assert sum(a.connect("10.0.0.1") is None for _ in range(20)) == 10


def test_handshake_places_per_peer_and_in_all():
    a = Admission(rate=1000, handshakes_per_peer=2, handshakes_total=3, clock=Clock())
    assert a.connect("p") is None and a.connect("p") is None
    assert a.connect("p")[0] == "handshakes_per_peer"
    assert a.connect("q") is None
    assert a.connect("r")[0] == "handshakes_total"  # all three places are taken
    a.handshake_done("p")
    assert a.connect("r") is None  # a place came back
    assert a.shaking == 3
    a.handshake_done("nobody")  # (an unknown peer frees nothing)
    assert a.shaking == 3


def test_refusals_told_are_bounded_per_peer():
    a = Admission(rate=1, handshakes_per_peer=1, handshakes_total=1, clock=Clock())
    told = [a.may_speak("p") for _ in range(SPOKEN_PER_PEER + 3)]
    assert told == [True] * SPOKEN_PER_PEER + [False] * 3
    assert a.may_speak("q")
    a.spoken("p")
    assert a.may_speak("p") and not a.may_speak("p")


def test_idle_peers_are_forgotten():
    clock = Clock()
    a = Admission(rate=10, handshakes_per_peer=5, handshakes_total=10**6, clock=clock)
    for i in range(3000):
        assert a.connect(f"10.1.{i // 256}.{i % 256}") is None
        a.handshake_done(f"10.1.{i // 256}.{i % 256}")
    clock.t += 10  # every bucket has refilled: those peers are as new
    a.connect("10.9.9.9")
    assert a.peers() < 1100


@pytest.mark.parametrize("host, key", [
    ("192.0.2.7", "192.0.2.7"),
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
    ("fe80::1%eth0", "fe80::/64"),
])
def test_peer_key(host, key):
    assert peer_key(host) == key


def test_log_throttle_says_what_it_held_back():
    clock = Clock()
    t = LogThrottle(interval=60, clock=clock)
    got = [t.allow(("p", "sessions_total"))[0] for _ in range(5)]
    assert got == [True, False, False, False, False]
    assert t.allow(("q", "sessions_total")) == (True, 0)
    assert t.allow(("p", "auth"), burst=2)[0] and t.allow(("p", "auth"), burst=2)[0]
    assert not t.allow(("p", "auth"), burst=2)[0]
    clock.t += 61
    assert sorted(t.flush()) == [(("p", "auth"), 1), (("p", "sessions_total"), 4)]
    assert t.flush() == []
    assert t.allow(("p", "sessions_total")) == (True, 0)
    t.allow(("p", "sessions_total"))
    clock.t += 61
    assert t.allow(("p", "sessions_total")) == (True, 1)  # the next event says it instead


def test_session_places():
    led = TenantLedger(sessions_total=3, sessions_per_tenant=2)
    assert led.admit("alice") is None and led.admit("alice") is None
    limit, reason = led.admit("alice")
    assert limit == "sessions_per_tenant" and "'alice'" in reason
    assert "limits.sessions_per_tenant" in reason
    assert led.admit("bob") is None
    limit, reason = led.admit("carol")
    assert limit == "sessions_total" and "limits.sessions_total" in reason
    led.withdraw("bob")  # its worker did not start
    assert led.admit("carol") is None
    led.join(1, "alice")
    led.join(2, "alice")
    led.join(3, "carol")
    assert led.sessions_of() == {"alice": 2, "carol": 1}
    assert led.admit("bob")[0] == "sessions_total"
    led.forget(1)
    assert led.admit("alice") is None
    led.join(4, "alice")
    assert led.sessions_of() == {"alice": 2, "carol": 1}


def test_limits_settings():
    cfg = from_dict({"prestart": 2, "limits": {
        "sessions_total": 8, "sessions_per_tenant": 2, "handshakes_total": 10,
        "handshakes_per_peer": 3, "connections_per_second_per_peer": 0.5,
        "handshake_timeout": 1.5}, "metrics": {"listen": "127.0.0.1:0"}})
    assert (cfg.sessions_total, cfg.sessions_per_tenant, cfg.handshakes_total,
            cfg.handshakes_per_peer) == (8, 2, 10, 3)
    assert cfg.connections_per_second_per_peer == 0.5 and cfg.handshake_timeout == 1.5
    assert cfg.metrics_listen == ("127.0.0.1", 0)


@pytest.mark.parametrize("data, words", [
    ({"limits": {"sessions_total": 0}}, "sessions_total must be an integer >= 1"),
    ({"limits": {"handshakes_per_peer": 2.5}}, "handshakes_per_peer must be an integer"),
    ({"limits": {"handshake_timeout": "5"}}, "handshake_timeout must be a positive number"),
    ({"limits": {"connections_per_second_per_peer": -1}}, "must be a positive number"),
    ({"limits": {"sessions": 3}}, "unknown setting"),
    ({"prestart": 9, "limits": {"sessions_total": 4}}, r"prestart \(9\) is more than"),
    ({"metrics": {"listen": "x:y"}}, "bad port"),
    ({"metrics": {"listen": 9420}}, "host:port string"),
    ({"metrics": {"port": 9420}}, "unknown setting"),
    ({"metrics": "127.0.0.1:9420"}, r"\[metrics\] must be a table"),
])
def test_bad_limits_settings(data, words):
    with pytest.raises(ConfigError, match=words):
        from_dict(data)


def test_example_file_states_the_defaults():
    """daemon/farcudad.toml shows the defaults of the limits in comments: they must be the
    defaults the code has."""
    text = resources.files("farcuda.daemon").joinpath("farcudad.toml").read_text()
    shown = dict(re.findall(r"(?m)^# (\w+) = ([\d.]+)\s", text))
    defaults = DaemonConfig()
    keys = ("sessions_total", "sessions_per_tenant", "handshakes_total",
            "handshakes_per_peer", "connections_per_second_per_peer", "handshake_timeout")
    for key in keys:
        assert key in shown, key
        assert float(shown[key]) == getattr(defaults, key), key


def _samples(text: str) -> dict:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_counters_survive_the_end_of_a_session():
    m = MetricsLedger()
    front = {"version": "0", "limits": {"sessions_total": 4}, "sessions_started": 1,
             "refused": {"auth": 2}, "handshake_failures": {}, "worker_failures": 0,
             "handshakes": 0, "idle": 1}
    st = {"session": 1, "counts": {"MALLOC": 3}, "errors": {"1": 2}, "bytes_in": 100,
          "bytes_out": 50, "memory_held": 4096, "pending": 1}
    live = _samples(m.render([("alice", st)], {"gpus": []}, front))
    key = ("farcudad_calls_total", (("kind", "MALLOC"), ("tenant", "alice")))
    assert live[key] == 3
    assert live[("farcudad_call_errors_total",
                 (("error", "cudaErrorInvalidValue"), ("tenant", "alice")))] == 2
    assert live[("farcudad_sessions", (("tenant", "alice"),))] == 1
    assert live[("farcudad_memory_held_bytes", (("tenant", "alice"),))] == 4096
    assert live[("farcudad_refused_total", (("reason", "auth"),))] == 2
    # it ends with one more call than the last scrape saw
    m.retire("alice", dict(st, counts={"MALLOC": 4}), None)
    after = _samples(m.render([], {"gpus": []}, front))
    assert after[key] == 4
    assert ("farcudad_sessions", (("tenant", "alice"),)) not in after
    assert after[("farcudad_bytes_total", (("direction", "in"), ("tenant", "alice")))] == 100


def test_metrics_labels_are_bounded():
    m = MetricsLedger()
    labels = {m.label(f"10.0.{i // 256}.{i % 256}") for i in range(1500)}
    assert len(labels) == 1001 and "other" in labels
    assert m.label("10.0.0.5") == "10.0.0.5"  # one already counted keeps its label


def test_metrics_escape_label_values():
    m = MetricsLedger()
    front = {"version": 'x"y\\z\n', "limits": {}, "sessions_started": 0, "refused": {},
             "handshake_failures": {}, "worker_failures": 0, "handshakes": 0, "idle": 0}
    got = _samples(m.render([], {"gpus": []}, front))
    assert got[("farcudad_info", (("version", 'x"y\\z\n'),))] == 1
