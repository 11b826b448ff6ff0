"""Decorators: thin shells over :class:`~taskflow_exclusive.publishing.ExclusiveOutput`.

``@exclusive_task`` is an Airflow TaskFlow decorator (also ``@task.exclusive``
through the provider): the task's return value goes to storage and XCom
carries claim-once handles. ``@exclusive_output`` does the same for a plain
function (in a script, a notebook, or under ``@task``). Both work bare or
with arguments, claim ``Claimed[...]`` parameters for the caller, and shape
the result the same way (one handle; one per item with ``split=True``; one
per key with ``multiple_outputs``).

Example, in a DAG::

    from airflow.sdk import dag, task
    from taskflow_exclusive import Claimed, ExclusiveHandle, exclusive_task

    @exclusive_task(max_claims=1)
    def extract() -> list:
        return load_orders()

    @exclusive_task
    def transform(orders: Claimed[list]) -> list:     # claimed for this task
        return [o for o in orders if o["total"] > 10]

    @task
    def load(rows: ExclusiveHandle) -> None:
        write(rows.claim())                          # or claim it yourself

    load(transform(extract()))

Example, outside Airflow::

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
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, overload

from taskflow_exclusive.airflow.inputs import claim_arguments, claimed_parameters
from taskflow_exclusive.airflow.results import check_shape, publish_result
from taskflow_exclusive.publishing import ExclusiveOutput

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from taskflow_exclusive.publishing import OutputOptions

__all__ = ["exclusive_output", "exclusive_task"]


def exclusive_task(
    python_callable: Callable[..., Any] | None = None,
    *,
    split: bool = False,
    multiple_outputs: bool | None = None,
    **arguments: Any,
) -> Any:
    """An Airflow ``@task`` whose return value is stored and handed out once.

    - ``storage``, ``serializer``, ``compression``, ``max_claims``, ``claims``:
      as for :class:`~taskflow_exclusive.ExclusiveOutput` (storage defaults to the
      Airflow Variable ``taskflow_exclusive_storage_url``);
    - ``split=True``: the function returns an iterable (a generator is streamed);
      each item is stored on its own and XCom holds a list of handles, so
      ``consume.expand(item=produce())`` gives each mapped task its own handle
      (when a task maps over it, XCom holds a
      :class:`~taskflow_exclusive.airflow.results.SplitHandles` instead: a
      read-only sequence from which each mapped task reads only its own handle);
    - ``multiple_outputs=True`` (or a ``-> dict`` return annotation): one handle per key;
    - every other keyword is a ``@task`` argument (``task_id``, ``retries``, ``pool``, ...).

    Parameters annotated ``Claimed[T]`` receive the claimed value of their
    handle(s). A function returning ``None`` publishes nothing. Invalid
    arguments (an unknown serializer, ``max_claims=0``, ``split`` together
    with ``multiple_outputs``) fail here, when the DAG file is parsed.
    """
    output, task_arguments = ExclusiveOutput.taking_options(arguments)
    check_shape(split, multiple_outputs)
    if split:
        multiple_outputs = False  # a list of items, even if the annotation says dict
    from taskflow_exclusive.airflow.operator import exclusive_task_decorator

    return exclusive_task_decorator(
        python_callable,
        multiple_outputs=multiple_outputs,
        exclusive_output=output,
        split=split,
        **task_arguments,
    )


@overload
def exclusive_output(func: Callable[..., Any], /) -> Callable[..., Any]: ...


@overload
def exclusive_output(
    func: None = None,
    /,
    *,
    split: bool = False,
    multiple_outputs: bool | None = None,
    **options: Unpack[OutputOptions],
) -> Callable[[Callable[..., Any]], Callable[..., Any]]: ...


def exclusive_output(
    func: Callable[..., Any] | None = None,
    /,
    *,
    split: bool = False,
    multiple_outputs: bool | None = None,
    **options: Unpack[OutputOptions],
) -> Any:
    """Publish the function's return value and return its :class:`ExclusiveHandle`.

    Options are those of :class:`~taskflow_exclusive.ExclusiveOutput`
    (``storage``, ``serializer``, ``compression``, ``max_claims``, ``claims``),
    plus ``split`` (a list of handles, one per item) and ``multiple_outputs``
    (a dict of handles, one per key). ``Claimed[T]`` parameters receive the
    claimed value of their handle(s).

    Under ``@task`` (``@task`` outermost) it gives what ``@exclusive_task``
    gives: when ``multiple_outputs`` is not passed here, it follows the task's
    own (``@task(multiple_outputs=True)`` or a ``-> dict`` annotation). Invalid
    arguments fail when the function is decorated, not when it runs.
    """
    output = ExclusiveOutput(**options)
    check_shape(split, multiple_outputs)
    if "airflow.sdk" in sys.modules:  # a DAG file: let this process rebuild handles from XCom
        from taskflow_exclusive.airflow.serde import allow_handle_deserialization

        allow_handle_deserialization()

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        name = getattr(function, "__qualname__", None) or getattr(function, "__name__", "values")
        label = name.replace("<locals>.", "")
        claimed = claimed_parameters(function)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            args, kwargs = claim_arguments(function, args, kwargs, claimed=claimed)
            per_key = multiple_outputs
            if per_key is None:
                per_key = not split and _running_task_unrolls(wrapper)
            return publish_result(
                output, function(*args, **kwargs), split=split, per_key=per_key, label=label
            )

        wrapper.exclusive_output = output  # type: ignore[attr-defined]
        return wrapper

    return decorate(func) if func is not None else decorate


def _running_task_unrolls(wrapper: Callable[..., Any]) -> bool:
    """Whether ``wrapper`` runs as the callable of an Airflow task with ``multiple_outputs``."""
    if "airflow.sdk" not in sys.modules:
        return False
    from airflow.sdk import get_current_context

    try:
        task = get_current_context()["ti"].task
    except (RuntimeError, KeyError, AttributeError):  # no task is running here
        return False
    if not getattr(task, "multiple_outputs", False):
        return False
    callable_ = getattr(task, "python_callable", None)
    while callable_ is not None:  # the task's callable is this wrapper, or wraps it
        if callable_ is wrapper:
            return True
        callable_ = getattr(callable_, "__wrapped__", None)
    return False
