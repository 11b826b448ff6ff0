"""What a DAG run's task instances produced and claimed: the data behind the Claims view.

:func:`run_inventory` reads the run's XCom rows and task instances from Airflow's
metadata database (where the API server and the ``airflow`` CLI run; never inside a
task, which has no database access in Airflow 3), finds every handle in them, and asks
each value's claim ledger who holds it. Handles are found in every form XCom stores:

- Airflow serde's envelope ``{"__classname__": "taskflow_exclusive.handle.ExclusiveHandle",
  "__version__": 1, "__data__": {...}}`` (``@exclusive_task``, ``@exclusive_output``, a
  plain task returning handles), alone or inside lists, tuples and dicts (``split=True``,
  ``multiple_outputs``);
- :class:`~taskflow_exclusive.airflow.xcom.ExclusiveXCom`'s reference row
  ``{"__taskflow_exclusive__": "xcom-ref/1", "key": ..., "handle": {...}}`` for an offloaded
  XCom, checked exactly as the backend checks it before following it.

Only metadata comes back (serializer, size, checksum, where the value is stored, who
wrote it, who holds it): never a value, and URLs with any secret withheld. Two flags
help an operator: a value nobody claimed (:attr:`StoredValue.unclaimed`), and a claim
whose holder is a task instance of this run that failed for good
(:attr:`Holder.stale`: state ``failed``; a task with retries left is ``up_for_retry``,
not ``failed``), whose value nobody else will get until the claim is released.

Example (on a machine with the metadata database: the API server, a scheduler host)::

    from taskflow_exclusive.airflow.inventory import run_inventory

    inventory = run_inventory("orders_pipeline", "manual__2026-11-25T02:30:00+00:00")
    for value in inventory.values:
        holders = [holder.consumer_id for holder in value.holders]
        print(value.task_id, value.map_index, value.serializer, value.size, value.uri, holders)
    [value.uri for value in inventory.unclaimed]       # produced, never claimed
    [value.uri for value in inventory.stale]           # held by a task that failed for good
    summarize_0 = inventory.task_instance("summarize", 0)
    summarize_0.produced, summarize_0.claimed           # URIs
    inventory.to_dict()                                  # JSON-able, metadata only

``run_inventory(dag_id, run_id, task_id="summarize", map_index=0)`` keeps only what that
task instance produced or claimed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from taskflow_exclusive.handle import HANDLE_CLASS

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from taskflow_exclusive.handle import ExclusiveHandle

__all__ = [
    "Holder",
    "RunInventory",
    "StoredValue",
    "TaskInstanceClaims",
    "XComPlace",
    "run_inventory",
]

#: Task instance states that end a task for good: it will not run again unless cleared.
FAILED_FOR_GOOD = frozenset({"failed"})
OBJECT_STORE_LEDGER = "object store (beside the value)"
#: Ledgers asked at once (each ``holders()`` is one listing, row set or hash read).
_PARALLEL_LOOKUPS = 8


@dataclass(frozen=True)
class XComPlace:
    """Where a handle sits: the XCom row (task instance and key) and the path inside its value."""

    task_id: str
    map_index: int
    key: str
    path: str = ""  # "" for the whole value, else e.g. "[2]" or "['orders']"

    def __str__(self) -> str:
        index = "" if self.map_index == -1 else f"[{self.map_index}]"
        return f"{self.task_id}{index} {self.key}{self.path}"


@dataclass(frozen=True)
class Holder:
    """One claim on a value: who holds it, since when, where it was made.

    ``task_id``/``map_index``/``task_state`` are set when the consumer is a task instance
    of this run; ``stale`` when that task instance failed for good.
    """

    consumer_id: str
    claimed_at: datetime
    slot: int
    host: str
    pid: int
    task_id: str | None = None
    map_index: int | None = None
    task_state: str | None = None

    @property
    def stale(self) -> bool:
        """The holder is a task instance of this run that failed for good."""
        return self.task_state in FAILED_FOR_GOOD

    def to_dict(self) -> dict[str, Any]:
        return {
            "consumer_id": self.consumer_id,
            "claimed_at": self.claimed_at.isoformat(),
            "slot": self.slot,
            "host": self.host,
            "pid": self.pid,
            "task_id": self.task_id,
            "map_index": self.map_index,
            "task_state": self.task_state,
            "stale": self.stale,
        }


@dataclass(frozen=True)
class StoredValue:
    """One stored value of the run: its handle's metadata, where XCom holds it, who holds it.

    ``task_id``/``map_index`` name the task instance that produced it (from the handle's
    ``producer`` when that is a task instance of this run, else the first XCom row that
    holds it). ``problem`` is set when the holders could not be read (the ledger was
    unreachable, the store refused): then ``holders`` is empty and ``unclaimed`` is False.
    """

    task_id: str
    map_index: int
    form: str  # "handle" (Airflow serde envelope) or "xcom-reference" (ExclusiveXCom offload)
    uri: str
    serializer: str
    compression: str | None
    size: int
    digest: str  # "blake3:<hex>", or "sha256:<hex>" for a value written before #13
    producer: str
    created_at: str
    created_on: str
    max_claims: int
    ledger: str
    places: tuple[XComPlace, ...]
    holders: tuple[Holder, ...] = ()
    problem: str | None = None
    _handle: ExclusiveHandle | None = field(default=None, repr=False, compare=False)

    @property
    def unclaimed(self) -> bool:
        """Nobody holds the value (and its ledger could be read)."""
        return self.problem is None and not self.holders

    @property
    def stale(self) -> bool:
        """A holder of the value is a task instance of this run that failed for good."""
        return any(holder.stale for holder in self.holders)

    def handle(self) -> ExclusiveHandle:
        """The handle itself (to call ``holders()`` or ``release()``); never shown or serialized."""
        assert self._handle is not None
        return self._handle

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "map_index": self.map_index,
            "form": self.form,
            "uri": self.uri,
            "serializer": self.serializer,
            "compression": self.compression,
            "size": self.size,
            "digest": self.digest,
            "producer": self.producer,
            "created_at": self.created_at,
            "created_on": self.created_on,
            "max_claims": self.max_claims,
            "ledger": self.ledger,
            "xcom": [str(place) for place in self.places],
            "holders": [holder.to_dict() for holder in self.holders],
            "problem": self.problem,
            "unclaimed": self.unclaimed,
            "stale": self.stale,
        }


@dataclass(frozen=True)
class TaskInstanceClaims:
    """One task instance of the run: its state and the values it produced and claimed (URIs)."""

    task_id: str
    map_index: int
    state: str | None
    try_number: int
    max_tries: int
    produced: tuple[str, ...] = ()
    claimed: tuple[str, ...] = ()

    @property
    def failed_for_good(self) -> bool:
        return self.state in FAILED_FOR_GOOD

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "map_index": self.map_index,
            "state": self.state,
            "try_number": self.try_number,
            "max_tries": self.max_tries,
            "failed_for_good": self.failed_for_good,
            "produced": list(self.produced),
            "claimed": list(self.claimed),
        }


@dataclass(frozen=True)
class RunInventory:
    """Every stored value of one DAG run, its holders, and each task instance's part in it."""

    dag_id: str
    run_id: str
    values: tuple[StoredValue, ...]
    task_instances: tuple[TaskInstanceClaims, ...]
    problems: tuple[str, ...] = ()  # XCom rows carrying our marker that are not what we write

    @property
    def unclaimed(self) -> list[StoredValue]:
        return [value for value in self.values if value.unclaimed]

    @property
    def stale(self) -> list[StoredValue]:
        return [value for value in self.values if value.stale]

    def consumer_id(self, task_id: str, map_index: int = -1) -> str:
        """The library's consumer id of a task instance of this run (``dag/run/task/map_index``)."""
        return f"{self.dag_id}/{self.run_id}/{task_id}/{map_index}"

    def value(self, uri: str) -> StoredValue:
        """The value stored at ``uri`` (as shown); :class:`KeyError` if the run has none there."""
        for value in self.values:
            if value.uri == uri:
                return value
        raise KeyError(uri)

    def task_instance(self, task_id: str, map_index: int = -1) -> TaskInstanceClaims:
        """The task instance ``task_id[map_index]``; :class:`KeyError` if the run has none."""
        for ti in self.task_instances:
            if (ti.task_id, ti.map_index) == (task_id, map_index):
                return ti
        raise KeyError((task_id, map_index))

    def for_task(self, task_id: str, map_index: int | None = None) -> RunInventory:
        """Only what ``task_id`` (one index, or every index when ``None``) produced or claimed."""

        def mine(ti: TaskInstanceClaims) -> bool:
            return ti.task_id == task_id and (map_index is None or ti.map_index == map_index)

        tis = tuple(ti for ti in self.task_instances if mine(ti))
        uris = {uri for ti in tis for uri in (*ti.produced, *ti.claimed)}
        return replace(self, values=tuple(v for v in self.values if v.uri in uris), task_instances=tis)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: metadata only, never a value or a secret."""
        return {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "values": [value.to_dict() for value in self.values],
            "task_instances": [ti.to_dict() for ti in self.task_instances],
            "unclaimed": [value.uri for value in self.unclaimed],
            "stale": [value.uri for value in self.stale],
            "problems": list(self.problems),
        }


def run_inventory(
    dag_id: str,
    run_id: str,
    *,
    task_id: str | None = None,
    map_index: int | None = None,
    session: Session | None = None,
) -> RunInventory:
    """Every handle the run's task instances produced, who holds each, and what each claimed.

    Reads the run's XCom rows and task instances from the metadata database (``session``,
    or a new one), then each value's holders from its claim ledger (a failure to read
    them is reported in :attr:`StoredValue.problem`, not raised). With ``task_id`` (and
    ``map_index``), only what that task instance produced or claimed is kept. A run
    that does not exist, or produced no handle, gives an empty inventory.

    Example (the API server or a scheduler host)::

        inventory = run_inventory("orders_pipeline", run_id)
        [(holder.consumer_id, holder.claimed_at) for holder in inventory.values[0].holders]
        run_inventory("orders_pipeline", run_id, task_id="summarize", map_index=0).values
    """
    if session is None:
        from airflow.utils.session import create_session

        with create_session() as new_session:
            rows, tis = _read_run(new_session, dag_id, run_id)
    else:
        rows, tis = _read_run(session, dag_id, run_id)
    inventory = _build(dag_id, run_id, rows, tis)
    if task_id is not None:
        inventory = inventory.for_task(task_id, map_index)
    return inventory


# --- reading the run ------------------------------------------------------------------------------


def _read_run(
    session: Session, dag_id: str, run_id: str
) -> tuple[list[tuple[str, int, str, Any]], list[TaskInstanceClaims]]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    xcoms = session.execute(
        select(XComModel.task_id, XComModel.map_index, XComModel.key, XComModel.value)
        .where(XComModel.dag_id == dag_id, XComModel.run_id == run_id)
        .order_by(XComModel.task_id, XComModel.map_index, XComModel.key)
    ).all()
    tis = session.execute(
        select(
            TaskInstance.task_id,
            TaskInstance.map_index,
            TaskInstance.state,
            TaskInstance.try_number,
            TaskInstance.max_tries,
        )
        .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        .order_by(TaskInstance.task_id, TaskInstance.map_index)
    ).all()
    rows = [(row.task_id, int(row.map_index), row.key, _decoded(row.value)) for row in xcoms]
    claims = [
        TaskInstanceClaims(
            task_id=ti.task_id,
            map_index=int(ti.map_index),
            state=None if ti.state is None else str(getattr(ti.state, "value", ti.state)),
            try_number=int(ti.try_number or 0),
            max_tries=int(ti.max_tries if ti.max_tries is not None else -1),
        )
        for ti in tis
    ]
    return rows, claims


def _decoded(stored: Any) -> Any:
    """An XCom column's value: Airflow stores a JSON string, or JSON itself (Execution API)."""
    if isinstance(stored, (str, bytes)):
        try:
            return json.loads(stored)
        except ValueError:
            return stored
    return stored


