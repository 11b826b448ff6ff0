"""ExclusiveHandle: the small, JSON-able reference to a stored value that XCom carries.

A handle says where the value is (``uri``), how to read it (``serializer``,
``compression``), how to check it (``size``, ``digest``), who wrote it and
where (``producer``, ``host``, ``created_at``) and how it may be claimed
(``max_claims``, ``claims``: the ledger that guards it, ``None`` for the
object store itself). With a signing key configured it also carries
``key_id`` and ``signature`` (:meth:`signed`), which consumers check before
touching the store. It holds no credentials.

The digest names its algorithm (:mod:`taskflow_exclusive.storage.digests`):
``handle.digest`` is ``"blake3:<64 hex>"`` for every value written now, and
``"sha256:<64 hex>"`` for a handle written before taskflow-exclusive switched
to BLAKE3 (#13). Such an old handle (JSON field ``"sha256": "<hex>"``) is still
read, claimed and verified with sha256, and its JSON, manifest comparison and
signature stay byte for byte what they were. New handles carry
``"digest": "blake3:<hex>"`` instead, so a worker older than the switch refuses
them with a clear "fields ['digest'] are unknown" error: upgrade every worker
before the producers. ``handle.sha256`` is kept for code written against old
handles: the hex digits of a sha256 handle, ``None`` for a BLAKE3 one; use
``digest``.

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
    taskflow_exclusive.errors.AlreadyClaimedError: The value at memory:///docs/... claimed by 'report' ...
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any, ClassVar

from taskflow_exclusive.errors import MalformedRecordError
from taskflow_exclusive.storage.digests import digest_fields, digest_from_fields, digest_problem

if TYPE_CHECKING:
    from taskflow_exclusive.claims.base import ClaimRecord
    from taskflow_exclusive.signing import SigningKeys

__all__ = ["HANDLE_CLASS", "ExclusiveHandle"]

#: The class path Airflow's XCom serde records for a handle (``__classname__``).
HANDLE_CLASS = "taskflow_exclusive.handle.ExclusiveHandle"

_HMAC_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ExclusiveHandle:
    """A claim-once reference to a value in fsspec storage."""

    uri: str
    serializer: str
    size: int
    #: ``"blake3:<64 hex>"`` (or ``"sha256:<64 hex>"`` for a handle written before #13).
    digest: str
    producer: str
    created_at: str
    host: str
    compression: str | None = None
    max_claims: int = 1
    claims: str | None = None
    # With a signing key configured (taskflow_exclusive.signing): HMAC-SHA256 of every other field.
    key_id: str | None = None
    signature: str | None = None

    FORMAT: ClassVar[str] = "taskflow-exclusive/handle/1"
    # Airflow's XCom serde records this next to serialize()'s data and passes it to deserialize().
    __version__: ClassVar[int] = 1

    def __post_init__(self) -> None:
        problem = digest_problem(self.digest)
        if problem:
            from taskflow_exclusive.errors import InvalidArgumentError

            raise InvalidArgumentError(
                f"ExclusiveHandle(digest={_shown(self.digest)}) {problem}.",
                argument="digest",
                value=_shown(self.digest),
                expected="'blake3:<64 hex>' or 'sha256:<64 hex>'",
            )

    @property
    def sha256(self) -> str | None:
        """The hex sha256 of a handle written before #13; ``None`` for a BLAKE3 one (see ``digest``)."""
        algorithm, _, hexdigest = self.digest.partition(":")
        return hexdigest if algorithm == "sha256" else None

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
        :class:`ClaimStoreUnavailableError`. The host sees every refusal first:
        inside an Airflow task, :class:`AlreadyClaimedError` fails the task
        without retries (see :mod:`taskflow_exclusive.airflow.failures`).
        """
        from taskflow_exclusive.consuming import claim_value

        return claim_value(self, consumer_id)  # the ledger lets the host see every refusal

    def holders(self) -> list[ClaimRecord]:
        """Who holds this value, and since when (one record per taken slot)."""
        from taskflow_exclusive.consuming import value_holders

        return value_holders(self)

    def release(self, consumer_id: str, *, reason: str) -> ClaimRecord | None:
        """Free ``consumer_id``'s claim so another consumer may claim the value.

        For operators, when the holder is gone for good; logged with ``reason``.
        """
        from taskflow_exclusive.consuming import release_claim

        return release_claim(self, consumer_id, reason=reason)

    def purge(self) -> int:
        """Delete the value, its manifest and its claims; return how many objects went."""
        from taskflow_exclusive.consuming import purge_value

        return purge_value(self)

    # -- signatures (see taskflow_exclusive.signing) -------------------------------------------

    def signed(self, keys: SigningKeys) -> ExclusiveHandle:
        """This handle with ``key_id`` and ``signature`` from ``keys``' signing key."""
        unsigned = replace(self, key_id=keys.sign_with, signature=None)
        key_id, signature = keys.sign(unsigned.signed_bytes())
        return replace(unsigned, key_id=key_id, signature=signature)

    def signed_bytes(self) -> bytes:
        """What the signature covers: every field but the signature itself (``key_id`` included)."""
        from taskflow_exclusive.signing import canonical_json

        data = self.to_dict()
        data.pop("signature", None)
        return canonical_json(data)

    # -- serialization ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (what the manifest stores and XCom carries).

        An unsigned handle has no ``key_id``/``signature`` keys at all, so it reads
        the same as before signatures existed (older workers refuse unknown fields).
        The digest is ``"digest": "blake3:<hex>"``, or ``"sha256": "<hex>"`` for a
        handle written before #13 (exactly as it was written).
        """
        data = {"format": self.FORMAT, **asdict(self)}
        data.update(digest_fields(data.pop("digest")))
        if self.signature is None and self.key_id is None:
            del data["key_id"], data["signature"]
        return data

    def to_json(self) -> str:
        """The handle as compact JSON: what to save, pass to ``taskflow-exclusive holders``, or share.

        :meth:`from_json` reads it back, and so does the command line
        (:mod:`taskflow_exclusive.handle_forms` lists the other forms it reads).
        """
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Any, *, where: str | None = None) -> ExclusiveHandle:
        """Rebuild a handle, refusing anything that is not a well-formed handle.

        Raises :class:`MalformedRecordError` (``kind="handle"``) naming every
        problem found: a wrong ``format``, missing, unknown or mistyped fields.
        ``where`` says where the record came from (a manifest, an XCom row).
        """
        if not isinstance(data, dict):
            raise _malformed(
                where,
                f"Not a taskflow-exclusive handle (a JSON {_json_type(data)}, not an object)",
                uri=None,
            )
        uri = data.get("uri") if isinstance(data.get("uri"), str) else None
        if data.get("format") != cls.FORMAT:
            found = data.get("format")
            raise _malformed(
                where,
                f"Not a taskflow-exclusive handle (format {_shown(found)}, expected {cls.FORMAT!r})",
                uri,
            )
        names = {f.name for f in fields(cls)} - {"digest"}  # the digest is checked on its own
        problems = []
        missing = sorted(names - data.keys() - _OPTIONAL)
        if missing:
            problems.append(f"fields {missing} are missing")
        unknown = sorted(str(k) for k in data.keys() - names - {"format", "digest", "sha256"})
        if unknown:
            problems.append(f"fields {[_shown(k) for k in unknown][:5]} are unknown to this version")
        digest, digest_problem = digest_from_fields(data)
        if digest_problem:
            problems.append(digest_problem)
        problems.extend(_field_problems({k: v for k, v in data.items() if k in names}))
        if problems:
            raise _malformed(where, "; ".join(problems), uri)
        return cls(digest=digest, **{k: v for k, v in data.items() if k in names})

    @classmethod
    def from_json(cls, text: str | bytes, *, where: str | None = None) -> ExclusiveHandle:
        """Rebuild a handle from its JSON (:meth:`to_json`), refusing anything else."""
        if not isinstance(text, (str, bytes, bytearray)):
            raise _malformed(where, f"it is a {type(text).__name__}, not JSON text", None)
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # ValueError covers JSONDecodeError and bad UTF-8
            raise _malformed(where, f"it is not JSON ({_first_line(exc)})", None) from None
        return cls.from_dict(data, where=where)

    # -- Airflow XCom serde hooks (see taskflow_exclusive.airflow.serde) -----------------------------

    def serialize(self) -> dict[str, Any]:
        """What Airflow's XCom serde stores for this handle (``to_dict()``)."""
        return self.to_dict()

    @classmethod
    def deserialize(cls, data: dict[str, Any], version: int, *, where: str | None = None) -> ExclusiveHandle:
        """Rebuild a handle from Airflow's XCom serde, validating it like :meth:`from_dict`."""
        where = where or "XCom (Airflow serde)"
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise _malformed(where, f"its serde version is {_shown(version)}, not a positive int", None)
        if version > cls.__version__:
            raise _malformed(
                where,
                f"it is an ExclusiveHandle of serde version {version}, newer than this "
                f"taskflow-exclusive understands ({cls.__version__}): upgrade taskflow-exclusive "
                "on this worker",
                data.get("uri") if isinstance(data, dict) and isinstance(data.get("uri"), str) else None,
            )
        return cls.from_dict(data, where=where)

    def __repr__(self) -> str:
        claims = "" if self.claims is None else f", claims={self.claims!r}"
        return (
            f"ExclusiveHandle({self.uri!r}, {self.serializer}, {self.size} bytes, "
            f"max_claims={self.max_claims}{claims})"
        )


