"""The host: what the core asks of the program it runs in.

The core (handles, storage, formats, claim ledgers, publishing and claiming)
never imports Airflow, nor :mod:`taskflow_exclusive.airflow`. What it needs
from its surroundings it asks the current :class:`Host` for:

- ``variable(key)``: a setting such as the storage URL (an Airflow Variable);
- ``option(name)``: a deployment option (``[taskflow_exclusive] <name>`` in Airflow's config);
- ``connection(conn_id)``: credentials named in a URL (an Airflow Connection);
- ``filesystem(protocol, conn_id)``: a filesystem the host builds itself for
  a connection (an Airflow provider's), or ``None``;
- ``running_task()``: the task instance running in this process, or ``None``;
- ``run_conf()``: the ``conf`` of that task's DAG run (where grants arrive), or ``None``;
- ``refuse(error)``: called with every :class:`AlreadyClaimedError` (and
  refused grant, :class:`GrantError`) before it
  is raised; it may raise another form of it. Airflow's host raises one that
  fails the task without retries, since every retry would be refused too.

Which host: the one given to :func:`install_host`, else the one registered
under the entry-point group ``taskflow_exclusive.host`` (this package
registers :class:`taskflow_exclusive.airflow.host.AirflowHost` there), else
:class:`StandaloneHost`. Dependencies point down: the Airflow layer plugs
into the core through this seam, the core never reaches up.

Example::

    >>> from taskflow_exclusive.host import StandaloneHost, current_host, install_host
    >>> previous = install_host(StandaloneHost(environ={"AIRFLOW_VAR_SIZE": "3"}))
    >>> current_host().variable("size"), current_host().running_task()
    ('3', None)
    >>> _ = install_host(previous)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from taskflow_exclusive.errors import StorageConfigError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

    from taskflow_exclusive.errors import ExclusiveError
    from taskflow_exclusive.identity import TaskInstanceId

__all__ = [
    "ENTRY_POINT_GROUP",
    "Connection",
    "Host",
    "StandaloneHost",
    "current_host",
    "install_host",
]

ENTRY_POINT_GROUP = "taskflow_exclusive.host"


class Connection(Protocol):
    """The parts of a connection the core reads (Airflow's ``Connection`` has them all)."""

    conn_type: str | None
    host: str | None
    login: str | None
    password: str | None
    port: int | None
    schema: str | None

    @property
    def extra_dejson(self) -> dict[str, Any]: ...


class Host(Protocol):
    """What the core asks of its surroundings (see the module docstring)."""

    name: str

    def variable(self, key: str) -> str | None:
        """The setting ``key``, stripped, or ``None`` when unset.

        Raises :class:`StorageConfigError` when it cannot be read.
        """
        ...

    def option(self, name: str) -> str | None:
        """The deployment option ``name`` (``[taskflow_exclusive] <name>``), or ``None`` when unset."""
        ...

    def connection(self, conn_id: str) -> Connection:
        """The connection ``conn_id``; :class:`StorageConfigError` when it cannot be read."""
        ...

    def filesystem(self, protocol: str, conn_id: str) -> AbstractFileSystem | None:
        """A filesystem the host builds for ``conn_id``, or ``None`` to let the core map the connection."""
        ...

    def running_task(self) -> TaskInstanceId | None:
        """The task instance running in this process, or ``None``."""
        ...

    def run_conf(self) -> Mapping[str, Any] | None:
        """The running task's DAG run ``conf`` (``{}`` when it has none), or ``None`` outside a task."""
        ...

    def refuse(self, refused: ExclusiveError) -> None:
        """Called before ``refused`` is raised; may raise another form of it."""
        ...

    def forget(self) -> None:
        """Read settings and connections again on next use (tests; after a change)."""
        ...


class StandaloneHost:
    """A host without Airflow: settings from ``AIRFLOW_VAR_<KEY>`` (and options from
    ``AIRFLOW__TASKFLOW_EXCLUSIVE__<NAME>``) environment variables only.

    It knows no connections and no running task, and raises refusals as they are.
    """

    name = "standalone"

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def variable(self, key: str) -> str | None:
        value = self._environ.get(f"AIRFLOW_VAR_{key.upper()}", "").strip()
        return value or None

    def option(self, name: str) -> str | None:
        value = self._environ.get(f"AIRFLOW__TASKFLOW_EXCLUSIVE__{name.upper()}", "").strip()
        return value or None

    def connection(self, conn_id: str) -> Connection:
        raise StorageConfigError(
            f"Airflow connection {conn_id!r} is named, but this process runs without Airflow "
            "(no taskflow-exclusive host is installed), so no connection can be read. Install "
            "taskflow-exclusive with Airflow, or use a URL without a connection id.",
            url=conn_id,
            source="standalone host",
        )

    def filesystem(self, protocol: str, conn_id: str) -> AbstractFileSystem | None:
        return None

    def running_task(self) -> TaskInstanceId | None:
        return None

    def run_conf(self) -> Mapping[str, Any] | None:
        return None

    def refuse(self, refused: ExclusiveError) -> None:
        return None

    def forget(self) -> None:
        return None


class _Current:
    """The current host (``None``: not chosen yet) and the lock that guards choosing it."""

    host: Host | None = None
    lock = threading.Lock()


def install_host(host: Host | None) -> Host | None:
    """Make ``host`` the current host (``None``: discover again); return the previous one."""
    with _Current.lock:
        previous, _Current.host = _Current.host, host
    return previous


def current_host() -> Host:
    """The installed host, else the registered one, else :class:`StandaloneHost`."""
    host = _Current.host
    if host is not None:
        return host
    discovered = _discover()
    with _Current.lock:
        if _Current.host is None:
            _Current.host = discovered
        return _Current.host


def _discover() -> Host:
    from importlib.metadata import entry_points

    found = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda point: point.name)
    if len(found) > 1:
        names = ", ".join(f"{point.name} ({point.value})" for point in found)
        raise StorageConfigError(
            f"Several taskflow-exclusive hosts are registered under the entry point group "
            f"{ENTRY_POINT_GROUP!r}: {names}. Uninstall all but one, or choose one with "
            "taskflow_exclusive.host.install_host().",
            url=None,
            source=f"entry points {ENTRY_POINT_GROUP!r}",
        )
    if not found:
        return StandaloneHost()
    return found[0].load()()
