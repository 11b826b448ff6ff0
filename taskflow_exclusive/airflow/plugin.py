"""The Airflow plugin that lets every task process rebuild handles from XCom.

Airflow loads the plugins registered under the ``airflow.plugins`` entry point
in each task process at start-up, before the task pulls any XCom (Airflow
3.1 to 3.3: the task runner builds the template context, which loads
plugins). :meth:`ExclusivePlugin.on_load` allows :class:`ExclusiveHandle`
in Airflow's XCom serde there, so a plain ``@task`` consumer receives a
handle object even on a worker that never imported this package, or from a
DAG file that does not mention it.

The plugin adds nothing else (no views, macros or listeners); ``airflow
plugins`` lists it as ``taskflow_exclusive``.
"""

from __future__ import annotations

from typing import Any

from taskflow_exclusive.airflow._compat import AirflowPlugin
from taskflow_exclusive.airflow.serde import allow_handle_deserialization

__all__ = ["ExclusivePlugin"]


class ExclusivePlugin(AirflowPlugin):
    """Registers :class:`ExclusiveHandle` with Airflow's XCom serde when loaded."""

    name = "taskflow_exclusive"

    @classmethod
    def on_load(cls, *args: Any, **kwargs: Any) -> None:
        allow_handle_deserialization()
