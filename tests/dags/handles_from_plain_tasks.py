"""Handles between plain @task functions, with nothing of taskflow_exclusive imported at parse time.

The producer calls ``publish()`` inside its body and returns the handle
object; the consumer receives it rebuilt by Airflow's XCom serde, allowed
by the Airflow plugin that every task process loads. (dag.test() also parses
the other DAG files of the folder; tests/test_taskflow_serde.py shows the
plugin alone suffices in a process that imported nothing else.)
"""

import sys

import pendulum
from airflow.sdk import dag, task

from tests.airflow_harness import record


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def handles_from_plain_tasks():
    @task
    def produce():
        from taskflow_exclusive import publish

        return publish({"rows": [1, 2, 3]})

    @task
    def consume(handle) -> None:
        record(
            task="consume",
            type=f"{type(handle).__module__}.{type(handle).__qualname__}",
            value=handle.claim(),
            plugin_loaded="taskflow_exclusive.airflow.plugin" in sys.modules,
        )

    consume(produce())


the_dag = handles_from_plain_tasks()
