"""The orders pipeline as an Airflow DAG: every hand-over is a claim-once value.

``extract`` stores today's orders; ``split_by_region`` claims them and stores
one batch per region (``split=True``); ``summarize`` runs once per batch
(``.expand``), each mapped task claiming its own batch; ``report`` claims
every summary. ``audit`` tries to read the orders too, after
``split_by_region`` claimed them, and is refused: each value has one consumer.

``taskflow-exclusive demo`` runs this DAG with ``dag.test()``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from taskflow_exclusive import AlreadyClaimedError, Claimed, ExclusiveHandle, exclusive_task
from taskflow_exclusive.examples import orders


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, tags=["example"])
def orders_pipeline():
    @exclusive_task
    def extract() -> list:
        return orders.extract_orders()

    @exclusive_task(split=True)
    def split_by_region(all_orders: Claimed[list]):
        yield from orders.batches_by_region(all_orders)

    @exclusive_task
    def summarize(batch: Claimed[dict]):
        return orders.summarize(batch)

    @task
    def report(summaries: list[ExclusiveHandle]) -> str:
        return orders.format_report([handle.claim() for handle in summaries])

    @task
    def audit(all_orders: ExclusiveHandle):
        try:
            all_orders.claim()
        except AlreadyClaimedError as refused:  # a real task would let it fail the task (no retries)
            return {"refused": refused.uri, "holder": refused.holder}
        return {"claimed": all_orders.uri}

    raw = extract()
    batches = split_by_region(raw)
    report(summarize.expand(batch=batches))
    batches >> audit(raw)


the_dag = orders_pipeline()
