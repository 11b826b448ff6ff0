"""Triggers on work queues: wait for items without a worker slot; start one DAG run per item.

- :class:`QueueItemsTrigger` (a ``BaseTrigger``): fires once when the queue
  holds at least ``min_items`` waiting items. The deferrable
  :class:`~taskflow_exclusive.airflow.queues.WaitForQueueItems` waits on it in
  the triggerer, holding no worker slot.
- :class:`ExclusiveQueueEventTrigger` (a ``BaseEventTrigger``, Airflow 3.0+):
  for event-driven scheduling. It takes each item off the queue atomically
  and fires one event carrying it, so that
  ``Asset(..., watchers=[AssetWatcher(name=..., trigger=...)])`` starts one
  DAG run per item, each item to exactly one run (several watchers or
  triggerers on one queue share its items; Redis pub/sub would broadcast
  each message to all). The run's task gets the value with
  :func:`value_from_event` (verified; a stored value is claimed by the task).
  Delivery to the run is *at most once*: a triggerer killed between taking
  an item and Airflow recording the event loses that item.
- :class:`ExclusiveQueueMessageProvider`: makes ``MessageQueueTrigger(scheme=
  "exclusive+redis", spec=..., queue_name=...)`` of
  ``apache-airflow-providers-common-messaging`` build the event trigger
  (registered under the ``queues`` key of our provider info).

Trigger arguments are stored in Airflow's database: ``serialize()`` records
``spec`` without its password (``***``); the triggerer then takes the full
URL from the Airflow Variable ``taskflow_exclusive_claims_url``, as claim
ledgers do. Prefer a redis Airflow connection id as ``spec``: it needs nothing more.

Example::

    >>> ExclusiveQueueEventTrigger(spec="redis://127.0.0.1:6379/15", queue_name="orders").serialize()[0]
    'taskflow_exclusive.airflow.queues_triggers.ExclusiveQueueEventTrigger'
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, BaseTrigger, TriggerEvent

from taskflow_exclusive.airflow._compat import message_queue_provider_base
from taskflow_exclusive.claims.specs import withhold_secrets
from taskflow_exclusive.queues.items import QueueItem

__all__ = [
    "SCHEME",
    "ExclusiveQueueEventTrigger",
    "ExclusiveQueueMessageProvider",
    "QueueItemsTrigger",
    "value_from_event",
]

SCHEME = "exclusive+redis"


def _queue(spec: str, queue_name: str) -> Any:
    from taskflow_exclusive.queues import ExclusiveQueue

    return ExclusiveQueue(spec, name=queue_name)


class QueueItemsTrigger(BaseTrigger):
    """Fires ``{"queue": ..., "depth": n}`` once ``n >= min_items`` items wait in the queue."""

    def __init__(self, spec: str, queue_name: str, min_items: int = 1, poll_interval: float = 1.0) -> None:
        super().__init__()
        self.spec, self.queue_name = spec, queue_name
        self.min_items, self.poll_interval = int(min_items), float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "spec": withhold_secrets(self.spec),
                "queue_name": self.queue_name,
                "min_items": self.min_items,
                "poll_interval": self.poll_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        queue = await asyncio.to_thread(_queue, self.spec, self.queue_name)
        while True:
            depth = await asyncio.to_thread(len, queue)
            if depth >= self.min_items:
                yield TriggerEvent({"queue": self.queue_name, "depth": depth})
                return
            await asyncio.sleep(self.poll_interval)


class ExclusiveQueueEventTrigger(BaseEventTrigger):
    """One event per item, each item taken off the queue atomically by one trigger.

    ``dag_id``: the DAG scheduled on this watcher's asset. Given, the trigger takes the next
    item only once the scheduler has made a new run of that DAG, so every item gets a run
    of its own. Airflow puts the asset events that arrive before its scheduler loop into one
    run, and (3.3.2) that run's ``triggering_asset_events`` holds only the *first* of them;
    the others wait for the next run. While the DAG cannot get a new run (paused, or at
    ``max_active_runs``) items stay in the queue.

    ``min_interval``: seconds to wait after each event, when ``dag_id`` is not given.
    """

    def __init__(
        self,
        spec: str,
        queue_name: str,
        poll_interval: float = 1.0,
        min_interval: float = 0.0,
        dag_id: str | None = None,
    ) -> None:
        super().__init__()
        self.spec, self.queue_name, self.poll_interval = spec, queue_name, float(poll_interval)
        self.min_interval = float(min_interval)
        self.dag_id = dag_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "spec": withhold_secrets(self.spec),
                "queue_name": self.queue_name,
                "poll_interval": self.poll_interval,
                "min_interval": self.min_interval,
                "dag_id": self.dag_id,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        queue = await asyncio.to_thread(_queue, self.spec, self.queue_name)
        while True:
            runs_before = await self._runs()
            taken = await asyncio.to_thread(queue.backend.pop, 1)
            if not taken:
                await asyncio.sleep(self.poll_interval)
                continue
            _, body = taken[0]
            item = QueueItem.from_json(body, where=queue.backend.describe())
            yield TriggerEvent({"queue": self.queue_name, "spec": queue.backend.spec, "item": item.to_dict()})
            if runs_before is not None:
                await self._until_new_run(runs_before, item.id)
            elif self.min_interval:  # let the scheduler make a run of this event before the next comes
                await asyncio.sleep(self.min_interval)

    async def _runs(self) -> int | None:
        if self.dag_id is None:
            return None
        from taskflow_exclusive.airflow._compat import dag_run_count

        return await asyncio.to_thread(dag_run_count, self.dag_id)

    async def _until_new_run(self, runs_before: int, item_id: str) -> None:
        """Wait until the scheduler has made a run of ``dag_id`` for the event just fired."""
        waited, reported = 0.0, 0.0
        while (await self._runs() or 0) <= runs_before:
            await asyncio.sleep(self.poll_interval)
            waited += self.poll_interval
            if waited - reported >= 60:
                reported = waited
                self.log.warning(
                    "Queue %r: item %s has waited %.0f s for a new run of DAG %r; the next items stay "
                    "in the queue until it comes (is the DAG paused, or at max_active_runs?).",
                    self.queue_name,
                    item_id,
                    waited,
                    self.dag_id,
                )


def value_from_event(event: Any, consumer_id: str | None = None) -> Any:
    """The value an :class:`ExclusiveQueueEventTrigger` event carried, verified before it is read.

    ``event`` is the trigger's payload, or an asset event (its ``extra``, or
    the ``payload`` inside it). An inline value is checked against its sha256;
    a stored value is claimed for ``consumer_id`` (default: the running task).
    """
    payload = getattr(event, "extra", event)
    if isinstance(payload, dict) and "item" not in payload and isinstance(payload.get("payload"), dict):
        payload = payload["payload"]
    if not isinstance(payload, dict) or "item" not in payload:
        from taskflow_exclusive.errors import MalformedRecordError

        raise MalformedRecordError(
            "This event was not fired by ExclusiveQueueEventTrigger (no 'item' in its payload); "
            "read it from the DAG run's triggering_asset_events of an exclusive+redis watcher.",
            kind="queue event",
            where="an asset event",
            problem="no item",
        )
    from taskflow_exclusive.queues.items import load_inline

    item = QueueItem.from_dict(payload["item"], where=f"an event of queue {payload.get('queue')!r}")
    if item.handle is not None:
        return item.handle.claim(consumer_id=consumer_id)
    return load_inline(item)


class ExclusiveQueueMessageProvider(message_queue_provider_base()):  # type: ignore[misc]
    """The ``exclusive+redis`` scheme of ``MessageQueueTrigger`` (common-messaging provider).

    ``MessageQueueTrigger(scheme="exclusive+redis", spec="redis://...", queue_name="orders")``
    (``queue=`` is taken by ``MessageQueueTrigger`` itself, hence ``queue_name``).
    """

    scheme = SCHEME

    def scheme_matches(self, scheme: str) -> bool:
        return scheme == SCHEME

    def queue_matches(self, queue: str) -> bool:
        return False

    def trigger_class(self) -> type[BaseEventTrigger]:
        return ExclusiveQueueEventTrigger

    def trigger_kwargs(self, queue: str, **kwargs: Any) -> dict:
        return {}
