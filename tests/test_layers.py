"""The house rules the folder tree promises, checked on the source: the library below ``xllm_cli/cli`` never imports
the command line (Typer, rich, click or ``xllm_cli.cli``), and xllm's modules import each other without a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "xllm_cli"
# The entry points above the library: the command line and the Python API that parses a command line like it.
ENTRY_LAYER = ("cli/", "api.py", "__main__.py")
TERMINAL_LIBRARIES = ("typer", "rich", "click")


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, top_level_only: bool) -> set[str]:
    """Modules ``path`` imports (``from a.b import c`` counts as ``a.b`` and ``a.b.c``); function-local ones too
    unless ``top_level_only``."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_the_library_never_imports_the_command_line():
    offenders = []
    for name, path in modules().items():
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(ENTRY_LAYER):
            continue
        for imported in imports(path, top_level_only=False):
            root = imported.split(".")[0]
            if root in TERMINAL_LIBRARIES or imported == "xllm_cli.cli" or imported.startswith("xllm_cli.cli."):
                offenders.append(f"{name} imports {imported}")
    assert offenders == []


def test_no_import_cycle_between_xllm_modules():
    known = modules()
    graph = {
        name: {imported for imported in imports(path, top_level_only=True) if imported in known and imported != name}
        for name, path in known.items()
    }
    # A package's __init__ is imported with each of its modules: an edge to the package means one to its __init__.
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append([*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert cycles == []


def test_the_library_imports_xllm_modules_at_the_top_of_files():
    """Function-local imports of xllm's own modules hid an import cycle once; below the CLI layer none is left (heavy
    third-party libraries may still be imported where they are used, to keep --help and TAB fast)."""
    hidden = []
    for name, path in modules().items():
        if path.relative_to(PACKAGE).as_posix().startswith(ENTRY_LAYER):
            continue
        nested = imports(path, top_level_only=False) - imports(path, top_level_only=True)
        hidden += [f"{name} imports {module} inside a function" for module in nested if module.startswith("xllm_cli")]
    assert hidden == []


def test_the_probes_above_can_fail():
    """The checks are only worth something if they see a violation where there is one."""
    source = PACKAGE / "data" / "general.py"
    assert "xllm_cli.errors" in imports(source, top_level_only=True)
    assert "typer" in imports(PACKAGE / "cli" / "app.py", top_level_only=True)
