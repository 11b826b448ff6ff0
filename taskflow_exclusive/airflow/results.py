"""How a function's result becomes handles: one value, one per item, or one per key.

- default: the whole result is one value, one :class:`ExclusiveHandle`;
- ``split=True``: the result is an iterable; each item is stored on its own
  as it comes (a generator is never held in memory whole) and the result is
  a ``list`` of handles, one per item, in order (so ``consume.expand(x=...)``
  gives each mapped task instance its own handle);
- ``per_key=True`` (Airflow's ``multiple_outputs``): the result is a dict with
  string keys; each value is stored on its own and the result is a ``dict``
  of handles with the same keys.

When a downstream task maps over it (``.expand``), ``@exclusive_task(split=True)``
hands the list to :class:`SplitHandles`: XCom's ``return_value`` then holds only where the
handles are (a few hundred bytes, whatever the count) and the handles go into
rows of :data:`HANDLES_PER_ROW`; a mapped consumer (``.expand``) reads the one
row holding its item and rebuilds only its own handle, so the cost per item
stays flat as the count grows (Airflow would otherwise pull and deserialize
the whole list in every mapped task instance: O(N^2) bytes).

A function returning ``None`` publishes nothing and yields ``None`` (Airflow
then pushes no XCom), so a sink task can use ``Claimed`` inputs and return
nothing. If storing fails part way (or the generator raises), what this call
already stored is deleted before the error propagates: a failed try leaves
nothing behind (a retry also removes whatever an earlier try left).

Example::

    >>> from taskflow_exclusive import ExclusiveOutput
    >>> out = ExclusiveOutput(storage="memory://docs")
    >>> [h.serializer for h in publish_result(out, (n for n in ["a", "b"]), split=True)]
    ['text', 'text']
    >>> sorted(publish_result(out, {"x": 1, "y": [2]}, per_key=True))
    ['x', 'y']
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, overload

from taskflow_exclusive.errors import InvalidArgumentError
from taskflow_exclusive.handle import ExclusiveHandle
from taskflow_exclusive.publishing import ExclusiveOutput

__all__ = ["HANDLES_PER_ROW", "SPLIT_ROW_KEY", "SplitHandles", "check_shape", "publish_result"]

log = logging.getLogger("taskflow_exclusive")


def check_shape(split: bool, multiple_outputs: bool | None, where: str = "") -> None:
    """Refuse ``split=True`` together with ``multiple_outputs=True`` (one shape per result)."""
    if split and multiple_outputs:
        raise InvalidArgumentError(
            f"{where}split=True and multiple_outputs=True cannot be combined (one handle per item, "
            "or one per key: choose one).",
            argument="split",
            value="True",
            expected="split=False with multiple_outputs=True, or multiple_outputs unset/False",
        )


def publish_result(
    output: ExclusiveOutput,
    value: Any,
    *,
    split: bool = False,
    per_key: bool = False,
    label: str | None = None,
) -> ExclusiveHandle | list[ExclusiveHandle] | dict[str, ExclusiveHandle] | None:
    """Publish ``value`` through ``output`` in the shape asked for; see the module docstring."""
    check_shape(split, per_key)
    if value is None:
        log.info("The function returned None: nothing was published")
        return None
    if split:
        return _publish_items(output, value, label)
    if per_key:
        return _publish_keys(output, value, label)
    return output.publish(value, label=label)


def _publish_items(output: ExclusiveOutput, value: Any, label: str | None) -> list[ExclusiveHandle]:
    if isinstance(value, (str, bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise TypeError(
            f"split=True needs the function to return an iterable of values (a list or a generator), "
            f"got {type(value).__name__}. For a dict, use multiple_outputs=True (one handle per key)."
        )
    handles: list[ExclusiveHandle] = []
    with _removed_on_failure(handles):
        for item in value:
            handles.append(output.publish(item, label=label))
    log.info("Published %d item(s) separately (split=True)", len(handles))
    return handles


def _publish_keys(output: ExclusiveOutput, value: Any, label: str | None) -> dict[str, ExclusiveHandle]:
    if not isinstance(value, Mapping):
        raise TypeError(
            f"multiple_outputs=True needs the function to return a dict, got {type(value).__name__}"
        )
    bad_keys = [key for key in value if not isinstance(key, str)]
    if bad_keys:
        raise TypeError(f"multiple_outputs=True needs string keys (XCom keys), got {bad_keys[0]!r}")
    handles: dict[str, ExclusiveHandle] = {}
    with _removed_on_failure(handles.values()):
        for key, item in value.items():
            handles[key] = output.publish(item, label=label)
    return handles


@contextmanager
def _removed_on_failure(handles: Iterable[ExclusiveHandle]) -> Iterator[None]:
    """On any error inside the block, purge the handles published so far, then re-raise."""
    try:
        yield
    except BaseException:
        published = list(handles)
        for handle in published:
            try:
                handle.purge()
            except Exception as cleanup_error:  # keep the original error; say what is left behind
                log.warning("Could not remove %s after a failure: %s", handle.uri, cleanup_error)
        if published:
            log.info("Removed %d value(s) published before the failure", len(published))
        raise


HANDLES_PER_ROW = 16
"""Handles per XCom row of a split output: what one mapped consumer pulls (~10 KB at most)."""

SPLIT_ROW_KEY = "taskflow_exclusive_split_"
"""XCom key prefix of those rows (``taskflow_exclusive_split_0``, ``..._1``, ...), on the producer."""

_COORDINATES = ("dag_id", "run_id", "task_id")


class SplitHandles(Sequence[ExclusiveHandle]):
    """The handles of a ``split=True`` output, by position, read from XCom one row at a time.

    What XCom's ``return_value`` carries is only where the handles are: the
    producer task instance (``dag_id``, ``run_id``, ``task_id``, ``map_index``),
    the count and the row size. The handles themselves are in XCom rows of the
    same task instance, ``HANDLES_PER_ROW`` to a row (keys ``SPLIT_ROW_KEY +
    row number``), written by the producer, read by :meth:`__getitem__` in the
    consumer: ``items[i]`` reads one row and rebuilds only handle ``i`` (the
    last row read is kept, so iterating reads each row once). The rows are
    XCom rows like ``return_value``: trusted as much, removed with it on a retry.

    In the producer it holds the handles it was given. Elsewhere (a consumer)
    reading needs a running task (the rows are read through the task SDK).
    """

    __version__: ClassVar[int] = 1

    def __init__(
        self,
        *,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: int,
        length: int,
        per_row: int = HANDLES_PER_ROW,
        handles: Sequence[ExclusiveHandle] | None = None,
    ) -> None:
        self.dag_id, self.run_id, self.task_id = dag_id, run_id, task_id
        self.map_index, self.length, self.per_row = map_index, length, per_row
        self._handles = list(handles) if handles is not None else None
        self._row: tuple[int, list[Any]] | None = None  # the last row read: (number, stored items)

    def rows(self) -> list[list[ExclusiveHandle]]:
        """The handles cut into rows, as the producer stores them (producer side only)."""
        handles = self._handles or []
        return [handles[start : start + self.per_row] for start in range(0, len(handles), self.per_row)]

    def __len__(self) -> int:
        return self.length

    @overload
    def __getitem__(self, index: int) -> ExclusiveHandle: ...

    @overload
    def __getitem__(self, index: slice) -> list[ExclusiveHandle]: ...

    def __getitem__(self, index: int | slice) -> ExclusiveHandle | list[ExclusiveHandle]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.length))]
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"SplitHandles indices must be integers or slices, not {type(index).__name__}")
        position = index + self.length if index < 0 else index
        if not 0 <= position < self.length:
            raise IndexError(f"item {index} of a split output of {self.length} item(s)")
        if self._handles is not None:
            return self._handles[position]
        return self._read(position)

    def _read(self, position: int) -> ExclusiveHandle:
        from taskflow_exclusive.airflow import _compat

        number, offset = divmod(position, self.per_row)
        where = f"XCom {SPLIT_ROW_KEY}{number} of {self.dag_id}/{self.run_id}/{self.task_id}/{self.map_index}"
        self._refuse_another_run(where)
        if self._row is None or self._row[0] != number:
            stored = _compat.stored_xcom_value(
                key=f"{SPLIT_ROW_KEY}{number}",
                dag_id=self.dag_id,
                run_id=self.run_id,
                task_id=self.task_id,
                map_index=self.map_index,
            )
            expected = min(self.per_row, self.length - number * self.per_row)
            if not isinstance(stored, list) or len(stored) != expected:
                shown = f"{len(stored)} item(s)" if isinstance(stored, list) else type(stored).__name__
                raise ValueError(
                    f"{where} should hold {expected} handle(s) of a split output but holds {shown}. "
                    "It was removed or changed after the producer ran: clear and re-run the producer task."
                )
            self._row = (number, stored)
        handle = _compat.serde_deserialize(self._row[1][offset])
        if not isinstance(handle, ExclusiveHandle):
            raise ValueError(
                f"{where}, item {offset}, is a {type(handle).__name__}, not an ExclusiveHandle: "
                "clear and re-run the producer task."
            )
        return handle

    def _refuse_another_run(self, where: str) -> None:
        """A split output is read only in its own DAG run: the reference names the rows to read,
        and XCom content must not lead a task to another run's values (see exclusive_mode)."""
        from taskflow_exclusive.identity import running_task

        task = running_task()
        if task is not None and (task.dag_id, task.run_id) != (self.dag_id, self.run_id):
            raise ValueError(
                f"{where} belongs to another DAG run than this task's ({task.dag_id}/{task.run_id}); "
                "a split output is read only by tasks of its own run. Hand a value to another run "
                "with grant() (see the README's hand-offs)."
            )

    def __repr__(self) -> str:
        return (
            f"SplitHandles({self.length} item(s) of {self.dag_id}/{self.run_id}/{self.task_id}/"
            f"{self.map_index})"
        )

    # -- Airflow XCom serde hooks (see taskflow_exclusive.airflow.serde) -----------------------------

    def serialize(self) -> dict[str, Any]:
        """What XCom stores: where the handles are, not the handles."""
        return {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "task_id": self.task_id,
            "map_index": self.map_index,
            "length": self.length,
            "per_row": self.per_row,
        }

    @classmethod
    def deserialize(cls, data: dict[str, Any], version: int) -> SplitHandles:
        """Rebuild from XCom, refusing anything that is not what :meth:`serialize` wrote."""
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= cls.__version__:
            raise ValueError(
                f"XCom holds SplitHandles of serde version {version!r}; this taskflow-exclusive "
                f"reads version {cls.__version__}: use the same taskflow-exclusive on every worker."
            )
        fields = data if isinstance(data, dict) else {}
        texts_ok = all(isinstance(fields.get(name), str) and fields[name] for name in _COORDINATES)
        numbers = [fields.get(name) for name in ("map_index", "length", "per_row")]
        numbers_ok = all(isinstance(n, int) and not isinstance(n, bool) for n in numbers)
        if not (texts_ok and numbers_ok and numbers[0] >= -1 and numbers[1] >= 0 and numbers[2] >= 1):
            raise ValueError(
                f"XCom holds malformed SplitHandles {data!r}: expected dag_id, run_id, task_id "
                "(non-empty strings), map_index >= -1, length >= 0, per_row >= 1. Clear and re-run "
                "the producer task."
            )
        return cls(
            dag_id=fields["dag_id"],
            run_id=fields["run_id"],
            task_id=fields["task_id"],
            map_index=fields["map_index"],
            length=fields["length"],
            per_row=fields["per_row"],
        )
