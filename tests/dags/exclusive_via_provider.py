"""@task.exclusive, resolved by Airflow through the provider entry point.

Nothing from taskflow_exclusive is imported here: Airflow finds the
decorator through ``get_provider_info()``, and the plain consumer still
receives ExclusiveHandle objects.
"""

import pendulum
from airflow.sdk import dag, get_current_context, task

from tests.airflow_harness import record


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def exclusive_via_provider():
    @task.exclusive
    def bare() -> list:
        return ["bare"]

    @task.exclusive(split=True, compression="gzip", task_id="with_arguments")
    def split_words():
        return ["a", "b"]

    @task
    def consume(handle) -> None:
        record(
            task="consume",
            type=f"{type(handle).__module__}.{type(handle).__qualname__}",
            value=handle.claim(),
            compression=handle.compression,
        )

    @task
    def operator_of(upstream_task_id: str) -> None:
        task = get_current_context()["dag"].get_task(upstream_task_id)
        record(
            task="operator_of",
            upstream=upstream_task_id,
            operator=f"{type(task).__module__}.{type(task).__qualname__}",
            custom_operator_name=getattr(task, "custom_operator_name", None),
        )

    consume.override(task_id="consume_bare")(bare())
    consume.expand(handle=split_words())
    operator_of("bare")


the_dag = exclusive_via_provider()
