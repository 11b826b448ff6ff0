"""Letting Airflow's XCom serde rebuild :class:`ExclusiveHandle` (and :class:`Grant`) objects.

XCom stores a handle as ``{"__classname__": "taskflow_exclusive.handle.ExclusiveHandle",
"__version__": 1, "__data__": {...}}`` (the handle's ``serialize()``), and a
consumer task gets the object back through its ``deserialize(data, version)``.
Airflow only rebuilds classes on an allow list, ``[core]
allowed_deserialization_classes`` (default ``airflow.*``), so the handle
class must be allowed in **every process that deserializes**, without the
user editing that setting:

- Airflow 3.3 has ``airflow.sdk.serde.allow_class(cls)``: allowed in this process.
- Airflow 3.1 and 3.2 check the same per-process set (``_extra_allowed``) that
  ``allow_class`` fills in 3.3; we add the class name to it (the one private
  Airflow use, in :func:`taskflow_exclusive.airflow._compat.allow_in_serde`).

:func:`allow_handle_deserialization` does this once per process. It is called

- by the Airflow plugin :class:`taskflow_exclusive.airflow.plugin.ExclusivePlugin`,
  which every task process loads at start-up (before it pulls any XCom), so a
  worker that never imported this package before still rebuilds handles;
- when ``@exclusive_task`` / ``@task.exclusive`` / ``@exclusive_output`` is
  used in a DAG file (every process that parses the DAG).

Example::

    >>> from taskflow_exclusive.airflow.serde import allow_handle_deserialization
    >>> allow_handle_deserialization()
    True
"""

from __future__ import annotations

import functools
import logging

from taskflow_exclusive.handle import HANDLE_CLASS

__all__ = ["GRANT_CLASS", "HANDLE_CLASS", "allow_handle_deserialization"]

log = logging.getLogger("taskflow_exclusive")

GRANT_CLASS = "taskflow_exclusive.grants.Grant"


@functools.cache
def allow_handle_deserialization() -> bool:
    """Allow Airflow's serde to rebuild :class:`ExclusiveHandle` in this process.

    Returns ``True`` when Airflow's serde now accepts the class.
    Idempotent and cheap after the first call.
    """
    from taskflow_exclusive.airflow._compat import allow_in_serde
    from taskflow_exclusive.airflow.results import SplitHandles
    from taskflow_exclusive.grants import Grant
    from taskflow_exclusive.handle import ExclusiveHandle

    split_handles = (SplitHandles, f"{SplitHandles.__module__}.{SplitHandles.__qualname__}")
    allowed = [
        allow_in_serde(cls, name)
        for cls, name in ((ExclusiveHandle, HANDLE_CLASS), (Grant, GRANT_CLASS), split_handles)
    ]
    if all(allowed):
        return True
    log.warning(
        "Could not register %s and %s with Airflow's XCom serde (no known serde module). Add them "
        "to [core] allowed_deserialization_classes so consumer tasks can receive handles and grants.",
        HANDLE_CLASS,
        GRANT_CLASS,
    )
    return False
