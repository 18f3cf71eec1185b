"""The house's layers (DESIGN §1): imports run one way, down ``lab > provisioning > province >
hub > edge > trust > shared``; ``hub`` and ``edge`` never import each other; no two files
import each other, directly or round a longer cycle (lazy imports inside functions count)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORDER = ("shared", "trust", "edge", "hub", "province", "provisioning", "lab")
RANK = {name: i for i, name in enumerate(ORDER)}
APART = {("hub", "edge"), ("edge", "hub")}
"""Pairs of packages that may not import each other whatever their ranks."""


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for top in ORDER:
        base = ROOT / top
        for path in sorted(base.rglob("*.py")) if base.is_dir() else ():
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, module of ours) for every import in the file, resolved to a module that exists."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            # ``from pkg import mod`` imports the module pkg.mod when there is one
            targets = [f"{module}.{a.name}" for a in node.names] or [module]
            targets = [t if t in MODULES else module for t in targets]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target.split(".")[0] in RANK:
                yield node.lineno, target


GRAPH = {name: sorted({t for _, t in _imports(name, path) if t != name}) for name, path in MODULES.items()}


def test_the_scan_sees_every_package_and_their_imports() -> None:
    """A guard for the guard: the scan finds the packages and the imports it must judge."""
    tops = {name.split(".")[0] for name in MODULES}
    assert {"shared", "trust", "edge", "hub", "provisioning", "lab"} <= tops
    assert "shared.messages" in GRAPH["hub.store"] or any(t.startswith("shared") for t in GRAPH["hub.store"])
    assert any(t.startswith("hub.") for t in GRAPH["lab.demo"])


def upward_imports() -> list[str]:
    bad = []
    for name, path in MODULES.items():
        here = name.split(".")[0]
        for line, target in _imports(name, path):
            there = target.split(".")[0]
            if RANK[there] > RANK[here] or (here, there) in APART:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {here} imports {target}")
    return bad


def test_imports_run_only_down_the_layers() -> None:
    """No module imports a package above its own (or hub↔edge)."""
    assert upward_imports() == []


def cycles() -> list[list[str]]:
    """Every strongly connected component of more than one file (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_no_file_cycles() -> None:
    """No set of files imports itself round (a package's __init__ re-exporting counts too)."""
    assert cycles() == []


@pytest.mark.parametrize(("graph", "expected"), [
    ({"a": ["b"], "b": ["a"]}, [["a", "b"]]),
    ({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}, [["a", "b", "c"]]),
    ({"a": ["b"], "b": []}, []),
])
def test_the_cycle_finder_finds_cycles(graph: dict[str, list[str]], expected: list[list[str]],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The cycle check would fail on a cycle (it is not vacuous)."""
    monkeypatch.setattr(__import__(__name__, fromlist=["GRAPH"]), "GRAPH", graph)
    assert cycles() == expected
