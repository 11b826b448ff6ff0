"""A parent on a deployment running ExclusiveXCom: it hands an offloaded plain XCom to a child.

``rows`` is a plain @task whose value ExclusiveXCom offloads (bytes, which Airflow's serde
cannot encode); ``count`` one that stays inline (a small dict). Both are granted to
``grant_xcom_child``; ``steal`` and ``steal_count`` claim them afterwards through the XCom
backend and are refused.
"""

import pendulum
from airflow.sdk import dag, task

from taskflow_exclusive import AlreadyClaimedError, grant
from tests.airflow_harness import record


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def grant_xcom_parent():
    @task
    def rows() -> bytes:
        return b"row\n" * 1000

    @task
    def count() -> dict:
        return {"n": 3}

    @task
    def show_grant(document: dict, inline: dict) -> None:
        record(task="show_grant", document=document, inline=inline)

    @task
    def steal() -> None:
        from taskflow_exclusive.xcom import claim_task_xcom

        try:
            claim_task_xcom("rows")
        except AlreadyClaimedError as refused:
            record(task="steal", holder=refused.holder)
            raise

    @task
    def steal_count() -> None:
        from taskflow_exclusive.xcom import claim_task_xcom

        try:
            claim_task_xcom("count")
        except AlreadyClaimedError as refused:
            record(task="steal_count", holder=refused.holder)
            raise

    shown = show_grant(grant(rows(), to="grant_xcom_child"), grant(count(), to="grant_xcom_child"))
    shown >> [steal(), steal_count()]


the_dag = grant_xcom_parent()
