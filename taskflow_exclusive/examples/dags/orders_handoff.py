"""Handing a value to a triggered DAG: the orders go to ``orders_report``, and only there.

``extract`` stores today's orders; ``grant(...)`` in the conf of Airflow's own
``TriggerDagRunOperator`` hands them to the DAG ``orders_report`` (a signed grant;
the value is recorded as handed off in its claim ledger). ``audit`` tries to read the
orders afterwards and is refused: they belong to the child now.

Needs a signing key: the Airflow Variable ``taskflow_exclusive_signing_secret`` (or the
password of the Connection ``taskflow_exclusive_signing``), see the README's "Hand-offs
to triggered DAGs".
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, task

from taskflow_exclusive import AlreadyClaimedError, ExclusiveHandle, exclusive_task, grant
from taskflow_exclusive.examples import orders


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, tags=["example"])
def orders_handoff():
    @exclusive_task
    def extract() -> list:
        return orders.extract_orders()

    @task
    def audit(all_orders: ExclusiveHandle):
        try:
            all_orders.claim()
        except AlreadyClaimedError as refused:  # a real task would let it fail the task (no retries)
            return {"refused": refused.uri, "holder": refused.holder}
        return {"claimed": all_orders.uri}

    raw = extract()
    trigger = TriggerDagRunOperator(
        task_id="trigger_report",
        trigger_dag_id="orders_report",
        conf={"orders": grant(raw, to="orders_report")},  # the one line in the parent
    )
    trigger >> audit(raw)


the_dag = orders_handoff()
