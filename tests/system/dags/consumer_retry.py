"""A consumer that fails after claiming gets the same value again on its retry.

Each consumer records what it claimed and which worker ran it, then fails on
try 1; try 2 claims again. Three mapped ``Claimed`` consumers (one per item of a
split output) and one plain ``@task`` calling ``handle.claim()``.
"""

from uuid import uuid4

from airflow.sdk import dag, get_current_context, task
from tfx_system_records import dag_arguments, record

from taskflow_exclusive import Claimed, ExclusiveHandle, exclusive_task


def _fail_on_first_try() -> None:
    if get_current_context()["ti"].try_number == 1:
        raise RuntimeError("failing try 1 after claiming, on purpose")


@dag(**dag_arguments(retries=2))
def sys_consumer_retry():
    @exclusive_task(split=True)
    def produce_items():
        items = [{"item": i, "nonce": uuid4().hex} for i in range(3)]
        record(value=items)
        return items

    @exclusive_task
    def flaky_claimed(item: Claimed[dict]) -> None:
        record(value=item)
        _fail_on_first_try()

    @exclusive_task
    def produce_one() -> list:
        value = ["one", uuid4().hex]
        record(value=value)
        return value

    @task
    def flaky_plain(handle: ExclusiveHandle) -> None:
        record(value=handle.claim(), digest=handle.digest)
        _fail_on_first_try()

    flaky_claimed.expand(item=produce_items())
    flaky_plain(produce_one())


sys_consumer_retry()
