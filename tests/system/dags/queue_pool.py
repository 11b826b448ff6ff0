"""A producer fills a work queue; four mapped drain tasks empty it, each item completed once.

The queue's Redis is the Airflow Variable ``taskflow_exclusive_queue_url`` (the
system deployment sets a spec with a key prefix of its session). Values of
three sizes: inline in the item, and stored on the deployment's S3. Each drain
task sleeps a second per item (24 s of work for 4 tasks), so that on the CeleryExecutor
both workers drain.
Item 3 fails on its first delivery: the task instance that held it fails, and
its retry (possibly on the other worker) takes its lease up again.
"""

import time

from airflow.sdk import dag, get_current_context
from tfx_system_records import dag_arguments, record

from taskflow_exclusive.airflow.queues import queue_drain, queue_producer

ITEMS = 24


@dag(**dag_arguments())
def sys_queue_pool():
    @queue_producer(queue="sys_pool")
    def orders():
        yield from ({"order": n, "blob": "x" * (n * 6_000)} for n in range(ITEMS))

    @queue_drain(queue="sys_pool", lease_seconds=120, retries=1, retry_delay=0)
    def ship(order: dict, worker: int) -> None:
        ti = get_current_context()["ti"]
        if order["order"] == 3 and ti.try_number == 1:
            record(order=3, failed_on_try=1)
            raise RuntimeError("fails once on item 3")
        time.sleep(1.0)
        record(order=order["order"], intact=order["blob"] == "x" * (order["order"] * 6_000))

    orders() >> ship.expand(worker=list(range(4)))


sys_queue_pool()
