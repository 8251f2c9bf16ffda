"""The daemon's module cache: the images clients sent (fat binaries, cubins, PTX), by SHA-256.

A folder shared by every worker of one daemon, so that an image crosses the link once per
server and not once per process: a client first asks for its image by hash, and sends the
bytes only when the cache does not hold them. The daemon hashes what it is sent itself; a
client's claimed hash is only a lookup key, so no client can plant an image under another
image's hash. Files are written whole (a temporary name, then a rename) and evicted oldest
use first beyond the size limit.

Sessions of different tenants share the cache: a client can tell whether an image of a hash it
knows was loaded on this server before (by the reply to its lookup), which says nothing of the
image's contents but does say that someone used it. ``module_cache = "off"`` disables the
cache where that matters.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

__all__ = ["ModuleCache"]

log = logging.getLogger("farcudad.modcache")


class ModuleCache:
    def __init__(self, folder: str | os.PathLike | None, limit: int = 4 << 30) -> None:
        self.folder = Path(folder) if folder else None
        self.limit = limit
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, digest: bytes) -> Path:
        assert self.folder is not None
        return self.folder / (digest.hex() + ".img")

    def get(self, digest: bytes) -> bytes | None:
        if self.folder is None or len(digest) != 32:
            return None
        path = self._path(digest)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if hashlib.sha256(data).digest() != digest:  # damaged on disk: forget it
            path.unlink(missing_ok=True)
            return None
        try:
            os.utime(path)  # the eviction order is the order of last use
        except OSError:
            pass
        return data

    def put(self, data: bytes | memoryview) -> bytes:
        """Keep an image; returns its hash (also when the cache is off)."""
        digest = hashlib.sha256(data).digest()
        if self.folder is None or len(data) > self.limit:
            return digest
        path = self._path(digest)
        if path.exists():
            return digest
        try:
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("module cache %s: cannot keep an image: %s", self.folder, exc)
            return digest
        self._evict()
        return digest

    def _evict(self) -> None:
        if self.folder is None:
            return
        try:
            files = [(p.stat().st_mtime, p.stat().st_size, p) for p in self.folder.glob("*.img")]
        except OSError:
            return
        total = sum(size for _, size, _ in files)
        for _, size, p in sorted(files):
            if total <= self.limit:
                break
            p.unlink(missing_ok=True)
            total -= size
