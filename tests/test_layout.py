"""The shape of the code: workers never reach up into the driver, folders stay small, and no module imports
another that imports it back (docs/layout.md says where to change what)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestrator", "workers", "bench")
MAX_MODULES_PER_FOLDER = 12


def modules() -> dict[str, Path]:
    """{dotted module name: file} for every module of the project's packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `path` imports anywhere in it (top level or inside functions), `from a.b import c`
    counting as a.b.c where c is a module, else as a.b."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names if alias.name.split(".")[0] in PACKAGES}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                out.add(child if child in known else node.module)
    return {name for name in out if name in known}


def test_nothing_under_workers_imports_orchestrator():
    known = modules()
    offenders = {name: sorted(i for i in imports_of(path, known) if i.startswith("orchestrator"))
                 for name, path in known.items() if name.startswith("workers")}
    assert {k: v for k, v in offenders.items() if v} == {}, "workers take plain settings; they never import orchestrator"


def test_no_folder_holds_more_than_a_dozen_modules():
    for folder in {p.parent for p in modules().values()}:
        count = len([p for p in folder.glob("*.py") if p.name != "__init__.py"])
        assert count <= MAX_MODULES_PER_FOLDER, f"{folder.relative_to(REPO)} holds {count} modules"


def test_no_import_circles():
    known = modules()
    graph = {name: imports_of(path, known) - {name} for name, path in known.items()}
    # a package's __init__ is imported with any of its modules; it imports nothing here, so it closes no circle
    circles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert circles == [], "import circles: " + "; ".join(" -> ".join(c) for c in circles)
