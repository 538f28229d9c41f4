"""The test suite's layout: a test file takes its shared helpers from tests/helpers/ (and its
fixtures from tests/conftest.py), never from another test file; the benchmarks and the
notebooks do not import the tests at all."""

import ast
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"


def imported_modules(source: str, package: str) -> set[str]:
    """Every module an `import` or `from ... import` of `source` names, relative imports
    resolved against `package` (`from tests import test_x` names tests.test_x too)."""
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module
            modules.add(base)
            modules.update(f"{base}.{alias.name}" for alias in node.names)
    return modules


def package_of(path: Path) -> str:
    return ".".join(path.relative_to(REPO).parent.parts)


def test_imported_modules_sees_every_spelling_of_a_test_module_import():
    source = (
        "import tests.test_a\nfrom tests.test_b import x\nfrom tests import test_c\n"
        "from .test_d import y\nfrom ..test_e import z\n"
    )
    found = imported_modules(source, "tests.helpers")
    assert {"tests.test_a", "tests.test_b", "tests.test_c", "tests.helpers.test_d"} <= found
    assert "tests.test_e" in found


def test_no_test_file_imports_another_test_file():
    offenders = {}
    for path in sorted(TESTS.rglob("*.py")):
        modules = imported_modules(path.read_text(encoding="utf-8"), package_of(path))
        test_modules = sorted(
            {
                ".".join(parts[: index + 1])
                for parts in (module.split(".") for module in modules)
                for index, part in enumerate(parts)
                if parts[0] == "tests" and index > 0 and part.startswith("test_")
            }
        )
        if test_modules:
            offenders[str(path.relative_to(REPO))] = test_modules
    assert not offenders, f"move the shared helpers to tests/helpers/: {offenders}"


def test_benchmarks_and_notebooks_do_not_import_the_tests():
    sources = {
        str(path.relative_to(REPO)): path.read_text(encoding="utf-8")
        for path in sorted((REPO / "benchmarks").rglob("*.py"))
    }
    for notebook in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        code = ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]
        # IPython magics and shell lines are not Python
        sources[str(notebook.relative_to(REPO))] = "\n".join(
            line
            for cell in code
            for line in cell.splitlines()
            if not line.lstrip().startswith(("%", "!"))
        )
    assert len(sources) > 5
    offenders = {
        name: sorted(
            module
            for module in imported_modules(source, "")
            if module == "tests" or module.startswith("tests.")
        )
        for name, source in sources.items()
    }
    assert not {name: modules for name, modules in offenders.items() if modules}
