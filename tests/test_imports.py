"""The models room has no import circle: every ``alignlab.models`` module's imports of the room,
at its top or inside a function, form an acyclic graph."""

from __future__ import annotations

import ast
from pathlib import Path

import alignlab

ROOT = Path(alignlab.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, package: str) -> set[str]:
    """Modules of ``package`` this file imports anywhere in it (``from X import name`` counts X,
    and X.name where that is a module of the package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m == package or m.startswith(package + ".")}


def test_the_models_room_imports_in_one_direction():
    package = "alignlab.models"
    files = {_module_name(p): p for p in (ROOT / "models").rglob("*.py")}
    assert len(files) >= 10, f"only {len(files)} modules found under {ROOT / 'models'}"
    graph = {name: {m for m in _imports(path, package) if m in files and m != name} for name, path in files.items()}
    graph = {name: {m for m in deps if not name.startswith(m + ".")} for name, deps in graph.items()}  # a package's own __init__

    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep] if dep in path else [name, dep]
                raise AssertionError("import circle in alignlab.models: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, path + [dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
