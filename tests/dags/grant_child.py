"""The child: claims what ``grant_parent`` handed it, in both styles.

``load`` (an @exclusive_task) receives the value through ``Claimed``; ``audit`` (a plain
@task) gets the Grant and claims it itself; ``count`` claims its grant with
``claim_task_xcom(granted=...)``.
"""

import pendulum
from airflow.sdk import dag, task

from taskflow_exclusive import Claimed, Grant, exclusive_task, granted
from tests.airflow_harness import record


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 2, "retry_delay": 0},
)
def grant_child():
    @exclusive_task
    def load(orders: Claimed[list]) -> int:
        record(task="load", value=orders)
        return len(orders)

    @task
    def audit(totals: Grant) -> None:
        try:
            record(task="audit", value=totals.claim())
        except Exception as refused:
            record(task="audit", error=type(refused).__name__, holder=getattr(refused, "holder", None))
            raise

    @task
    def count() -> None:
        from taskflow_exclusive.xcom import claim_task_xcom

        record(task="count", value=claim_task_xcom(granted="count"))

    load(granted("orders"))
    count()
    audit(granted("totals"))


the_dag = grant_child()
