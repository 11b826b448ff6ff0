"""Decorators: thin shells over :class:`~taskflow_exclusive.publishing.ExclusiveOutput`.

``@exclusive_output`` makes a function return an :class:`ExclusiveHandle`
instead of its value: the value goes to storage, the caller gets a
claim-once handle. It works bare or with arguments.

Example::

    >>> from taskflow_exclusive import exclusive_output
    >>> @exclusive_output(storage="memory://docs", max_claims=1)
    ... def extract():
    ...     return {"rows": [1, 2, 3]}
    >>> handle = extract()
    >>> handle.claim(consumer_id="transform")
    {'rows': [1, 2, 3]}
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, overload

from taskflow_exclusive.handle import ExclusiveHandle
from taskflow_exclusive.publishing import ExclusiveOutput
from taskflow_exclusive.serializers import Serializer

__all__ = ["exclusive_output"]

F = TypeVar("F", bound=Callable[..., Any])


@overload
def exclusive_output(func: Callable[..., Any], /) -> Callable[..., ExclusiveHandle]: ...


@overload
def exclusive_output(
    func: None = None,
    /,
    *,
    storage: str | None = None,
    serializer: str | Serializer | None = None,
    compression: str | None = None,
    max_claims: int = 1,
    claims: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., ExclusiveHandle]]: ...


def exclusive_output(
    func: Callable[..., Any] | None = None,
    /,
    *,
    storage: str | None = None,
    serializer: str | Serializer | None = None,
    compression: str | None = None,
    max_claims: int = 1,
    claims: str | None = None,
) -> Any:
    """Publish the function's return value and return its :class:`ExclusiveHandle`.

    Arguments are those of :class:`~taskflow_exclusive.ExclusiveOutput`;
    invalid ones (an unknown serializer, ``max_claims=0``) fail when the
    function is decorated, not when it runs.
    """
    output = ExclusiveOutput(
        storage=storage,
        serializer=serializer,
        compression=compression,
        max_claims=max_claims,
        claims=claims,
    )

    def decorate(function: Callable[..., Any]) -> Callable[..., ExclusiveHandle]:
        name = getattr(function, "__qualname__", None) or getattr(function, "__name__", "values")
        label = name.replace("<locals>.", "")

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> ExclusiveHandle:
            return output.publish(function(*args, **kwargs), label=label)

        wrapper.exclusive_output = output  # type: ignore[attr-defined]
        return wrapper

    return decorate(func) if func is not None else decorate
