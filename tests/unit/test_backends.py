"""Both backends implement the declared seam (daemon/backends/base.py), member by member.

The CUDA backend cannot be imported without a driver, so its classes are read from the
source; every method of the protocol must be there taking as many parameters (the session
passes them by position; ``vdev`` and ``persistent``, which it names, by those names), and
every attribute must be set (in the class body or in __init__).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ROOT / "daemon" / "backends"


def _members(cls: ast.ClassDef) -> tuple[dict[str, list[str]], set[str]]:
    """(method -> parameter names after self, attributes) of a class in the source."""
    methods: dict[str, list[str]] = {}
    attrs: set[str] = set()
    for node in cls.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            methods[node.name] = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs][1:]
            for sub in ast.walk(node):
                if (isinstance(sub, (ast.Assign, ast.AnnAssign)) and node.name == "__init__"):
                    targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
                    for t in targets:
                        for e in ast.walk(t):
                            if (isinstance(e, ast.Attribute) and isinstance(e.value, ast.Name)
                                    and e.value.id == "self"):
                                attrs.add(e.attr)
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                for e in ast.walk(t):
                    if isinstance(e, ast.Name):
                        attrs.add(e.id)
                        if isinstance(node.value, ast.Name):  # unmap_apron = map_apron
                            methods[e.id] = methods.get(node.value.id, [])
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            attrs.add(node.target.id)
    return methods, attrs


def _class(path: Path, name: str) -> ast.ClassDef:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise LookupError(name)


IMPLEMENTATIONS = {
    "DeviceBackend": [("cuda/device.py", "CudaDevice"), ("memory.py", "MemoryDevice")],
    "Backend": [("cuda/__init__.py", "CudaBackend"), ("memory.py", "MemoryBackend")],
    "DeferredCopy": [("cuda/staging.py", "DeferredCopy"), ("memory.py", "_DeferredCopy")],
}


@pytest.mark.parametrize("protocol,impl", [(p, i) for p, impls in IMPLEMENTATIONS.items()
                                           for i in impls], ids=lambda x: str(x))
def test_backend_implements_the_protocol(protocol, impl):
    want_methods, want_attrs = _members(_class(BACKENDS / "base.py", protocol))
    have_methods, have_attrs = _members(_class(BACKENDS / impl[0], impl[1]))
    for name, params in want_methods.items():
        assert name in have_methods, f"{impl[1]} lacks {name}"
        have = have_methods[name]
        assert len(have) == len(params), (name, have, params)
        for named in ("vdev", "persistent"):
            assert (named in have) == (named in params), (name, named)
    missing = want_attrs - have_attrs - set(have_methods)
    assert not missing, f"{impl[1]} lacks {sorted(missing)}"


def test_the_session_asks_no_backend_what_it_has():
    """No hasattr/getattr probing of a backend in the session: the seam says it all."""
    for path in (ROOT / "daemon" / "session").glob("*.py"):
        text = path.read_text()
        for probe in ("hasattr(be", "hasattr(d.be", "getattr(be", "getattr(d.be",
                      "hasattr(self.be", "getattr(backend", "hasattr(backend",
                      "hasattr(self.backend", "getattr(self.backend"):
            assert probe not in text, (path.name, probe)
