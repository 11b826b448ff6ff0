"""How a function's result becomes handles: one value, one per item, or one per key.

- default: the whole result is one value, one :class:`ExclusiveHandle`;
- ``split=True``: the result is an iterable; each item is stored on its own
  as it comes (a generator is never held in memory whole) and the result is
  a ``list`` of handles, one per item, in order (so ``consume.expand(x=...)``
  gives each mapped task instance its own handle);
- ``per_key=True`` (Airflow's ``multiple_outputs``): the result is a dict with
  string keys; each value is stored on its own and the result is a ``dict``
  of handles with the same keys.

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
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from taskflow_exclusive.errors import InvalidArgumentError
from taskflow_exclusive.handle import ExclusiveHandle
from taskflow_exclusive.publishing import ExclusiveOutput

__all__ = ["check_shape", "publish_result"]

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
