"""Compression of bulk payloads (wire/compress.py): exact round trips of random, zero and
mixed data, the per-payload sample, and the per-connection decision."""

from __future__ import annotations

import hashlib
import os

import pytest
from farcuda.wire import compress

pytestmark = pytest.mark.skipif(not compress.available(), reason="needs the lz4 package")

MiB = 1 << 20


def _payloads() -> dict[str, bytes]:
    rnd = os.urandom(4 * MiB)
    block = 64 << 10
    mixed = b"".join(rnd[i:i + block] if (i // block) % 2 else bytes(block)
                     for i in range(0, 4 * MiB, block))
    return {"random": rnd, "zeros": bytes(4 * MiB), "mixed": mixed,
            "text": b"farcuda forwards every CUDA call. " * 100000}


@pytest.mark.parametrize("kind", ["random", "zeros", "mixed", "text"])
def test_round_trips_are_exact(kind):
    data = _payloads()[kind]
    z = compress.compress(data)
    if kind == "random":
        assert z is None and not compress.worth(data)  # sent as it is
        return
    assert compress.worth(data)
    assert z is not None and len(z) < 0.8 * len(data)
    out = compress.decompress(z, len(data))
    assert hashlib.sha256(out).digest() == hashlib.sha256(data).digest()


def test_small_payloads_are_not_sampled():
    assert not compress.worth(bytes(compress.MIN_PIECE - 1))
    assert compress.worth(bytes(compress.MIN_PIECE))


def test_a_corrupt_or_short_block_is_refused():
    data = bytes(MiB)
    z = compress.compress(data)
    assert z is not None
    for bad, size in ((z[:-3], len(data)), (z, len(data) + 1), (b"\xff" * 64, 4096)):
        with pytest.raises(ValueError):
            compress.decompress(bad, size)


def test_the_decision_per_connection():
    slow, fast = 125e6, 3.7e9  # the emulated edge link (1 Gbit/s), loopback
    assert compress.decide("auto", slow) and not compress.decide("auto", fast)
    assert not compress.decide("auto", None)  # not measured: as it is
    assert compress.decide("on", fast) and not compress.decide("off", slow)
    assert compress.mode_from_env(None) == "auto" and compress.mode_from_env(" ON ") == "on"
    with pytest.raises(ValueError):
        compress.mode_from_env("lz4")
