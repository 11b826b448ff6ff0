"""A parent that hands two values to ``grant_child`` through TriggerDagRunOperator's conf.

``steal`` (a parent task) tries to claim a handed-off value afterwards and is refused,
naming the hand-off. ``show_grants`` records the grant documents for the test.
"""

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, task

from taskflow_exclusive import AlreadyClaimedError, ExclusiveHandle, exclusive_task, grant
from tests.airflow_harness import record


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 2, "retry_delay": 0},
)
def grant_parent():
    @exclusive_task
    def extract() -> list:
        return [{"id": 1, "total": 20}, {"id": 2, "total": 5}]

    @exclusive_task(multiple_outputs=True)
    def summarize() -> dict:
        return {"totals": [20, 5], "count": 2}

    @task
    def steal(orders: ExclusiveHandle) -> None:
        try:
            orders.claim()
        except AlreadyClaimedError as refused:
            record(task="steal", holder=refused.holder)
            raise

    @task
    def show_grants(orders: dict, totals: dict, count: dict) -> None:
        record(task="show_grants", orders=orders, totals=totals, count=count)

    orders = extract()
    orders_grant = grant(orders, to="grant_child")
    summary = summarize()
    totals_grant = grant(summary["totals"], to="grant_child")
    count_grant = grant(summary["count"], to="grant_child")
    TriggerDagRunOperator(
        task_id="trigger_child",
        trigger_dag_id="grant_child",
        conf={"orders": orders_grant, "totals": totals_grant, "count": count_grant},
    )
    show_grants(orders_grant, totals_grant, count_grant) >> steal(orders)


the_dag = grant_parent()
