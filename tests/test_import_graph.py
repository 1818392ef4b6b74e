"""The package layering (docs/ARCHITECTURE.md): no import circle inside ebm/, and imports flow
one way, harness → baselines → ebm. Every import statement counts, also those inside
functions (a lazy import is still a dependency), read from the source with :mod:`ast`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imports_of(path: Path) -> set[str]:
    """Top-level package names ... and full dotted module names imported by ``path``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # ``from ebm import inference`` imports the submodule ebm.inference
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def module_graph(package: str) -> dict[str, set[str]]:
    """Module → the modules of the same package it imports (the package's __init__ left out)."""
    modules = {f"{package}.{p.stem}": p for p in (ROOT / package).glob("*.py") if p.stem != "__init__"}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as a list of nodes, or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_planted_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("package", ["ebm", "baselines"])
def test_no_import_circle(package):
    assert find_cycle(module_graph(package)) is None


def test_contracts_do_not_import_the_template():
    """ebm.method holds the contracts; ebm.training (the template) imports it, never the reverse."""
    assert "ebm.method" in module_graph("ebm")["ebm.training"]
    assert "ebm.training" not in module_graph("ebm")["ebm.method"]


@pytest.mark.parametrize("package, forbidden", [("ebm", ("baselines", "harness", "tasks")),
                                                ("baselines", ("harness", "tasks"))])
def test_imports_flow_one_way(package, forbidden):
    for path in (ROOT / package).glob("*.py"):
        bad = {m for m in imports_of(path) if m.split(".")[0] in forbidden}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
