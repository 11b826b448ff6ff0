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
  ``dag_id=`` gives each item a run of its own (the trigger waits for the
  scheduler's run before it takes the next item). Delivery to runs is *at
  most once* (a triggerer killed between taking an item and Airflow recording
  the event loses that item), or with ``lease_seconds=`` *at least once*, one
  run completing each item (fencing tokens, as for leases).
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

    ``lease_seconds``: delivery to runs **at least once**. The trigger leases each item
    (instead of removing it) and the event carries the lease's fencing token; the run's task
    completes the item in :func:`value_from_event`. An item whose lease ends first (the
    triggerer died before Airflow recorded the event, or no run took it in time) goes back to
    the queue and fires a new event; a run holding the old token is then refused with
    :class:`~taskflow_exclusive.errors.LeaseExpiredError`, so one run completes each item.
    While the trigger waits for the run of ``dag_id``, it keeps the lease alive. Without
    ``lease_seconds`` an item is removed when its event fires: at most once.
    """

    def __init__(
        self,
        spec: str,
        queue_name: str,
        poll_interval: float = 1.0,
        *,
        min_interval: float = 0.0,
        dag_id: str | None = None,
        lease_seconds: float | None = None,
    ) -> None:
        super().__init__()
        self.spec, self.queue_name, self.poll_interval = spec, queue_name, float(poll_interval)
        self.min_interval = float(min_interval)
        self.dag_id = dag_id
        self.lease_seconds = None if lease_seconds is None else float(lease_seconds)
        if self.lease_seconds is not None and not self.lease_seconds > 0:
            from taskflow_exclusive.errors import InvalidArgumentError

            raise InvalidArgumentError(
                f"lease_seconds must be more than 0 (got {lease_seconds!r}); leave it out for "
                "at-most-once delivery.",
                argument="lease_seconds",
                value=repr(lease_seconds),
                expected="seconds > 0, or None",
            )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "spec": withhold_secrets(self.spec),
                "queue_name": self.queue_name,
                "poll_interval": self.poll_interval,
                "min_interval": self.min_interval,
                "dag_id": self.dag_id,
                "lease_seconds": self.lease_seconds,
            },
        )

    @property
    def consumer_id(self) -> str:
        """Who holds an item's lease between its event and the run that completes it."""
        return f"asset watcher of queue {self.queue_name}"

    async def run(self) -> AsyncIterator[TriggerEvent]:
        queue = await asyncio.to_thread(_queue, self.spec, self.queue_name)
        while True:
            runs_before = await self._runs()
            taken = await asyncio.to_thread(self._take, queue)
            if taken is None:
                await asyncio.sleep(self.poll_interval)
                continue
            body, token = taken
            item = QueueItem.from_json(body, where=queue.backend.describe())
            payload: dict[str, Any] = {
                "queue": self.queue_name,
                "spec": queue.backend.spec,
                "item": item.to_dict(),
            }
            if token is not None:
                payload["token"] = token
            if self.dag_id is not None:
                payload["dag_id"] = self.dag_id
            yield TriggerEvent(payload)
            if runs_before is not None:
                await self._until_new_run(runs_before, item.id, queue, token)
            elif self.min_interval:  # let the scheduler make a run of this event before the next comes
                await asyncio.sleep(self.min_interval)

    def _take(self, queue: Any) -> tuple[bytes, int | None] | None:
        """The next item's body (and lease token): removed at most once, or leased."""
        if self.lease_seconds is None:
            taken = queue.backend.pop(1)
            return (taken[0][1], None) if taken else None
        leased = queue.backend.lease(self.consumer_id, self.lease_seconds, queue.max_deliveries, 1)
        return (leased[0].body, leased[0].info.token) if leased else None

    async def _runs(self) -> int | None:
        if self.dag_id is None:
            return None
        from taskflow_exclusive.airflow._compat import dag_run_count

        return await asyncio.to_thread(dag_run_count, self.dag_id)

    async def _until_new_run(self, runs_before: int, item_id: str, queue: Any, token: int | None) -> None:
        """Wait until the scheduler has made a run of ``dag_id`` for the event just fired
        (keeping the item's lease alive meanwhile)."""
        waited, reported, extended = 0.0, 0.0, 0.0
        while (await self._runs() or 0) <= runs_before:
            await asyncio.sleep(self.poll_interval)
            waited += self.poll_interval
            if token is not None and self.lease_seconds and waited - extended >= self.lease_seconds / 3:
                extended = waited
                await asyncio.to_thread(queue.backend.extend, item_id, token, self.lease_seconds)
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
    if payload.get("dag_id") is not None or payload.get("token") is not None:
        _complete_for_this_run(payload, item)
    if item.handle is not None:
        return item.handle.claim(consumer_id=consumer_id)
    return load_inline(item)


def _complete_for_this_run(payload: dict[str, Any], item: QueueItem) -> None:
    """Refuse an event meant for another DAG; complete a leased item (its fencing token decides)."""
    from taskflow_exclusive.errors import InvalidArgumentError, LeaseExpiredError
    from taskflow_exclusive.identity import running_task

    task = running_task()
    meant_for = payload.get("dag_id")
    if meant_for is not None and task is not None and task.dag_id != meant_for:
        raise InvalidArgumentError(
            f"Item {item.id} of queue {payload.get('queue')!r} was fired for a run of DAG {meant_for!r} "
            f"(the trigger's dag_id=), not of {task.dag_id!r}: schedule only that DAG on the asset.",
            argument="event",
            value=f"an event for {meant_for!r}",
            expected=f"a run of {meant_for!r}",
        )
    token = payload.get("token")
    if token is None:
        return
    from taskflow_exclusive.queues.base import AckOutcome

    backend = _queue(payload["spec"], payload["queue"]).backend
    outcome, holder = backend.ack(item.id, int(token))
    if outcome is AckOutcome.EXPIRED:  # ACKED, or ALREADY_ACKED: this run's earlier try
        now_held = f"; it is now held by {holder.consumer_id!r} (token {holder.token})" if holder else ""
        raise LeaseExpiredError(
            f"The lease of item {item.id} of {backend.describe()} under token {token} had ended before "
            f"this run took it{now_held}: another event carries the item, and this run must not "
            "process it. Lease for longer (the trigger's lease_seconds=).",
            queue=backend.describe(),
            item_id=item.id,
            consumer_id=f"asset watcher of queue {payload['queue']}",
            token=int(token),
            deadline=None,
            completed_by=None,
        )


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
