"""Every error taskflow-exclusive raises, in one hierarchy.

Catch :class:`ExclusiveError` for all of them, or a precise subclass::

    ExclusiveError
    ├── InvalidArgumentError      a caller passed a value the library cannot use
    ├── MalformedRecordError      a handle, manifest, claim record or XCom row cannot be parsed
    ├── StorageConfigError        the storage URL, driver or filesystem is unusable
    ├── StorageWriteError         the store refused a write (full, read-only, name too long)
    ├── SerializationError        no serializer can write or read the value exactly
    ├── IntegrityError            stored bytes or manifest do not match the handle
    ├── ObjectMissingError        the stored value is gone (or on another machine)
    ├── SigningKeyError           no usable signing key (grants, signed handles)
    ├── GrantError                a grant was refused (see its subclasses)
    │   ├── GrantSignatureError   tampered, unsigned, or signed with an unknown key
    │   ├── GrantAddressError     addressed to another DAG or DAG run
    │   ├── GrantExpiredError     past its expiry
    │   ├── GrantNotInConfError   not among the grants of this DAG run's conf
    │   └── GrantRevokedError     its hand-off was released by an operator
    └── ClaimError
        ├── AlreadyClaimedError   another consumer holds the value
        ├── ClaimStoreUnavailableError  the claim ledger could not be reached (retry is safe)
        └── ClaimStoreConfigError the ledger refused for a reason a retry will not fix
    └── QueueError                a work queue refused (taskflow_exclusive.queues)
        ├── QueueEmptyError       no item arrived before the timeout
        ├── LeaseExpiredError     the lease on an item ended before ack: its work does not count
        └── QueueUnavailableError the queue's Redis could not be reached (retry is safe)

Each error carries the facts needed to fix it as attributes as well as in its
message, and survives pickling (errors cross process boundaries in Airflow
workers and in the race tests).

Example::

    try:
        value = handle.claim()
    except AlreadyClaimedError as exc:
        print(f"{exc.holder} took it at {exc.claimed_at}")
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskflow_exclusive.claims.base import ClaimRecord

__all__ = [
    "AlreadyClaimedError",
    "ClaimError",
    "ClaimStoreConfigError",
    "ClaimStoreUnavailableError",
    "ExclusiveError",
    "GrantAddressError",
    "GrantError",
    "GrantExpiredError",
    "GrantNotInConfError",
    "GrantRevokedError",
    "GrantSignatureError",
    "IntegrityError",
    "InvalidArgumentError",
    "LeaseExpiredError",
    "MalformedRecordError",
    "ObjectMissingError",
    "QueueEmptyError",
    "QueueError",
    "QueueUnavailableError",
    "SerializationError",
    "SigningKeyError",
    "StorageConfigError",
    "StorageWriteError",
]


def _rebuild(cls: type[ExclusiveError], message: str, facts: dict[str, Any]) -> ExclusiveError:
    error = cls.__new__(cls)
    ExclusiveError.__init__(error, message, **facts)
    return error


class ExclusiveError(Exception):
    """Base class of every error raised by taskflow-exclusive.

    Keyword arguments given to the constructor become attributes, so callers
    can react to the facts (``exc.uri``, ``exc.holder``) instead of parsing text.
    """

    def __init__(self, message: str, **facts: Any) -> None:
        super().__init__(message)
        self.message = message
        self._facts = facts
        for name, value in facts.items():
            setattr(self, name, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self._facts))

    def __str__(self) -> str:
        return self.message


class InvalidArgumentError(ExclusiveError, ValueError):
    """A caller passed a value the library cannot use (``max_claims="2"``, ``claim(5)``).

    Attributes: ``argument`` (its name), ``value`` (its repr) and ``expected``
    (what would be accepted).
    """


class MalformedRecordError(ExclusiveError, ValueError):
    """A handle, manifest, claim record or XCom row cannot be parsed.

    Such input crosses a trust boundary (XCom, storage, a ledger, the command
    line), so it is refused whole, never half-read. Attributes: ``kind``
    (what was being read), ``where`` (the URI, key or row it came from) and
    ``problem``.
    """


class StorageConfigError(ExclusiveError, ValueError):
    """The storage URL, its driver, or its filesystem cannot be used.

    Attributes: ``url`` (credentials never included), ``source`` (where the
    URL came from: argument, Airflow Variable or default).
    """


class StorageWriteError(ExclusiveError, OSError):
    """The store refused to write a value: it is full, read-only, or the name is unusable.

    Nothing is left behind (no partial object, temporary file or handle).
    Attributes: ``uri`` (where the write was going) and ``reason`` (what the
    filesystem said, e.g. ``"No space left on device"``).
    """


class SerializationError(ExclusiveError, TypeError):
    """No serializer can write (or read) the value.

    Attributes: ``value_type``, ``serializer`` (the name tried, if any) and
    ``available`` (registered serializer names).
    """


class IntegrityError(ExclusiveError):
    """Stored bytes, manifest and handle disagree: the value is never returned.

    Raised before any deserialization, so a tampered or truncated pickle is
    never loaded. Attributes: ``uri``, ``expected``, ``actual``.
    """


class ObjectMissingError(ExclusiveError, FileNotFoundError):
    """The stored value (or its manifest) does not exist.

    Attributes: ``uri`` and, for local storage, ``written_on`` (the host that
    wrote it; a worker on another machine cannot see a local file).
    """


class SigningKeyError(ExclusiveError, ValueError):
    """No usable key to sign or verify grants (and signed handles).

    Keys come from the Airflow Connection ``taskflow_exclusive_signing`` (its
    password) or the Variable ``taskflow_exclusive_signing_secret``, both
    readable through a secrets backend; never from code or XCom. Nothing is
    ever signed without a key. Attributes: ``setting`` (what was read) and
    ``problem``. The key itself never appears in the message.
    """


class GrantError(ExclusiveError):
    """A grant (a value handed to a triggered DAG) was refused; nothing was claimed.

    Attributes: ``grant`` (a short description: value URI, addressee, key id,
    granted by), ``reason``.
    """


class GrantSignatureError(GrantError):
    """The grant's signature does not verify: it was altered, or its key is unknown here."""


