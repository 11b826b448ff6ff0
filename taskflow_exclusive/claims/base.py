"""The claim ledger interface: who holds which value, decided atomically.

A value produced with ``max_claims=N`` has N slots. A consumer claims by
trying to create its record in slot 0, 1, ... N-1; creating is atomic in the
ledger's storage (create-if-absent, SET NX, INSERT on a unique key). The
first slot that is empty becomes the consumer's; a slot that already holds
the *same* consumer id is a retry and succeeds again; when every slot holds
someone else, :class:`AlreadyClaimedError` names them.

Subclasses implement three primitives on one slot; the rest is written once
here. Example of a complete (in-process, test-only) ledger::

    class DictLedger(ClaimLedger):
        spec = "dict"

        def __init__(self):
            self.slots, self.lock = {}, threading.Lock()

        def describe(self):
            return "in-process dict"

        def _create_or_get(self, uri, slot, record):
            with self.lock:
                return self.slots.setdefault((uri, slot), record)

        def _read(self, uri, slot):
            return self.slots.get((uri, slot))

        def _delete(self, uri, slot):
            return self.slots.pop((uri, slot), None) is not None
"""

from __future__ import annotations

import json
import logging
import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from taskflow_exclusive.errors import (
    AlreadyClaimedError,
    ClaimError,
    ClaimStoreUnavailableError,
    ExclusiveError,
    InvalidArgumentError,
)

__all__ = ["MAX_CLAIMS_LIMIT", "ClaimLedger", "ClaimRecord", "check_consumer_id", "check_max_claims", "reaching"]

log = logging.getLogger("taskflow_exclusive.claims")

_VANISHED_SLOT_RETRIES = 5

#: The most consumers one value may have. Every claim and ``holders()`` reads the current
#: holders, and an AlreadyClaimedError names them all, so the cost of a claim grows with the
#: number of holders; ten thousand keeps that bounded (and slot numbers small). Fan-out to more
#: readers needs no claims: read the value without claiming it.
MAX_CLAIMS_LIMIT = 10_000

#: Longest consumer id accepted: every ledger stores it whole (SQL ``VARCHAR(1024)``).
MAX_CONSUMER_ID_LENGTH = 1024


