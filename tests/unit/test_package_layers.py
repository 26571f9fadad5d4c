"""The package imports in layers: no cycle between mirrorcap's subpackages (a top-level module such as
errors.py counts as one of its own), nor between two of its modules. Every import counts, a lazy one
inside a function too: it is a dependency all the same, only a later one."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "modules" / "mirrorcap"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The mirrorcap modules `path` imports (`from .x import name` counts x.name when that is a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found |= {f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names}
    return {m for m in found if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: imports(p, set(paths)) for m, p in paths.items()}


def layer(module: str) -> str:
    """mirrorcap.stack.alarms -> stack; mirrorcap.errors -> errors; mirrorcap -> mirrorcap."""
    return module.split(".")[1] if "." in module else module


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_checker_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    g = graph()  # relative imports resolved as Python does
    assert "mirrorcap.errors" in g["mirrorcap.inventory.load"] and "mirrorcap.stack.literal" in g["mirrorcap.host.render"]


def test_no_cycle_between_modules():
    assert cycles(graph()) == []


def test_no_cycle_between_subpackages():
    edges: dict[str, set[str]] = {}
    why: dict[tuple[str, str], str] = {}
    for module, targets in graph().items():
        for target in targets:
            a, b = layer(module), layer(target)
            if a != b and b != "mirrorcap":  # the package's __init__ is everyone's
                edges.setdefault(a, set()).add(b)
                why.setdefault((a, b), f"{module} -> {target}")
    found = cycles(edges)
    assert found == [], [(c, [why[(a, b)] for a in c for b in c if (a, b) in why]) for c in found]
