"""Who is producing or consuming: an Airflow task instance, or this user on this machine.

Inside a running Airflow task the consumer id is
``<dag_id>/<run_id>/<task_id>/<map_index>``: the same on every try of the
task instance, so a retried consumer gets its value again, and different for
every other task or mapped index. Outside Airflow it is
``local:<user>@<host>``, stable across calls, so re-running a notebook cell
re-claims the same value.

Example::

    >>> default_consumer_id().startswith("local:")  # outside Airflow
    True
"""

from __future__ import annotations

import functools
import getpass
import os
import socket
from dataclasses import dataclass

__all__ = ["TaskInstanceId", "default_consumer_id", "local_consumer_id", "running_task"]


@dataclass(frozen=True)
class TaskInstanceId:
    """The identity of a running Airflow task instance."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int | None  # None when not known (e.g. XComs pushed after the task context closed)

    @property
    def consumer_id(self) -> str:
        return f"{self.dag_id}/{self.run_id}/{self.task_id}/{self.map_index}"

    @property
    def producer_id(self) -> str:
        return self.consumer_id if self.try_number is None else f"{self.consumer_id}#try{self.try_number}"


def running_task() -> TaskInstanceId | None:
    """The task instance running in this process, or ``None`` (asked of the host).

    See :mod:`taskflow_exclusive.host`: with Airflow, the running task instance.
    """
    from taskflow_exclusive.host import current_host

    return current_host().running_task()


@functools.lru_cache(maxsize=1)
def _user_at_host() -> str:
    """``<user>@<host>`` of this process, asked once (getpass reads four variables, then pwd)."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name in some containers
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "user"
    return f"{user}@{socket.gethostname()}"


def local_consumer_id() -> str:
    """The consumer id used outside Airflow: ``local:<user>@<host>``."""
    return f"local:{_user_at_host()}"


def local_producer_id() -> str:
    return f"local:{_user_at_host()} pid {os.getpid()}"


def default_consumer_id() -> str:
    """The running task instance's consumer id, or :func:`local_consumer_id`."""
    task = running_task()
    return task.consumer_id if task is not None else local_consumer_id()
