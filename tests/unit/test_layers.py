"""Who may import whom: the wire is owned by neither side, and neither side imports the other.

wire/ imports only the standard library and itself (it must also load from a source tree,
where the build and the generators use it); the daemon and the client each import the wire
and nothing of the other side, except that `farcuda run` starts the embedded local daemon and
asks its package first whether the server's dependencies are installed.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imports(folder: str) -> dict[str, set[str]]:
    """file -> absolute module names it imports (relative imports are the file's own package)."""
    out: dict[str, set[str]] = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
        out[str(path.relative_to(ROOT))] = names
    return out


def test_wire_imports_nothing_of_farcuda():
    for path, names in _imports("wire").items():
        assert not [n for n in names if n.split(".")[0] in ("farcuda", "interposer", "daemon")], (
            path, names)


def test_the_daemon_does_not_import_the_client():
    for path, names in _imports("daemon").items():
        assert not [n for n in names if n.startswith("farcuda.interposer")], path


def test_the_client_does_not_import_the_daemon():
    for path, names in _imports("interposer").items():
        used = {n for n in names if n.startswith("farcuda.daemon")}
        if path == "interposer/cli.py":
            used -= {"farcuda.daemon"}  # the embedded daemon's package, for its dependencies
        assert not used, path