def _handles_in(stored: Any, path: str = "") -> Iterator[tuple[str, str, dict[str, Any], int]]:
    """``(path, form, handle fields, serde version)`` for every handle in a stored XCom value."""
    from taskflow_exclusive.airflow.xcom import MARKER, REFERENCE

    if isinstance(stored, dict):
        if stored.get("__classname__") == HANDLE_CLASS:
            yield path, "handle", stored.get("__data__"), stored.get("__version__")
        elif stored.get(MARKER) == REFERENCE:
            yield path, "xcom-reference", stored, 0
        elif MARKER in stored:
            return  # an escaped user value that merely looks like ours: data, not a reference
        elif "__classname__" in stored and "__data__" in stored:  # tuple, set, list envelopes
            yield from _handles_in(stored["__data__"], path)
        else:
            for key, item in stored.items():
                yield from _handles_in(item, f"{path}[{key!r}]")
    elif isinstance(stored, list):
        for index, item in enumerate(stored):
            yield from _handles_in(item, f"{path}[{index}]")


def _handle_of(
    form: str, data: Any, version: Any, place: XComPlace, *, dag_id: str, run_id: str
) -> ExclusiveHandle:
    """The validated handle (raises MalformedRecordError exactly as a consumer would)."""
    from taskflow_exclusive.handle import ExclusiveHandle

    if form == "handle":
        return ExclusiveHandle.deserialize(data, version)
    from taskflow_exclusive.airflow.xcom import _coordinates, _reference_in

    where = _coordinates(dag_id, run_id, place.task_id, place.map_index, place.key)
    return _reference_in(data, where)


