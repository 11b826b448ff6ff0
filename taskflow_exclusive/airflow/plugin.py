"""The Airflow plugin that lets every task process rebuild handles from XCom.

Airflow loads the plugins registered under the ``airflow.plugins`` entry point
in each task process at start-up, before the task pulls any XCom (Airflow
3.1 to 3.3: the task runner builds the template context, which loads
plugins). :meth:`ExclusivePlugin.on_load` allows :class:`ExclusiveHandle`
in Airflow's XCom serde there, so a plain ``@task`` consumer receives a
handle object even on a worker that never imported this package, or from a
DAG file that does not mention it.

In the API server it also adds the Claims view (Airflow 3.1+: ``fastapi_apps`` and
``external_views`` with ``destination`` ``dag_run`` and ``task_instance`` exist from 3.1
on): a "Claims" tab on every DAG run and task instance, served by
:mod:`taskflow_exclusive.airflow.claims_view` under ``/taskflow-exclusive``. The
FastAPI app is built on its first request (:class:`LazyClaimsApp`), so the scheduler,
workers and task processes, which load this plugin too, never import FastAPI for it.
``airflow plugins`` lists the plugin as ``taskflow_exclusive``.

Example::

    >>> [view["destination"] for view in ExclusivePlugin.external_views]
    ['dag_run', 'task_instance']
    >>> ExclusivePlugin.fastapi_apps[0]["url_prefix"]
    '/taskflow-exclusive'
"""

from __future__ import annotations

from typing import Any

from taskflow_exclusive.airflow._compat import AirflowPlugin
from taskflow_exclusive.airflow.serde import allow_handle_deserialization

__all__ = ["ExclusivePlugin", "LazyClaimsApp"]

CLAIMS_PREFIX = "/taskflow-exclusive"  # claims_view.URL_PREFIX, without importing FastAPI here
_CLAIMS_QUERY = "dag_id={DAG_ID}&run_id={RUN_ID}"  # the UI fills these in, URL-encoded


class LazyClaimsApp:
    """An ASGI app that builds the Claims view's FastAPI app on its first request."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            from taskflow_exclusive.airflow.claims_view import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


class ExclusivePlugin(AirflowPlugin):
    """Registers :class:`ExclusiveHandle` with Airflow's XCom serde when loaded."""

    name = "taskflow_exclusive"
    fastapi_apps = [  # noqa: RUF012 - AirflowPlugin declares these as plain class attributes
        {"app": LazyClaimsApp(), "url_prefix": CLAIMS_PREFIX, "name": "taskflow-exclusive claims"}
    ]
    # Relative hrefs (no leading slash): the UI resolves them against its base URL.
    external_views = [  # noqa: RUF012
        {
            "name": "Claims",
            "href": f"{CLAIMS_PREFIX[1:]}/claims?{_CLAIMS_QUERY}",
            "destination": "dag_run",
            "url_route": "taskflow-exclusive-run-claims",
        },
        {
            "name": "Claims",
            "href": f"{CLAIMS_PREFIX[1:]}/claims?{_CLAIMS_QUERY}&task_id={{TASK_ID}}&map_index={{MAP_INDEX}}",
            "destination": "task_instance",
            "url_route": "taskflow-exclusive-task-claims",
        },
    ]

    @classmethod
    def on_load(cls, *args: Any, **kwargs: Any) -> None:
        allow_handle_deserialization()
