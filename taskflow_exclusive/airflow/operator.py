"""The operator behind ``@exclusive_task`` / ``@task.exclusive``.

A TaskFlow ``@task`` (``DecoratedOperator`` + ``PythonOperator``) with two
steps around the function call, both in :meth:`execute_callable`, after
Airflow resolved the arguments and before it pushes the XCom:

1. arguments of ``Claimed[...]`` parameters are claimed for this task
   instance and replaced by their values (:mod:`taskflow_exclusive.airflow.inputs`);
2. the return value is published (:mod:`taskflow_exclusive.airflow.results`): XCom
   gets one handle, a list of handles (``split=True``) or a dict of handles
   (``multiple_outputs``), never the value; with ``outlets=[Asset(...)]`` the
   stored values are described on those assets' events
   (:mod:`taskflow_exclusive.airflow.lineage`). When a downstream task maps over
   a split output (``.expand``), its handles go into XCom rows of their own and
   ``return_value`` carries only a
   :class:`~taskflow_exclusive.airflow.results.SplitHandles` (where they are), so
   each mapped consumer reads its own handle, not the whole list.

Importing this module allows :class:`ExclusiveHandle` in Airflow's XCom
serde (see :mod:`taskflow_exclusive.airflow.serde`), so every process that parses a
DAG using the decorator can rebuild handles.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, ClassVar

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk.bases.decorator import DecoratedOperator, task_decorator_factory

from taskflow_exclusive.airflow._compat import has_mapped_dependants
from taskflow_exclusive.airflow.inputs import claim_arguments, claimed_parameters
from taskflow_exclusive.airflow.lineage import describe_on_outlets
from taskflow_exclusive.airflow.results import SPLIT_ROW_KEY, SplitHandles, check_shape, publish_result
from taskflow_exclusive.airflow.serde import allow_handle_deserialization
from taskflow_exclusive.publishing import ExclusiveOutput

__all__ = ["ExclusiveDecoratedOperator", "exclusive_task_decorator"]

allow_handle_deserialization()


class ExclusiveDecoratedOperator(DecoratedOperator, PythonOperator):
    """Runs a TaskFlow function and publishes its result as claim-once handles.

    Takes every ``@task`` argument plus ``exclusive_output`` (an
    :class:`~taskflow_exclusive.ExclusiveOutput`: where and how values are
    stored) and ``split``.
    """

    template_fields: Sequence[str] = ("templates_dict", "op_args", "op_kwargs")
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "templates_dict": "json",
        "op_args": "py",
        "op_kwargs": "py",
    }
    custom_operator_name: str = "@task.exclusive"

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        exclusive_output: ExclusiveOutput | None = None,
        split: bool = False,
        **kwargs: Any,
    ) -> None:
        if inspect.iscoroutinefunction(inspect.unwrap(python_callable)):
            raise TypeError(
                f"@task.exclusive cannot decorate the async function {python_callable.__name__!r}: "
                "Airflow runs async callables on a path that would push the raw value to XCom. "
                "Make it a regular function."
            )
        kwargs_to_upstream = {"python_callable": python_callable, "op_args": op_args, "op_kwargs": op_kwargs}
        super().__init__(
            kwargs_to_upstream=kwargs_to_upstream,
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            **kwargs,
        )
        check_shape(split, self.multiple_outputs, where=f"Task {self.task_id!r}: ")
        self.exclusive_output = exclusive_output if exclusive_output is not None else ExclusiveOutput()
        self.split = split
        self.claimed_parameters = claimed_parameters(python_callable)

    def execute_callable(self) -> Any:
        self.op_args, self.op_kwargs = claim_arguments(
            self.python_callable, self.op_args, self.op_kwargs, claimed=self.claimed_parameters
        )
        if self.split and inspect.isgeneratorfunction(self.python_callable):
            # Airflow's runner would drain a generator as asset metadata; with split its items are values.
            result = self.python_callable(*self.op_args, **self.op_kwargs)
        else:
            result = super().execute_callable()
        published = publish_result(
            self.exclusive_output,
            result,
            split=self.split,
            per_key=bool(self.multiple_outputs),
            label=self.task_id,
        )
        describe_on_outlets(self.outlets, published)  # opt-in lineage: only with outlets=[Asset(...)]
        if self.split and isinstance(published, list) and self.do_xcom_push and has_mapped_dependants(self):
            return _handed_out_by_rows(published)  # mapped consumers each read their own handle
        return published


def _handed_out_by_rows(handles: list[Any]) -> SplitHandles:
    """Push the handles in rows of the running task instance; return what ``return_value`` carries."""
    from airflow.sdk import get_current_context

    from taskflow_exclusive.airflow._compat import store_xcom_value

    ti = get_current_context()["ti"]
    map_index = -1 if ti.map_index is None else int(ti.map_index)
    where = {"dag_id": str(ti.dag_id), "run_id": str(ti.run_id), "task_id": str(ti.task_id)}
    items = SplitHandles(**where, map_index=map_index, length=len(handles), handles=handles)
    for number, row in enumerate(items.rows()):
        store_xcom_value(key=f"{SPLIT_ROW_KEY}{number}", value=row, map_index=map_index, **where)
    return items


def exclusive_task_decorator(
    python_callable: Callable[..., Any] | None,
    *,
    multiple_outputs: bool | None,
    **kwargs: Any,
) -> Any:
    """``task_decorator_factory`` with :class:`ExclusiveDecoratedOperator`."""
    return task_decorator_factory(
        python_callable=python_callable,
        multiple_outputs=multiple_outputs,
        decorated_operator_class=ExclusiveDecoratedOperator,
        **kwargs,
    )
