"""ExclusiveQueue: values to one consumer each, at most once or at least once with leases.

Two delivery modes, chosen at the call, side by side:

- :meth:`ExclusiveQueue.get` is **at most once**: the item leaves the queue
  atomically for this consumer (a stored value is also claimed in its ledger).
  If the consumer dies before it is done, the item is lost.
- :meth:`ExclusiveQueue.lease` is **at least once**: the item moves to the
  in-flight set under a lease (deadline, fencing token). :meth:`Lease.ack`
  completes it; if the lease expires first the item goes back for another
  consumer, or after ``max_deliveries`` to the dead letters, and a late ack is
  refused with :class:`LeaseExpiredError`. A stored value's claim ledger is the
  completion record: the ack claims the value for the consumer, so even
  after a crash between the claim and the queue's own ack, exactly one
  consumer completes each item.

Example::

    >>> q = ExclusiveQueue("redis://127.0.0.1:6379/15?prefix=docs", name="orders", storage="memory://docs")
    >>> ids = q.put_many([{"order": 1}, {"order": 2}])
    >>> q.get(consumer_id="a")
    {'order': 1}
    >>> with q.lease(consumer_id="b") as item:
    ...     item.value
    {'order': 2}
    >>> _ = q.purge()
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from taskflow_exclusive.errors import (
    AlreadyClaimedError,
    InvalidArgumentError,
    LeaseExpiredError,
    QueueEmptyError,
)
from taskflow_exclusive.queues.base import AckOutcome, Leased, LeaseInfo, QueueBackend
from taskflow_exclusive.queues.items import INLINE_MAX_BYTES, QueueItem, load_inline, pack

#: ``progress(done, total)``: told how far a long operation is (the CLI draws a status line).
Progress = Callable[[int, int], None]

if TYPE_CHECKING:
    from taskflow_exclusive.formats.serializers import Serializer
    from taskflow_exclusive.handle import ExclusiveHandle
    from taskflow_exclusive.queues.base import DeadLetter

__all__ = ["QUEUE_URL_VARIABLE", "ExclusiveQueue", "Lease", "resolve_queue_spec"]

QUEUE_URL_VARIABLE = "taskflow_exclusive_queue_url"

log = logging.getLogger("taskflow_exclusive.queues")

_FIRST_WAIT = 0.005
_LONGEST_WAIT = 0.1


def default_consumer() -> str:
    """The running task instance (stable across its retries), else ``local:<user>@<host> pid <pid>``."""
    from taskflow_exclusive.identity import local_producer_id, running_task

    task = running_task()
    return task.consumer_id if task is not None else local_producer_id()


class ExclusiveQueue:
    """A named work queue on Redis whose values go to one consumer each.

    - ``spec``: ``redis://[user[:password]@]host[:port][/db][?prefix=...]`` or a
      redis Airflow connection id (as for claim ledgers; never logged with its password);
      default: the Airflow Variable ``taskflow_exclusive_queue_url``.
    - ``name``: the queue's name under the prefix.
    - ``storage``, ``serializer``, ``compression``, ``claims``: as for
      :class:`~taskflow_exclusive.ExclusiveOutput`, for values stored outside
      the item; ``claims`` defaults to ``spec`` (the queue's own Redis).
    - ``inline_max_bytes``: values whose serialized bytes fit ride inside the
      item (default 64 KiB; 0 stores every value).
    - ``lease_seconds``, ``max_deliveries``: the at-least-once mode's lease
      length and how many deliveries before an item becomes a dead letter.
    """

    def __init__(
        self,
        spec: str | None = None,
        *,
        name: str,
        storage: str | None = None,
        serializer: str | Serializer | None = None,
        compression: str | None = None,
        claims: str | None = None,
        inline_max_bytes: int = INLINE_MAX_BYTES,
        lease_seconds: float = 30.0,
        max_deliveries: int = 5,
    ) -> None:
        from taskflow_exclusive.publishing import ExclusiveOutput
        from taskflow_exclusive.queues.redis import open_redis_queue

        if isinstance(max_deliveries, bool) or not isinstance(max_deliveries, int) or max_deliveries < 1:
            raise InvalidArgumentError(
                f"max_deliveries must be a positive int (got {max_deliveries!r}).",
                argument="max_deliveries",
                value=repr(max_deliveries),
                expected="1, 2, 3, ...",
            )
        self.backend: QueueBackend = open_redis_queue(resolve_queue_spec(spec), name)
        self.name = name
        self.output = ExclusiveOutput(
            storage=storage,
            serializer=serializer,
            compression=compression,
            claims=claims if claims is not None else self.backend.spec,
        )
        self.inline_max_bytes = int(inline_max_bytes)
        self.lease_seconds = float(lease_seconds)
        self.max_deliveries = max_deliveries
        self._resumed: dict[str, deque[Leased]] = {}

    def __repr__(self) -> str:
        return f"ExclusiveQueue({self.backend.describe()})"

    # -- producing -------------------------------------------------------------------------------

    def put(self, value: Any) -> str:
        """Store ``value`` (inline or through storage), queue it, and return its item id."""
        return self.put_many([value])[0]

    def put_many(self, values: Iterable[Any]) -> list[str]:
        """Queue every value in one round trip to Redis, in order; return their item ids."""
        items = [self.pack(value) for value in values]
        self.backend.push([(item.id, item.to_json().encode()) for item in items])
        return [item.id for item in items]

    def pack(self, value: Any) -> QueueItem:
        """The item ``put`` would queue for ``value`` (a stored value is published now)."""
        return pack(
            value, inline_max_bytes=self.inline_max_bytes, output=self.output, label=f"queue-{self.name}"
        )

    # -- at most once ------------------------------------------------------------------------------

    def get(self, timeout: float = 0, *, consumer_id: str | None = None) -> Any:
        """Take the next value **at most once**: it is removed for this consumer alone.

        Waits up to ``timeout`` seconds, then raises :class:`QueueEmptyError`.
        If this consumer dies before it is done with the value, the value is lost.
        """
        return self._waiting(timeout, lambda: self.get_many(1, consumer_id=consumer_id))[0]

    def get_many(self, count: int, *, consumer_id: str | None = None) -> list[Any]:
        """Take up to ``count`` values at most once, in one round trip (none waiting: ``[]``)."""
        consumer = consumer_id or default_consumer()
        return [self._take(item_id, body, consumer) for item_id, body in self.backend.pop(count)]

    def _take(self, item_id: str, body: bytes, consumer: str) -> Any:
        item = self._item(body, item_id)
        if item.handle is not None:
            return item.handle.claim(consumer_id=consumer)
        return load_inline(item, where=f" of {self.backend.describe()}")

    # -- at least once -----------------------------------------------------------------------------

    def lease(
        self, timeout: float = 0, *, consumer_id: str | None = None, seconds: float | None = None
    ) -> Lease:
        """Take the next value **at least once**, under a lease of ``seconds`` (default ``lease_seconds``).

        Call :meth:`Lease.ack` when done (or use the lease as a context
        manager: ack on success, :meth:`Lease.fail` on an exception). A
        consumer id that already holds live leases (a retried task) gets
        those back first, under new tokens. Waits up to ``timeout`` seconds,
        then raises :class:`QueueEmptyError`.
        """
        consumer = consumer_id or default_consumer()
        length = self.lease_seconds if seconds is None else float(seconds)
        if consumer not in self._resumed:
            self._resumed[consumer] = deque(self.backend.resume(consumer, length))
            if self._resumed[consumer]:
                log.info(
                    "%s: %s resumes %d lease(s)",
                    self.backend.describe(),
                    consumer,
                    len(self._resumed[consumer]),
                )
        waiting = self._resumed[consumer]

        def attempt() -> list[Leased]:
            if waiting:
                return [waiting.popleft()]
            return self.backend.lease(consumer, length, self.max_deliveries, 1)

        return self._open_lease(self._waiting(timeout, attempt)[0])

    def _open_lease(self, leased: Leased) -> Lease:
        item = self._item(leased.body, leased.info.item_id)
        try:
            if item.handle is not None:
                from taskflow_exclusive.consuming import read_value

                value = read_value(item.handle)
            else:
                value = load_inline(item, where=f" of {self.backend.describe()}")
        except Exception as exc:  # a value that cannot be read is a failed delivery
            self.backend.fail(
                item.id, leased.info.token, self.max_deliveries, f"unreadable: {type(exc).__name__}"
            )
            raise
        return Lease(self, item, value, leased.info)

    def _waiting(self, timeout: float, attempt: Any) -> list[Any]:
        deadline = time.monotonic() + max(0.0, float(timeout))
        pause = _FIRST_WAIT
        while True:
            found = attempt()
            if found:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise QueueEmptyError(
                    f"No item arrived in {self.backend.describe()} within {timeout} s.",
                    queue=self.backend.describe(),
                    timeout=timeout,
                )
            time.sleep(min(pause, left))
            pause = min(pause * 2, _LONGEST_WAIT)

    def drain(self, *, consumer_id: str | None = None, timeout: float = 0) -> Iterator[Lease]:
        """Leases until the queue stays empty for ``timeout`` seconds (ack each one)."""
        while True:
            try:
                yield self.lease(timeout, consumer_id=consumer_id)
            except QueueEmptyError:
                return

    # -- operators ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        """How many items wait (not counting leased or dead ones)."""
        return self.backend.depth()

    def peek(self, count: int = 10) -> list[QueueItem]:
        """The first ``count`` waiting items (their records; no value is read or claimed)."""
        return [self._item(body) for _, body in self.backend.peek(count)]

    def in_flight(self) -> list[LeaseInfo]:
        return self.backend.in_flight()

    def dead_letters(self) -> list[DeadLetter]:
        return self.backend.dead_letters()

    def requeue_dead(self, item_ids: list[str] | None = None) -> int:
        """Put dead letters (all by default) back at the tail, their deliveries forgotten."""
        return self.backend.requeue_dead(item_ids)

    def drop_dead(self, item_ids: list[str] | None = None, *, progress: Progress | None = None) -> int:
        """Remove dead letters (all by default) and the stored values they point to.

        ``progress(done, total)`` is called as the stored values are removed.
        """
        return self._purge_values(self.backend.drop_dead(item_ids), progress)

    def purge(self, *, progress: Progress | None = None) -> int:
        """Remove the whole queue and the stored values of its items; return how many items went.

        The items leave Redis at once; ``progress(done, total)`` is called as their
        stored values are removed (one storage round trip each).
        """
        return self._purge_values(self.backend.purge(), progress)

    def reap(self) -> int:
        """Put back every item whose lease expired (leasing does it too, 16 at a time)."""
        return self.backend.reap(self.max_deliveries)

    def stats(self) -> dict[str, int]:
        return self.backend.stats()

    def _purge_values(self, bodies: list[bytes], progress: Progress | None = None) -> int:
        for done, body in enumerate(bodies, start=1):
            try:
                item = self._item(body)
                if item.handle is not None:
                    item.handle.purge()
            except Exception:
                log.warning("Could not remove the stored value of a dropped queue item", exc_info=True)
            if progress is not None:
                progress(done, len(bodies))
        return len(bodies)

    def _item(self, body: bytes, item_id: str | None = None) -> QueueItem:
        item = QueueItem.from_json(body, where=self.backend.describe())
        if item_id is not None and item.id != item_id:
            from taskflow_exclusive.errors import MalformedRecordError

            raise MalformedRecordError(
                f"An item of the {self.backend.describe()} is filed under id {item_id} but says it is "
                f"{item.id}: it was altered in the queue and was not delivered.",
                kind="queue item",
                where=self.backend.describe(),
                problem="id mismatch",
            )
        return item


def resolve_queue_spec(spec: str | None) -> str:
    """``spec``, else the Airflow Variable ``taskflow_exclusive_queue_url``; refuses when neither is set."""
    if spec:
        return spec
    from taskflow_exclusive.config import read_variable

    configured = read_variable(QUEUE_URL_VARIABLE)
    if not configured:
        raise InvalidArgumentError(
            "No queue server given: pass spec='redis://host:6379/0' (or a redis Airflow connection id) "
            f"or set the Airflow Variable {QUEUE_URL_VARIABLE!r} "
            f"(AIRFLOW_VAR_{QUEUE_URL_VARIABLE.upper()}).",
            argument="spec",
            value="None",
            expected="a redis:// URL or a redis Airflow connection id",
        )
    return configured


@dataclass
class Lease:
    """One value held under a lease: ``value``, and the lease's ``token`` and ``deadline``.

    Example::

        >>> with queue.lease(timeout=5) as lease:     # doctest: +SKIP
        ...     handle(lease.value)                    # ack on success, fail() on an exception
    """

    queue: ExclusiveQueue
    item: QueueItem
    value: Any
    info: LeaseInfo
    done: bool = field(default=False)

    @property
    def item_id(self) -> str:
        return self.item.id

    @property
    def token(self) -> int:
        return self.info.token

    @property
    def deadline(self) -> datetime:
        return self.info.deadline

    @property
    def delivery(self) -> int:
        return self.info.delivery

    @property
    def consumer_id(self) -> str:
        return self.info.consumer_id

    def ack(self) -> None:
        """Complete the item. Refused with :class:`LeaseExpiredError` if the lease ended first.

        For a stored value, the value's claim ledger records the completion
        first: if another consumer already completed it (after this lease
        expired), this ack is refused too.
        """
        backend = self.queue.backend
        if self.item.handle is not None:
            if backend.check(self.item_id, self.token) is None:
                raise self._expired(None)
            try:
                _claim_in_ledger(self.item.handle, self.consumer_id)
            except AlreadyClaimedError as exc:
                backend.complete(self.item_id)  # completed by another consumer: it must not be redone
                raise self._expired(exc.holder) from exc
        outcome, holder = backend.ack(self.item_id, self.token)
        if outcome is AckOutcome.EXPIRED:
            if self.item.handle is not None:
                backend.complete(self.item_id)  # the ledger names us: the completion stands
            else:
                raise self._expired(None, holder)
        self.done = True

    def fail(self, reason: str = "failed") -> str:
        """Give the item back now (``"requeued"``), or to the dead letters (``"dead"``) after
        ``max_deliveries``. Refused with :class:`LeaseExpiredError` if the lease ended."""
        outcome = self.queue.backend.fail(self.item_id, self.token, self.queue.max_deliveries, reason)
        if outcome is None:
            raise self._expired(None)
        self.done = True
        return outcome

    def extend(self, seconds: float | None = None) -> datetime:
        """Keep the lease for ``seconds`` more (default: the queue's ``lease_seconds``) from now."""
        length = self.queue.lease_seconds if seconds is None else seconds
        deadline = self.queue.backend.extend(self.item_id, self.token, length)
        if deadline is None:
            raise self._expired(None)
        self.info = LeaseInfo(self.item_id, self.consumer_id, self.token, deadline, self.delivery)
        return deadline

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, kind: Any, exc: Any, traceback: Any) -> None:
        if self.done:
            return
        if kind is None:
            self.ack()
        else:
            try:
                self.fail(f"{kind.__name__}: {str(exc)[:200]}")
            except LeaseExpiredError:
                log.warning("The lease on item %s had already ended when its work failed", self.item_id)

    def _expired(self, completed_by: str | None, holder: LeaseInfo | None = None) -> LeaseExpiredError:
        where = self.queue.backend.describe()
        now_held = f"; it is now held by {holder.consumer_id!r} (token {holder.token})" if holder else ""
        done = f"; {completed_by!r} completed it" if completed_by else ""
        return LeaseExpiredError(
            f"The lease of {self.consumer_id!r} on item {self.item_id} of {where} (token {self.token}, "
            f"deadline {self.deadline.isoformat(timespec='milliseconds')}) had ended{now_held}{done}: "
            "this work does not count; discard or undo it. Lease for longer (lease_seconds=, "
            "lease(seconds=...)) or call extend() while working.",
            queue=where,
            item_id=self.item_id,
            consumer_id=self.consumer_id,
            token=self.token,
            deadline=self.deadline,
            completed_by=completed_by,
        )


def _claim_in_ledger(handle: ExclusiveHandle, consumer_id: str) -> None:
    from taskflow_exclusive.claims import open_ledger
    from taskflow_exclusive.storage.store import Store

    open_ledger(handle.claims, Store.from_url(handle.uri, "handle")).claim(
        handle.uri, consumer_id, handle.max_claims
    )
