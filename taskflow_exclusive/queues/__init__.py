"""Work queues: each queued value to one consumer, at most once or at least once with leases.

- :mod:`~taskflow_exclusive.queues.queue`: :class:`ExclusiveQueue` and :class:`Lease`
  (values, checksums, the claim ledger as the completion record);
- :mod:`~taskflow_exclusive.queues.items`: what an item holds (inline bytes or a handle);
- :mod:`~taskflow_exclusive.queues.base`: the queue interface (:class:`QueueBackend`);
- :mod:`~taskflow_exclusive.queues.redis`: its Redis implementation (Lua scripts).

Example::

    >>> from taskflow_exclusive.queues import ExclusiveQueue
    >>> q = ExclusiveQueue("redis://127.0.0.1:6379/15?prefix=docs", name="pkg")
    >>> _ = q.put("hello"); q.get()
    'hello'
    >>> q.purge()
    0
"""

from __future__ import annotations

from taskflow_exclusive.queues.base import DeadLetter, LeaseInfo, QueueBackend
from taskflow_exclusive.queues.items import INLINE_MAX_BYTES, QueueItem
from taskflow_exclusive.queues.queue import ExclusiveQueue, Lease

__all__ = [
    "INLINE_MAX_BYTES",
    "DeadLetter",
    "ExclusiveQueue",
    "Lease",
    "LeaseInfo",
    "QueueBackend",
    "QueueItem",
]
