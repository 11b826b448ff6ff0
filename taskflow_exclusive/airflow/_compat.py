"""Every Airflow import that depends on the Airflow version, and every private Airflow use.

When Airflow moves a name, this file changes and nothing else. Each entry
says which Airflow releases it was checked on and what differs. The classes
are resolved on first use (``from ..._compat import BaseXCom`` imports Airflow
then, not when this module is imported), so the host and the XCom backend
stay cheap to import in processes that never use them.

Checked on Airflow 3.3.2 (task SDK 1.3.2); see the floor in ``pyproject.toml``
and the versions CI proves in ``.ci/run``.

Example::

    >>> from taskflow_exclusive.airflow import _compat
    >>> _compat.AIRFLOW_CLASSES["BaseXCom"]
    ('airflow.sdk.bases.xcom', 'BaseXCom')
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "AIRFLOW_CLASSES",
    "airflow_conf",
    "provider_filesystem",
    "serde_module",
    "variable",
]

# Public classes whose home moved between releases: the first module that imports wins.
#   AirflowFailException: airflow.sdk.exceptions from 3.1; airflow.exceptions on 3.0.
#   AirflowPlugin:        airflow.sdk.plugins_manager from 3.1; airflow.plugins_manager on 3.0.
#   DecoratedOperator, task_decorator_factory: airflow.sdk.bases.decorator from 3.1;
#                         airflow.decorators.base on 3.0.
#   BaseXCom:             airflow.sdk.bases.xcom on every 3.x.
#   PythonOperator:       the standard provider on every 3.x.
_CANDIDATES: dict[str, tuple[str, ...]] = {
    "AirflowFailException": ("airflow.sdk.exceptions", "airflow.exceptions"),
    "AirflowPlugin": ("airflow.sdk.plugins_manager", "airflow.plugins_manager"),
    "DecoratedOperator": ("airflow.sdk.bases.decorator", "airflow.decorators.base"),
    "task_decorator_factory": ("airflow.sdk.bases.decorator", "airflow.decorators.base"),
    "BaseXCom": ("airflow.sdk.bases.xcom",),
    "PythonOperator": ("airflow.providers.standard.operators.python",),
}

# Filled on first use: name -> (module, attribute) actually found on this Airflow.
AIRFLOW_CLASSES: dict[str, tuple[str, str]] = {
    name: (modules[0], name) for name, modules in _CANDIDATES.items()
}


def __getattr__(name: str) -> Any:
    modules = _CANDIDATES.get(name)
    if modules is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, name):
            AIRFLOW_CLASSES[name] = (module_name, name)
            value = getattr(module, name)
            globals()[name] = value
            return value
    raise ImportError(f"{name} is in none of {', '.join(modules)} on this Airflow version")


def serde_module() -> Any | None:
    """Airflow's XCom serde module: ``airflow.sdk.serde`` from 3.2, ``airflow.serialization.serde`` before."""
    for name in ("airflow.sdk.serde", "airflow.serialization.serde"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def allow_in_serde(cls: type, qualname: str) -> bool:
    """Let Airflow's XCom serde rebuild ``cls`` in this process; ``False`` if no way is known.

    3.3 has the public ``allow_class(cls)``. 3.0-3.2 have no public way: their
    serde consults the module-private set ``_extra_allowed`` (which
    ``allow_class`` fills in 3.3) besides ``[core] allowed_deserialization_classes``.
    """
    module = serde_module()
    allow_class = getattr(module, "allow_class", None)
    if callable(allow_class):
        allow_class(cls)
        return True
    extra_allowed = getattr(module, "_extra_allowed", None)  # private, 3.0-3.2
    if isinstance(extra_allowed, set):
        extra_allowed.add(qualname)
        return True
    return False


def serde_deserialize(data: Any) -> Any:
    """``serde.deserialize`` wherever this Airflow keeps it."""
    return serde_module().deserialize(data)


def airflow_conf() -> Any:
    """Airflow's configuration as the task SDK sees it.

    ``airflow.sdk.configuration.conf`` from 3.2; ``airflow.configuration.conf``
    before (the same file and environment variables).
    """
    try:
        from airflow.sdk.configuration import conf
    except ImportError:
        from airflow.configuration import conf
    return conf


def variable(key: str) -> Any:
    """``Variable.get(key, default=None)``, with 3.0-3.2's behaviour outside a task made 3.3's.

    Outside a task, 3.0-3.2 search the secrets backends (environment variables
    included) and, finding nothing, raise ``ImportError`` mentioning
    ``SUPERVISOR_COMMS`` (there is no API server to ask); 3.3 returns the default.
    """
    from airflow.sdk import Variable

    try:
        return Variable.get(key, default=None)
    except ImportError as exc:
        if "SUPERVISOR_COMMS" not in str(exc):
            raise
        return None


def provider_filesystem(protocol: str, conn_id: str) -> Any | None:
    """The filesystem an installed provider registers for ``protocol``, as ObjectStoragePath builds it.

    ``airflow.sdk.io.fs`` (``has_fs``, ``get_fs``) on every 3.x release.
    """
    from airflow.sdk.io.fs import get_fs, has_fs

    if not has_fs(protocol):
        return None
    return get_fs(protocol, conn_id)
