"""Placement of a virtual device's allocations inside its address window.

The client reserves the window in its own address space and the daemon maps device memory
only inside it, so device pointers are unambiguous on the client. Large allocations get
their own granule-aligned extent; small ones share 2 MiB arenas (as the CUDA driver packs
small cudaMalloc calls), aligned to 512 bytes.

Extents are packed from the bottom of the window up, as the driver packs its own, and the
unused address space next to them is mapped too: kernels of real programs read a little
outside their allocations at the borders of a grid and discard the values, which is harmless
natively, where such addresses lie in mapped memory (measured on an H100: reads succeed at
least 256 MiB before the first allocation and 64 MiB past the end of small ones). Here an
address next to an extent would otherwise be unmapped, and the read a fault. So:

- the window's first ``floor`` bytes are never allocated and are mapped, once the first
  extent exists (reads before the first allocation);
- in every hole of the window, the first ``apron`` bytes after an extent and the last
  ``apron`` bytes before one are mapped (a hole shorter than two aprons is mapped whole).

What is mapped there is one piece of the backend's own memory (``map_apron(base, size)``
maps its first ``size`` bytes, at most ``apron``, at ``base``), the same at every apron, so
aprons cost address space and the driver's mapping calls, not memory of the client. They are
not allocations: the daemon's pointer checks for copies never accept them.

A client may place its small allocations itself (client-side sub-allocation): it asks for an
arena (``client_arena``, an extent like the daemon's own arenas, mapped and with aprons the
same way, but used only by the client), then reports each allocation it placed there
(``adopt``) and each free (``free``) before any frame uses the memory. Those allocations are
allocations like any other here (pointer checks, memory held); an empty client arena stays
mapped until the client gives it back (``release_arena``) or the session ends.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field

__all__ = ["WindowAllocator", "Extent", "pow2_pieces"]

log = logging.getLogger("farcudad.allocator")

SMALL_LIMIT = 1 << 20
SMALL_ALIGN = 512
ARENA = SMALL_LIMIT * 2  # the size of an arena of small allocations (the daemon's or a client's)


def pow2_pieces(size: int, cap: int) -> list[int]:
    """size as a sum of powers of two of at most cap, largest first (how a backend that maps
    allocations only whole covers an apron piece with a few allocations of fixed sizes)."""
    out = []
    while size:
        n = min(1 << (size.bit_length() - 1), cap)
        out.append(n)
        size -= n
    return out


@dataclass
class Extent:
    base: int
    size: int  # mapped bytes (granule multiple)
    small: bool
    free: list = field(default_factory=list)  # small arenas: sorted [offset, size] holes
    used: int = 0
    client: bool = False  # an arena the client places its own allocations in


class WindowAllocator:
    """First-fit placement; ``map_extent``/``unmap_extent`` back extents with memory.

    ``watch``, when given, is told of every allocation as it is made and freed: an object
    with ``track(ptr, size)``, ``untrack(ptr)`` and ``untrack_all()`` (the CUDA backend's C
    path keeps its own copy of the session's memory this way)."""

    def __init__(self, base: int, size: int, granule: int = 2 << 20, map_extent=None,
                 unmap_extent=None, watch=None, apron: int = 0, map_apron=None,
                 unmap_apron=None, floor: int = 0) -> None:
        if apron % granule or floor % granule or (floor and not apron) or floor >= size:
            raise ValueError("aprons and the floor are granule multiples within the window")
        self.base, self.size, self.granule = base, size, granule
        self.apron, self.floor = apron, floor
        self._holes: list[list[int]] = [[base + floor, size - floor]]  # sorted free VA ranges
        self._aprons: dict[int, int] = {}  # mapped apron pieces: base -> size
        self._apron_failed = False  # (said once)
        self._ends: set[int] = set()  # where extents end
        self._extents: dict[int, Extent] = {}  # extent base -> extent
        self._arenas: list[Extent] = []
        self._client: list[int] = []  # sorted bases of the client's arenas
        self._blocks: dict[int, tuple[Extent, int]] = {}  # user ptr -> (extent, size)
        self._keys: list[int] = []  # sorted user pointers
        self._map = map_extent or (lambda base, size: None)
        self._unmap = unmap_extent or (lambda base, size: None)
        self._map_apron = map_apron or (lambda base, size: None)
        self._unmap_apron = unmap_apron or (lambda base, size: None)
        self._watch = watch
        self.bytes_in_use = 0
        self.bytes_mapped = 0

    # -- VA ranges --
    def _take_va(self, size: int) -> int:
        for i, (b, s) in enumerate(self._holes):
            if s >= size:
                if s == size:
                    del self._holes[i]
                else:
                    self._holes[i] = [b + size, s - size]
                return b
        raise MemoryError("address window exhausted")

    def _give_va(self, base: int, size: int) -> None:
        i = bisect.bisect_left(self._holes, [base, 0])
        self._holes.insert(i, [base, size])
        # coalesce with neighbours
        if i + 1 < len(self._holes) and base + size == self._holes[i + 1][0]:
            self._holes[i][1] += self._holes[i + 1][1]
            del self._holes[i + 1]
        if i > 0 and self._holes[i - 1][0] + self._holes[i - 1][1] == base:
            self._holes[i - 1][1] += self._holes[i][1]
            del self._holes[i]

    def _hole_at(self, ptr: int) -> tuple[int, int]:
        """The hole holding ptr: (start, end)."""
        i = bisect.bisect_right(self._holes, [ptr, 1 << 64]) - 1
        b, s = self._holes[i]
        assert b <= ptr < b + s
        return b, b + s

    # -- aprons (see the module's header) --
    def _wanted(self, start: int, end: int) -> dict[int, int]:
        """The apron pieces the hole start..end should have, given its neighbours."""
        a, n = self.apron, end - start
        if n <= 0 or not a:
            return {}
        after, before = start in self._ends, end in self._extents
        if after and before and n <= 2 * a:
            spans = [(start, end)]
        else:
            spans = ([(start, start + min(a, n))] if after else []) + \
                    ([(end - min(a, n), end)] if before else [])
        return {at: min(a, hi - at) for lo, hi in spans for at in range(lo, hi, a)}

    def _aprons_in(self, start: int, end: int) -> dict[int, int]:
        return {b: n for b, n in self._aprons.items() if start <= b < end}

    def _unmap_pieces(self, old: dict[int, int], new: dict[int, int], undo: list) -> None:
        for b, n in old.items():
            if new.get(b) != n:
                self._unmap_apron(b, n)
                del self._aprons[b]
                undo.append(lambda b=b, n=n: self._map_piece(b, n))

    def _map_pieces(self, old: dict[int, int], new: dict[int, int], undo: list) -> None:
        """Map the pieces of new that old has not. Aprons only make reads outside allocations
        behave as natively: a piece that cannot be mapped (the device is out of memory for
        its first one, say) is logged and left out, never a failure of the allocation."""
        for b, n in new.items():
            if old.get(b) != n:
                try:
                    self._map_piece(b, n)
                except Exception as exc:
                    if not self._apron_failed:
                        log.warning("no mapped apron at 0x%x+%d (%s): reads just outside "
                                    "allocations there fault", b, n, exc)
                    self._apron_failed = True
                    continue
                undo.append(lambda b=b, n=n: self._unmap_piece(b, n))

    def _map_piece(self, b: int, n: int) -> None:
        self._map_apron(b, n)
        self._aprons[b] = n

    def _unmap_piece(self, b: int, n: int) -> None:
        self._unmap_apron(b, n)
        del self._aprons[b]

    @staticmethod
    def _rewind(undo: list) -> None:
        for step in reversed(undo):
            try:
                step()
            except Exception:  # best effort: the failure being reported matters more
                pass

    def _new_extent(self, size: int, small: bool) -> Extent:
        size = -(-size // self.granule) * self.granule
        undo: list = []
        if self.floor and not self._extents and self.base not in self._aprons:
            floor = {b: min(self.apron, self.base + self.floor - b)
                     for b in range(self.base, self.base + self.floor, self.apron)}
            self._map_pieces({}, floor, undo)  # stays mapped until release_all
            undo.clear()
        # First fit takes the start of a hole: the extent's left neighbour is what bounded the
        # hole, and only this hole's aprons change.
        base = self._take_va(size)
        end = base + size
        rest = self._hole_at(end)[1] if self._is_free(end) else end
        old = self._aprons_in(base, rest)
        self._ends.add(end)
        self._extents[base] = None  # type: ignore[assignment]  # a neighbour for _wanted
        new = self._wanted(end, rest)
        try:
            self._unmap_pieces(old, new, undo)  # what lay where the extent goes
            self._map(base, size)
            undo.append(lambda: self._unmap(base, size))
            self._map_pieces(old, new, undo)
        except BaseException:
            del self._extents[base]
            self._ends.discard(end)
            self._rewind(undo)
            self._give_va(base, size)
            raise
        ext = Extent(base, size, small, [[0, size]] if small else [])
        self._extents[base] = ext
        self.bytes_mapped += size
        if small:
            self._arenas.append(ext)
        return ext

    def _is_free(self, ptr: int) -> bool:
        i = bisect.bisect_right(self._holes, [ptr, 1 << 64]) - 1
        return i >= 0 and self._holes[i][0] <= ptr < self._holes[i][0] + self._holes[i][1]

    def _drop_extent(self, ext: Extent) -> None:
        self._unmap(ext.base, ext.size)
        del self._extents[ext.base]
        self._ends.discard(ext.base + ext.size)
        if ext.small and not ext.client:
            self._arenas.remove(ext)
        if ext.client:
            del self._client[bisect.bisect_left(self._client, ext.base)]
        self._give_va(ext.base, ext.size)
        self.bytes_mapped -= ext.size
        if self.apron:  # the freed range joined the holes around it
            start, end = self._hole_at(ext.base)
            old, new = self._aprons_in(start, end), self._wanted(start, end)
            self._unmap_pieces(old, new, [])
            self._map_pieces(old, new, [])

    # -- allocation --
    def alloc(self, size: int) -> int:
        if size <= 0:
            raise ValueError("size must be positive")
        if size >= SMALL_LIMIT:
            ext = self._new_extent(size, small=False)
            self._blocks[ext.base] = (ext, size)
            bisect.insort(self._keys, ext.base)
            self.bytes_in_use += size
            if self._watch is not None:
                self._watch.track(ext.base, size)
            return ext.base
        need = -(-size // SMALL_ALIGN) * SMALL_ALIGN
        for ext in self._arenas:
            ptr = self._arena_take(ext, need)
            if ptr is not None:
                break
        else:
            ext = self._new_extent(SMALL_LIMIT * 2, small=True)
            ptr = self._arena_take(ext, need)
            assert ptr is not None
        self._blocks[ptr] = (ext, need)
        bisect.insort(self._keys, ptr)
        self.bytes_in_use += need
        if self._watch is not None:
            self._watch.track(ptr, need)
        return ptr

    @staticmethod
    def _arena_take(ext: Extent, need: int) -> int | None:
        for i, (off, s) in enumerate(ext.free):
            if s >= need:
                if s == need:
                    del ext.free[i]
                else:
                    ext.free[i] = [off + need, s - need]
                ext.used += need
                return ext.base + off
        return None

    def free(self, ptr: int) -> int:
        """Release an allocation made by alloc; returns its size. KeyError if unknown."""
        ext, size = self._blocks.pop(ptr)
        del self._keys[bisect.bisect_left(self._keys, ptr)]
        self.bytes_in_use -= size
        if self._watch is not None:
            self._watch.untrack(ptr)
        if not ext.small:
            self._drop_extent(ext)
            return size
        off = ptr - ext.base
        i = bisect.bisect_left(ext.free, [off, 0])
        ext.free.insert(i, [off, size])
        if i + 1 < len(ext.free) and off + size == ext.free[i + 1][0]:
            ext.free[i][1] += ext.free[i + 1][1]
            del ext.free[i + 1]
        if i > 0 and ext.free[i - 1][0] + ext.free[i - 1][1] == off:
            ext.free[i - 1][1] += ext.free[i][1]
            del ext.free[i]
        ext.used -= size
        if ext.used == 0 and not ext.client:
            self._drop_extent(ext)
        return size

    # -- the client's arenas --
    def client_arena(self) -> int:
        """Map an arena for the client's own allocations; returns its base (MemoryError when
        the window is full; the backend's error when the memory cannot be mapped)."""
        ext = self._new_extent(ARENA, small=True)
        self._arenas.remove(ext)
        ext.client = True
        bisect.insort(self._client, ext.base)
        return ext.base

    def _client_arena_at(self, ptr: int) -> Extent | None:
        i = bisect.bisect_right(self._client, ptr) - 1
        if i < 0:
            return None
        ext = self._extents[self._client[i]]
        return ext if ptr < ext.base + ext.size else None

    def adopt(self, ptr: int, size: int) -> None:
        """The client placed an allocation of ``size`` bytes at ``ptr`` in one of its arenas
        (ValueError unless that memory is free there and aligned as the daemon aligns)."""
        ext = self._client_arena_at(ptr)
        need = -(-size // SMALL_ALIGN) * SMALL_ALIGN
        if ext is None or size <= 0 or size >= SMALL_LIMIT or (ptr - ext.base) % SMALL_ALIGN:
            raise ValueError("not a place for a small allocation in an arena of the client")
        off = ptr - ext.base
        i = bisect.bisect_right(ext.free, [off, 1 << 64]) - 1
        if i < 0 or ext.free[i][0] + ext.free[i][1] < off + need:
            raise ValueError("memory already allocated")
        hole_off, hole = ext.free[i]
        pieces = [[hole_off, off - hole_off], [off + need, hole_off + hole - off - need]]
        ext.free[i:i + 1] = [p for p in pieces if p[1]]
        ext.used += need
        self._blocks[ptr] = (ext, need)
        bisect.insort(self._keys, ptr)
        self.bytes_in_use += need
        if self._watch is not None:
            self._watch.track(ptr, need)

    def release_arena(self, base: int) -> None:
        """The client gives back its arena at ``base`` (ValueError unless it is empty)."""
        ext = self._extents.get(base) if base in self._client else None
        if ext is None or ext.used:
            raise ValueError("not an empty arena of the client")
        self._drop_extent(ext)

    def owns(self, ptr: int) -> bool:
        """ptr is the start of an allocation."""
        return ptr in self._blocks

    def find(self, ptr: int) -> tuple[int, int] | None:
        """The allocation (base, size) holding ptr, or None."""
        i = bisect.bisect_right(self._keys, ptr) - 1
        if i >= 0:
            base = self._keys[i]
            size = self._blocks[base][1]
            if ptr < base + size:
                return base, size
        return None

    def held(self, ptr: int) -> tuple[int, int]:
        """(used, mapped) bytes of the allocation at ptr: what it takes of its arena or
        extent, and what is mapped for it alone (its extent; a small one's share)."""
        ext, size = self._blocks[ptr]
        return size, (size if ext.small else ext.size)

    def allocations(self) -> list[tuple[int, int]]:
        return sorted((p, s) for p, (_e, s) in self._blocks.items())

    def release_all(self) -> None:
        for b, n in list(self._aprons.items()):
            self._unmap_piece(b, n)
        for ext in list(self._extents.values()):
            self._unmap(ext.base, ext.size)
        self._extents.clear()
        self._ends.clear()
        self._arenas.clear()
        self._client.clear()
        self._holes = [[self.base + self.floor, self.size - self.floor]]
        self.bytes_mapped = 0
        self._blocks.clear()
        self._keys.clear()
        self.bytes_in_use = 0
        if self._watch is not None:
            self._watch.untrack_all()