_OPTIONAL = frozenset({"compression", "max_claims", "claims", "key_id", "signature"})
_TEXT_FIELDS = ("serializer", "producer", "created_at", "host")


def _field_problems(values: dict[str, Any]) -> list[str]:
    """What is wrong with the fields of a handle record (empty when nothing is)."""
    from taskflow_exclusive.claims.base import check_max_claims
    from taskflow_exclusive.errors import InvalidArgumentError

    problems = []
    uri = values.get("uri")
    if "uri" in values and not (isinstance(uri, str) and "://" in uri and uri.isprintable()):
        problems.append(f"uri is not a URL (got {_shown(uri)})")
    for name in _TEXT_FIELDS:
        if name in values and not isinstance(values[name], str):
            problems.append(f"{name} is not a string (got {_shown(values[name])})")
    if values.get("serializer") == "":
        problems.append("serializer is empty")
    size = values.get("size")
    if "size" in values and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        problems.append(f"size is not a non-negative integer (got {_shown(size)})")
    for name in ("compression", "claims", "key_id"):
        if values.get(name) is not None and not (isinstance(values[name], str) and values[name]):
            problems.append(f"{name} is not a non-empty string or null (got {_shown(values[name])})")
    signature = values.get("signature")
    if signature is not None and not (isinstance(signature, str) and _HMAC_SHA256.match(signature)):
        problems.append(f"signature is not 64 lowercase hex digits or null (got {_shown(signature)})")
    if (values.get("key_id") is None) != (signature is None):
        problems.append("key_id and signature must both be set or both be null")
    if "max_claims" in values:
        try:
            check_max_claims(values["max_claims"])
        except InvalidArgumentError as exc:
            problems.append(f"max_claims is not an {exc.expected} (got {_shown(values['max_claims'])})")
    return problems


def _malformed(where: str | None, problem: str, uri: str | None) -> MalformedRecordError:
    about = f" for {uri!r}" if uri else ""
    source = f" (from {where})" if where else ""
    return MalformedRecordError(
        f"Malformed handle{about}{source}: {problem}. Handles are only accepted exactly as "
        "taskflow-exclusive wrote them (ExclusiveHandle.to_json()); nothing was read or claimed.",
        kind="handle",
        where=where if where is not None else uri,
        problem=problem,
    )


def _shown(value: Any, limit: int = 60) -> str:
    """A short repr of a value from a record, for messages."""
    try:
        text = repr(value)
    except RecursionError:  # a nested structure deeper than repr() can walk
        text = f"<deeply nested {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: Any) -> str:
    names = {
        list: "array",
        str: "string",
        bool: "boolean",
        type(None): "null",
        int: "number",
        float: "number",
    }
    return names.get(type(value), type(value).__name__)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
