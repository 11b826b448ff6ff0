"""ExclusiveHandle: the small, JSON-able reference to a stored value that XCom carries.

A handle says where the value is (``uri``), how to read it (``serializer``,
``compression``), how to check it (``size``, ``sha256``), who wrote it and
where (``producer``, ``host``, ``created_at``) and how it may be claimed
(``max_claims``, ``claims``: the ledger that guards it, ``None`` for the
object store itself). It holds no credentials.

Example::

    >>> from taskflow_exclusive import publish
    >>> handle = publish({"rows": 3}, storage="memory://docs")
    >>> handle.serializer, handle.size
    ('json', 10)
    >>> handle.claim(consumer_id="report")
    {'rows': 3}
    >>> handle.claim(consumer_id="report")      # a retry of the same consumer
    {'rows': 3}
    >>> handle.claim(consumer_id="audit")       # anyone else
    Traceback (most recent call last):
    AlreadyClaimedError: The value at memory:///docs/... already claimed by 'report' ...
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

from taskflow_exclusive.errors import AlreadyClaimedError, IntegrityError

if TYPE_CHECKING:
    from taskflow_exclusive.claims.base import ClaimRecord

__all__ = ["ExclusiveHandle"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ExclusiveHandle:
    """A claim-once reference to a value in fsspec storage."""

    uri: str
    serializer: str
    size: int
    sha256: str
    producer: str
    created_at: str
    host: str
    compression: str | None = None
    max_claims: int = 1
    claims: str | None = None

    FORMAT: ClassVar[str] = "taskflow-exclusive/handle/1"
    # Airflow's XCom serde records this next to serialize()'s data and passes it to deserialize().
    __version__: ClassVar[int] = 1

    # -- the consumer's API -----------------------------------------------------------------

    def claim(self, consumer_id: str | None = None) -> Any:
        """Return the value if this consumer may have it; record the claim atomically.

        ``consumer_id`` defaults to the running Airflow task instance
        (``dag_id/run_id/task_id/map_index``, stable across retries) or, outside
        Airflow, ``local:<user>@<host>``. The same consumer claiming again gets
        the value again; any other consumer gets :class:`AlreadyClaimedError`
        once all ``max_claims`` slots are taken.

        Raises :class:`IntegrityError` (bytes or manifest do not match: nothing
        is deserialized), :class:`ObjectMissingError`, :class:`AlreadyClaimedError`,
        :class:`ClaimStoreUnavailableError`. Inside an Airflow task,
        :class:`AlreadyClaimedError` fails the task without retries (see
        :mod:`taskflow_exclusive.task_failures`).
        """
        from taskflow_exclusive.claiming import claim_value

        try:
            return claim_value(self, consumer_id)
        except AlreadyClaimedError as refused:
            if "airflow.sdk" in sys.modules:  # only a running Airflow task changes the error
                from taskflow_exclusive.task_failures import fail_task_without_retry

                fail_task_without_retry(refused)
            raise

    def holders(self) -> list[ClaimRecord]:
        """Who holds this value, and since when (one record per taken slot)."""
        from taskflow_exclusive.claiming import value_holders

        return value_holders(self)

    def release(self, consumer_id: str, *, reason: str) -> ClaimRecord | None:
        """Free ``consumer_id``'s claim so another consumer may claim the value.

        For operators, when the holder is gone for good; logged with ``reason``.
        """
        from taskflow_exclusive.claiming import release_claim

        return release_claim(self, consumer_id, reason=reason)

    def purge(self) -> int:
        """Delete the value, its manifest and its claims; return how many objects went."""
        from taskflow_exclusive.claiming import purge_value

        return purge_value(self)

    # -- serialization ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (what the manifest stores and XCom carries)."""
        return {"format": self.FORMAT, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExclusiveHandle:
        """Rebuild a handle, refusing anything that is not a well-formed handle."""
        if not isinstance(data, dict) or data.get("format") != cls.FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise IntegrityError(
                f"Not a taskflow-exclusive handle (format {found!r}, expected {cls.FORMAT!r}).",
                uri=data.get("uri") if isinstance(data, dict) else None,
                expected=cls.FORMAT,
                actual=found,
            )
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        missing = sorted(names - values.keys() - {"compression", "max_claims", "claims"})
        if missing:
            raise IntegrityError(
                f"Handle for {data.get('uri')!r} lacks fields {missing}.",
                uri=data.get("uri"),
                expected=sorted(names),
                actual=sorted(data),
            )
        handle = cls(**values)
        handle._validate()
        return handle

    @classmethod
    def from_json(cls, text: str | bytes) -> ExclusiveHandle:
        return cls.from_dict(json.loads(text))

    # -- Airflow XCom serde hooks (see taskflow_exclusive.serde) -----------------------------

    def serialize(self) -> dict[str, Any]:
        """What Airflow's XCom serde stores for this handle (``to_dict()``)."""
        return self.to_dict()

    @classmethod
    def deserialize(cls, data: dict[str, Any], version: int) -> ExclusiveHandle:
        """Rebuild a handle from Airflow's XCom serde, validating it like :meth:`from_dict`."""
        if version > cls.__version__:
            raise IntegrityError(
                f"XCom holds an ExclusiveHandle of serde version {version}, newer than this "
                f"taskflow-exclusive understands ({cls.__version__}): upgrade taskflow-exclusive "
                "on this worker.",
                uri=data.get("uri") if isinstance(data, dict) else None,
                expected=cls.__version__,
                actual=version,
            )
        return cls.from_dict(data)

    def _validate(self) -> None:
        problems = []
        if not isinstance(self.uri, str) or "://" not in self.uri:
            problems.append("uri is not a URL")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            problems.append("size is not a non-negative integer")
        if not isinstance(self.sha256, str) or not _SHA256.match(self.sha256):
            problems.append("sha256 is not 64 lowercase hex digits")
        if not isinstance(self.max_claims, int) or isinstance(self.max_claims, bool) or self.max_claims < 1:
            problems.append("max_claims is not a positive integer")
        if problems:
            raise IntegrityError(
                f"Malformed handle for {self.uri!r}: {'; '.join(problems)}.",
                uri=self.uri,
                expected="a handle written by taskflow-exclusive",
                actual=problems,
            )

    def __repr__(self) -> str:
        claims = "" if self.claims is None else f", claims={self.claims!r}"
        return (
            f"ExclusiveHandle({self.uri!r}, {self.serializer}, {self.size} bytes, "
            f"max_claims={self.max_claims}{claims})"
        )
