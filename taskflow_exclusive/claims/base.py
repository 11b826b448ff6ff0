"""The claim ledger interface: who holds which value, decided atomically.

A value produced with ``max_claims=N`` has N slots. The invariants every
ledger keeps, whatever the interleaving of claims, retries, releases and purges:

- **at most N holders**: a slot holds at most one record, and slots are
  numbered ``0 .. N-1``; a slot is taken by the ledger's atomic
  create-if-absent (a conditional create, ``HSETNX``, an ``INSERT`` on a
  primary key), never by a read followed by a write;
- **one slot per consumer**: a consumer's retry finds its own record
  wherever it is, and a consumer that raced itself into two slots keeps
  the lowest and frees the other;
- **release frees at most one slot, and only the one it saw**: a release is
  a compare-and-delete of the exact record it read (consumer and claim
  time), so two releases of one holder free one slot, and a release never
  frees the slot of a consumer who claimed it since;
- **cost grows with holders, not with N**: ``max_claims`` is at most
  :data:`MAX_CLAIMS_LIMIT`, and every operation lists the current holders
  rather than probing every slot.

Subclasses implement four primitives; the rest is written once here.
Example of a complete (in-process, test-only) ledger::

    class DictLedger(ClaimLedger):
        spec = "dict"

        def __init__(self):
            self.slots, self.lock = {}, threading.Lock()

        def describe(self):
            return "in-process dict"

        def _create_or_get(self, uri, slot, record):
            with self.lock:
                return self.slots.setdefault((uri, slot), record)

        def _list(self, uri):
            with self.lock:
                return [r for (u, _), r in sorted(self.slots.items()) if u == uri]

        def _delete_if_held(self, uri, record):
            with self.lock:
                if self.slots.get((uri, record.slot)) == record:
                    del self.slots[(uri, record.slot)]
                    return True
                return False

        def _forget(self, uri):
            with self.lock:
                mine = [key for key in self.slots if key[0] == uri]
                return sum(self.slots.pop(key) is not None for key in mine)
"""

from __future__ import annotations

import json
import logging
import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

from taskflow_exclusive.errors import (
    AlreadyClaimedError,
    ClaimError,
    ExclusiveError,
    InvalidArgumentError,
    MalformedRecordError,
)
from taskflow_exclusive.faults import claim_failure

__all__ = [
    "MAX_CLAIMS_LIMIT",
    "ClaimLedger",
    "ClaimRecord",
    "check_consumer_id",
    "check_max_claims",
    "reaching",
]

log = logging.getLogger("taskflow_exclusive.claims")

