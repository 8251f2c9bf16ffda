"""The pool file: its units, names, errors; and the ledger's claims under contention."""

from __future__ import annotations

import json
import multiprocessing
import time

import pytest
from farcuda.cluster.ledger import Ledger, Shortage
from farcuda.cluster.pool import PoolError, from_dict, load

POOL = {
    "name": "lab",
    "servers": [
        {"address": "gpu-a:7420", "gpus": 2},
        {"address": "gpu-b", "gpus": [1, 3]},
        {"address": "gpu-c:7421", "gpus": [0], "slices": 3, "sm": 44, "nodes": ["e1", "e2"]},
    ],
}


def test_units_names_and_licenses(tmp_path):
    pool = from_dict(POOL)
    assert [u.id for u in pool.units] == [
        "gpu-a:7420/0", "gpu-a:7420/1", "gpu-b:7420/1", "gpu-b:7420/3",
        "gpu-c:7421/0#0", "gpu-c:7421/0#1", "gpu-c:7421/0#2"]
    assert [u.device for u in pool.of_kind("vgpu")] == ["gpu-c:7421/0@sm=44"] * 3
    assert pool.licenses() == {"lab_gpu": 4, "lab_vgpu": 3}
    assert pool.resource("vgpu") == "farcuda.io/vgpu"
    assert [u.nodes for u in pool.of_kind("vgpu")] == [("e1",), ("e2",), ("e1",)]
    assert pool.role_of("gpu-c:7421", 0) == "vgpu 3x44" and pool.role_of("gpu-b:7420", 1) \
        == "gpu" and pool.role_of("gpu-b:7420", 0) is None
    (tmp_path / "t").write_text("s3cret\n")
    f = tmp_path / "pool.toml"
    f.write_text('token_file = "t"\n[[servers]]\naddress = "[::1]:9"\ngpus = 1\n')
    p = load(f)
    assert p.read_token() == "s3cret" and p.units[0].device == "[::1]:9/0"


@pytest.mark.parametrize("data, words", [
    ({"servers": []}, "no [[servers]]"),
    ({"servers": [{"gpus": 1}]}, "address"),
    ({"servers": [{"address": "a:1", "gpus": 0}]}, "gpus must be an integer >= 1"),
    ({"servers": [{"address": "a:1", "sm": 8}]}, "set slices too"),
    ({"servers": [{"address": "a:1", "gpus": [0]}, {"address": "a:1", "gpus": [0]}]},
     "listed twice"),
    ({"name": "a-b", "servers": [{"address": "a:1"}]}, "letters, digits"),
    ({"servers": [{"address": "a:1", "colour": 1}]}, "unknown setting(s) colour"),
    ({"servers": [{"address": "a:x"}]}, "bad port"),
])
def test_bad_pool_files_say_what_is_wrong(data, words):
    with pytest.raises(PoolError, match=None) as e:
        from_dict(data, "p.toml")
    assert words in str(e.value) and "p.toml" in str(e.value)


def test_claims_pack_and_release(tmp_path):
    led = Ledger(tmp_path / "ledger.json", from_dict(POOL))
    one = led.claim("j1", {"gpu": 1})
    two = led.claim("j2", {"gpu": 2})
    # the smallest server that holds a claim whole: j2 lands on one server, not split
    assert len({u.server for u in two}) == 1 and one[0] not in two
    assert led.claim("j1", {"gpu": 1}) == one  # asked again: the same answer
    with pytest.raises(Shortage, match="held by j1 \\(1\\), j2 \\(2\\)"):
        led.claim("j3", {"gpu": 2})
    sl = led.claim("j3", {"gpu": 1, "vgpu": 2})
    assert [u.kind for u in sl] == ["gpu", "vgpu", "vgpu"] and sl[1] != sl[2]
    assert sorted(led.release("j2")) == sorted(u.id for u in two)
    assert led.release("j2") == []
    state = json.loads((tmp_path / "ledger.json").read_text())
    assert set(state["claims"]) == {"j1", "j3"} and set(state["released"]) >= {
        u.id for u in two}
    with pytest.raises(Shortage, match="has 4"):
        led.claim("big", {"gpu": 5})


def test_a_claim_takes_the_unit_free_the_longest(tmp_path):
    led = Ledger(tmp_path / "l.json", from_dict({"servers": [{"address": "a:1", "gpus": 3}]}))
    first = led.claim("x", {"gpu": 1})[0]
    led.release("x")
    assert led.claim("y", {"gpu": 1})[0] != first


def test_a_claim_waits_for_a_release_then_reaps_the_gone(tmp_path):
    led = Ledger(tmp_path / "l.json", from_dict({"servers": [{"address": "a:1", "gpus": 1}]}))
    led.claim("old", {"gpu": 1})
    t0 = time.monotonic()
    asked = []
    got = led.claim("new", {"gpu": 1}, wait=0.3, reap=lambda o: asked.append(o) or {"old"})
    assert got[0].id == "a:1/0" and asked == [{"old"}] and time.monotonic() - t0 >= 0.3
    with pytest.raises(Shortage):
        led.claim("third", {"gpu": 1}, wait=0.1, reap=lambda o: set())


def _claimer(path, pool, owner, out):
    led = Ledger(path, from_dict(pool))
    try:
        out.put((owner, [u.id for u in led.claim(owner, {"gpu": 1})]))
    except Shortage:
        out.put((owner, None))


def test_concurrent_claims_never_share_a_unit(tmp_path):
    pool = {"servers": [{"address": "a:1", "gpus": 4}, {"address": "b:1", "gpus": 4}]}
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(tmp_path / "l.json", pool, f"j{i}", out))
             for i in range(12)]
    for p in procs:
        p.start()
    got = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
    won = [u for units in got.values() if units for u in units]
    assert len(won) == 8 and len(set(won)) == 8
    assert sum(units is None for units in got.values()) == 4
    assert Ledger(tmp_path / "l.json", from_dict(pool)).claims() == {
        o: units for o, units in got.items() if units}
