"""The child of ``grant_xcom_parent``: claims the handed-off XCom with claim_task_xcom(granted=...)."""

import pendulum
from airflow.sdk import dag, task

from tests.airflow_harness import record


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def grant_xcom_child():
    @task
    def load() -> None:
        from taskflow_exclusive.xcom import claim_task_xcom

        value = claim_task_xcom(granted="rows")
        record(task="load", lines=value.count(b"\n"), type=type(value).__name__)

    load()


the_dag = grant_xcom_child()
