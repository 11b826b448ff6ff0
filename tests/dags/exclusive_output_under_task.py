"""@exclusive_output under @task / @task.python gives what @exclusive_task gives.

Each shape is produced both ways (one handle; one per key, inferred from
``-> dict`` or explicit; one per item with split) and a checker records
what XCom delivered for each.
"""

import pendulum
from airflow.sdk import dag, task

from taskflow_exclusive import Claimed, ExclusiveHandle, exclusive_output, exclusive_task
from tests.airflow_harness import record


def _shape(value):
    if isinstance(value, dict):
        return {key: type(item).__name__ for key, item in value.items()}
    if isinstance(value, list):
        return [type(item).__name__ for item in value]
    return type(value).__name__


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def exclusive_output_under_task():
    # -- one handle
    @task
    @exclusive_output
    def single_wrapped() -> list:
        return [1, 2]

    @exclusive_task
    def single_native() -> list:
        return [1, 2]

    # -- one handle per key (inferred from -> dict, and explicit)
    @task
    @exclusive_output
    def keys_wrapped() -> dict:
        return {"a": 1, "b": [2]}

    @exclusive_task
    def keys_native() -> dict:
        return {"a": 1, "b": [2]}

    @task(multiple_outputs=True)
    @exclusive_output
    def keys_explicit_wrapped():
        return {"a": 1, "b": [2]}

    # -- one handle per item
    @task
    @exclusive_output(split=True)
    def items_wrapped():
        yield from ("x", "y", "z")

    @exclusive_task(split=True)
    def items_native():
        yield from ("x", "y", "z")

    # -- @task.python, and a Claimed input under @task
    @task.python
    @exclusive_output
    def python_alias() -> list:
        return ["via", "task.python"]

    @task
    @exclusive_output
    def claimed_wrapped(words: Claimed[list]) -> str:
        return " ".join(words)

    @task
    def check(name: str, value) -> None:
        claimed = _claim_all(value)
        record(task="check", name=name, shape=_shape(value), value=claimed)

    @task
    def item(handle: ExclusiveHandle) -> None:
        record(task="item", value=handle.claim())

    def _claim_all(value):
        if isinstance(value, dict):
            return {key: handle.claim() for key, handle in value.items()}
        if isinstance(value, list):
            return [handle.claim() for handle in value]
        return value.claim()

    check.override(task_id="check_single_wrapped")("single", single_wrapped())
    check.override(task_id="check_single_native")("single", single_native())
    check.override(task_id="check_keys_wrapped")("keys", keys_wrapped())
    check.override(task_id="check_keys_native")("keys", keys_native())
    check.override(task_id="check_keys_explicit_wrapped")("keys", keys_explicit_wrapped())
    check.override(task_id="check_items_wrapped")("items", items_wrapped())
    check.override(task_id="check_items_native")("items", items_native())
    check.override(task_id="check_python_alias")("python", python_alias())
    check.override(task_id="check_claimed_wrapped")("claimed", claimed_wrapped(single_wrapped_for_claim()))
    item.expand(handle=items_wrapped.override(task_id="items_for_mapping")())


@task
@exclusive_output
def single_wrapped_for_claim() -> list:
    return ["claimed", "under", "task"]


the_dag = exclusive_output_under_task()
