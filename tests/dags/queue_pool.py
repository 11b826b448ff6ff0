"""A producer fills a queue; a pool of four mapped drain tasks empties it, each item to one of them.

The queue server is the Airflow Variable ``taskflow_exclusive_queue_url`` (the
test sets a fresh prefix). The drain function fails once, on item 3 on its
first try: the task instance's retry takes up the lease it still holds.
"""

import pendulum
from airflow.sdk import dag, get_current_context

from taskflow_exclusive.airflow.queues import queue_drain, queue_producer
from tests.airflow_harness import record


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 1, "retry_delay": 0},
)
def queue_pool():
    @queue_producer(queue="pool")
    def orders():
        yield from ({"order": n, "blob": "x" * (n * 10_000)} for n in range(20))

    @queue_drain(queue="pool", lease_seconds=60)
    def ship(order: dict, worker: int) -> None:
        ti = get_current_context()["ti"]
        if order["order"] == 3 and ti.try_number == 1:
            record(task="ship", order=3, failed_on_try=1, map_index=ti.map_index)
            raise RuntimeError("fails once on item 3")
        record(
            task="ship",
            order=order["order"],
            size=len(order["blob"]),
            worker=worker,
            map_index=ti.map_index,
            try_number=ti.try_number,
        )

    orders() >> ship.expand(worker=list(range(4)))


the_dag = queue_pool()
