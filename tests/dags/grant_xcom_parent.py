"""A parent on a deployment running ExclusiveXCom: it hands an offloaded plain XCom to a child.

``rows`` is a plain @task whose value ExclusiveXCom offloads (bytes, which Airflow's serde
cannot encode); ``grant`` hands that XCom to ``grant_xcom_child``; ``steal`` claims it
afterwards through the XCom backend and is refused.
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
    def show_grant(document: dict) -> None:
        record(task="show_grant", document=document)

    @task
    def steal() -> None:
        from taskflow_exclusive.xcom import claim_task_xcom

        try:
            claim_task_xcom("rows")
        except AlreadyClaimedError as refused:
            record(task="steal", holder=refused.holder)
            raise

    show_grant(grant(rows(), to="grant_xcom_child")) >> steal()


the_dag = grant_xcom_parent()
