"""The package as a user imports it: no heavy imports or side effects until a name is used."""

import subprocess
import sys
from pathlib import Path

import pyro_irm


def test_importing_the_package_loads_none_of_the_heavy_libraries():
    code = (
        "import sys, pyro_irm\n"
        "print(sorted(m for m in ('torch', 'pyro', 'arviz', 'sklearn', 'matplotlib', 'transformers') "
        "if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_public_name_resolves():
    assert set(pyro_irm.__all__) == set(pyro_irm._EXPORTS)
    for name in pyro_irm.__all__:
        assert getattr(pyro_irm, name) is not None, name
    assert set(pyro_irm.__all__) <= set(dir(pyro_irm))


def test_plotting_leaves_matplotlib_s_backend_alone(tmp_path):
    code = (
        "import matplotlib\nmatplotlib.use('svg')\n"
        "from pyro_irm.analysis.plots import plot_fit_history\n"
        "from pyro_irm.inference.result import FitHistory\n"
        "history = FitHistory(train_loss=[1.0, 0.5], validation_score=[-1.0, -0.6])\n"
        f"plot_fit_history(history, {str(tmp_path / 'fit.png')!r})\n"
        "print(matplotlib.get_backend())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "svg"
    assert (tmp_path / "fit.png").read_bytes()[:4] == b"\x89PNG"


def _module_imports() -> dict[str, set[str]]:
    """Each pyro_irm module -> the pyro_irm modules it imports, at the top or inside a function
    (a circle through a deferred import is still a circle); not those under ``if TYPE_CHECKING``."""
    import ast
    from pathlib import Path

    root = Path(pyro_irm.__file__).parent
    names = {}
    for path in root.rglob("*.py"):
        if "hf_template" in path.parts or path.name == "__main__.py":  # exported files; a program
            continue
        parts = path.relative_to(root.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for module, path in names.items():
        tree = ast.parse(path.read_text())
        typing_only = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
            for inner in ast.walk(node)
        }
        found = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pyro_irm"):
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        # A package may import its own submodules (each finds the package already in sys.modules);
        # importing a.b.c imports the packages a and a.b first.
        graph[module] = {m for m in found if m in names and m != module and not m.startswith(module + ".")}
        parents = module.split(".")
        graph[module] |= {".".join(parents[:i]) for i in range(1, len(parents))}
    return graph


def test_no_module_imports_itself_through_a_circle_and_each_imports_alone_in_dependency_order():
    from graphlib import TopologicalSorter

    graph = _module_imports()
    order = list(TopologicalSorter(graph).static_order())  # raises CycleError on a circle
    assert len(order) == len(graph) and {"pyro_irm.cli.app", "pyro_irm.estimators"} <= set(order)
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\nprint('ok')"
    result = subprocess.run([sys.executable, "-c", code, *order], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


# docs/architecture.md: each package imports only from lower layers.
LAYERS = {
    "atomic": 0, "_lazy": 0, "device": 0, "tables": 0, "groups": 0, "channels": 0,
    "data": 1, "encoders": 2, "models": 2, "estimators": 3, "export": 3, "inference": 4,
    "analysis": 5, "runs": 6, "benchmark": 7, "evaluation": 7, "demo": 7, "serve": 7, "rerank": 7, "cli": 8,
}  # fmt: skip


def _upward_imports(graph) -> list[str]:
    def package(module):
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else None

    upward = []
    for module, imports in graph.items():
        source = package(module)
        for imported in imports:
            target = package(imported)
            if source is None or target is None or source == target:
                continue  # the package root re-exports everything; a package may use itself
            if LAYERS[target] >= LAYERS[source]:
                upward.append(f"{module} -> {imported}")
    return sorted(upward)


def test_every_package_imports_only_from_lower_layers():
    graph = _module_imports()
    packages = {m.split(".")[1] for m in graph if m.count(".")}
    assert packages <= set(LAYERS), (
        f"a package without a layer in docs/architecture.md: {packages - set(LAYERS)}"
    )
    assert _upward_imports(graph) == []
    # and the check sees one: models reaching up to the estimators, as RewardModel once did
    graph["pyro_irm.models.reward_model"] = graph["pyro_irm.models.reward_model"] | {"pyro_irm.estimators"}
    assert _upward_imports(graph) == ["pyro_irm.models.reward_model -> pyro_irm.estimators"]


def test_the_graph_sees_a_circle_when_there_is_one():
    """The check above would catch one: join the two ends of an import chain."""
    from graphlib import CycleError, TopologicalSorter

    import pytest

    graph = _module_imports()
    graph["pyro_irm.estimators.base"] = graph["pyro_irm.estimators.base"] | {"pyro_irm.estimators.pu"}
    with pytest.raises(CycleError):
        list(TopologicalSorter(graph).static_order())


def test_a_lazy_name_is_never_shadowed_by_a_submodule_of_the_same_name():
    """``from pyro_irm.data import simulate`` must be the function even after the module that
    defines it was imported; a package exporting a name its own submodule has would break that."""
    import importlib
    from pathlib import Path

    for package in (
        "",
        ".data",
        ".inference",
        ".models",
        ".analysis",
        ".encoders",
        ".benchmark",
        ".export",
        ".cli",
    ):
        module = importlib.import_module("pyro_irm" + package)
        submodules = {p.stem for p in Path(module.__file__).parent.glob("*.py")} | {
            p.name for p in Path(module.__file__).parent.iterdir() if (p / "__init__.py").exists()
        }
        assert not set(module.__all__) & submodules, package


def test_the_command_line_answers_help_without_loading_torch():
    code = (
        "import sys\nfrom pyro_irm.cli import build_parser\n"
        "parser = build_parser()\n"
        "for command in ('fit', 'benchmark', 'simulate', 'score', 'serve', 'demo'):\n"
        "    try:\n        parser.parse_args([command, '--help'])\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in ('torch', 'pyro', 'sklearn', 'numpy', 'pandas') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_the_table_formatter_keeps_counts_whole_and_rounds_floats():
    from pyro_irm.tables import markdown_table

    table = markdown_table(("group", "rows", "share"), [("a", 481, 0.12345), ("b", 0, float("nan"))])
    assert table.splitlines() == [
        "| group | rows | share |",
        "| ----- | ---: | ----: |",
        "| a     |  481 | 0.123 |",
        "| b     |    0 |   n/a |",
    ]


def test_no_function_of_the_package_is_longer_than_80_lines():
    import ast

    longest = 80
    package = Path(__file__).resolve().parents[1] / "pyro_irm"
    too_long = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > longest:
                    too_long.append(
                        f"{path.relative_to(package.parent)}:{node.lineno} {node.name} ({lines} lines)"
                    )
    assert not too_long, "split these into named parts: " + "; ".join(too_long)
