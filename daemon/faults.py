"""Faults that leave a virtual device's context unusable, and which kernel they came from.

A kernel that faults (an illegal address, a device-side assert, ...) makes the CUDA context
sticky-broken: that call and every later one on the context fail with the same error, and
natively the program learns nothing more. A program that never checks errors would print
wrong numbers in silence, so the daemon says what happened, once: it logs the fault for the
session with the kernel it can blame, tells the client (a FAULT notice, which the client
prints on stderr), and shows the device as dead in the session's status.

Which kernel: the GPU does not say. A fault surfaces at a synchronization (or at a later
call), so it came from a launch made since the device's last successful synchronization; the
backend keeps the first and the last of those launches (``LaunchLog``, or the C path's copy
of it for the launches it makes). With one launch between synchronizations, as in most
programs that check their errors, the culprit is exact.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

from .errors import name_of

__all__ = ["STICKY", "LaunchLog", "describe", "demangle"]

# cudaError_t values after which the context is unusable (CUDA's documentation says of each:
# "the process is left in an inconsistent state and any further CUDA work will return the
# same error"): ECC uncorrectable, illegal address, launch timeout, assert, hardware stack
# error, illegal instruction, misaligned address, invalid address space, invalid PC, launch
# failure.
STICKY = frozenset({214, 700, 702, 710, 714, 715, 716, 717, 718, 719})


class LaunchLog:
    """Launches of one device: how many so far, the last one, and the first one since the
    last synchronization that succeeded. Ordinals count from 1; kernels are the client's
    kernel ids."""

    __slots__ = ("count", "first", "last")

    def __init__(self) -> None:
        self.count = 0
        self.first: tuple[int, int] | None = None
        self.last: tuple[int, int] | None = None

    def launched(self, kid: int) -> None:
        self.count += 1
        self.last = (self.count, kid)
        if self.first is None:
            self.first = self.last

    def synced(self) -> None:
        self.first = None

    def window(self) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
        return self.first, self.last


def describe(status: int, first: tuple[int, str] | None, last: tuple[int, str] | None
             ) -> tuple[str, str]:
    """(culprit, error) in words: which launch the fault came from, and the error."""
    error = name_of(status)
    if first is None and last is None:
        return "no kernel was launched", error
    if first is None:  # nothing launched since the last good synchronization
        n, name = last  # type: ignore[misc]
        return (f"work after the last good synchronization (no kernel since; the last: {name}, "
                f"launch {n})"), error
    if last is None or first[0] == last[0]:
        return f"kernel {first[1]} (launch {first[0]})", error
    return (f"kernel {first[1]} (launch {first[0]}) or one of the {last[0] - first[0]} "
            f"launched after it (the last: {last[1]}, launch {last[0]})"), error


@functools.cache
def _cxa_demangle():
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("stdc++") or "libstdc++.so.6")
        fn = lib.__cxa_demangle
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_void_p
    fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p,
                   ctypes.POINTER(ctypes.c_int)]
    return fn


def demangle(name: str) -> str:
    """A kernel's C++ name as its author wrote it (``_Z10wild_writePix`` is
    ``wild_write(int*, long long)``); the name unchanged when it is not mangled or libstdc++'s
    demangler is not there."""
    fn = _cxa_demangle()
    if fn is None or not name.startswith("_Z"):
        return name
    status = ctypes.c_int(0)
    out = fn(name.encode(), None, None, ctypes.byref(status))
    if status.value != 0 or not out:
        return name
    try:
        return ctypes.string_at(out).decode(errors="replace")
    finally:
        ctypes.CDLL(None).free(ctypes.c_void_p(out))
