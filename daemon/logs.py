"""Structured logs on stderr: one line per event, `key=value` pairs after the message."""

from __future__ import annotations

import logging
import os
import sys
import time


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        msg = record.getMessage()
        line = (f"{ts}.{int(record.msecs):03d}Z level={record.levelname.lower()} "
                f"pid={os.getpid()} logger={record.name} msg={msg!r}")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str = "info") -> None:
    root = logging.getLogger("farcudad")
    root.handlers[:] = []
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(_Formatter())
    root.addHandler(h)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    root.propagate = False
