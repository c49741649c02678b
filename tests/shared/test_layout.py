"""The layout holds: shared/ depends on no component, components not on each other, and no import cycle.

    .venv/bin/python -m pytest -q tests/shared/test_layout.py

The import graph is read from the source (every ``import`` and ``from ... import``
of the product's modules, lazy ones inside functions included).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import ROOT

PRODUCT = ("shared", "functions")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for top in PRODUCT for p in (ROOT / top).rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_product_has_no_import_cycle() -> None:
    assert _cycle(_graph()) is None


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_shared_uses_no_component_and_components_not_each_other() -> None:
    for name, targets in _graph().items():
        if name.startswith("shared"):
            assert not [t for t in targets if t.startswith("functions")], name
        for component in ("ingest", "stream", "cleanup"):
            if name.startswith(f"functions.{component}"):
                others = [
                    t for t in targets if t.startswith("functions.") and not t.startswith(f"functions.{component}")
                ]
                assert not others, f"{name} imports {others}"


def test_the_backend_is_chosen_in_one_place() -> None:
    # Nothing outside shared/backends asks which backend it got.
    for top in PRODUCT:
        for path in (ROOT / top).rglob("*.py"):
            if "backends" in path.relative_to(ROOT).parts:
                continue
            text = path.read_text()
            for backend in ("FirestoreStore", "PubSubChannel", "MemoryStore", "MemoryChannel", "FirestoreRegistry"):
                assert f"isinstance({backend}" not in text and f", {backend})" not in text, f"{path}: {backend}"