class GrantAddressError(GrantError):
    """The grant is addressed to another DAG (or another run of this DAG)."""


class GrantExpiredError(GrantError):
    """The grant's ``expires_at`` has passed."""


class GrantNotInConfError(GrantError):
    """The grant is not in the running DAG run's ``conf``: only values handed to this run are claimable."""


class GrantRevokedError(GrantError):
    """The value's hand-off record is gone: an operator released it (or the value was purged)."""


class ClaimError(ExclusiveError):
    """Base class of errors about claiming a value."""


class AlreadyClaimedError(ClaimError):
    """Another consumer already holds the value (all ``max_claims`` slots are taken).

    Attributes: ``uri``, ``consumer_id`` (who asked), ``holders`` (every
    :class:`~taskflow_exclusive.claims.ClaimRecord`), and for convenience
    ``holder`` and ``claimed_at`` of the first holder.
    """

    def __init__(
        self,
        uri: str,
        consumer_id: str,
        holders: Sequence[ClaimRecord],
        ledger: str,
    ) -> None:
        holders = tuple(holders)
        first = holders[0]
        names = ", ".join(f"{h.consumer_id!r} (since {_iso(h.claimed_at)})" for h in holders)
        slots = len(holders)
        what = "the value" if slots == 1 else f"all {slots} claims of the value"
        message = (
            f"{what.capitalize()} at {uri} already claimed by {names}; "
            f"consumer {consumer_id!r} cannot claim it (max_claims={slots}, ledger: {ledger}). "
            "Each handle goes to its holder only: give this consumer its own handle, raise "
            "max_claims when producing, or, if the holder is gone for good, release its claim "
            "(`taskflow-exclusive release`)."
        )
        ExclusiveError.__init__(
            self,
            message,
            uri=uri,
            consumer_id=consumer_id,
            holders=holders,
            ledger=ledger,
            holder=first.consumer_id,
            claimed_at=first.claimed_at,
        )


class ClaimStoreUnavailableError(ClaimError, ConnectionError):
    """The claim ledger (Redis, SQL database, object store) could not be reached.

    Nothing was handed out; retrying once the store is back is safe.
    Attributes: ``ledger`` (description without credentials).
    """


class ClaimStoreConfigError(ClaimError):
    """The claim ledger refused for a reason that a retry will not fix.

    Wrong credentials, a database or SQLite folder that does not exist, a
    table of the wrong shape, a consumer id the database cannot store. Fix
    the setting named in the message; nothing was handed out. Attributes:
    ``ledger`` (description without credentials), ``uri``.
    """


class QueueError(ExclusiveError):
    """Base class of errors about work queues (:mod:`taskflow_exclusive.queues`).

    Attributes: ``queue`` (its name and server, password withheld).
    """


class QueueEmptyError(QueueError, LookupError):
    """No item arrived before the timeout. Attributes: ``queue``, ``timeout`` (seconds)."""


class LeaseExpiredError(QueueError):
    """An ``ack`` (or ``extend``/``fail``) came from a consumer whose lease had ended.

    The item went back to the queue (or to another consumer, or was completed by
    another consumer), so this consumer's work must not count: undo or discard
    it. Attributes: ``queue``, ``item_id``, ``consumer_id``, ``token`` (the
    fencing token the consumer held), ``deadline`` (when its lease ended, a UTC
    datetime or ``None``) and ``completed_by`` (the consumer the value's claim
    ledger names as having completed it, or ``None``).
    """


class QueueUnavailableError(QueueError, ConnectionError):
    """The queue's Redis could not be reached or refused the command.

    A ``put`` that raised this may or may not have been stored; a ``get`` took
    nothing it did not return. Attributes: ``queue``, ``reason``.
    """


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")
