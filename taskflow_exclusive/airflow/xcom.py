"""ExclusiveXCom: an XCom backend that offloads large values and lets any XCom be claimed once.

Enable it for a whole deployment::

    [core]
    xcom_backend = taskflow_exclusive.xcom.ExclusiveXCom

    [taskflow_exclusive]
    xcom_threshold = 65536        # bytes; 0 offloads every XCom, -1 none
    xcom_compression = zstd       # optional fsspec codec

(or ``AIRFLOW__CORE__XCOM_BACKEND=taskflow_exclusive.xcom.ExclusiveXCom`` and
``AIRFLOW__TASKFLOW_EXCLUSIVE__XCOM_THRESHOLD=...``). Values go to the storage
named by the Airflow Variable ``taskflow_exclusive_storage_url``, like
everything else in taskflow-exclusive.

What it does with each XCom a task pushes:

- an :class:`ExclusiveHandle` (from ``@exclusive_task``) is stored as a handle:
  it already points at storage and is never offloaded twice;
- a value whose serialized size reaches ``xcom_threshold``, or that Airflow's
  serde cannot encode at all (``bytes``, numpy arrays, arbitrary objects), is
  written to storage with the library's serializers (a DataFrame comes back a
  DataFrame, a tuple a tuple) and the XCom row holds a small reference:
  ``{"__taskflow_exclusive__": "xcom-ref/1", "handle": {...}}``;
- anything else stays inline, exactly as Airflow would store it.

Where it does better than common-io's ``XComObjectStorageBackend``:

- only references this backend wrote are followed: a user value that looks
  like a reference is escaped when written, and a reference is checked against
  the producer's manifest and digest before anything is loaded;
- a missing object raises :class:`ObjectMissingError` instead of returning a
  path string;
- ``purge`` (called by Airflow when a task is retried) removes the object, its
  manifest and its claim records, and only what that XCom row stored itself: a
  handle a plain task passes along (``return [upstream_handle]``) still belongs
  to the upstream task's consumers and is left alone;
- a reference row that is not exactly what the backend wrote (fields, handle,
  a path outside ``<dag>/<run>/<task>/<map_index>/xcom/<key>/``) raises
  :class:`MalformedRecordError` and is never followed;
- values are streamed to storage; the size of bytes, strings, arrays and
  frames is known without encoding them, and other values are measured with
  an encoder that stops at the threshold. A value that goes to storage is
  never walked by Airflow's serde, and a large list or dict is checked once
  for whether JSON brings it back exactly (else it is pickled).

Claiming: :meth:`ExclusiveXCom.claim_xcom` (or :func:`claim_task_xcom` inside a
task) returns an XCom's value to exactly one consumer, whether it was
offloaded or inline, through the configured claim ledger. An ordinary
``xcom_pull`` is not a claim.

Importing this module is cheap and has no side effects: Airflow imports the
configured backend in every component (scheduler, API server, dag processor),
and only task processes ever call it. A misconfiguration (a bad storage URL,
an invalid threshold) fails the task that pushes or pulls, with a clear
message, never those components.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.xcom import BaseXCom

from taskflow_exclusive.airflow._compat import stored_xcom_value

if TYPE_CHECKING:
    from taskflow_exclusive.claims.base import ClaimLedger
    from taskflow_exclusive.handle import ExclusiveHandle
    from taskflow_exclusive.storage.store import Store

__all__ = ["ExclusiveXCom", "claim_task_xcom"]

log = logging.getLogger("taskflow_exclusive.xcom")

MARKER = "__taskflow_exclusive__"
REFERENCE = "xcom-ref/1"
ESCAPED = "xcom-escaped/1"
XCOM_FOLDER = "xcom"
_MAP_INDEX = re.compile(r"^(?:-1|0|[1-9][0-9]{0,9})$")


@dataclass(frozen=True)
class _Coordinates:
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    key: str


# Set by ExclusiveXCom.delete() so that purge(), which Airflow calls with the XCom row
# only, knows whose inline claim records to remove.
_deleting: contextvars.ContextVar[_Coordinates | None] = contextvars.ContextVar(
    "taskflow_exclusive_xcom_deleting", default=None
)


class _Wrapped:
    """What ``BaseXCom.deserialize_value`` expects: an object with ``.value``."""

    def __init__(self, value: Any) -> None:
        self.value = value


class ExclusiveXCom(BaseXCom):
    """XCom backend: offload at a size threshold, verified references, claim-once XComs."""

    @staticmethod
    def serialize_value(
        value: Any,
        *,
        key: str | None = None,
        task_id: str | None = None,
        dag_id: str | None = None,
        run_id: str | None = None,
        map_index: int | None = None,
    ) -> Any:
        from taskflow_exclusive.airflow.provider import xcom_settings
        from taskflow_exclusive.formats.serializers import is_plain_json

        if _holds_handles(value):
            return BaseXCom.serialize_value(value)  # already a reference to storage
        settings = xcom_settings()
        where = _coordinates(dag_id, run_id, task_id, map_index, key)
        size = _known_size(value)
        if settings.threshold >= 0 and (
            # Large lists and dicts go straight to storage: the serializer chosen there checks
            # once that JSON brings the value back exactly (else pickle), and nothing else walks it.
            settings.threshold <= size if size is not None else _json_reaches(value, settings.threshold)
        ):
            return _offload(value, settings.compression, where)
        plain = is_plain_json(value)  # a value below the threshold (or one JSON cannot measure)
        try:
            # Airflow's serde leaves plain JSON as it is: skip walking it a second time.
            encoded = value if plain else BaseXCom.serialize_value(value)
        except (TypeError, AttributeError) as exc:
            # Airflow's serde cannot encode it (bytes, numpy arrays, objects): storage can.
            log.info("Offloading XCom %r: Airflow's serde cannot encode it (%s)", key, exc)
            return _offload(value, settings.compression, where)
        if size is None and not plain and settings.threshold >= 0 and _reaches(encoded, settings.threshold):
            del encoded  # serde's form of a tuple, a set, a datetime... is larger than the value's JSON
            return _offload(value, settings.compression, where)
        if isinstance(encoded, dict) and MARKER in encoded:
            return {MARKER: ESCAPED, "value": encoded}  # a user value that looks like ours
        return encoded

    @staticmethod
    def deserialize_value(result: Any) -> Any:
        stored = result.value
        reference = _reference_in(stored)
        if reference is not None:
            from taskflow_exclusive.consuming import read_value

            return read_value(reference)
        return BaseXCom.deserialize_value(_Wrapped(_unescaped(stored)))

    @classmethod
    def delete(
        cls,
        key: str,
        task_id: str,
        dag_id: str,
        run_id: str,
        map_index: int | None = None,
    ) -> None:
        token = _deleting.set(_coordinates(dag_id, run_id, task_id, map_index, key))
        try:
            super().delete(key=key, task_id=task_id, dag_id=dag_id, run_id=run_id, map_index=map_index)
        finally:
            _deleting.reset(token)

    @classmethod
    def purge(cls, xcom: Any, *args: Any) -> None:
        """Remove what an XCom row stored itself: object, manifest and claim records.

        That is the row's offloaded object, or handles of values its own task
        instance published; handles of other tasks' values it merely carries are
        never purged. Called by Airflow (through :meth:`delete`) at the start of a
        retry for the previous try's XComs.
        Failures are logged, not raised: a leftover object must not stop a retry.
        """
        try:
            _purge(getattr(xcom, "value", None), _deleting.get())
        except Exception:
            log.warning(
                "Could not purge the storage behind XCom %r", getattr(xcom, "key", None), exc_info=True
            )

    @classmethod
    def get_one(cls, **query: Any) -> Any:
        """``BaseXCom.get_one``; in exclusive mode, other DAG runs' XComs only through a grant."""
        _require_grant_for_other_runs(query)
        return super().get_one(**query)

    @classmethod
    def get_all(cls, **query: Any) -> Any:
        """``BaseXCom.get_all``; in exclusive mode, other DAG runs' XComs only through a grant."""
        _require_grant_for_other_runs(query)
        return super().get_all(**query)

    @classmethod
    def claim_xcom(
        cls,
        key: str,
        consumer_id: str,
        *,
        dag_id: str,
        task_id: str,
        run_id: str,
        map_index: int = -1,
    ) -> Any:
        """Return the XCom's value to ``consumer_id`` only, atomically claimed.

        Offloaded values and ``@exclusive_task`` handles are claimed through
        their handle; inline values through a claim record keyed by the XCom's
        coordinates and content. A retry of the same consumer gets the value
        again; any other consumer gets :class:`AlreadyClaimedError`. Only
        callable inside a running task (XComs are read through the task SDK).

        Example (inside a task)::

            rows = ExclusiveXCom.claim_xcom(
                "return_value", "loader", dag_id="etl", task_id="extract", run_id=run_id
            )
        """
        from taskflow_exclusive.errors import ObjectMissingError

        _require_grant_for_other_runs({"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "key": key})
        where = _coordinates(dag_id, run_id, task_id, map_index, key)
        stored = stored_xcom_value(
            key=key, dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=map_index
        )
        if stored is None:
            raise ObjectMissingError(
                f"No XCom {key!r} for task {task_id!r} (map_index {map_index}) in run {run_id!r} of "
                f"DAG {dag_id!r}: nothing to claim. Did the task run and push it?",
                uri=None,
                written_on=None,
            )
        reference = _reference_in(stored, where)
        if reference is not None:
            return reference.claim(consumer_id)
        value = BaseXCom.deserialize_value(_Wrapped(_unescaped(stored)))
        from taskflow_exclusive.handle import ExclusiveHandle

        if isinstance(value, ExclusiveHandle):
            return value.claim(consumer_id)
        _claim_inline(where, stored, consumer_id)
        return value


def claim_task_xcom(
    task_id: str | None = None,
    key: str = BaseXCom.XCOM_RETURN_KEY,
    *,
    map_index: int = -1,
    consumer_id: str | None = None,
    granted: str | None = None,
) -> Any:
    """Inside a task: claim an XCom of ``task_id`` in the current DAG run, or one granted to it.

    ``dag_id`` and ``run_id`` come from the running task; ``consumer_id``
    defaults to it (``dag_id/run_id/task_id/map_index``, stable across retries).
    With ``granted="<conf key>"`` (in a triggered DAG) it claims the XCom a
    parent DAG handed to this run (``grant(...)`` in the trigger's ``conf``),
    checked like every grant (:mod:`taskflow_exclusive.grants`).

    Example::

        @task
        def load():
            rows = claim_task_xcom("extract")        # the value, to this task only
            more = claim_task_xcom(granted="orders") # handed to this run by the parent
    """
    from taskflow_exclusive.identity import running_task

    me = running_task()
    if me is None:
        raise RuntimeError("claim_task_xcom() works inside a running Airflow task only")
    if (task_id is None) == (granted is None):
        raise TypeError("claim_task_xcom() takes a task_id, or granted=<conf key>, not both or neither")
    if granted is not None:
        from taskflow_exclusive.airflow.grants import claim_granted

        return claim_granted(granted, consumer_id)
    return ExclusiveXCom.claim_xcom(
        key,
        consumer_id or me.consumer_id,
        dag_id=me.dag_id,
        task_id=task_id,
        run_id=me.run_id,
        map_index=map_index,
    )


# --- helpers (imported lazily: nothing below runs outside task processes) ----------------------


def _require_grant_for_other_runs(query: dict[str, Any]) -> None:
    """Exclusive mode: refuse a pull of another DAG run's XCom unless this run's conf grants it.

    Within the running task's own DAG run nothing changes. Outside a task (the
    API server never calls the backend) there is no run to compare with.
    """
    from taskflow_exclusive.airflow.provider import xcom_settings
    from taskflow_exclusive.identity import running_task

    if not xcom_settings().exclusive_mode:
        return
    me = running_task()
    if me is None:
        return
    dag_id, run_id, task_id, key = (query.get(name) for name in ("dag_id", "run_id", "task_id", "key"))
    prior = bool(query.get("include_prior_dates"))
    if (dag_id, run_id) == (me.dag_id, me.run_id) and not prior:
        return
    from taskflow_exclusive.errors import GrantNotInConfError
    from taskflow_exclusive.grants import accept, grants_in, refused
    from taskflow_exclusive.host import current_host

    conf = current_host().run_conf() or {}
    for document in grants_in(conf):
        named = document.get("xcom") or {}
        if not prior and [named.get(k) for k in ("dag_id", "run_id", "task_id", "key")] == [
            dag_id,
            run_id,
            task_id,
            key,
        ]:
            accept(document, dag_id=me.dag_id, run_id=me.run_id, conf=conf)  # refuses a bad grant
            return
    what = "XComs of earlier runs (include_prior_dates)" if prior else f"XCom {key!r} of task {task_id!r}"
    raise refused(
        GrantNotInConfError(
            f"Exclusive mode is on ([{_section()}] exclusive_mode): task {me.consumer_id!r} asked for "
            f"{what} in run {run_id!r} of DAG {dag_id!r}, another DAG run, and no grant in this "
            "run's conf names it. Hand it over with grant(...) in the parent's "
            "TriggerDagRunOperator conf, or turn exclusive_mode off.",
            grant=None,
            reason="exclusive mode",
        )
    )


def _section() -> str:
    from taskflow_exclusive.airflow.provider import CONFIG_SECTION

    return CONFIG_SECTION


def _coordinates(
    dag_id: str | None, run_id: str | None, task_id: str | None, map_index: int | None, key: str | None
) -> _Coordinates:
    return _Coordinates(
        dag_id=dag_id or "unknown-dag",
        run_id=run_id or "unknown-run",
        task_id=task_id or "unknown-task",
        map_index=-1 if map_index is None else int(map_index),
        key=key or BaseXCom.XCOM_RETURN_KEY,
    )


def _holds_handles(value: Any) -> bool:
    from taskflow_exclusive.airflow.results import SplitHandles
    from taskflow_exclusive.handle import ExclusiveHandle

    if isinstance(value, (ExclusiveHandle, SplitHandles)):  # SplitHandles: where a split output's are
        return True
    if isinstance(value, (list, tuple)):
        return bool(value) and all(isinstance(item, ExclusiveHandle) for item in value)
    if isinstance(value, dict):
        return bool(value) and all(isinstance(item, ExclusiveHandle) for item in value.values())
    return False


_SIZE_OF = {
    "numpy.ndarray": lambda v: int(v.nbytes),
    "pandas.DataFrame": lambda v: int(v.memory_usage(index=True, deep=False).sum()),
    "polars.DataFrame": lambda v: int(v.estimated_size()),
    "pyarrow.Table": lambda v: int(v.nbytes),
}


def _known_size(value: Any) -> int | None:
    """The size of values whose size is known without encoding them, else ``None``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return memoryview(value).nbytes
    if isinstance(value, str):
        return len(value)
    size_of = _SIZE_OF.get(f"{type(value).__module__.split('.', 1)[0]}.{type(value).__name__}")
    return None if size_of is None else size_of(value)


def _reaches(encoded: Any, threshold: int) -> bool:
    """Whether the JSON form of ``encoded`` has at least ``threshold`` bytes (stops early)."""
    total = 0
    for chunk in json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).iterencode(encoded):
        total += len(chunk.encode("utf-8", "surrogatepass"))
        if total >= threshold:
            return True
    return False


def _json_reaches(value: Any, threshold: int) -> bool:
    """Whether a list or dict encodes as JSON to at least ``threshold`` bytes.

    ``False`` for anything else and for values JSON cannot encode (they are
    measured in Airflow's serde form instead). Tuples encode as lists here: the
    size is what matters, not whether JSON brings the value back exactly.
    """
    if not isinstance(value, (list, dict)):
        return False
    try:
        return _reaches(value, threshold)
    except RecursionError:  # nested too deep to measure here: storage takes it (JSON or pickle)
        return True
    except (TypeError, ValueError):  # an object, a non-str key, a cycle: measured by serde instead
        return False


def _offload(value: Any, compression: str | None, where: _Coordinates) -> dict[str, Any]:
    from taskflow_exclusive.identity import TaskInstanceId, running_task
    from taskflow_exclusive.publishing import ExclusiveOutput

    # Airflow pushes a task's return value after its context has closed: the try number is then
    # unknown and the object simply gets no try prefix (Airflow's purge on retry finds it anyway).
    running = running_task()
    same_task = running is not None and (
        running.dag_id,
        running.run_id,
        running.task_id,
        running.map_index,
    ) == (
        where.dag_id,
        where.run_id,
        where.task_id,
        where.map_index,
    )
    try_number = running.try_number if same_task and running is not None else None
    task = TaskInstanceId(where.dag_id, where.run_id, where.task_id, where.map_index, try_number)
    handle = ExclusiveOutput(compression=compression).publish(
        value, task=task, subfolder=(XCOM_FOLDER, where.key)
    )
    return {MARKER: REFERENCE, "key": where.key, "handle": handle.to_dict()}


def _reference_in(stored: Any, where: _Coordinates | None = None) -> ExclusiveHandle | None:
    """The handle in a reference this backend wrote, or ``None`` for any other value.

    A row carrying the reference marker must be exactly what :func:`_offload` writes:
    ``{marker, "key", "handle"}``, a well-formed handle, and an object in the backend's own
    layout ``<base>/<dag>/<run>/<task>/<map_index>/xcom/<key>/<stem>.<ext>`` for the row's
    key (and, when ``where`` is known, for that very task instance). Anything else raises
    :class:`MalformedRecordError`: it is never followed.
    """
    if not (isinstance(stored, dict) and stored.get(MARKER) == REFERENCE):
        return None
    from taskflow_exclusive.handle import ExclusiveHandle

    key = stored.get("key")
    row = _row_name(key, where)
    fields = set(stored) - {MARKER}
    if fields != {"key", "handle"}:
        raise _malformed_row(row, f"its fields are {sorted(map(str, fields))}, not ['handle', 'key']")
    if not isinstance(key, str) or not key:
        raise _malformed_row(row, f"its key is {_shown(key)}, not a non-empty string")
    handle = ExclusiveHandle.from_dict(stored["handle"], where=f"the reference in {row}")
    written_for = _reference_folder(handle)
    if written_for is None:
        raise _malformed_row(
            row,
            f"its handle points at {handle.uri}, outside the backend's layout "
            f"<base>/<dag>/<run>/<task>/<map_index>/{XCOM_FOLDER}/<key>/<stem>.<ext>",
        )
    if written_for[-1] != _encode(key):
        raise _malformed_row(row, f"its handle points at {handle.uri}, which holds another key")
    if where is not None and written_for != _encoded_folder(where):
        raise _malformed_row(
            row, f"its handle points at {handle.uri}, which another task instance (or key) wrote"
        )
    return handle


def _reference_folder(handle: ExclusiveHandle) -> tuple[str, ...] | None:
    """``(dag, run, task, map_index, key)`` as encoded in an offloaded value's path, else ``None``."""
    folder = _folder_segments(handle, 7)
    if folder is None or folder[4] != XCOM_FOLDER or not _MAP_INDEX.match(folder[3]):
        return None
    return (*folder[:4], folder[5])


def _folder_segments(handle: ExclusiveHandle, count: int) -> tuple[str, ...] | None:
    """The last ``count - 1`` folder segments of a stored value's path (checked name), else ``None``."""
    from taskflow_exclusive.errors import ExclusiveError
    from taskflow_exclusive.storage.filesystems import parse_storage_url
    from taskflow_exclusive.storage.layout import ObjectPaths

    try:
        location = parse_storage_url(handle.uri, source="XCom")
        ObjectPaths.from_data_path(location.path, uri=handle.uri)
    except ExclusiveError:
        return None
    segments = location.path.split("/")
    if len(segments) <= count:  # the base (bucket or root) comes first
        return None
    return tuple(segments[-count:-1])


def _encoded_folder(where: _Coordinates) -> tuple[str, ...]:
    return (
        _encode(where.dag_id),
        _encode(where.run_id),
        _encode(where.task_id),
        str(where.map_index),
        _encode(where.key),
    )


def _encode(segment: str) -> str:
    from taskflow_exclusive.storage.layout import encode_segment

    return encode_segment(segment)


def _published_by(handle: ExclusiveHandle, where: _Coordinates) -> bool:
    """Whether ``handle`` is a value the task instance at ``where`` published itself."""
    folder = _folder_segments(handle, 5)
    return folder is not None and folder == _encoded_folder(where)[:4]


def _row_name(key: Any, where: _Coordinates | None) -> str:
    name = f"XCom {_shown(key)}" if isinstance(key, str) else "an XCom row"
    if where is None:
        return name
    return f"{name} of task {where.task_id!r} (map_index {where.map_index}) in DAG {where.dag_id!r}"


def _malformed_row(row: str, problem: str) -> Exception:
    from taskflow_exclusive.errors import MalformedRecordError

    return MalformedRecordError(
        f"{row[0].upper()}{row[1:]} carries the taskflow-exclusive marker but is not a row "
        f"ExclusiveXCom wrote: {problem}. It is not followed; was the row edited by hand, or "
        "written by another tool?",
        kind="XCom row",
        where=row,
        problem=problem,
    )


def _shown(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except RecursionError:
        text = f"<deeply nested {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unescaped(stored: Any) -> Any:
    if not (isinstance(stored, dict) and MARKER in stored):
        return stored
    marker = stored.get(MARKER)
    if marker == ESCAPED:
        value = stored.get("value")
        if set(stored) != {MARKER, "value"} or not (isinstance(value, dict) and MARKER in value):
            raise _malformed_row(
                "an XCom row",
                f"an escaped value must be exactly {{marker, 'value': <a dict holding the marker>}}, "
                f"got fields {sorted(map(str, stored))}",
            )
        return value
    raise _malformed_row(
        "an XCom row",
        f"its marker {_shown(marker)} is unknown (expected {REFERENCE!r} or {ESCAPED!r}; "
        "a newer taskflow-exclusive may have written it)",
    )


def _xcom_store() -> Store:
    from taskflow_exclusive.config import resolve_storage_url
    from taskflow_exclusive.storage.store import Store

    setting = resolve_storage_url(None)
    return Store.from_url(setting.value, setting.source)


def _key_folder(store: Store, where: _Coordinates) -> str:
    from taskflow_exclusive.identity import TaskInstanceId
    from taskflow_exclusive.publishing import task_folder

    task = TaskInstanceId(where.dag_id, where.run_id, where.task_id, where.map_index, None)
    return task_folder(store, task, XCOM_FOLDER, where.key)


def _claim_inline(where: _Coordinates, stored: Any, consumer_id: str) -> None:
    """Claim an inline XCom: a claim record named after its coordinates and content."""
    ledger, uri, _ = _inline_claims(where, stored)
    ledger.claim(uri, consumer_id, 1)


def _inline_claims(where: _Coordinates, stored: Any) -> tuple[ClaimLedger, str, str]:
    """``(ledger, claim uri, sha256 of the content)`` of an inline XCom row.

    The claim uri is ``<key folder>/<first 32 hex of the sha256>.inline`` in the
    deployment's storage; the ledger is the deployment's claims setting.
    """
    from taskflow_exclusive.claims import open_ledger
    from taskflow_exclusive.config import resolve_claims_url

    store = _xcom_store()
    digest = inline_digest(stored)
    uri = store.uri(f"{_key_folder(store, where)}/{digest[:32]}.inline")
    claims = resolve_claims_url(None)
    ledger = open_ledger(
        claims.value if claims else None, store, source=claims.source if claims else "default"
    )
    return ledger, uri, digest


def inline_digest(stored: Any) -> str:
    """The sha256 of an inline XCom row's stored JSON (keys sorted): what its claims and grants name."""
    return hashlib.sha256(json.dumps(stored, sort_keys=True, default=str).encode()).hexdigest()


def _mentions_handles(stored: Any) -> bool:
    """Whether an inline XCom holds serialized handles (cheap test before deserializing)."""
    if stored is None or (isinstance(stored, dict) and MARKER in stored):
        return False
    return "ExclusiveHandle" in json.dumps(stored, default=str)


def _handles_within(value: Any) -> list[ExclusiveHandle]:
    """Every handle in ``value``, however deeply nested in lists, tuples, sets and dicts."""
    from taskflow_exclusive.handle import ExclusiveHandle

    found: list[ExclusiveHandle] = []
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, ExclusiveHandle):
            found.append(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            pending.extend(item)
    return found


def _owned(stored: Any, where: _Coordinates) -> list[ExclusiveHandle]:
    """What the XCom row at ``where`` stored itself, and only that.

    Its offloaded object (a reference to this row's own folder), or handles of values its
    own task instance published. A handle the row merely carries (an upstream task's value
    passed along by a plain task) belongs to that task's consumers and is never returned.
    """
    from taskflow_exclusive.errors import MalformedRecordError

    if isinstance(stored, dict) and MARKER in stored:
        try:
            reference = _reference_in(stored, where)
        except MalformedRecordError as exc:
            log.warning("Not purging what XCom %r refers to: %s", where.key, exc)
            return []
        return [] if reference is None else [reference]
    if not _mentions_handles(stored):
        return []
    value = BaseXCom.deserialize_value(_Wrapped(stored))
    handles = _handles_within(value)
    owned = [handle for handle in handles if _published_by(handle, where)]
    if len(owned) < len(handles):
        log.info(
            "XCom %r of %s carries %d handle(s) published by other tasks: left to their consumers",
            where.key,
            where.task_id,
            len(handles) - len(owned),
        )
    return owned


def _purge(stored: Any, where: _Coordinates | None) -> None:
    if where is None:  # only delete() knows whose row this is; nothing can be attributed without it
        log.warning("ExclusiveXCom.purge() called outside delete(): nothing removed from storage")
        return
    for handle in _owned(stored, where):
        handle.purge()
    store = _xcom_store()
    store.remove([_key_folder(store, where)], recursive=True)
