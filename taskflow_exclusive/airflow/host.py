"""Airflow as the core's host: Variables, Connections, provider filesystems, the running task.

Registered under the entry-point group ``taskflow_exclusive.host``
(``pyproject.toml``), so the core finds it in every process where this
package is installed, without importing it by name (see
:mod:`taskflow_exclusive.host`). Importing this module imports nothing from
Airflow; each method imports what it uses.

Example::

    >>> host = AirflowHost()
    >>> host.running_task() is None   # no task runs in this process
    True
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from taskflow_exclusive.airflow.logs import import_airflow
from taskflow_exclusive.errors import StorageConfigError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

    from taskflow_exclusive.errors import ExclusiveError
    from taskflow_exclusive.host import Connection
    from taskflow_exclusive.identity import TaskInstanceId

__all__ = ["AirflowHost"]


class AirflowHost:
    """The host inside and around Airflow (DAG files, tasks, notebooks with Airflow installed)."""

    name = "airflow"

    def variable(self, key: str) -> str | None:
        """The Airflow Variable ``key``; an unreadable one is an error, never a silent default.

        Falling back to a default when the API server or a secrets backend fails
        would send values somewhere the user did not choose.
        """
        import_airflow()
        from airflow.sdk import Variable

        try:
            value = Variable.get(key, default=None)
        except Exception as exc:  # Airflow raises several types here; all mean "cannot read"
            raise StorageConfigError(
                f"Could not read Airflow Variable {key!r}: {exc}. Set it in the Airflow UI or "
                f"CLI, or export AIRFLOW_VAR_{key.upper()}.",
                url=None,
                source=f"Airflow Variable {key!r}",
            ) from exc
        value = "" if value is None else str(value).strip()
        return value or None

    def option(self, name: str) -> str | None:
        """``[taskflow_exclusive] <name>`` from Airflow's config (or its environment variable)."""
        import_airflow()
        from taskflow_exclusive.airflow._compat import airflow_conf
        from taskflow_exclusive.airflow.provider import CONFIG_SECTION

        value = str(airflow_conf().get(CONFIG_SECTION, name, fallback="") or "").strip()
        return value or None

    def connection(self, conn_id: str) -> Connection:
        """The Airflow connection ``conn_id``, read once per process."""
        return _connection(conn_id)

    def filesystem(self, protocol: str, conn_id: str) -> AbstractFileSystem | None:
        import_airflow()
        from airflow.sdk.io.fs import get_fs, has_fs

        return get_fs(protocol, conn_id) if has_fs(protocol) else None

    def running_task(self) -> TaskInstanceId | None:
        """The running task instance; cheap outside Airflow (no task SDK imported, no task)."""
        if "airflow.sdk" not in sys.modules:
            return None
        from airflow.sdk import get_current_context

        from taskflow_exclusive.identity import TaskInstanceId

        try:
            ti = get_current_context()["ti"]
        except RuntimeError:  # raised when no task is executing
            return None
        map_index = getattr(ti, "map_index", -1)
        return TaskInstanceId(
            dag_id=str(ti.dag_id),
            run_id=str(ti.run_id),
            task_id=str(ti.task_id),
            map_index=-1 if map_index is None else int(map_index),
            try_number=int(getattr(ti, "try_number", 1) or 1),
        )

    def run_conf(self) -> Mapping[str, Any] | None:
        """The running task's ``dag_run.conf`` (``{}`` when empty), or ``None`` outside a task."""
        if self.running_task() is None:
            return None
        from airflow.sdk import get_current_context

        dag_run = get_current_context().get("dag_run")
        return dict(getattr(dag_run, "conf", None) or {})

    def refuse(self, refused: ExclusiveError) -> None:
        """Inside a running task, raise ``refused`` so that the task fails without retries."""
        if self.running_task() is None:  # outside a task: nothing from Airflow is imported
            return
        from taskflow_exclusive.airflow.failures import fail_task_without_retry

        fail_task_without_retry(refused)

    def forget(self) -> None:
        """Read connections again on next use (tests; after a connection changed)."""
        _connection.cache_clear()


@functools.cache
def _connection(conn_id: str) -> Any:
    import_airflow()
    from airflow.sdk import Connection

    try:
        return Connection.get(conn_id)
    except Exception as exc:  # Airflow raises several types; all mean "cannot read it"
        raise StorageConfigError(
            f"Airflow connection {conn_id!r} could not be read ({type(exc).__name__}; the details "
            "stay out of this message as they may hold credentials). "
            f"Create it in Airflow, or export AIRFLOW_CONN_{conn_id.upper()}.",
            url=conn_id,
            source=f"Airflow connection {conn_id!r}",
        ) from exc
