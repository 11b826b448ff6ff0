"""Claimed inputs: parameters annotated ``Claimed[T]`` receive the value, not the handle.

A function decorated with ``@exclusive_task`` (or ``@exclusive_output``)
asks for an input to be claimed for it by annotating the parameter::

    @exclusive_task
    def transform(orders: Claimed[list[dict]]) -> list[dict]:
        return [o for o in orders if o["total"] > 10]    # orders is the value

Before the function runs, every ``Claimed`` argument is claimed for the
running consumer (inside Airflow: ``dag_id/run_id/task_id/map_index``) and
replaced by its value. An argument may be one :class:`ExclusiveHandle` (or a :class:`Grant` handed to
this DAG run, see :mod:`taskflow_exclusive.airflow.grants`), or a
list / tuple / other sequence (a split output, or the handles of a mapped
producer) or a dict of them: each handle inside is claimed and the same
shape of values is passed. Anything else given to a ``Claimed`` parameter is
a ``TypeError``: a plain value never silently stands in for a claim.
Parameters without the annotation receive what they were given (handles
stay handles, to be claimed later or passed on).

``Claimed[T]`` is ``typing.Annotated[T, CLAIM]``, so type checkers see ``T``.

Example (outside Airflow; the consumer is ``local:<user>@<host>``)::

    >>> from taskflow_exclusive import publish
    >>> def count(rows: Claimed[list]) -> int:
    ...     return len(rows)
    >>> args, kwargs = claim_arguments(count, (publish([1, 2], storage="memory://docs"),), {})
    >>> count(*args, **kwargs)
    2
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, TypeVar

from taskflow_exclusive.grants import Grant
from taskflow_exclusive.handle import ExclusiveHandle

__all__ = ["CLAIM", "Claimed", "claim_arguments", "claimed_parameters"]


class _ClaimMarker:
    """The metadata inside ``Claimed[T]`` that marks a parameter to be claimed."""

    def __repr__(self) -> str:
        return "CLAIM"


CLAIM = _ClaimMarker()

# What a Claimed parameter claims: a handle, or a grant handed to this DAG run (taskflow_exclusive.grants).
_CLAIMABLE = (ExclusiveHandle, Grant)

T = TypeVar("T")

Claimed = Annotated[T, CLAIM]
"""``Claimed[T]``: this parameter receives the claimed value (of type ``T``) of its handle(s)."""


def _is_claimed(annotation: Any) -> bool:
    return any(meta is CLAIM for meta in getattr(annotation, "__metadata__", ()))


def claimed_parameters(function: Callable[..., Any]) -> frozenset[str]:
    """Names of ``function``'s parameters annotated ``Claimed[...]``.

    Raises ``TypeError`` when an annotation that mentions ``Claimed`` cannot
    be evaluated (a forward reference to a name the module does not define),
    rather than silently not claiming.
    """
    function = inspect.unwrap(function)
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception:  # a forward reference elsewhere in the signature; check the Claimed ones alone
        hints = _hints_one_by_one(function)
    return frozenset(name for name, hint in hints.items() if name != "return" and _is_claimed(hint))


def _hints_one_by_one(function: Callable[..., Any]) -> dict[str, Any]:
    namespace = dict(getattr(function, "__globals__", {}))
    hints = {}
    for name, annotation in getattr(function, "__annotations__", {}).items():
        if not isinstance(annotation, str):
            hints[name] = annotation
            continue
        try:
            hints[name] = eval(annotation, namespace)  # the same evaluation get_type_hints does
        except Exception as exc:
            if "Claimed" in annotation:
                raise TypeError(
                    f"Cannot evaluate the annotation {annotation!r} of parameter {name!r} of "
                    f"{getattr(function, '__qualname__', function)!r} ({exc}), so taskflow-exclusive "
                    "cannot tell whether to claim it. Import every name the annotation uses at "
                    "module level."
                ) from exc
    return hints


def claim_arguments(
    function: Callable[..., Any],
    args: Iterable[Any],
    kwargs: Mapping[str, Any],
    *,
    claimed: frozenset[str] | None = None,
    consumer_id: str | None = None,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Return ``(args, kwargs)`` with every ``Claimed`` argument replaced by its claimed value."""
    names = claimed_parameters(function) if claimed is None else claimed
    args, kwargs = tuple(args), dict(kwargs)
    if not names:
        return args, kwargs
    bound = inspect.signature(function).bind_partial(*args, **kwargs)
    for name in names:
        if name in bound.arguments:
            bound.arguments[name] = _claim(bound.arguments[name], name, consumer_id)
    return tuple(bound.args), dict(bound.kwargs)


def _claim(value: Any, name: str, consumer_id: str | None) -> Any:
    if isinstance(value, _CLAIMABLE):
        return value.claim(consumer_id)
    if isinstance(value, Mapping):
        _require_handles(value.values(), name, value)
        return {key: handle.claim(consumer_id) for key, handle in value.items()}
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes, bytearray)):
        handles = list(value)  # also a LazyXComSequence from a mapped producer
        _require_handles(handles, name, value)
        return [handle.claim(consumer_id) for handle in handles]
    raise _not_a_handle(name, value)


def _require_handles(items: Iterable[Any], name: str, container: Any) -> None:
    for item in items:
        if not isinstance(item, _CLAIMABLE):
            raise _not_a_handle(name, container, item)


def _not_a_handle(name: str, value: Any, item: Any = None) -> TypeError:
    what = type(value).__name__ if item is None else f"{type(value).__name__} holding a {type(item).__name__}"
    return TypeError(
        f"Parameter {name!r} is annotated Claimed[...], so it must receive an ExclusiveHandle (or a "
        f"list or dict of them) from an exclusive producer, but it received a {what}. Pass the "
        "producer's output (an @exclusive_task result), or remove Claimed from the annotation."
    )
