"""The floors hold: the core never reaches up into the Airflow layer, and Airflow is touched in one way.

Floors, each using only those below it (README "Architecture"):

    taskflow_exclusive.airflow, taskflow_exclusive.cli         the Airflow floor, the command
    handle, publishing, consuming, config, identity, host       the core
    claims, storage, formats, errors, faults, memo               the ground floor

The checks read every import statement (module level and inside functions) with ``ast``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import taskflow_exclusive

PACKAGE = Path(taskflow_exclusive.__file__).resolve().parent
UPPER_FLOOR = ("taskflow_exclusive.airflow", "taskflow_exclusive.cli", "taskflow_exclusive.examples")
# Modules that stand outside the floors: the public facade (lazy names) and the backend's
# configured path (a one-line re-export that airflow.cfg files name).
FACADES = {"taskflow_exclusive", "taskflow_exclusive.xcom"}
COMPAT = "taskflow_exclusive.airflow._compat"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
CORE = sorted(name for name in MODULES if not name.startswith(UPPER_FLOOR) and name not in FACADES)
GROUND = ("taskflow_exclusive.claims", "taskflow_exclusive.storage", "taskflow_exclusive.formats")
GROUND_MAY_NOT_USE = (
    "taskflow_exclusive.handle",
    "taskflow_exclusive.publishing",
    "taskflow_exclusive.consuming",
)


def _imports(name: str) -> list[tuple[int, str, tuple[str, ...]]]:
    """Every import in module ``name``: (line, absolute module, imported names)."""
    found = []
    for node in ast.walk(ast.parse(MODULES[name].read_text(), str(MODULES[name]))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{name}:{node.lineno} uses a relative import"
            names = tuple(alias.name for alias in node.names)
            found.append((node.lineno, node.module or "", names))
            # ``from taskflow_exclusive import airflow`` imports a module too
            found.extend((node.lineno, f"{node.module}.{n}", ()) for n in names)
    return found


def _is_under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_floors_are_visible_in_the_tree():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert {"airflow", "cli", "claims", "storage", "formats"} <= folders
    assert len(CORE) >= 20, CORE  # the checks below really see the core


@pytest.mark.parametrize("name", CORE)
def test_the_core_never_imports_airflow_nor_the_airflow_floor(name):
    reaching_up = [
        f"{name}:{line} imports {module}"
        for line, module, _ in _imports(name)
        if _is_under(module, ("airflow", *UPPER_FLOOR))
    ]
    assert not reaching_up, "the core asks the host (taskflow_exclusive.host) instead:\n" + "\n".join(
        reaching_up
    )


@pytest.mark.parametrize("name", [n for n in CORE if _is_under(n, GROUND)])
def test_the_ground_floor_never_imports_the_core_above_it(name):
    reaching_up = [
        f"{name}:{line} imports {module}"
        for line, module, _ in _imports(name)
        if _is_under(module, GROUND_MAY_NOT_USE)
    ]
    assert not reaching_up, "\n".join(reaching_up)


@pytest.mark.parametrize("name", sorted(set(MODULES) - {COMPAT}))
def test_private_and_version_gated_airflow_uses_live_in_compat_only(name):
    tree = ast.parse(MODULES[name].read_text())
    problems = []
    for line, module, names in _imports(name):
        if not _is_under(module, ("airflow",)):
            continue
        private = [part for part in (*module.split("."), *names) if part.startswith("_")]
        if private:
            problems.append(f"{name}:{line} uses private Airflow names {private} ({module})")
    for node in ast.walk(tree):  # try: import airflow.x / except ImportError: ...
        if isinstance(node, ast.Try) and any(
            isinstance(inner, (ast.Import, ast.ImportFrom))
            and _is_under(
                inner.module if isinstance(inner, ast.ImportFrom) else inner.names[0].name, ("airflow",)
            )
            for statement in node.body
            for inner in ast.walk(statement)
        ):
            problems.append(f"{name}:{node.lineno} gates an Airflow import on the version")
    assert not problems, f"move these into {COMPAT}:\n" + "\n".join(problems)


def test_importing_the_package_and_its_core_imports_nothing_from_airflow():
    script = (
        "import importlib, json, sys\n"
        f"for name in {CORE!r}:\n"
        "    importlib.import_module(name)\n"
        "import taskflow_exclusive\n"
        "names = taskflow_exclusive.__all__\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.splitlines()[-1]) == []


def test_the_public_names_are_listed_once_and_all_load():
    assert len(set(taskflow_exclusive.__all__)) == len(taskflow_exclusive.__all__)
    assert sorted(dir(taskflow_exclusive)) == sorted(taskflow_exclusive.__all__)
    for name in taskflow_exclusive.__all__:
        assert getattr(taskflow_exclusive, name) is not None, name


def test_the_configured_paths_still_import():
    """airflow.cfg files name the backend, and XCom rows name the handle class, by these paths."""
    from taskflow_exclusive.airflow.xcom import ExclusiveXCom as backend
    from taskflow_exclusive.handle import ExclusiveHandle
    from taskflow_exclusive.xcom import ExclusiveXCom

    assert ExclusiveXCom is backend
    assert f"{ExclusiveHandle.__module__}.{ExclusiveHandle.__qualname__}" == (
        "taskflow_exclusive.handle.ExclusiveHandle"
    )
