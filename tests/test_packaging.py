"""xmodal installs as one name, `xmodal`, and its modules keep the import rules.

An application folder often holds its own `search.py` or `cli.py`: with xmodal's modules installed as
top-level `search`, `indexer` and `cli`, the app's shadowed them (or theirs the app's). Inside the repository,
one bare `import indexer` would load a second copy of every module, with a second `XmodalError` that
`except` no longer catches.
"""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO
from test_readme import NO_BF16, cpu_features_setting, normalise, python_examples

BARE = {"indexer", "search", "cli"}
PACKAGE_FILES = sorted([REPO / "__init__.py", REPO / "cli.py", *(REPO / "indexer").rglob("*.py"),
                        *(REPO / "search").rglob("*.py")])
OTHER_FILES = sorted(p for folder in ("tests", "bench", "data") for p in (REPO / folder).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = ["xmodal", *path.relative_to(REPO).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, int, str]]:
    """(line, level, module) of every import in the file, at any depth (a lazy import is an import too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, 0, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            found += [(node.lineno, node.level, f"{base}.{alias.name}" if base else alias.name)
                      for alias in node.names]
    return found


# Code run in a subprocess (`python -c "from indexer..."`) is a string: it imports the bare names as well, from
# the current folder, as a second copy of every module.
CODE_IN_STRINGS = re.compile(r"(^|[;\n]\s*)(from (indexer|search|cli)\b[\w.]* import|import (indexer|search|cli)\b)")
APP_MODULES = {"tests/test_packaging.py"}  # imports an app's own search.py, on purpose


def bare_imports_in_strings(path: Path) -> list[str]:
    return [f"{path.relative_to(REPO)}:{node.lineno}: {node.value[:60]!r}"
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and CODE_IN_STRINGS.search(node.value)]


def test_no_file_imports_the_bare_names():
    bare = [f"{path.relative_to(REPO)}:{line}: {name}" for path in PACKAGE_FILES + OTHER_FILES
            for line, level, name in imported_modules(path) if level == 0 and name.split(".")[0] in BARE]
    bare += [found for path in PACKAGE_FILES + OTHER_FILES if path.relative_to(REPO).as_posix() not in APP_MODULES
             for found in bare_imports_in_strings(path)]
    assert not bare, "import these as xmodal.indexer, xmodal.search, xmodal.cli:\n" + "\n".join(bare)


def test_code_in_strings_is_checked_too():
    assert CODE_IN_STRINGS.search("import sys; from search.placement import choose_placement")
    assert CODE_IN_STRINGS.search("from indexer.models import load_encoder\n")
    assert CODE_IN_STRINGS.search("import cli; cli.app()")
    assert not CODE_IN_STRINGS.search("from xmodal.search import open_index") and not CODE_IN_STRINGS.search(
        "a search from indexer logs")


def test_the_package_imports_itself_relatively():
    absolute = [f"{path.relative_to(REPO)}:{line}: {name}" for path in PACKAGE_FILES
                for line, level, name in imported_modules(path) if level == 0 and name.split(".")[0] == "xmodal"]
    assert not absolute, "\n".join(absolute)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE_FILES}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        for _, level, imported in imported_modules(path):
            if level:
                anchor = package.split(".")[: len(package.split(".")) - level + 1]
                imported = ".".join(anchor + [imported])
            # `from .x import name`: the module x.name where it is one, else x
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    order, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in order:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], order[target])
        if low[node] == order[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in order:
            visit(node)
    return found


def test_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50 and "xmodal.indexer.store.ann" in graph["xmodal.indexer.build.pipeline"]  # the walk sees imports
    assert cycles(graph) == []


# xmodal.indexer's layers, lowest first: each imports only its own and those below it
INDEXER_LAYERS = [("xmodal.indexer.errors", "xmodal.indexer.processes", "xmodal.indexer.fetch", "xmodal.indexer.words"),
                  ("xmodal.indexer.imaging", "xmodal.indexer.models"), ("xmodal.indexer.store",), ("xmodal.indexer.build",), ("xmodal.indexer",)]
# what search/ may import of the indexer: the faces (a package's __init__) and the leaf modules below them
INDEXER_FACES = {"xmodal.indexer", "xmodal.indexer.errors", "xmodal.indexer.fetch", "xmodal.indexer.imaging",
                 "xmodal.indexer.models", "xmodal.indexer.store", "xmodal.indexer.build", "xmodal.indexer.words"}
CLI_FACES = {"xmodal.indexer", "xmodal.search", "xmodal.search.serve"}


def layer_of(module: str) -> int | None:
    for level, prefixes in enumerate(INDEXER_LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    return None


def broken_rules(graph: dict[str, set[str]]) -> list[str]:
    broken = []
    for module, targets in graph.items():
        for target in sorted(targets):
            if module.startswith("xmodal.indexer"):
                below = layer_of(target) is not None and layer_of(target) <= layer_of(module)
                ok = below if module != "xmodal.indexer" else target.startswith("xmodal.indexer")
            elif module.startswith("xmodal.search"):
                ok = target.startswith("xmodal.search") or target in INDEXER_FACES
            elif module == "xmodal.cli":
                ok = target in CLI_FACES
            else:
                ok = True  # xmodal itself: the public names, from anywhere
            if not ok:
                broken.append(f"{module} imports {target}")
    return broken


def test_each_face_imports_only_what_lies_below_it():
    assert broken_rules(import_graph()) == []


def test_the_rules_catch_an_import_upward_or_past_a_face():
    assert broken_rules({"xmodal.indexer.store.segments": {"xmodal.indexer.build.pipeline"},
                         "xmodal.search.engine": {"xmodal.indexer.build.sources"},
                         "xmodal.cli": {"xmodal.search.engine"}, "xmodal.indexer.models.base": {"xmodal.search"},
                         "xmodal.indexer.build.edit": {"xmodal.indexer.store.tables"}}) == [
        "xmodal.indexer.store.segments imports xmodal.indexer.build.pipeline",
        "xmodal.search.engine imports xmodal.indexer.build.sources", "xmodal.cli imports xmodal.search.engine",
        "xmodal.indexer.models.base imports xmodal.search"]


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    folder, source = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "NOTICE", "__init__.py", "cli.py"):  # a copy: a build writes build/ beside
        shutil.copy(REPO / name, source)
    for name in ("indexer", "search"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(folder), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (path,) = folder.glob("xmodal-*.whl")
    return path


def test_the_wheel_installs_xmodal_and_nothing_else(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["xmodal"]
    assert {n.split("/")[0] for n in names} == {"xmodal", top_level.split("/")[0]}
    shipped = {n for n in names if n.endswith(".py")}
    wanted = {"xmodal/" + p.relative_to(REPO).as_posix() for p in PACKAGE_FILES}
    assert shipped == wanted  # every module of the package, and no test, bench or data script
    assert "xmodal/search/serve/static/index.html" in names
    entry_points = zipfile.ZipFile(wheel).read(top_level.replace("top_level.txt", "entry_points.txt")).decode()
    assert "xmodal = xmodal.cli:run" in entry_points


def test_the_wheel_carries_the_dictionarys_attribution(wheel):
    """CC-CEDICT's licence (CC BY-SA 4.0) asks for attribution wherever the English it gives is shipped."""
    names = zipfile.ZipFile(wheel).namelist()
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    assert "License-File: NOTICE" in zipfile.ZipFile(wheel).read(metadata).decode()
    (notice,) = [n for n in names if n.endswith("NOTICE") and ".dist-info/" in n]
    text = zipfile.ZipFile(wheel).read(notice).decode()
    assert "CC-CEDICT" in text and "MDBG" in text and "Attribution-ShareAlike 4.0" in text


