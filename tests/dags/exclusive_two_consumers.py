"""Two consumers on one handle: the first claims it; the others are refused at once.

``second`` (plain @task calling ``claim()``) and ``third`` (@exclusive_task with a
``Claimed`` input) both have retries left, yet fail on their first try with
AlreadyClaimedError naming ``first`` as the holder: a refused claim is never retried.
"""

import pendulum
from airflow.sdk import dag, task

from taskflow_exclusive import AlreadyClaimedError, Claimed, ExclusiveHandle, exclusive_task
from tests.airflow_harness import record


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 2, "retry_delay": 0},
)
def exclusive_two_consumers():
    @exclusive_task
    def produce() -> list:
        return ["only", "once"]

    @task
    def first(handle: ExclusiveHandle) -> None:
        record(task="first", value=handle.claim())

    @task
    def second(handle: ExclusiveHandle) -> None:
        from airflow.sdk import get_current_context

        try_number = get_current_context()["ti"].try_number
        try:
            handle.claim()
        except AlreadyClaimedError as refused:
            record(
                task="second", try_number=try_number, holder=refused.holder, error=type(refused).__module__
            )
            raise
        record(task="second", try_number=try_number, value="claimed (wrong)")

    @exclusive_task
    def third(words: Claimed[list]) -> None:
        record(task="third", value="claimed (wrong)")

    handle = produce()
    first_claim = first(handle)
    first_claim >> [second(handle), third(handle)]


the_dag = exclusive_two_consumers()
