"""The layout's rules (docs/architecture.md): imports go one way, packages re-export only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from benchlab.identity import imported_modules

ROOT = Path(__file__).resolve().parents[1] / "benchlab"
LINES = 450  # "short enough to read in one sitting", with some slack


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _graph() -> dict[str, set[str]]:
    """module -> the benchlab modules it imports (anywhere in the file, lazily too)."""
    return {name: {m for m in imported_modules(path, name) if m in MODULES and m != name}
            for name, path in MODULES.items()}


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    # a package's __init__ re-exports its modules; those never import it back
    edges = {name: {m for m in deps if not name.startswith(m + ".")}
             for name, deps in graph.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for dep in sorted(edges[name]):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        path.pop()
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name)


def test_modules_of_a_package_do_not_import_their_package():
    for name, deps in _graph().items():
        package = name.rpartition(".")[0]
        if package and MODULES[name].name != "__init__.py" and package != "benchlab":
            assert package not in deps, f"{name} imports its own package {package}"


def test_package_inits_only_re_export():
    for name, path in MODULES.items():
        if path.name != "__init__.py" or name == "benchlab":
            continue
        tree = ast.parse(path.read_text())
        logic = [node for node in tree.body
                 if not isinstance(node, (ast.Import, ast.ImportFrom, ast.Expr, ast.Assign,
                                          ast.AnnAssign))]
        assert not logic, f"{path} holds more than re-exports"


@pytest.mark.parametrize("low", ["benchlab.execute", "benchlab.report", "benchlab.suite",
                                 "benchlab.data", "benchlab.store", "benchlab.scheduler",
                                 "benchlab.training", "benchlab.executors"])
def test_nothing_below_the_runner_imports_it_or_the_cli(low):
    for name, deps in _graph().items():
        if name == low or name.startswith(low + "."):
            assert not deps & {"benchlab.runner", "benchlab.cli"}, name


def test_modules_are_short_enough_to_read_in_one_sitting():
    exempt = {"benchlab.cli"}  # the command line: one job, grown long
    long = {name: n for name, path in MODULES.items()
            if name not in exempt and (n := len(path.read_text().splitlines())) > LINES}
    assert not long, long
