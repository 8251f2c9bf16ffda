"""The allocator keeps the address space next to every extent mapped (daemon/allocator.py):
a floor below the first extent, and an apron at each side of every hole next to an extent.

A recording backend stands in for the driver's mapping calls, so the layout is checked
exactly: extents and aprons never overlap, every hole has the aprons its neighbours call for,
failures leave nothing behind, and everything is unmapped at the end."""

from __future__ import annotations

import random

import pytest
from farcuda.daemon.allocator import WindowAllocator, pow2_pieces

MB = 1 << 20
APRON = 64 * MB
FLOOR = 256 * MB


class Recorder:
    def __init__(self):
        self.extents: dict[int, int] = {}
        self.aprons: dict[int, int] = {}
        self.fail_apron_after: int | None = None
        self.fail_extent = False

    def map_extent(self, base, size):
        if self.fail_extent:
            raise MemoryError("out of device memory")
        self._free(base, size)
        self.extents[base] = size

    def unmap_extent(self, base, size):
        assert self.extents.pop(base) == size

    def map_apron(self, base, size):
        assert 0 < size <= APRON and size % (2 * MB) == 0
        if self.fail_apron_after is not None:
            if self.fail_apron_after == 0:
                self.fail_apron_after = None  # one failure: undoing it maps again
                raise MemoryError("no room for the mapping")
            self.fail_apron_after -= 1
        self._free(base, size)
        self.aprons[base] = size

    def unmap_apron(self, base, size):
        assert self.aprons.pop(base) == size

    def _free(self, base, size):
        for b, n in list(self.extents.items()) + list(self.aprons.items()):
            assert base + size <= b or b + n <= base, f"0x{base:x}+{size} overlaps 0x{b:x}+{n}"

    def mapped(self, addr):
        return any(b <= addr < b + n for b, n in [*self.extents.items(), *self.aprons.items()])


def make(rec, base=1 << 40, size=1 << 38, apron=APRON, floor=FLOOR):
    return WindowAllocator(base, size, 2 * MB, rec.map_extent, rec.unmap_extent, None, apron,
                           rec.map_apron, rec.unmap_apron, floor)


def check_layout(a, rec):
    """Every address within an apron of an extent (and the floor) is mapped; nothing else."""
    exts = sorted(rec.extents.items())
    assert [(e.base, e.size) for e in sorted(a._extents.values(), key=lambda e: e.base)] == exts
    if exts:
        for addr in range(a.base, a.base + a.floor, 2 * MB):
            assert rec.mapped(addr), "the floor"
    for b, n in exts:
        for d in range(0, APRON, 2 * MB):
            lo, hi = b - 1 - d, b + n + d
            if lo >= a.base:
                assert rec.mapped(lo), f"{d} before 0x{b:x}"
            if hi < a.base + a.size:
                assert rec.mapped(hi), f"{d} after 0x{b:x}+{n}"
    # and no apron further than one apron from an extent (outside the floor)
    for b, n in rec.aprons.items():
        if b >= a.base + a.floor:
            assert any(e - APRON <= b and b + n <= e + s + APRON for e, s in exts)


def test_packed_extents_with_a_floor_and_aprons():
    rec = Recorder()
    a = make(rec)
    small = a.alloc(4096)
    assert small == a.base + FLOOR  # below the first allocation: mapped, never allocated
    big = a.alloc(3 * MB + 1)
    assert big == small + 2 * MB  # packed against the arena, as the driver packs its own
    other = a.alloc(64 * MB)
    check_layout(a, rec)
    assert a.bytes_mapped == sum(rec.extents.values())  # aprons are not the client's memory
    assert a.find(small - 1) is None and a.find(other + 64 * MB) is None  # no copies there
    a.free(big)  # a hole of 4 MiB between two extents: mapped whole
    check_layout(a, rec)
    assert all(rec.mapped(x) for x in range(big, big + 4 * MB, 2 * MB))
    assert a.alloc(2 * MB) == big  # the hole is used again first
    check_layout(a, rec)
    for p in list(a._blocks):
        a.free(p)
    check_layout(a, rec)
    assert rec.extents == {} and set(rec.aprons) <= set(range(a.base, a.base + FLOOR, APRON))
    a.release_all()
    assert rec.aprons == {}


