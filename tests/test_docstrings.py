"""Every module's docstring examples run as tests: the examples a reader copies must work.

Each module of the package is a test of its own (``doctest`` with ELLIPSIS),
run with the library's INFO logs silenced: once Airflow is imported its
logging writes them to standard output, where a doctest would take them for
the example's output.
"""

from __future__ import annotations

import doctest
import importlib
import logging
import pkgutil

import pytest

import taskflow_exclusive

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(taskflow_exclusive.__path__, "taskflow_exclusive.")
    if ".examples.dags" not in info.name  # DAG files: run by the demo and the DAG tests
)


@pytest.mark.parametrize("name", MODULES)
def test_the_docstring_examples_of_each_module_work(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    library = logging.getLogger("taskflow_exclusive")
    level = library.level
    library.setLevel(logging.WARNING)
    try:
        module = importlib.import_module(name)
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    finally:
        library.setLevel(level)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (see above)"
