"""What both command lines (`farcuda`, `farcudad`) share: a mistake of the user is one line,
and the version is the installed distribution's."""

from __future__ import annotations

import argparse

__all__ = ["OneLineParser", "version"]


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (argparse prints the usage, then the error)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def version() -> str:
    try:
        from importlib.metadata import version as dist_version
        return dist_version("farcuda")
    except Exception:  # run from a source tree that is not installed
        return "unknown"