def _build(
    dag_id: str, run_id: str, rows: list[tuple[str, int, str, Any]], tis: list[TaskInstanceClaims]
) -> RunInventory:
    from taskflow_exclusive.claims.specs import withhold_secrets
    from taskflow_exclusive.errors import ExclusiveError

    by_consumer = {f"{dag_id}/{run_id}/{ti.task_id}/{ti.map_index}": ti for ti in tis}
    found: dict[str, tuple[ExclusiveHandle, str, list[XComPlace]]] = {}
    problems: list[str] = []
    for task_id, map_index, key, stored in rows:
        for path, form, data, version in _handles_in(stored):
            place = XComPlace(task_id, map_index, key, path)
            try:
                handle = _handle_of(form, data, version, place, dag_id=dag_id, run_id=run_id)
            except (ExclusiveError, ValueError, TypeError) as exc:
                problems.append(f"{place}: {_one_line(exc)}")
                continue
            if handle.uri in found:
                found[handle.uri][2].append(place)
            else:
                found[handle.uri] = (handle, form, [place])

    holders = _holders_of([handle for handle, _, _ in found.values()])
    values = []
    for handle, form, places in found.values():
        producer = by_consumer.get(handle.producer.split("#try", 1)[0])
        task_id, map_index = (
            (producer.task_id, producer.map_index) if producer else (places[0].task_id, places[0].map_index)
        )
        records, problem = holders[handle.uri]
        shown = tuple(_holder(record, by_consumer) for record in records)
        values.append(
            StoredValue(
                task_id=task_id,
                map_index=map_index,
                form=form,
                uri=withhold_secrets(handle.uri),
                serializer=handle.serializer,
                compression=handle.compression,
                size=handle.size,
                digest=handle.digest,
                producer=handle.producer,
                created_at=handle.created_at,
                created_on=handle.host,
                max_claims=handle.max_claims,
                ledger=withhold_secrets(handle.claims) if handle.claims else OBJECT_STORE_LEDGER,
                places=tuple(places),
                holders=shown,
                problem=problem,
                _handle=handle,
            )
        )
    order = {(ti.task_id, ti.map_index): index for index, ti in enumerate(tis)}
    values.sort(key=lambda v: (order.get((v.task_id, v.map_index), len(order)), str(v.places[0])))
    return RunInventory(
        dag_id=dag_id,
        run_id=run_id,
        values=tuple(values),
        task_instances=tuple(_with_values(ti, dag_id, run_id, values) for ti in tis),
        problems=tuple(problems),
    )