#: How often a claim looks again when the slot it aimed at changed under it (a release or a
#: purge racing it); each look is progress for someone else, so this only stops a livelock.
_CHANGING_SLOTS_RETRIES = 16

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
    where the claim was made, for operators. Two records are the same claim
    when consumer and ``claimed_at`` agree (:meth:`same_claim`): that is what
    a release compares before it deletes.
    """

    consumer_id: str
    claimed_at: datetime = field(default_factory=_now)
    slot: int = 0
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    def same_claim(self, other: ClaimRecord | None) -> bool:
        """``True`` if ``other`` is this very claim (not a later claim by the same consumer)."""
        return (
            other is not None
            and other.consumer_id == self.consumer_id
            and other.claimed_at == self.claimed_at
            and other.slot == self.slot
        )

    def to_json(self) -> bytes:
        # Fields by hand, in sorted order (dataclasses.asdict deep-copies each: a tenth of a claim).
        data = {
            "claimed_at": self.claimed_at.isoformat(),
            "consumer_id": self.consumer_id,
            "host": self.host,
            "pid": self.pid,
            "slot": self.slot,
        }
        return json.dumps(data).encode()

    @classmethod
    def from_json(cls, raw: bytes | str, *, where: str = "a claim ledger") -> ClaimRecord:
        """Parse a stored record; anything malformed is a :class:`MalformedRecordError`.

        >>> ClaimRecord.from_json('{"consumer_id": "a", "claimed_at": "2026-01-01T00:00:00+00:00"}').slot
        0
        """
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise _malformed(raw, where, f"not JSON: {exc}") from exc
        return cls.from_mapping(data, where=where, raw=raw)

    @classmethod
    def from_mapping(cls, data: object, *, where: str, raw: object = None) -> ClaimRecord:
        """Build a record from stored fields (a JSON object or a database row), checking each."""
        try:
            if not isinstance(data, dict):
                raise TypeError(f"a {type(data).__name__}, not an object")
            consumer, claimed_at = data["consumer_id"], data["claimed_at"]
            slot, host, pid = data.get("slot", 0), data.get("host", ""), data.get("pid", 0)
            if not isinstance(consumer, str) or not consumer:
                raise TypeError(f"consumer_id is {consumer!r}, not a non-empty string")
            if not isinstance(claimed_at, str):
                raise TypeError(f"claimed_at is {claimed_at!r}, not an ISO 8601 string")
            moment = datetime.fromisoformat(claimed_at)
            if moment.tzinfo is None:
                raise ValueError(f"claimed_at {claimed_at!r} has no time zone")
            for name, number in (("slot", slot), ("pid", pid)):
                if isinstance(number, bool) or not isinstance(number, int) or number < 0:
                    raise TypeError(f"{name} is {number!r}, not a non-negative integer")
            if not isinstance(host, str):
                raise TypeError(f"host is {host!r}, not a string")
        except (ValueError, TypeError, KeyError) as exc:
            problem = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise _malformed(data if raw is None else raw, where, problem) from exc
        return cls(consumer_id=consumer, claimed_at=moment, slot=slot, host=host, pid=pid)


def _malformed(raw: object, where: str, problem: str) -> MalformedRecordError:
    return MalformedRecordError(
        f"A claim record in {where} cannot be read ({problem}): {_excerpt(raw)}. Nothing was "
        "handed out. The record was written by something other than taskflow-exclusive, or "
        "damaged; inspect it, and if its holder is gone, remove it with `taskflow-exclusive "
        "release` or by hand.",
        kind="claim record",
        where=where,
        problem=problem,
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
        """Atomically store ``record`` in ``slot`` if the slot is free.

        Return the record the slot holds afterwards: ``record`` itself (the
        same object) if this call stored it, the existing holder otherwise,
        or ``None`` when the slot was taken but emptied again before it could
        be read (released or purged).
        """

    @abstractmethod
    def _list(self, uri: str) -> list[ClaimRecord]:
        """Every current holder of the value, ordered by slot (one read, not one per slot)."""

    @abstractmethod
    def _delete_if_held(self, uri: str, record: ClaimRecord) -> bool:
        """Free ``record.slot`` only if it still holds ``record`` (:meth:`ClaimRecord.same_claim`).

        Atomic in the ledger's own primitive (compare-and-delete); ``True``
        if this call freed the slot.
        """

    @abstractmethod
    def _forget(self, uri: str) -> int:
        """Delete every claim record of the value (it is being purged); return how many."""

    # -- generic logic, written once --------------------------------------------------------

    def claim(self, uri: str, consumer_id: str, max_claims: int = 1) -> ClaimRecord:
        """Claim the value at ``uri`` for ``consumer_id``.

        Returns the consumer's record (a new one, or the one from an earlier
        try). Raises :class:`AlreadyClaimedError` when all slots are held by
        other consumers; every refusal goes through the host first, whoever
        asked (inside an Airflow task it then fails the task without retries).
        """
        try:
            return self._record_claim(uri, consumer_id, max_claims)
        except AlreadyClaimedError as refused:
            from taskflow_exclusive.host import current_host

            current_host().refuse(refused)
            raise

    def _record_claim(self, uri: str, consumer_id: str, max_claims: int) -> ClaimRecord:
        consumer_id = check_consumer_id(consumer_id)
        max_claims = check_max_claims(max_claims)
        if max_claims == 1:
            return self._claim_only_slot(uri, consumer_id)
        for _ in range(_CHANGING_SLOTS_RETRIES + max_claims):
            holders = self._list(uri)
            mine = [record for record in holders if record.consumer_id == consumer_id]
            if mine:
                return self._again(uri, self._keep_lowest(uri, mine))
            if len(holders) >= max_claims:
                raise AlreadyClaimedError(uri, consumer_id, holders, self.describe())
            taken = {record.slot for record in holders}
            free = next(slot for slot in range(max_claims) if slot not in taken)
            record = ClaimRecord(consumer_id, slot=free)
            stored = self._create_or_get(uri, free, record)
            if stored is record:
                mine = [held for held in self._list(uri) if held.consumer_id == consumer_id]
                return self._keep_lowest(uri, mine) if mine else record
            if stored is not None and stored.consumer_id == consumer_id:
                return self._again(uri, stored)
            # Someone took the free slot first, or it changed under us: look again.
        raise self._kept_changing(uri, consumer_id)

    def _claim_only_slot(self, uri: str, consumer_id: str) -> ClaimRecord:
        """``max_claims=1``: one atomic create, and for a loser one read of the holder."""
        for _ in range(_CHANGING_SLOTS_RETRIES):
            record = ClaimRecord(consumer_id, slot=0)
            stored = self._create_or_get(uri, 0, record)
            if stored is record:
                return record
            if stored is None:
                continue  # released or purged between our create and read: try again
            if stored.consumer_id == consumer_id:
                return self._again(uri, stored)
            raise AlreadyClaimedError(uri, consumer_id, [stored], self.describe())
        raise self._kept_changing(uri, consumer_id)

    def _keep_lowest(self, uri: str, mine: list[ClaimRecord]) -> ClaimRecord:
        """One slot per consumer: keep the lowest of ``mine`` (its records, by slot), free the rest.

        Two concurrent tries of one consumer can land in two slots. Each lists
        after creating; whichever lists later sees both records and frees all
        but the lowest, so the duplicate never outlives the later try.
        """
        for duplicate in mine[1:]:
            self._delete_if_held(uri, duplicate)
        return mine[0]

    def _again(self, uri: str, stored: ClaimRecord) -> ClaimRecord:
        log.info("%r claims %s again (first claimed at %s)", stored.consumer_id, uri, stored.claimed_at)
        return stored

    def _kept_changing(self, uri: str, consumer_id: str) -> ClaimError:
        return ClaimError(
            f"The claims on {uri} kept changing while {consumer_id!r} tried to claim it "
            f"({self.describe()}): is something releasing or purging claims in a loop? Nothing "
            "was handed out; a retry is safe.",
            uri=uri,
        )

    def holders(self, uri: str) -> list[ClaimRecord]:
        """Every current claim on the value, by slot."""
        return self._list(uri)

    def release(self, uri: str, consumer_id: str, *, reason: str) -> ClaimRecord | None:
        """Free the slot ``consumer_id`` holds, so another consumer may claim the value.

        For operators, when a holder is gone for good; never called
        automatically. Logged at WARNING with the reason. Returns the
        released record, or ``None`` if ``consumer_id`` held nothing (or a
        concurrent release freed it first: each claim is released at most once).
        """
        consumer_id = check_consumer_id(consumer_id)
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidArgumentError(
                "release() needs a reason; it is written to the log for the audit trail.",
                argument="reason",
                value=repr(reason),
                expected="a non-empty explanation",
            )
        released = None
        for record in self._list(uri):
            if record.consumer_id == consumer_id and self._delete_if_held(uri, record):
                log.warning(
                    "Released claim on %s held by %r since %s (slot %d, %s). Reason: %s",
                    uri,
                    consumer_id,
                    record.claimed_at.isoformat(),
                    record.slot,
                    self.describe(),
                    reason,
                )
                released = released or record
        return released

    def forget(self, uri: str) -> int:
        """Delete every claim on the value (when the value itself is purged)."""
        return self._forget(uri)


def _excerpt(raw: object, limit: int = 120) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


@contextmanager
def reaching(
    ledger: str,
    uri: str,
    misconfigured: Callable[[BaseException], str | None] = lambda exc: None,
    unreachable: Callable[[BaseException], bool] = lambda exc: False,
) -> Iterator[None]:
    """Turn a ledger's failure into the error that tells the caller what to do.

    - :class:`ClaimStoreConfigError` when ``misconfigured(exc)`` names a fix
      (wrong credentials, a missing database): a retry will not help;
    - :class:`ClaimStoreUnavailableError` when the store could not be reached
      (:func:`taskflow_exclusive.faults.is_unreachable`, or the ledger's own
      ``unreachable(exc)``): nothing was handed out and a retry is safe;
    - :class:`ClaimError` for anything else, with the original attached.

    Our own errors pass through unchanged.
    """
    try:
        yield
    except ExclusiveError:
        raise
    except Exception as exc:
        raise claim_failure(ledger, uri, exc, misconfigured(exc), unreachable(exc)) from exc
