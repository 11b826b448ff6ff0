"""Storage chosen by the Airflow Variable ``taskflow_exclusive_storage_url`` (no storage= argument).

The test sets the Variable (environment variable or metadata database) and
checks where the value went; with a wrong URL the producer fails with
StorageConfigError in its log.
"""

import pendulum
from airflow.sdk import dag, task

from taskflow_exclusive import ExclusiveHandle, exclusive_task
from tests.airflow_harness import record


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def exclusive_storage_variable():
    @exclusive_task
    def produce() -> list:
        return ["stored", "where", "the", "variable", "says"]

    @task
    def consume(handle: ExclusiveHandle) -> None:
        record(task="consume", uri=handle.uri, value=handle.claim())

    consume(produce())


the_dag = exclusive_storage_variable()
