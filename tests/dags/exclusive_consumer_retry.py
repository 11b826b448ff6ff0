"""A consumer claims, fails on try 1, and gets the same value again on try 2.

The consumer id (dag_id/run_id/task_id/map_index) is the same on every try,
so the retry's claim succeeds; a plain @task and an @exclusive_task with a
Claimed input both show it.
"""

import pendulum
from airflow.sdk import dag, get_current_context, task

from taskflow_exclusive import Claimed, ExclusiveHandle, exclusive_task
from tests.airflow_harness import record


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 1, "retry_delay": 0},
)
def exclusive_consumer_retry():
    @exclusive_task
    def produce() -> dict:
        return {"first": [1, 2, 3], "second": {"n": 4}}

    @task
    def claim_then_fail_once(handle: ExclusiveHandle) -> None:
        try_number = get_current_context()["ti"].try_number
        record(task="plain", try_number=try_number, value=handle.claim())
        if try_number == 1:
            raise RuntimeError("failing try 1 after claiming, on purpose")

    @exclusive_task
    def claimed_then_fail_once(value: Claimed[dict]) -> None:
        try_number = get_current_context()["ti"].try_number
        record(task="claimed", try_number=try_number, value=value)
        if try_number == 1:
            raise RuntimeError("failing try 1 after claiming, on purpose")

    values = produce()
    claim_then_fail_once(values["first"])
    claimed_then_fail_once(values["second"])


the_dag = exclusive_consumer_retry()
