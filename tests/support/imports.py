"""Import graphs read from source (ast): who imports whom, cycles, upward imports, reach.

Used by tests/unit/project/test_import_graph.py (the layer's own graph) and
tests/integration/test_layer_build.py (what the built layer holds). Every import counts,
including those deferred inside functions (a deferred import is still a dependency; it only
moves the cost). Layers, from the top: ``api`` > ``logic`` > ``dal``, ``adapters``, ``bus`` >
``models`` > the top-level modules (settings, errors, observability, plans, ...). A module may
import its own layer or lower ones, and never the streaming service (``meterbridge_streaming``)
or the dev kit (``meterbridge_dev``): those import the layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

RANKS = {"api": 4, "logic": 3, "dal": 2, "adapters": 2, "bus": 2, "models": 1}
ABOVE_THE_LAYER = ("meterbridge_streaming", "meterbridge_dev")


def modules(root: Path, package: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported_names(path: Path, name: str) -> set[str]:
    """Every module name an import statement in ``path`` mentions (absolute or relative)."""
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([node.module] if node.module else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports, plus any of ``ABOVE_THE_LAYER``."""
    mods = modules(root, package)
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets: set[str] = set()
        for imported in imported_names(path, name):
            if imported.split(".")[0] in ABOVE_THE_LAYER:
                targets.add(imported)
                continue
            # ``from meterbridge.logic import keys`` names the module meterbridge.logic.keys;
            # ``from meterbridge.logic.keys import parse`` names meterbridge.logic.keys too.
            while imported and imported not in mods:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        edges[name] = targets
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next((c for c in children if c in edges), None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def rank(module: str) -> int:
    parts = module.split(".")
    return RANKS.get(parts[1], 0) if len(parts) > 1 else 0


def upward(edges: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{source} -> {target}"
        for source, targets in edges.items()
        for target in targets
        if target.split(".")[0] in ABOVE_THE_LAYER or rank(target) > rank(source)
    )


def reachable(edges: dict[str, set[str]], roots: set[str]) -> set[str]:
    """The modules ``roots`` import, directly or not (a package's ``__init__`` with each)."""
    seen: set[str] = set()
    todo = [r for r in roots if r in edges]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        parents = {".".join(parts[:i]) for i in range(1, len(parts))}
        todo.extend(m for m in (edges[module] | parents) if m in edges and m not in seen)
    return seen


def unreachable(edges: dict[str, set[str]], entries: list[Path]) -> list[str]:
    """The modules of ``edges`` that none of the entry points ``entries`` can import."""
    roots = set().union(*(entry_imports(entry, edges) for entry in entries))
    return sorted(set(edges) - reachable(edges, roots))


def entry_imports(path: Path, edges: dict[str, set[str]]) -> set[str]:
    """The modules of ``edges`` an entry point (a file outside the package) imports."""
    found: set[str] = set()
    for imported in imported_names(path, "app"):
        while imported and imported not in edges:
            imported = imported.rpartition(".")[0]
        if imported:
            found.add(imported)
    return found
