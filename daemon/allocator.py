"""Placement of a virtual device's allocations inside its address window.

The client reserves the window in its own address space and the daemon maps device memory
only inside it, so device pointers are unambiguous on the client. Large allocations get
their own granule-aligned extent; small ones share 2 MiB arenas (as the CUDA driver packs
small cudaMalloc calls), aligned to 512 bytes.

Every extent has a mapped *apron* on each side (``apron`` bytes, a multiple of the granule):
kernels of real programs read a little outside their allocations at the borders of a grid and
discard the values, which is harmless natively, where the driver's allocator leaves such
addresses in mapped memory; here the address before the first allocation would be the start
of a window that nothing else uses. The backend maps one granule of its own memory at every
apron (``map_apron``), so an apron costs address space, not device memory. Aprons are not
allocations: the daemon's pointer checks for copies never accept them.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

__all__ = ["WindowAllocator", "Extent"]

SMALL_LIMIT = 1 << 20
SMALL_ALIGN = 512


@dataclass
class Extent:
    base: int
    size: int  # mapped bytes (granule multiple)
    small: bool
    free: list = field(default_factory=list)  # small arenas: sorted [offset, size] holes
    used: int = 0


class WindowAllocator:
    """First-fit placement; ``map_extent``/``unmap_extent`` back extents with memory.

    ``watch``, when given, is told of every allocation as it is made and freed: an object
    with ``track(ptr, size)``, ``untrack(ptr)`` and ``untrack_all()`` (the CUDA backend's C
    path keeps its own copy of the session's memory this way)."""

    def __init__(self, base: int, size: int, granule: int = 2 << 20, map_extent=None,
                 unmap_extent=None, watch=None, apron: int = 0, map_apron=None,
                 unmap_apron=None) -> None:
        if apron % granule:
            raise ValueError("the apron must be a multiple of the granule")
        self.base, self.size, self.granule, self.apron = base, size, granule, apron
        self._holes: list[list[int]] = [[base, size]]  # sorted free VA ranges
        self._extents: dict[int, Extent] = {}  # extent base -> extent
        self._arenas: list[Extent] = []
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

    def _new_extent(self, size: int, small: bool) -> Extent:
        size = -(-size // self.granule) * self.granule
        a = self.apron
        va = self._take_va(size + 2 * a)
        base = va + a
        done = []
        try:
            self._map(base, size)
            done.append((self._unmap, base, size))
            if a:
                for at in (va, base + size):
                    self._map_apron(at, a)
                    done.append((self._unmap_apron, at, a))
        except BaseException:
            for undo, at, n in reversed(done):
                undo(at, n)
            self._give_va(va, size + 2 * a)
            raise
        ext = Extent(base, size, small, [[0, size]] if small else [])
        self._extents[base] = ext
        self.bytes_mapped += size
        if small:
            self._arenas.append(ext)
        return ext

    def _drop_extent(self, ext: Extent) -> None:
        a = self.apron
        if a:
            self._unmap_apron(ext.base - a, a)
            self._unmap_apron(ext.base + ext.size, a)
        self._unmap(ext.base, ext.size)
        del self._extents[ext.base]
        if ext.small:
            self._arenas.remove(ext)
        self._give_va(ext.base - a, ext.size + 2 * a)
        self.bytes_mapped -= ext.size

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
        if ext.used == 0:
            self._drop_extent(ext)
        return size

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
        for ext in list(self._extents.values()):
            self._drop_extent(ext)
        self._blocks.clear()
        self._keys.clear()
        self.bytes_in_use = 0
        if self._watch is not None:
            self._watch.untrack_all()
