"""The child of ``orders_handoff``: it claims the orders handed to this run, and nobody else can.

``granted("orders")`` checks the grant in ``dag_run.conf["orders"]`` (signature, addressee,
expiry, the hand-off still standing); ``report`` claims the value for itself through its
``Claimed`` parameter. A second run of this DAG with the same conf is refused, naming
the first run's ``report``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from taskflow_exclusive import Claimed, exclusive_task, granted
from taskflow_exclusive.examples import orders


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, tags=["example"])
def orders_report():
    @exclusive_task
    def report(all_orders: Claimed[list]):
        summaries = [orders.summarize(batch) for batch in orders.batches_by_region(all_orders)]
        return orders.format_report(summaries)

    report(granted("orders"))  # the one line in the child


the_dag = orders_report()
