"""The queue interface: the few atomic primitives every queue server must offer.

:class:`QueueBackend` moves opaque item bodies (bytes) by id; everything about
values (inline or stored, checksums, the claim ledger, leases as objects) is
written once on top of it in :mod:`taskflow_exclusive.queues.queue`. The Redis
implementation is :mod:`taskflow_exclusive.queues.redis`.

Each primitive is atomic on the server:

- ``push``: the items become visible together, in order;
- ``pop``: *at most once*: an item leaves the queue for one caller;
- ``lease``: *at least once*: an item moves to the in-flight set under a
  lease (deadline, fencing token); an expired lease puts it back, or into the
  dead letters after ``max_deliveries``;
- ``ack``/``fail``/``extend``: only for the lease's current token before its deadline.

Example::

    >>> from taskflow_exclusive.queues import ExclusiveQueue
    >>> isinstance(ExclusiveQueue("redis://127.0.0.1:6379/15", name="docs").backend, QueueBackend)
    True
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum

__all__ = ["AckOutcome", "DeadLetter", "LeaseInfo", "Leased", "QueueBackend", "from_ms"]


def from_ms(milliseconds: int) -> datetime:
    """A UTC datetime from the server's milliseconds since the epoch."""
    return datetime.fromtimestamp(milliseconds / 1000, tz=timezone.utc)


@dataclass(frozen=True)
class LeaseInfo:
    """Who holds an in-flight item, under which token, until when (server clock)."""

    item_id: str
    consumer_id: str
    token: int
    deadline: datetime
    delivery: int  # 1 for the first delivery


@dataclass(frozen=True)
class Leased:
    """An item handed out under a lease: its body and its :class:`LeaseInfo`."""

    body: bytes
    info: LeaseInfo


@dataclass(frozen=True)
class DeadLetter:
    """An item set aside after too many failed deliveries."""

    item_id: str
    body: bytes | None
    reason: str
    deliveries: int
    at: datetime


class AckOutcome(Enum):
    ACKED = "acked"  # this call completed the item
    ALREADY_ACKED = "already acked"  # an earlier call with the same token did (its reply was lost)
    EXPIRED = "expired"  # the lease ended (deadline passed, or the item went to another consumer)


class QueueBackend(ABC):
    """One named queue on one server: atomic moves of item bodies by id."""

    name: str

    @abstractmethod
    def describe(self) -> str:
        """The queue and its server, for messages (never a password)."""

    @abstractmethod
    def push(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Append ``(id, body)`` items, all visible at once."""

    @abstractmethod
    def pop(self, count: int) -> list[tuple[str, bytes]]:
        """Remove up to ``count`` items from the head: each goes to this caller only."""

    @abstractmethod
    def lease(self, consumer_id: str, seconds: float, max_deliveries: int, count: int) -> list[Leased]:
        """Move up to ``count`` items into the in-flight set under leases held by ``consumer_id``."""

    @abstractmethod
    def resume(self, consumer_id: str, seconds: float) -> list[Leased]:
        """Renew and return the live leases ``consumer_id`` holds (a retried consumer takes them up)."""

    @abstractmethod
    def check(self, item_id: str, token: int) -> LeaseInfo | None:
        """The lease if ``token`` still holds it before its deadline, else ``None``."""

    @abstractmethod
    def ack(self, item_id: str, token: int) -> tuple[AckOutcome, LeaseInfo | None]:
        """Complete the item if ``token`` holds its lease; else say why not (and who holds it)."""

    @abstractmethod
    def complete(self, item_id: str) -> None:
        """Remove the item wherever it is (its claim ledger says it was completed)."""

    @abstractmethod
    def fail(self, item_id: str, token: int, max_deliveries: int, reason: str) -> str | None:
        """Give the item back (``"requeued"``) or set it aside (``"dead"``); ``None``: lease lost."""

    @abstractmethod
    def extend(self, item_id: str, token: int, seconds: float) -> datetime | None:
        """Move the lease's deadline to ``seconds`` from now; ``None`` if the lease was lost."""

    @abstractmethod
    def reap(self, max_deliveries: int) -> int:
        """Put back (or set aside) every item whose lease expired; return how many."""

    @abstractmethod
    def depth(self) -> int:
        """How many items wait to be handed out."""

    @abstractmethod
    def peek(self, count: int) -> list[tuple[str, bytes]]:
        """The first ``count`` waiting items, left in place."""

    @abstractmethod
    def in_flight(self) -> list[LeaseInfo]:
        """Every lease, expired or not, soonest deadline first."""

    @abstractmethod
    def dead_letters(self) -> list[DeadLetter]:
        """The items set aside, oldest first."""

    @abstractmethod
    def requeue_dead(self, item_ids: Sequence[str] | None) -> int:
        """Put dead letters (all when ``None``) back at the tail with no deliveries counted."""

    @abstractmethod
    def drop_dead(self, item_ids: Sequence[str] | None) -> list[bytes]:
        """Remove dead letters (all when ``None``); return their bodies."""

    @abstractmethod
    def purge(self) -> list[bytes]:
        """Remove the whole queue (waiting, in flight, dead); return every body."""

    @abstractmethod
    def stats(self) -> dict[str, int]:
        """Counters kept by the server: leased, acked, requeued, dead (put and get are bare list commands)."""