def test_the_installed_wheel_works_in_an_app_with_its_own_search_cli_and_indexer(wheel, tmp_path):
    target, app = tmp_path / "site", tmp_path / "app"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                                str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]
    app.mkdir()
    for name in ("search", "cli", "indexer"):  # an app's own modules, first on its path
        (app / f"{name}.py").write_text(f"def run():\n    print('the app\\'s own {name}')\nopen_index = run\n")
    shutil.copytree(REPO / "data" / "catalog", app / "data" / "catalog")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{app}:{target}", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path),
           "XMODAL_CPU_FEATURES": cpu_features_setting(NO_BF16)}  # as the README's outputs were made

    code, shown = python_examples()[0]  # the README's first API example
    done = subprocess.run([sys.executable, "-c", "import xmodal; print(xmodal.__file__)\n" + code], cwd=app, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    where, printed = done.stdout.split("\n", 1)
    assert Path(where).is_relative_to(target)  # the wheel's xmodal, not the checkout's
    assert normalise(printed, app) == normalise(shown, app)

    version = subprocess.run([str(target / "bin" / "xmodal"), "--version"], cwd=app, env=env, capture_output=True,
                             text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.startswith("xmodal "), version.stderr[-3000:]
    in_app = subprocess.run([sys.executable, "-c", "import search; search.run()"], cwd=app, env=env,
                            capture_output=True, text=True, timeout=60)
    assert in_app.stdout == "the app's own search\n"  # and the app keeps its own names
