"""No import cycle among the wpauc modules: the import graph read from every module's source
(imports inside functions included) has no strongly connected component of two or more
modules, so each layer imports only lower ones (e.g. the CLI imports the export, never the
other way round)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "wpauc"


def module_files() -> dict[str, Path]:
    """Every wpauc module by dotted name (a package by its own name)."""
    files = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement in `module` may load: ``from a import b`` loads
    ``a`` and, when ``b`` is a module, ``a.b``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + [node.module or ""])
        base = base.rstrip(".")
    else:
        base = node.module
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def import_graph() -> dict[str, set[str]]:
    """Each wpauc module -> the wpauc modules it imports."""
    files = module_files()
    graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        graph[module] = {
            name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for name in imported_names(node, module, is_package)
            if name in files and name != module
        }
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of two or more modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(module: str) -> None:
        index[module] = lowest[module] = len(index)
        stack.append(module)
        for imported in sorted(graph[module]):
            if imported not in index:
                visit(imported)
                lowest[module] = min(lowest[module], lowest[imported])
            elif imported in stack:
                lowest[module] = min(lowest[module], index[imported])
        if lowest[module] == index[module]:
            component = set()
            while module not in component:
                component.add(stack.pop())
            if len(component) > 1:
                found.append(component)

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_the_graph_sees_the_package_and_its_layers():
    graph = import_graph()
    assert {"wpauc.cli", "wpauc.export", "wpauc.module", "wpauc.data.datamodule"} <= set(graph)
    assert "wpauc.export" in graph["wpauc.cli"]
    assert "wpauc.data.templates" in graph["wpauc.data.datamodule"]
    # the cycle finder finds a three-module loop and leaves out what only enters it
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_import_cycle_among_wpauc_modules():
    assert cycles(import_graph()) == []
