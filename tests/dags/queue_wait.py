"""A deferrable wait for three items (in the triggerer), then a drain of them."""

import pendulum
from airflow.sdk import dag

from taskflow_exclusive.airflow.queues import WaitForQueueItems, queue_drain
from tests.airflow_harness import record


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def queue_wait():
    wait = WaitForQueueItems(task_id="wait", queue_name="waiting", min_items=3, poll_interval=0.2)

    @queue_drain(queue="waiting")
    def take(value: str) -> None:
        record(task="take", value=value)

    wait >> take()


the_dag = queue_wait()
