"""Shared pieces of the TaskFlow tests: storage chosen through the Airflow Variable, stored objects.

The DAG files in ``tests/dags`` pass no ``storage=`` argument: like a
deployment, they store where the Airflow Variable
``taskflow_exclusive_storage_url`` says. Tests point it at a fresh location
through its environment variable (which tasks read before the database).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from taskflow_exclusive.storage.layout import encode_segment

if TYPE_CHECKING:
    import pytest

STORAGE_ENV = "AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_STORAGE_URL"


def use_storage(monkeypatch: pytest.MonkeyPatch, url: str) -> str:
    """Make ``url`` the storage of every task run by this test (in this process and subprocesses)."""
    monkeypatch.setenv(STORAGE_ENV, url)
    return url


def task_folder(storage_url: str, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Path:
    """The local folder where a task instance's values are stored (file:// storage)."""
    base = Path(urlparse(storage_url).path)
    return base / encode_segment(dag_id) / encode_segment(run_id) / encode_segment(task_id) / str(map_index)


def stored_stems(folder: Path) -> set[str]:
    """The stems (``try<N>-<hex>``) of every object in ``folder``: values, manifests, claims."""
    return {entry.name.split(".", 1)[0] for entry in folder.iterdir()} if folder.exists() else set()


def by_task(rows: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(row["task"], []).append(row)
    return grouped


def committed_in_running_task() -> int:
    """From inside a task: how many values this task instance has committed (manifests in its folder)."""
    from taskflow_exclusive.config import resolve_storage_url
    from taskflow_exclusive.identity import running_task
    from taskflow_exclusive.publishing import task_folder
    from taskflow_exclusive.storage.store import Store

    setting = resolve_storage_url()
    store = Store.from_url(setting.value, setting.source)
    task = running_task()
    assert task is not None, "call this inside a running task"
    folder = task_folder(store, task)
    return sum(entry.endswith(".manifest.json") for entry in store.list_folder(folder))
