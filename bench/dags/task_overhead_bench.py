"""N producer/consumer pairs, plain ``@task`` against ``@exclusive_task`` with a ``Claimed`` input.

The number of pairs is ``TFX_BENCH_PAIRS`` (read when the file is parsed).
Both consumers return nothing; the values are small dicts (one handle each: no
``-> dict`` annotation, which would make Airflow push one XCom per key).
"""

import os

import pendulum
from airflow.sdk import dag, task

from taskflow_exclusive import Claimed, exclusive_task

PAIRS = int(os.environ.get("TFX_BENCH_PAIRS", "20"))
START = pendulum.datetime(2026, 1, 1, tz="UTC")


def _value(number):
    return {"n": number, "name": f"item-{number}", "rows": [1, 2, 3]}


@dag(schedule=None, start_date=START, catchup=False)
def overhead_plain():
    for number in range(PAIRS):

        @task(task_id=f"produce_{number}")
        def produce(n=number):
            return _value(n)

        @task(task_id=f"consume_{number}")
        def consume(value: dict) -> None:
            assert value["rows"] == [1, 2, 3]

        consume(produce())


@dag(schedule=None, start_date=START, catchup=False)
def overhead_exclusive():
    for number in range(PAIRS):

        @exclusive_task(task_id=f"produce_{number}")
        def produce(n=number):
            return _value(n)

        @exclusive_task(task_id=f"consume_{number}")
        def consume(value: Claimed[dict]) -> None:
            assert value["rows"] == [1, 2, 3]

        consume(produce())


plain_dag = overhead_plain()
exclusive_dag = overhead_exclusive()
