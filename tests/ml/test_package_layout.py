"""The shape of ml/, read from the source (every import statement, function-level and TYPE_CHECKING ones
included): serving never reaches into training, nothing in ml imports Django, the portal or the
benchmarks, and no two ml modules import each other, directly or round a longer circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ml.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_TOP_LEVEL = {"django", "rest_framework", "celery", "benchmarks", "diagnostics", "portal", "worker"}


def module_files(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under package_dir (a package's own name for __init__)."""
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imported_names(module: str, path: Path) -> set[str]:
    """Every dotted name an import statement in the file names: `import a.b` gives a.b; `from a import b`
    gives a and a.b (b may be a submodule); relative imports are resolved against `module`."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports, with every package on the way (importing
    a.b.c runs a/__init__.py and a/b/__init__.py first)."""
    files = module_files(package_dir)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        targets = set()
        for name in imported_names(module, path):
            parts = name.split(".")
            targets.update(".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in files)
        graph[module] = targets - {module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


ML_GRAPH = import_graph(ROOT / "ml")


def test_the_walk_sees_every_module_and_the_two_halves() -> None:
    assert {"ml.cli", "ml.serving.inference", "ml.serving.decode", "ml.training.training"} <= set(ML_GRAPH)
    assert "ml.serving.decode" in ML_GRAPH["ml.serving.inference"]  # a plain top-level import
    assert "ml.serving.inference" in ML_GRAPH["ml.training.evaluation"]  # one inside a function


def test_serving_never_imports_training_or_the_cli() -> None:
    crossings = {
        module: sorted(t for t in targets if t.startswith(("ml.training", "ml.cli")))
        for module, targets in ML_GRAPH.items()
        if module.startswith("ml.serving")
    }
    assert {module: found for module, found in crossings.items() if found} == {}


def test_nothing_in_ml_imports_django_the_portal_or_the_benchmarks() -> None:
    offenders = {}
    for module, path in module_files(ROOT / "ml").items():
        bad = sorted(n for n in imported_names(module, path) if n.split(".")[0] in FORBIDDEN_TOP_LEVEL)
        if bad:
            offenders[module] = bad
    assert offenders == {}


def test_no_import_cycle_among_ml_modules() -> None:
    assert cycles(ML_GRAPH) == []


def test_the_cycle_check_finds_a_circle(tmp_path: Path) -> None:
    """The checker on a package made to have one (a -> b -> c -> a, lazily and relatively), and a clean one."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from ..c import thing\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n")
    assert cycles(import_graph(package)) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
    (package / "c.py").write_text("import json\n")
    assert cycles(import_graph(package)) == []


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_lives_in_the_module_that_implements_it(command: str) -> None:
    """ml/cli.py only wires: the command's flags and body are functions of the module it names."""
    module, _ = COMMANDS[command]
    path = module_files(ROOT / "ml")[module]
    functions = {
        node.name for node in ast.parse(path.read_text(encoding="utf-8")).body if isinstance(node, ast.FunctionDef)
    }
    stem = command.replace("-", "_")
    assert {f"{stem}_arguments", f"{stem}_command"} <= functions
    cli_functions = {
        node.name for node in ast.parse((ROOT / "ml" / "cli.py").read_text(encoding="utf-8")).body
        if isinstance(node, ast.FunctionDef)
    }  # fmt: skip
    assert not cli_functions & {f"_{stem}", f"{stem}_command"}
