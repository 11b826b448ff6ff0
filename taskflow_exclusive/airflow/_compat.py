"""Every Airflow import that depends on the Airflow version, and every private Airflow use.

When Airflow moves a name, this file changes and nothing else. Each entry
says which Airflow releases it was checked on and what differs. The classes
are resolved on first use (``from ..._compat import BaseXCom`` imports Airflow
then, not when this module is imported), so the host and the XCom backend
stay cheap to import in processes that never use them.

Checked on the latest patch of each minor release, with the task SDK it pins
(the floor in ``pyproject.toml`` is the lowest that CI proves, see ``.ci/run``):

==========  ========  ==============================================================
Airflow     task SDK  differences
==========  ========  ==============================================================
3.0.6       1.0.6     no ``airflow.sdk.{configuration,serde,plugins_manager,io.fs}``
3.1.8       1.1.8     no ``airflow.sdk.{configuration,serde,plugins_manager}``
3.2.2       1.2.2     all of them in the task SDK; serde has no ``allow_class``
3.3.2       1.3.2     ``airflow.sdk.serde.allow_class``
==========  ========  ==============================================================

3.0 is below the floor (``apache-airflow>=3.1.8``); its row stays as a record.
The Claims view (:mod:`taskflow_exclusive.airflow.claims_view`) needs nothing from here:
what it uses has the same name, module and behaviour on 3.1.8 and 3.3.2 (checked in both
releases' sources): the plugin fields ``fastapi_apps`` and ``external_views`` with the
destinations ``dag_run`` and ``task_instance`` (the UI fills in ``{DAG_ID}``, ``{RUN_ID}``,
``{TASK_ID}``, ``{MAP_INDEX}``, and shows a tab only for a view with a ``url_route``; 3.3.2
URL-encodes the values, 3.1.8 does not, which ``claims_view.selected_run`` reads alike:
no Airflow import differs); ``GetUserDep`` (bearer token, else the UI's ``_token`` cookie) and
``requires_access_dag`` in ``airflow.api_fastapi.core_api.security``; ``DagAccessEntity``;
``XComModel``, ``TaskInstance`` and ``create_session`` for the inventory.
Two uses touch private Airflow names: :func:`allow_in_serde` on 3.1 and 3.2
(serde's ``_extra_allowed``: those releases have no public way for a library
to allow a class in its own process), and :func:`dag_run_count` (the task
runner's ``get_dr_count``: a trigger has no public way to count a DAG's runs).
Everything else is public, only found in different modules.

Example::

    >>> from taskflow_exclusive.airflow import _compat
    >>> _compat.serde_module().__name__ in ("airflow.sdk.serde", "airflow.serialization.serde")
    True
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Any

__all__ = [
    "airflow_conf",
    "allow_in_serde",
    "dag_run_count",
    "has_mapped_dependants",
    "integrate_task_plugins",
    "serde_deserialize",
    "serde_module",
    "serde_serialize",
    "store_xcom_value",
    "stored_xcom_value",
]

# Classes whose home moved between releases, resolved by __getattr__ on first use, the newer
# home first (not in __all__: they exist only once asked for):
#   AirflowFailException: airflow.sdk.exceptions from 3.2; airflow.exceptions on 3.1 (3.2 and
#                         3.3 re-export the task SDK's class there).
#   AirflowPlugin:        airflow.sdk.plugins_manager from 3.2; airflow.plugins_manager on 3.1.
_MOVED_CLASSES: dict[str, tuple[str, ...]] = {
    "AirflowFailException": ("airflow.sdk.exceptions", "airflow.exceptions"),
    "AirflowPlugin": ("airflow.sdk.plugins_manager", "airflow.plugins_manager"),
}


def _first_module(*names: str) -> ModuleType:
    """The first of ``names`` that imports (the newer location first)."""
    for name in names[:-1]:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return importlib.import_module(names[-1])


def __getattr__(name: str) -> Any:
    homes = _MOVED_CLASSES.get(name)
    if homes is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for home in homes:  # 3.1 has airflow.sdk.exceptions, without AirflowFailException in it
        try:
            value = getattr(importlib.import_module(home), name)
        except (ImportError, AttributeError):
            continue
        globals()[name] = value
        return value
    raise ImportError(f"{name} is in none of {', '.join(homes)} on this Airflow version")


@functools.cache
def serde_module() -> ModuleType:
    """Airflow's XCom serde: ``airflow.sdk.serde`` from 3.2, ``airflow.serialization.serde`` on 3.1.

    On 3.2 and 3.3 the latter is a deprecated alias of the former, so the first that imports is
    the module XCom uses.
    """
    return _first_module("airflow.sdk.serde", "airflow.serialization.serde")


def allow_in_serde(cls: type, qualname: str) -> bool:
    """Let Airflow's XCom serde rebuild ``cls`` in this process; ``False`` if no way is known.

    3.3 has the public ``allow_class(cls)``. 3.1 and 3.2 have no public way: their
    serde consults the module-private set ``_extra_allowed`` (which
    ``allow_class`` fills in 3.3) besides ``[core] allowed_deserialization_classes``.
    """
    module = serde_module()
    allow_class = getattr(module, "allow_class", None)
    if callable(allow_class):
        allow_class(cls)
        return True
    extra_allowed = getattr(module, "_extra_allowed", None)  # private, 3.1 and 3.2
    if isinstance(extra_allowed, set):
        extra_allowed.add(qualname)
        return True
    return False


def serde_serialize(value: Any) -> Any:
    """``serde.serialize`` (what XCom stores), from :func:`serde_module`."""
    return serde_module().serialize(value)


def serde_deserialize(data: Any) -> Any:
    """``serde.deserialize`` (what XCom returns), from :func:`serde_module`."""
    return serde_module().deserialize(data)


def integrate_task_plugins() -> None:
    """Load plugins as a task process does at start-up (the task runner's ``integrate_macros_plugins``).

    From ``airflow.sdk.plugins_manager`` on 3.2 and 3.3, ``airflow.plugins_manager`` on 3.1
    (checked in each release's ``task_runner.py``). Used by the tests.
    """
    _first_module("airflow.sdk.plugins_manager", "airflow.plugins_manager").integrate_macros_plugins()


def airflow_conf() -> Any:
    """Airflow's configuration as the task SDK sees it.

    ``airflow.sdk.configuration.conf`` from 3.2; ``airflow.configuration.conf`` on 3.1
    (the same file and environment variables, the same ``get``/``getint``).
    """
    return _first_module("airflow.sdk.configuration", "airflow.configuration").conf


def stored_xcom_value(*, key: str, dag_id: str, task_id: str, run_id: str, map_index: int = -1) -> Any:
    """An XCom row's value as the backend stored it (JSON), not deserialized; ``None`` if absent.

    Only inside a running task. The public ``BaseXCom.get_one`` with a ``deserialize_value``
    that returns the stored value unchanged, instead of the private ``_get_xcom_db_ref``: the
    same request (this run's row) on 3.1.8, 3.2.2 and 3.3.2.
    """
    return _stored_xcom().get_one(key=key, dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=map_index)


def has_mapped_dependants(task: Any) -> bool:
    """Whether a task downstream maps over ``task``'s output (``.expand``), as the task runner asks.

    ``iter_mapped_dependants()`` of the operator, what ``_push_xcom_if_needed`` in
    ``task_runner.py`` calls to decide whether to record the mapped length. Run on 3.3.2; the
    same call is in the task runner of earlier 3.x task SDKs (read in their sources, not run
    on 3.1.8 here).
    """
    return next(iter(task.iter_mapped_dependants()), None) is not None


def store_xcom_value(*, key: str, value: Any, dag_id: str, task_id: str, run_id: str, map_index: int) -> None:
    """Push ``value`` to XCom through ``BaseXCom`` itself (serde JSON in the row), not the configured backend.

    Only inside a running task; :func:`stored_xcom_value` reads it back as stored. Used for the
    rows of a split output (:class:`~taskflow_exclusive.airflow.results.SplitHandles`), which must be
    readable one item at a time whatever backend is configured. The public ``BaseXCom.set``: run on
    3.3.2; the same keyword signature in earlier 3.x task SDK sources (not run on 3.1.8 here).
    """
    from airflow.sdk.bases.xcom import BaseXCom

    BaseXCom.set(key=key, value=value, dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=map_index)


@functools.cache
def _stored_xcom() -> type:
    from airflow.sdk.bases.xcom import BaseXCom

    class StoredXCom(BaseXCom):
        @staticmethod
        def deserialize_value(result: Any) -> Any:
            return result.value

    return StoredXCom


def message_queue_provider_base() -> type:
    """``BaseMessageQueueProvider`` of ``apache-airflow-providers-common-messaging``, else ``object``.

    An optional provider (it needs Airflow 3.0.1+ and Python 3.11+): without it,
    :class:`~taskflow_exclusive.airflow.queues_triggers.ExclusiveQueueMessageProvider`
    still imports (``MessageQueueTrigger`` only calls ``scheme_matches`` and
    ``trigger_class``). Checked with common-messaging 2.1.2 on Airflow 3.3.2.
    """
    try:
        from airflow.providers.common.messaging.providers.base_provider import BaseMessageQueueProvider
    except ImportError:
        return object
    return BaseMessageQueueProvider


def dag_run_count(dag_id: str) -> int:
    """How many runs ``dag_id`` has, asked from a trigger or a task through the supervisor.

    Private: ``RuntimeTaskInstance.get_dr_count`` of the task SDK's task runner
    sends ``GetDRCount``, which the triggerer's supervisor answers through the
    execution API (checked on 3.1.8 and 3.3.2; a trigger calls it in a thread).
    """
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    return int(RuntimeTaskInstance.get_dr_count(dag_id=dag_id))
