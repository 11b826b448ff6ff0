"""Grants: a value handed to one triggered DAG, signed, and claimable there only.

A grant is a small JSON document (it travels in a DAG run's ``conf``)::

    {"format": "taskflow-exclusive/grant/1",
     "uri": ..., "digest": "blake3:...",     the value (for a handle, its handle too)
     "handle": {...} | null, "xcom": {...} | null,
     "to_dag": "child", "to_run": null,      the addressee (a run only when the parent fixes it)
     "granted_by": "parent/run/task/-1", "granted_at": ISO 8601, "expires_at": ISO 8601 | null,
     "key_id": "2026-11", "signature": HMAC-SHA256 of everything else}

The value's digest is carried like a handle's
(:mod:`taskflow_exclusive.storage.digests`): ``"digest": "blake3:<hex>"`` for a value
written now, ``"sha256": "<hex>"`` for a value written before #13 and for an
inline XCom (whose claims are named after the sha256 of its content).

Handing off is two claims in the value's own ledger, each an atomic create:

1. **Granting** claims the value for the hand-off itself, under the consumer
   id ``handoff to <dag> by <granter>``: from then on the parent's tasks are
   refused (:class:`AlreadyClaimedError` names the hand-off), and
   ``holders()`` and the CLI show who granted it to which DAG. A retry of
   the granting task finds its own hand-off and signs again.
2. **The child** claims ``<value uri>#handoff/<dag>`` for its consumer (its
   task instance): the first run of the child DAG that claims gets the
   value, a second run replaying the same ``conf`` gets
   :class:`AlreadyClaimedError` naming the first, a retry of the same task
   gets it again.

Before either, the child checks the grant (:func:`accept`): the signature
with the deployment's keys (:mod:`taskflow_exclusive.signing`), the
addressee, the expiry, that the grant is in this run's ``conf``, and that the
hand-off record still stands (an operator may release it to revoke the
grant). Each refusal is its own :class:`GrantError` subclass.

Example (outside Airflow, with explicit identities)::

    >>> import os
    >>> from taskflow_exclusive import publish
    >>> os.environ["AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_SIGNING_SECRET"] = "s" * 32
    >>> handle = publish([1, 2], storage="memory://docs")
    >>> document = grant_handle(handle, to_dag="child", granted_by="parent/r1/extract/-1").to_dict()
    >>> handle.claim(consumer_id="parent/r1/other/-1")
    Traceback (most recent call last):
    taskflow_exclusive.errors.AlreadyClaimedError: ... by 'handoff to child by parent/r1/extract/-1' ...
    >>> conf = {"orders": document}
    >>> accept(document, dag_id="child", run_id="c1", conf=conf).claim("child/c1/load/-1", conf=conf)
    [1, 2]
    >>> del os.environ["AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_SIGNING_SECRET"]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, ClassVar

from taskflow_exclusive.errors import (
    GrantAddressError,
    GrantError,
    GrantExpiredError,
    GrantNotInConfError,
    GrantRevokedError,
    GrantSignatureError,
    InvalidArgumentError,
    MalformedRecordError,
)
from taskflow_exclusive.handle import ExclusiveHandle
from taskflow_exclusive.signing import SigningKeys, canonical_json, signing_keys
from taskflow_exclusive.storage.digests import digest_fields, digest_from_fields

if TYPE_CHECKING:
    from taskflow_exclusive.claims.base import ClaimRecord

__all__ = [
    "GRANT_FORMAT",
    "Grant",
    "accept",
    "grant_handle",
    "grants_in",
    "hand_off",
    "handoff_consumer_id",
    "handoff_uri",
    "handoff_uris",
    "is_grant",
    "refused",
    "sign",
]

GRANT_FORMAT = "taskflow-exclusive/grant/1"
_HMAC_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_HANDOFF = "handoff to "
_DAG_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")  # Airflow's own rule for DAG ids
_PRINTABLE = re.compile(r"^[^\x00-\x1f\x7f]{1,250}$")
_XCOM_FIELDS = {"dag_id": str, "run_id": str, "task_id": str, "map_index": int, "key": str}


@dataclass(frozen=True)
class Grant:
    """A signed hand-off of one value to one DAG (see the module docstring).

    In the child, a grant stands where a handle would: pass it to a
    ``Claimed[...]`` parameter, or call :meth:`claim` in a plain task.
    """

    uri: str
    #: ``"blake3:<hex>"``, or ``"sha256:<hex>"`` (a value written before #13, an inline XCom).
    digest: str
    handle: ExclusiveHandle | None
    xcom: Mapping[str, Any] | None
    to_dag: str
    to_run: str | None
    granted_by: str
    granted_at: str
    expires_at: str | None
    key_id: str
    signature: str

    FORMAT: ClassVar[str] = GRANT_FORMAT
    # Airflow's XCom serde records this beside serialize()'s data (see taskflow_exclusive.airflow.serde).
    __version__: ClassVar[int] = 1

    # -- the child's API --------------------------------------------------------------------

    def claim(self, consumer_id: str | None = None, *, conf: Mapping[str, Any] | None = None) -> Any:
        """Check this grant for the running DAG run, claim the value for ``consumer_id``, return it.

        ``consumer_id`` defaults to the running task instance; ``conf`` to the
        running DAG run's ``conf`` (outside Airflow, pass both). Raises a
        :class:`GrantError` subclass when the grant is not for this run,
        :class:`AlreadyClaimedError` when another consumer (of this or
        another run) claimed it first.
        """
        from taskflow_exclusive.consuming import load_verified, record_claim
        from taskflow_exclusive.identity import default_consumer_id, running_task

        task = running_task()
        checked = accept(
            self.to_dict(),
            dag_id=task.dag_id if task else self.to_dag,
            run_id=task.run_id if task else self.to_run,
            conf=_run_conf() if conf is None else conf,
        )
        if checked.handle is None:
            raise GrantError(
                f"{checked.describe()} names an inline XCom, which only a task can claim: use "
                "claim_task_xcom(granted=<conf key>) in the child.",
                grant=checked.describe(),
                reason="inline XCom",
            )
        checked.require_handoff()
        consumer = consumer_id if consumer_id is not None else default_consumer_id()
        record_claim(checked.handle, consumer, uri=handoff_uri(checked.uri, checked.to_dag), max_claims=1)
        return load_verified(checked.handle)

    def holders(self) -> list[Any]:
        """Who holds the child's side of this hand-off (at most one consumer)."""
        from taskflow_exclusive.consuming import value_holders

        if self.handle is None:
            return []
        return value_holders(self.handle, handoff_uri(self.uri, self.to_dag))

    def require_handoff(self, holders: list[ClaimRecord] | None = None) -> None:
        """Refuse (:class:`GrantRevokedError`) unless the value's hand-off record still stands.

        ``holders``: the value's holders when the caller read them (an inline XCom's
        ledger); by default they are read through the grant's handle.
        """
        from taskflow_exclusive.consuming import value_holders

        if holders is None:
            if self.handle is None:
                return
            holders = value_holders(self.handle)
        expected = handoff_consumer_id(self.to_dag, self.to_run, self.granted_by)
        if not any(record.consumer_id == expected for record in holders):
            held = ", ".join(repr(r.consumer_id) for r in holders) or "nobody"
            raise refused(
                GrantRevokedError(
                    f"{self.describe()} was revoked: the value's hand-off record {expected!r} is gone "
                    f"(an operator released it, or the value was purged; holders now: {held}). "
                    "Nothing was claimed; ask the parent DAG to grant the value again.",
                    grant=self.describe(),
                    reason="hand-off released",
                )
            )

    # -- the document -----------------------------------------------------------------------

    def describe(self) -> str:
        run = f" run {self.to_run!r}" if self.to_run else ""
        return (
            f"the grant of {self.uri} to DAG {self.to_dag!r}{run} by {self.granted_by!r} "
            f"(key {self.key_id!r}, granted {self.granted_at})"
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (what goes in ``conf``)."""
        data = asdict(self)
        data.update(digest_fields(data.pop("digest")))
        data["handle"] = None if self.handle is None else self.handle.to_dict()
        data["xcom"] = None if self.xcom is None else dict(self.xcom)
        return {"format": GRANT_FORMAT, **data}

    def unsigned(self) -> dict[str, Any]:
        document = self.to_dict()
        del document["signature"]
        return document

    @classmethod
    def from_dict(cls, data: Any, *, where: str | None = None) -> Grant:
        """Parse a grant document, refusing anything not exactly of this form (no signature check)."""
        where = where or "a grant"
        if not isinstance(data, dict) or data.get("format") != GRANT_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise _malformed(
                where, f"not a taskflow-exclusive grant (format {found!r}, expected {GRANT_FORMAT!r})"
            )
        names = {f.name for f in fields(cls)} - {"digest"} | {"format"}
        digest, digest_problem = digest_from_fields(data)
        carried = {"sha256"} if "sha256" in data else {"digest"}  # the digest's field (one of two)
        if set(data) != names | carried:
            missing = sorted(names - set(data))
            unknown = sorted(map(str, set(data) - names - carried))
            raise _malformed(where, f"fields missing {missing}, unknown {unknown[:5]}")
        problems = [
            f"{name} is not a non-empty string"
            for name in ("uri", "to_dag", "granted_by", "granted_at", "key_id", "signature")
            if not (isinstance(data[name], str) and data[name] and data[name].isprintable())
        ]
        problems += [
            f"{name} is not a non-empty string or null"
            for name in ("to_run", "expires_at")
            if data[name] is not None and not (isinstance(data[name], str) and data[name])
        ]
        if digest_problem:
            problems.append(digest_problem)
        if not (isinstance(data["signature"], str) and _HMAC_SHA256.match(data["signature"])):
            problems.append("signature is not 64 lowercase hex digits")
        for name in ("granted_at", "expires_at"):
            if isinstance(data[name], str) and _moment(data[name]) is None:
                problems.append(f"{name} is not an ISO 8601 time with a time zone")
        xcom = data["xcom"]
        if xcom is not None and not (
            isinstance(xcom, dict)
            and set(xcom) == set(_XCOM_FIELDS)
            and all(type(xcom[k]) is t for k, t in _XCOM_FIELDS.items())
        ):
            problems.append(f"xcom is not null or an object of {sorted(_XCOM_FIELDS)}")
        if data["handle"] is None and xcom is None:
            problems.append("it names neither a handle nor an XCom")
        if problems:
            raise _malformed(where, "; ".join(problems))
        handle = None
        if data["handle"] is not None:
            handle = ExclusiveHandle.from_dict(data["handle"], where=f"the handle in {where}")
            if (handle.uri, handle.digest) != (data["uri"], digest):
                raise _malformed(where, "its uri and digest differ from its handle's")
        values = {name: data[name] for name in names - {"format", "handle"}}
        assert digest is not None  # digest_problem is None
        return cls(handle=handle, digest=digest, **values)

    # -- Airflow XCom serde hooks (a granted value passes from task to task in the child) ----

    def serialize(self) -> dict[str, Any]:
        return self.to_dict()

    @classmethod
    def deserialize(cls, data: dict[str, Any], version: int) -> Grant:
        if version != cls.__version__:
            raise _malformed("XCom (Airflow serde)", f"serde version {version!r}, expected {cls.__version__}")
        return cls.from_dict(data, where="XCom (Airflow serde)")

    def __repr__(self) -> str:
        return f"Grant({self.uri!r} to {self.to_dag!r}, key {self.key_id!r})"


# --- the parent's side ----------------------------------------------------------------------------


def handoff_consumer_id(to_dag: str, to_run: str | None, granted_by: str) -> str:
    """The consumer id under which a granted value is held for its child DAG."""
    run = f" run {to_run}" if to_run else ""
    return f"{_HANDOFF}{to_dag}{run} by {granted_by}"  # DAG ids hold no spaces


def handoff_uris(uri: str, holders: Iterable[ClaimRecord]) -> list[str]:
    """The children's claim keys of the hand-offs among ``holders`` of the value at ``uri``."""
    dags = {record.consumer_id.split(" ")[2] for record in holders if record.consumer_id.startswith(_HANDOFF)}
    return [handoff_uri(uri, dag) for dag in sorted(dags)]


def handoff_uri(uri: str, to_dag: str) -> str:
    """Where the child's claim on a handed-off value is recorded (same ledger, its own key)."""
    from taskflow_exclusive.storage.layout import encode_segment

    return f"{uri}#handoff/{encode_segment(to_dag)}"


def sign(
    *,
    uri: str,
    digest: str,
    handle: ExclusiveHandle | None,
    xcom: Mapping[str, Any] | None,
    to_dag: str,
    to_run: str | None,
    granted_by: str,
    expires_in: timedelta | None,
    keys: SigningKeys | None = None,
    now: datetime | None = None,
) -> Grant:
    """A signed grant document (records nothing; see :func:`grant_handle`)."""
    _check_name("to_dag", to_dag)
    if to_run is not None:
        _check_name("to_run", to_run)
    if expires_in is not None and (not isinstance(expires_in, timedelta) or expires_in <= timedelta(0)):
        raise InvalidArgumentError(
            f"expires_in must be a positive timedelta, got {expires_in!r}.",
            argument="expires_in",
            value=repr(expires_in),
            expected="timedelta > 0",
        )
    keys = keys or signing_keys()
    moment = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    draft = Grant(
        uri=uri,
        digest=digest,
        handle=handle,
        xcom=None if xcom is None else dict(xcom),
        to_dag=to_dag,
        to_run=to_run,
        granted_by=granted_by,
        granted_at=moment.isoformat(),
        expires_at=None if expires_in is None else (moment + expires_in).isoformat(),
        key_id=keys.sign_with,
        signature="-",
    )
    key_id, signature = keys.sign(canonical_json({**draft.unsigned(), "key_id": keys.sign_with}))
    return Grant(**{**draft.__dict__, "key_id": key_id, "signature": signature})


def grant_handle(
    handle: ExclusiveHandle,
    to_dag: str,
    *,
    to_run: str | None = None,
    expires_in: timedelta | None = None,
    granted_by: str | None = None,
    xcom: Mapping[str, Any] | None = None,
    keys: SigningKeys | None = None,
) -> Grant:
    """Hand ``handle``'s value to the DAG ``to_dag``: record the hand-off, return the signed grant.

    The value is claimed for the hand-off (``handoff to <dag> by <granter>``)
    in its own ledger, so no other consumer can claim it any more; a retry of
    the same granter finds its hand-off and signs again. Raises
    :class:`AlreadyClaimedError` when someone else holds the value, and
    :class:`SigningKeyError` when no key is configured (checked first:
    nothing is recorded then).
    """
    from taskflow_exclusive.consuming import record_claim
    from taskflow_exclusive.identity import default_consumer_id

    if not isinstance(handle, ExclusiveHandle):
        raise InvalidArgumentError(
            f"grant_handle() hands off an ExclusiveHandle, got a {type(handle).__name__}.",
            argument="handle",
            value=type(handle).__name__,
            expected="ExclusiveHandle",
        )
    return hand_off(
        lambda consumer: record_claim(handle, consumer),
        uri=handle.uri,
        digest=handle.digest,
        handle=handle,
        xcom=xcom,
        to_dag=to_dag,
        to_run=to_run,
        granted_by=granted_by or default_consumer_id(),
        expires_in=expires_in,
        keys=keys,
    )


def hand_off(
    record: Callable[[str], object],
    *,
    uri: str,
    digest: str,
    handle: ExclusiveHandle | None,
    xcom: Mapping[str, Any] | None,
    to_dag: str,
    to_run: str | None,
    granted_by: str,
    expires_in: timedelta | None,
    keys: SigningKeys | None = None,
) -> Grant:
    """The one order of every hand-off: key and addressee checked, ``record(hand-off id)``, then signed.

    ``record`` claims the value for the hand-off in its ledger (a handle's, or an inline
    XCom's); nothing is recorded when no key is configured or the addressee is not a DAG id.
    """
    keys = keys or signing_keys()
    _check_name("to_dag", to_dag)
    record(handoff_consumer_id(to_dag, to_run, granted_by))
    return sign(
        uri=uri,
        digest=digest,
        handle=handle,
        xcom=xcom,
        to_dag=to_dag,
        to_run=to_run,
        granted_by=granted_by,
        expires_in=expires_in,
        keys=keys,
    )


# --- the child's side ----------------------------------------------------------------------------


def is_grant(value: Any) -> bool:
    """Whether ``value`` looks like a grant document (its ``format`` field), checked or not."""
    return isinstance(value, dict) and value.get("format") == GRANT_FORMAT


def grants_in(conf: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Every grant document in a run's ``conf``: its values, and lists or dicts of them one level down."""
    found: list[dict[str, Any]] = []
    for value in (conf or {}).values():
        items = value.values() if isinstance(value, dict) and not is_grant(value) else None
        items = value if isinstance(value, list) else items
        found.extend(item for item in (items if items is not None else [value]) if is_grant(item))
    return found


def accept(
    document: Any,
    *,
    dag_id: str | None,
    run_id: str | None,
    conf: Mapping[str, Any] | None,
    keys: SigningKeys | None = None,
    now: datetime | None = None,
) -> Grant:
    """Check a grant for the DAG run ``dag_id``/``run_id`` whose ``conf`` is ``conf``; return it.

    Checks, in order: the document's form and signature
    (:class:`GrantSignatureError`: malformed, altered, unsigned, or an
    unknown key), the addressee (:class:`GrantAddressError`), the expiry
    (:class:`GrantExpiredError`), and that this very grant is in ``conf``
    (:class:`GrantNotInConfError`). Records nothing.
    """
    if isinstance(document, Grant):
        document = document.to_dict()
    try:
        grant = Grant.from_dict(document, where="a grant")
    except MalformedRecordError as exc:
        raise refused(
            GrantSignatureError(
                f"{exc.message} A grant that is not exactly as signed was altered (or never was one).",
                grant=None,
                reason=f"malformed: {exc.problem}",
            )
        ) from None
    keys = keys or signing_keys()
    what = grant.describe()
    if not keys.knows(grant.key_id):
        raise refused(
            GrantSignatureError(
                f"{what} is signed with key {grant.key_id!r}, which this deployment does not accept "
                f"(accepted: {keys.key_ids}). Add that key to the keyring, or grant again.",
                grant=what,
                reason="unknown key",
            )
        )
    if not keys.verify(grant.key_id, canonical_json(grant.unsigned()), grant.signature):
        raise refused(
            GrantSignatureError(
                f"{what} does not match its signature: it was altered after signing (or forged). "
                "Nothing was claimed.",
                grant=what,
                reason="bad signature",
            )
        )
    if dag_id is not None and grant.to_dag != dag_id:
        raise refused(
            GrantAddressError(
                f"{what} is addressed to DAG {grant.to_dag!r}, not to {dag_id!r}: only the DAG a value "
                "was granted to may claim it.",
                grant=what,
                reason="another DAG",
            )
        )
    if grant.to_run is not None and grant.to_run != run_id:
        raise refused(
            GrantAddressError(
                f"{what} is addressed to run {grant.to_run!r} of DAG {grant.to_dag!r}, "
                f"not to run {run_id!r}.",
                grant=what,
                reason="another run",
            )
        )
    moment = now or datetime.now(timezone.utc)
    expiry = _moment(grant.expires_at) if grant.expires_at else None
    if expiry is not None and moment >= expiry:
        raise refused(
            GrantExpiredError(
                f"{what} expired at {grant.expires_at}; it is now {moment.isoformat(timespec='seconds')}. "
                "Ask the parent DAG to grant the value again (with a longer expiry).",
                grant=what,
                reason="expired",
            )
        )
    if conf is not None and document not in grants_in(conf):
        raise refused(
            GrantNotInConfError(
                f"{what} is not in this DAG run's conf: a DAG run may claim only the values handed to "
                "it in its own conf (TriggerDagRunOperator(conf={...: grant(...)})).",
                grant=what,
                reason="not in conf",
            )
        )
    return grant


def refused(error: GrantError) -> GrantError:
    """Let the host see a refused grant first (inside Airflow: the task fails without retries)."""
    from taskflow_exclusive.host import current_host

    current_host().refuse(error)
    return error


def _run_conf() -> Mapping[str, Any] | None:
    from taskflow_exclusive.host import current_host

    return current_host().run_conf()


def _moment(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo is not None else None


def _check_name(argument: str, value: Any) -> None:
    pattern = _DAG_ID if argument == "to_dag" else _PRINTABLE
    if not (isinstance(value, str) and pattern.match(value)):
        raise InvalidArgumentError(
            f"{argument} must be a DAG {'id' if argument == 'to_dag' else 'run id'}, got {value!r}.",
            argument=argument,
            value=repr(value)[:200],
            expected="a DAG id ([A-Za-z0-9_.-]+)" if argument == "to_dag" else "a non-empty printable string",
        )


def _malformed(where: str, problem: str) -> MalformedRecordError:
    return MalformedRecordError(
        f"Malformed grant (from {where}): {problem}. Grants are accepted only exactly as "
        "taskflow-exclusive wrote them; nothing was claimed.",
        kind="grant",
        where=where,
        problem=problem,
    )
