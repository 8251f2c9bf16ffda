"""Which launch a fault is blamed on (daemon/faults.py), and the allocator's aprons."""

from __future__ import annotations

import pytest
from farcuda.daemon.allocator import WindowAllocator
from farcuda.daemon.faults import STICKY, LaunchLog, describe

MB = 1 << 20


def test_launch_log_window():
    log = LaunchLog()
    assert log.window() == (None, None)
    log.launched(7)
    log.synced()
    assert log.window() == (None, (1, 7))
    log.launched(8)
    log.launched(9)
    assert log.window() == ((2, 8), (3, 9))
    log.synced()
    log.launched(4)
    assert log.window() == ((4, 4), (4, 4))


def test_describe_names_the_culprit():
    assert describe(700, (3, "wild"), (3, "wild")) == ("kernel wild (launch 3)",
                                                       "cudaErrorIllegalAddress")
    culprit, err = describe(719, (2, "a"), (5, "b"))
    assert err == "cudaErrorLaunchFailure"
    assert culprit == ("kernel a (launch 2) or one of the 3 launched after it (the last: b, "
                       "launch 5)")
    assert "no kernel since" in describe(700, None, (9, "k"))[0]
    assert describe(700, None, None)[0] == "no kernel was launched"
    assert {700, 710, 719} <= STICKY and 1 not in STICKY and 2 not in STICKY


class Recorder:
    """The allocator's backend seam, recording what is mapped where (no device needed)."""

    def __init__(self):
        self.extents: dict[int, int] = {}
        self.aprons: dict[int, int] = {}
        self.fail_apron_after: int | None = None

    def map_extent(self, base, size):
        assert base not in self.extents
        self.extents[base] = size

    def unmap_extent(self, base, size):
        assert self.extents.pop(base) == size

    def map_apron(self, base, size):
        if self.fail_apron_after is not None:
            if self.fail_apron_after == 0:
                raise MemoryError("no memory for the apron")
            self.fail_apron_after -= 1
        assert base not in self.aprons
        self.aprons[base] = size

    def unmap_apron(self, base, size):
        assert self.aprons.pop(base) == size

    def ranges(self):
        return sorted([(b, s, "E") for b, s in self.extents.items()]
                      + [(b, s, "A") for b, s in self.aprons.items()])


def make(rec, apron=2 * MB, base=1 << 40, size=1 << 34):
    return WindowAllocator(base, size, 2 * MB, rec.map_extent, rec.unmap_extent, None, apron,
                           rec.map_apron, rec.unmap_apron)


def test_every_extent_has_mapped_aprons_on_both_sides():
    rec = Recorder()
    a = make(rec)
    small = a.alloc(4096)
    big = a.alloc(3 * MB + 1)
    other = a.alloc(64 * MB)
    assert small == a.base + 2 * MB  # the window's start is an apron, never an allocation
    for ext, size in rec.extents.items():
        assert rec.aprons.get(ext - 2 * MB) == 2 * MB
        assert rec.aprons.get(ext + size) == 2 * MB
    spans = rec.ranges()
    for (b1, s1, _), (b2, _s2, _) in zip(spans, spans[1:], strict=False):
        assert b1 + s1 <= b2  # nothing mapped twice
    assert a.bytes_mapped == sum(rec.extents.values())  # aprons are not memory of the client
    # an apron is not an allocation: copies into it are refused by the daemon's checks
    assert a.find(small - 1) is None and a.find(big + 4 * MB) is None
    for p in (big, other, small):
        a.free(p)
    assert rec.extents == {} and rec.aprons == {}
    assert a.alloc(4096) == small  # the address space came back whole


def test_a_failed_apron_undoes_the_extent():
    rec = Recorder()
    a = make(rec)
    rec.fail_apron_after = 1  # the first apron maps, the second fails
    with pytest.raises(MemoryError):
        a.alloc(8 * MB)
    assert rec.extents == {} and rec.aprons == {} and a.bytes_mapped == 0
    rec.fail_apron_after = None
    assert a.alloc(8 * MB) == a.base + 2 * MB


def test_release_all_unmaps_aprons_and_no_apron_without_one():
    rec = Recorder()
    a = make(rec)
    for n in (100, 5 * MB, 700, 2 * MB):
        a.alloc(n)
    a.release_all()
    assert rec.extents == {} and rec.aprons == {}
    plain = make(rec, apron=0)
    assert plain.alloc(100) == plain.base and rec.aprons == {}
    with pytest.raises(ValueError):
        make(Recorder(), apron=MB)
