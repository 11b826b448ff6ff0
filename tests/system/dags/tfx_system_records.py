"""What a task saw, written as a JSON object to the object store: the one thing all workers share.

Copied next to the system-test DAG files (and listed in their ``.airflowignore``).
``TFX_SYSTEM_RECORDS`` names where records go, ``s3://<conn_id>@<bucket>/<prefix>``;
``TFX_WORKER_NAME`` says which worker (or the scheduler, for the LocalExecutor) ran the task.
Each call writes ``<prefix>/<dag_id>/<run_id>/<task_id>/<map_index>/try<N>-<seq>.json``.

Example (inside a task)::

    record(value=value, holder=refused.holder)
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import pendulum

_sequence = itertools.count()


def _filesystem(conn_id: str):
    import s3fs
    from airflow.sdk import Connection

    connection = Connection.get(conn_id)
    extra = connection.extra_dejson
    return s3fs.S3FileSystem(
        key=connection.login,
        secret=connection.password,
        client_kwargs={"endpoint_url": extra["endpoint_url"], "region_name": extra.get("region_name")},
        skip_instance_cache=True,
    )


def _task_path() -> tuple[dict[str, Any], str]:
    from airflow.sdk import get_current_context

    ti = get_current_context()["ti"]
    where = {
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "map_index": -1 if ti.map_index is None else ti.map_index,
        "try_number": ti.try_number,
    }
    segments = [quote(str(where[k]), safe="") for k in ("dag_id", "run_id", "task_id", "map_index")]
    return where, "/".join(segments)


def record(**facts: Any) -> None:
    """Write ``facts`` with who wrote them (task instance, try, worker, pid) to the object store."""
    url = urlsplit(os.environ["TFX_SYSTEM_RECORDS"])
    where, folder = _task_path()
    seq = next(_sequence)
    body = {
        **where,
        "seq": seq,
        "worker": os.environ.get("TFX_WORKER_NAME", "unknown"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "at": time.time(),
        **facts,
    }
    path = f"{url.hostname}{url.path}/{folder}/try{where['try_number']}-{seq}.json"
    _filesystem(url.username).pipe_file(path, json.dumps(body, default=repr).encode())


def dag_arguments(retries: int = 0) -> dict[str, Any]:
    """What every system-test DAG passes to ``@dag``: manual runs only, ``retries`` per task."""
    arguments: dict[str, Any] = {
        "schedule": None,
        "start_date": pendulum.datetime(2026, 1, 1, tz="UTC"),
        "catchup": False,
    }
    if retries:
        arguments["default_args"] = {"retries": retries, "retry_delay": timedelta(seconds=1)}
    return arguments


def record_refusal(refused: Exception, **facts: Any) -> None:
    """Record a refused claim: its holder, and whether it fails the task without retries."""
    from airflow.sdk.exceptions import AirflowFailException

    no_retry = isinstance(refused, AirflowFailException)
    record(outcome="refused", holder=refused.holder, no_retry=no_retry, **facts)


def arrive_and_wait(name: str, expected: int, timeout: float = 60) -> int:
    """A start line: mark this task as arrived under ``name``, wait until ``expected`` did.

    Returns how many had arrived when it stopped waiting (``expected``, unless it timed out).
    Used to make consumers claim at the same moment, wherever they run.
    """
    url = urlsplit(os.environ["TFX_SYSTEM_RECORDS"])
    where, _ = _task_path()
    run = f"{quote(where['dag_id'], safe='')}/{quote(where['run_id'], safe='')}"
    line = f"{url.hostname}{url.path}/_start_lines/{run}/{quote(name, safe='')}"
    fs = _filesystem(url.username)
    fs.pipe_file(f"{line}/{where['task_id']}-{where['map_index']}", b"arrived")
    deadline = time.monotonic() + timeout
    while True:
        fs.invalidate_cache()
        arrived = len(fs.ls(line, refresh=True))
        if arrived >= expected or time.monotonic() > deadline:
            return arrived
        time.sleep(0.2)