def test_random_sequences_keep_the_layout():
    rng = random.Random(12)
    rec = Recorder()
    a = make(rec)
    live = []
    for step in range(400):
        if live and rng.random() < 0.45:
            a.free(live.pop(rng.randrange(len(live))))
        else:
            n = rng.choice([100, 4096, 300000, MB, 2 * MB, 5 * MB + 7, 70 * MB, 200 * MB])
            live.append(a.alloc(n))
        if step % 20 == 0:
            check_layout(a, rec)
    check_layout(a, rec)
    a.release_all()
    assert rec.extents == {} and rec.aprons == {}


def test_failures_leave_nothing_behind(caplog):
    rec = Recorder()
    a = make(rec)
    keep = a.alloc(8 * MB)
    before = (dict(rec.extents), dict(rec.aprons))
    rec.fail_extent = True
    with pytest.raises(MemoryError):
        a.alloc(8 * MB)
    assert (rec.extents, rec.aprons) == before
    rec.fail_extent = False
    # an apron that cannot be mapped is left out: the allocation itself succeeds
    rec.fail_apron_after = 0
    second = a.alloc(8 * MB)
    assert second == keep + 8 * MB and second + 8 * MB not in rec.aprons
    third = a.alloc(8 * MB)  # the next one maps its apron again
    check_layout(a, rec)
    a.free(second)
    check_layout(a, rec)
    a.free(third)
    check_layout(a, rec)
    assert sum("no mapped apron" in r.message for r in caplog.records) == 1


def test_without_aprons_nothing_is_mapped_outside():
    rec = Recorder()
    a = make(rec, apron=0, floor=0)
    assert a.alloc(100) == a.base and rec.aprons == {}
    with pytest.raises(ValueError):
        make(Recorder(), apron=MB)
    with pytest.raises(ValueError):
        make(Recorder(), apron=0, floor=FLOOR)


def test_pieces_of_fixed_sizes():
    assert pow2_pieces(5 * 2 * MB, APRON) == [8 * MB, 2 * MB]
    assert pow2_pieces(APRON, APRON) == [APRON]
    assert pow2_pieces(3 * APRON + 6 * MB, APRON) == [APRON] * 3 + [4 * MB, 2 * MB]
    for k in range(1, 80):
        pieces = pow2_pieces(k * 2 * MB, APRON)
        assert sum(pieces) == k * 2 * MB and len(pieces) <= 6 + k * 2 * MB // APRON
        assert all(p <= APRON and p & (p - 1) == 0 for p in pieces)


# ---------------------------------------------------------------- the client's arenas

def test_a_client_arena_is_an_extent_with_aprons_that_only_the_client_fills():
    rec = Recorder()
    a = make(rec)
    base = a.client_arena()
    assert rec.extents == {base: 2 * MB} and base == a.base + FLOOR
    check_layout(a, rec)
    own = a.alloc(4096)  # the daemon's own small allocations go to an arena of their own
    assert not base <= own < base + 2 * MB
    a.adopt(base + 512, 100)
    a.adopt(base, 512)
    assert a.find(base + 700) == (base + 512, 512) and a.owns(base)
    assert a.find(base + 1024) is None  # the arena itself is not an allocation
    for ptr, size in [(base + 256, 8), (base + 512, 8), (base + 600, 8), (base - 512, 8),
                      (base + 2 * MB, 8), (base + 1024, 1 << 20), (base + 1024, 0),
                      (base + 2 * MB - 512, 1024)]:
        with pytest.raises(ValueError):
            a.adopt(ptr, size)
    assert a.bytes_in_use == 4096 + 1024
    a.free(base)
    a.free(base + 512)
    assert rec.extents.get(base) == 2 * MB  # an empty client arena stays until given back
    a.adopt(base + 1024, 1000)
    with pytest.raises(ValueError):
        a.release_arena(base)  # not empty
    a.free(base + 1024)
    a.release_arena(base)
    assert base not in rec.extents
    with pytest.raises(ValueError):
        a.release_arena(base)
    check_layout(a, rec)
    a.client_arena()
    a.release_all()
    assert not rec.extents and not rec.aprons
