"""Busy time, per GPU: what the front attributes energy by (daemon/energy.py).

A GPU is busy for a session while a call of the session executes for it, or while a request
waits for the session's work on it to complete; overlapping waits count once.
"""

from __future__ import annotations

import time

__all__ = ["BusyClock", "BusyTime"]


class BusyClock:
    """The union of the intervals in which a GPU had work of this session (monotonic ns): a
    call executing for it, or a request waiting for its work. Overlapping waits count once."""

    __slots__ = ("total", "pending", "since")

    def __init__(self) -> None:
        self.total = 0
        self.pending = 0
        self.since = 0

    def add(self, ns: int) -> None:
        if not self.pending:  # inside a pending wait the time is counted already
            self.total += ns

    def begin(self) -> None:
        if not self.pending:
            self.since = time.perf_counter_ns()
        self.pending += 1

    def end(self, _task=None) -> None:
        self.pending -= 1
        if not self.pending:
            self.total += time.perf_counter_ns() - self.since

    def seconds(self) -> float:
        extra = time.perf_counter_ns() - self.since if self.pending else 0
        return (self.total + extra) / 1e9


class BusyTime:
    """A session's busy time: all of it (``ns``) and one clock per physical GPU, shared by
    the virtual devices on it."""

    __slots__ = ("ns", "clocks")

    def __init__(self) -> None:
        self.ns = 0
        self.clocks: dict[int, BusyClock] = {}  # physical GPU -> its clock

    def clock(self, gpu: int) -> BusyClock:
        c = self.clocks.get(gpu)
        if c is None:
            c = self.clocks[gpu] = BusyClock()
        return c

    def by_gpu(self) -> dict[str, float]:
        return {str(g): c.seconds() for g, c in self.clocks.items()}
