"""Work queues in DAGs: a producer task, a pool of mapped drain tasks, a deferrable wait.

- ``@queue_producer(queue="orders")``: a TaskFlow task whose every returned
  or yielded value is put on the queue (a list, tuple, set or generator is
  split into items; anything else is one item). It returns
  ``{"queue": ..., "items": n}``.
- ``@queue_drain(queue="orders")``: the decorated function handles one value;
  the task takes items until the queue stays empty for ``idle_timeout`` s,
  at least once under leases, acking each after the function returns. The
  task instance (``dag/run/task/map_index``) is the consumer: a retried
  task instance takes up the leases its earlier try still held (an item whose
  function raised stays leased to it for its retry; without a retry the lease
  expires and another consumer gets the item). Run a pool with
  ``drain.expand(worker=list(range(4)))``: each item goes to one of them (a
  list: Airflow 3.3 serializes a ``range`` as its text and maps over its 11 characters).
- :class:`WaitForQueueItems`: a deferrable operator that waits in the
  triggerer (no worker slot) until the queue holds ``min_items``
  (``queue_name=``: ``queue`` is every operator's executor queue).

``spec`` defaults to the Airflow Variable ``taskflow_exclusive_queue_url``.

Example::

    @queue_producer(queue="orders")
    def orders():
        yield from ({"order": n} for n in range(100))

    @queue_drain(queue="orders")
    def ship(order, worker):
        ...

    orders() >> ship.expand(worker=list(range(4)))
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from airflow.sdk import BaseOperator, task

from taskflow_exclusive.queues import ExclusiveQueue

__all__ = ["WaitForQueueItems", "queue_drain", "queue_producer"]

_BATCH = 500


def _open(queue: str, spec: str | None, **options: Any) -> ExclusiveQueue:
    return ExclusiveQueue(spec, name=queue, **options)


def _values(result: Any) -> Iterable[Any]:
    if isinstance(result, (list, tuple, set, frozenset)) or inspect.isgenerator(result):
        return result
    return [result]


def queue_producer(
    python_callable: Callable | None = None,
    *,
    queue: str,
    spec: str | None = None,
    inline_max_bytes: int | None = None,
    **task_kwargs: Any,
) -> Any:
    """Make a TaskFlow task that puts every value its function returns or yields on ``queue``.

    ``inline_max_bytes``: values whose serialized bytes fit ride inside the item (default:
    :data:`~taskflow_exclusive.queues.items.INLINE_MAX_BYTES`); ``0`` stores every value, so
    only handles travel through Redis and event payloads.
    """
    options = {} if inline_max_bytes is None else {"inline_max_bytes": inline_max_bytes}

    def decorate(function: Callable) -> Any:
        @functools.wraps(function)
        def produce(*args: Any, **kwargs: Any) -> dict[str, Any]:
            target = _open(queue, spec, **options)
            batch: list[Any] = []
            count = 0
            for value in _values(function(*args, **kwargs)):
                batch.append(value)
                if len(batch) == _BATCH:
                    count += len(target.put_many(batch))
                    batch = []
            count += len(target.put_many(batch))
            return {"queue": queue, "items": count}

        produce.__annotations__ = {**function.__annotations__, "return": dict}
        return task(produce, multiple_outputs=False, **task_kwargs)

    return decorate(python_callable) if python_callable is not None else decorate


def queue_drain(
    python_callable: Callable | None = None,
    *,
    queue: str,
    spec: str | None = None,
    idle_timeout: float = 0.0,
    lease_seconds: float = 300.0,
    **task_kwargs: Any,
) -> Any:
    """Make a TaskFlow task that feeds each value taken from ``queue`` to the function (its first
    parameter); the other parameters are the task's (``worker`` for ``.expand(worker=...)``).
    Returns how many items this task instance completed."""

    def decorate(function: Callable) -> Any:
        signature = inspect.signature(function)
        rest = list(signature.parameters.values())[1:]

        @functools.wraps(function)
        def drain(**kwargs: Any) -> int:
            source = _open(queue, spec, lease_seconds=lease_seconds)
            done = 0
            for lease in source.drain(timeout=idle_timeout):
                function(lease.value, **kwargs)  # an exception keeps the lease for this task's retry
                lease.ack()
                done += 1
            return done

        drain.__signature__ = signature.replace(parameters=rest, return_annotation=int)  # type: ignore[attr-defined]
        drain.__annotations__ = {p.name: p.annotation for p in rest if p.annotation is not p.empty}
        drain.__annotations__["return"] = int
        return task(drain, multiple_outputs=False, **task_kwargs)

    return decorate(python_callable) if python_callable is not None else decorate


class WaitForQueueItems(BaseOperator):
    """Wait, deferred to the triggerer, until ``queue_name`` holds at least ``min_items`` items.

    Returns the depth it saw. The check runs once on the worker first: a
    queue that already has items costs no deferral.
    """

    template_fields = ("queue_name",)

    def __init__(
        self,
        *,
        queue_name: str,
        spec: str | None = None,
        min_items: int = 1,
        poll_interval: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.queue_name, self.spec = queue_name, spec
        self.min_items, self.poll_interval = min_items, poll_interval

    def execute(self, context: Any) -> int:
        from taskflow_exclusive.airflow.queues_triggers import QueueItemsTrigger

        source = _open(self.queue_name, self.spec)
        depth = len(source)
        if depth >= self.min_items:
            return depth
        self.defer(
            trigger=QueueItemsTrigger(
                spec=source.backend.spec,
                queue_name=self.queue_name,
                min_items=self.min_items,
                poll_interval=self.poll_interval,
            ),
            method_name="execute_complete",
        )
        return depth  # not reached: defer() raises

    def execute_complete(self, context: Any, event: dict[str, Any]) -> int:
        return int(event["depth"])