def check_max_claims(value: object, *, where: str = "max_claims") -> int:
    """``value`` as a valid ``max_claims``: an ``int`` from 1 to :data:`MAX_CLAIMS_LIMIT`.

    >>> check_max_claims(2)
    2
    >>> check_max_claims("2")
    Traceback (most recent call last):
    ...
    taskflow_exclusive.errors.InvalidArgumentError: max_claims must be an int from 1 to 10000, got '2' (str).
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CLAIMS_LIMIT:
        raise InvalidArgumentError(
            f"{where} must be an int from 1 to {MAX_CLAIMS_LIMIT}, got {value!r} ({type(value).__name__}).",
            argument=where,
            value=repr(value),
            expected=f"int, 1..{MAX_CLAIMS_LIMIT}",
        )
    return value


def check_consumer_id(value: object) -> str:
    """``value`` as a valid consumer id: a non-empty ``str`` of printable characters.

    Refused rather than converted: ``claim(5)`` recording ``'5'`` would make the
    consumer's own retry (``claim(5)`` again, compared as ``5 != '5'``) look like a stranger.

    >>> check_consumer_id("loader")
    'loader'
    """
    problem = None
    if not isinstance(value, str):
        problem = f"it is a {type(value).__name__}, not a str"
    elif not value.strip():
        problem = "it is empty"
    elif len(value) > MAX_CONSUMER_ID_LENGTH:
        problem = f"it is {len(value)} characters long (at most {MAX_CONSUMER_ID_LENGTH})"
    elif not value.isprintable():  # surrogates and control characters are not printable
        problem = "it holds control characters or unpaired surrogates"
    if problem:
        raise InvalidArgumentError(
            f"A consumer id must be a non-empty string of printable characters; {value!r} is not "
            f"({problem}). Inside Airflow it defaults to the task instance; pass a name such as "
            "'loader' elsewhere.",
            argument="consumer_id",
            value=repr(value)[:200],
            expected="non-empty printable str",
        )
    return value


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class ClaimRecord:
    """One consumer's hold on one slot of a value.

    ``consumer_id`` is stable across retries of the same consumer (inside
    Airflow: ``dag_id/run_id/task_id/map_index``); ``host`` and ``pid`` say
    where the claim was made, for operators.
    """

    consumer_id: str
    claimed_at: datetime = field(default_factory=_now)
    slot: int = 0
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    def to_json(self) -> bytes:
        data = asdict(self)
        data["claimed_at"] = self.claimed_at.isoformat()
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> ClaimRecord:
        data = json.loads(raw)
        return cls(
            consumer_id=str(data["consumer_id"]),
            claimed_at=datetime.fromisoformat(data["claimed_at"]),
            slot=int(data.get("slot", 0)),
            host=str(data.get("host", "")),
            pid=int(data.get("pid", 0)),
        )


class ClaimLedger(ABC):
    """Records claims on values; one instance serves many values.

    ``spec`` is what a handle records about the ledger that guards it: never
    a secret, enough for a consumer to open the same ledger.
    """

    spec: str = "store"

    @abstractmethod
    def describe(self) -> str:
        """A human description for messages (never includes credentials)."""

    @abstractmethod
    def _create_or_get(self, uri: str, slot: int, record: ClaimRecord) -> ClaimRecord | None:
        """Atomically store ``record`` in ``slot`` if it is empty.

        Return the record the slot holds afterwards: ``record`` itself if this
        call created it, the existing holder otherwise, or ``None`` when the
        slot was taken but emptied again before it could be read (released).
        """

    @abstractmethod
    def _read(self, uri: str, slot: int) -> ClaimRecord | None:
        """The record in ``slot``, or ``None``."""

    @abstractmethod
    def _delete(self, uri: str, slot: int) -> bool:
        """Empty ``slot``; ``True`` if it held a record."""

    # -- generic logic, written once --------------------------------------------------------

    def claim(self, uri: str, consumer_id: str, max_claims: int = 1) -> ClaimRecord:
        """Claim the value at ``uri`` for ``consumer_id``.

        Returns the consumer's record (a new one, or the one from an earlier
        try). Raises :class:`AlreadyClaimedError` when all slots are held by
        other consumers.
        """
        if not consumer_id:
            raise ClaimError("A consumer id must be a non-empty string.")
        holders: list[ClaimRecord] = []
        for slot in range(max(1, int(max_claims))):
            stored = self._claim_slot(uri, slot, consumer_id)
            if stored.consumer_id == consumer_id:
                return stored
            holders.append(stored)
        raise AlreadyClaimedError(uri, consumer_id, holders, self.describe())

    def _claim_slot(self, uri: str, slot: int, consumer_id: str) -> ClaimRecord:
        for _ in range(_VANISHED_SLOT_RETRIES):
            mine = ClaimRecord(consumer_id, slot=slot)
            stored = self._create_or_get(uri, slot, mine)
            if stored is not None:
                if stored.consumer_id == consumer_id and stored != mine:
                    log.info("%r claims %s again (first claimed at %s)", consumer_id, uri, stored.claimed_at)
                return stored
        raise ClaimError(
            f"Slot {slot} of {uri} kept changing while {consumer_id!r} tried to claim it "
            f"({self.describe()}); is something releasing claims in a loop?",
            uri=uri,
        )

    def holders(self, uri: str, max_claims: int = 1) -> list[ClaimRecord]:
        """Every current claim on the value, by slot."""
        found = (self._read(uri, slot) for slot in range(max(1, int(max_claims))))
        return [record for record in found if record is not None]

    def release(self, uri: str, consumer_id: str, max_claims: int = 1, *, reason: str) -> ClaimRecord | None:
        """Free the slot ``consumer_id`` holds, so another consumer may claim the value.

        For operators, when a holder is gone for good; never called
        automatically. Logged at WARNING with the reason. Returns the
        released record, or ``None`` if ``consumer_id`` held nothing.
        """
        if not reason or not reason.strip():
            raise ClaimError("release() needs a reason; it is written to the log for the audit trail.")
        for record in self.holders(uri, max_claims):
            if record.consumer_id == consumer_id and self._delete(uri, record.slot):
                log.warning(
                    "Released claim on %s held by %r since %s (slot %d, %s). Reason: %s",
                    uri,
                    consumer_id,
                    record.claimed_at.isoformat(),
                    record.slot,
                    self.describe(),
                    reason,
                )
                return record
        return None

    def forget(self, uri: str, max_claims: int = 1) -> int:
        """Delete every claim on the value (when the value itself is purged)."""
        return sum(self._delete(uri, slot) for slot in range(max(1, int(max_claims))))


@contextmanager
def reaching(ledger: str, uri: str) -> Iterator[None]:
    """Report a failure to reach a ledger's store as :class:`ClaimStoreUnavailableError`.

    Our own errors pass through unchanged; anything else (a refused
    connection, a timeout, a server error) means the claim could not be
    decided, so nothing was handed out and a retry is safe.
    """
    try:
        yield
    except ExclusiveError:
        raise
    except Exception as exc:
        raise ClaimStoreUnavailableError(
            f"Could not record or read a claim on {uri} in the {ledger}: {type(exc).__name__}: "
            f"{exc}. No value was handed out; retry when the store is reachable.",
            ledger=ledger,
            uri=uri,
        ) from exc
