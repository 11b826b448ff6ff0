"""@exclusive_task end to end: XCom carries handles; consumers get handle objects or claimed values.

- ``extract`` (@exclusive_task) returns a list: stored, XCom holds one handle;
- ``inspect_handle`` (plain @task) receives an ExclusiveHandle object and claims it;
- ``extract_more`` feeds ``transform`` (@exclusive_task, ``Claimed[list]``): the
  input is claimed for it, its own result is published again;
- ``load`` (@exclusive_task sink, ``Claimed[list]``) returns None: nothing published.
"""

import pendulum
from airflow.sdk import dag, task

from taskflow_exclusive import Claimed, ExclusiveHandle, exclusive_task
from tests.airflow_harness import record


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def exclusive_happy_path():
    @exclusive_task
    def extract() -> list:
        return [{"id": 1, "total": 9.5}, {"id": 2, "total": 20.0}]

    @task
    def inspect_handle(handle: ExclusiveHandle) -> str:
        value = handle.claim()
        record(
            task="inspect_handle",
            type=type(handle).__qualname__,
            module=type(handle).__module__,
            value=value,
            uri=handle.uri,
            producer=handle.producer,
            holders=[h.consumer_id for h in handle.holders()],
        )
        return handle.uri

    @exclusive_task(serializer="pickle", compression="gzip")
    def extract_more() -> list:
        return [3, 4, 5]

    @exclusive_task
    def transform(numbers: Claimed[list], factor: int) -> list:
        record(task="transform", received=numbers)
        return [n * factor for n in numbers]

    @exclusive_task
    def load(numbers: Claimed[list]) -> None:
        record(task="load", received=numbers)

    @task
    def after_load(pushed) -> None:
        record(task="after_load", pushed=pushed)

    inspect_handle(extract())
    after_load(load(transform(extract_more(), factor=10)))


the_dag = exclusive_happy_path()