def _holders_of(handles: list[ExclusiveHandle]) -> dict[str, tuple[list[Any], str | None]]:
    """Each handle's holders, or the one-line reason they could not be read."""

    def lookup(handle: ExclusiveHandle) -> tuple[list[Any], str | None]:
        try:
            return handle.holders(), None
        except Exception as exc:  # one unreadable ledger must not hide the rest of the run
            return [], _one_line(exc)

    if len(handles) <= 1:
        return {handle.uri: lookup(handle) for handle in handles}
    with ThreadPoolExecutor(max_workers=min(_PARALLEL_LOOKUPS, len(handles))) as pool:
        return dict(zip((h.uri for h in handles), pool.map(lookup, handles), strict=True))


def _holder(record: Any, by_consumer: dict[str, TaskInstanceClaims]) -> Holder:
    ti = by_consumer.get(record.consumer_id)
    return Holder(
        consumer_id=record.consumer_id,
        claimed_at=record.claimed_at,
        slot=record.slot,
        host=record.host,
        pid=record.pid,
        task_id=ti.task_id if ti else None,
        map_index=ti.map_index if ti else None,
        task_state=ti.state if ti else None,
    )


def _with_values(
    ti: TaskInstanceClaims, dag_id: str, run_id: str, values: list[StoredValue]
) -> TaskInstanceClaims:
    consumer = f"{dag_id}/{run_id}/{ti.task_id}/{ti.map_index}"
    produced = tuple(v.uri for v in values if (v.task_id, v.map_index) == (ti.task_id, ti.map_index))
    claimed = tuple(v.uri for v in values if any(h.consumer_id == consumer for h in v.holders))
    return replace(ti, produced=produced, claimed=claimed)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 400 else text[:397] + "..."
