"""The child of ``grant_xcom_parent``: claims the handed-off XCom with claim_task_xcom(granted=...).

``peek`` pulls the granted XCom from the parent's run with ``xcom_pull`` (allowed: a grant in
this run's conf names it); ``snoop`` pulls another XCom of the parent's run that nobody granted
(refused when ``[taskflow_exclusive] exclusive_mode`` is on, allowed when it is off).
"""

import pendulum
from airflow.sdk import dag, get_current_context, task

from tests.airflow_harness import record


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def grant_xcom_child():
    @task
    def load() -> None:
        from taskflow_exclusive.xcom import claim_task_xcom

        value = claim_task_xcom(granted="rows")
        record(task="load", lines=value.count(b"\n"), type=type(value).__name__)

    def _parent_xcom(task_id: str):
        context = get_current_context()
        parent = context["dag_run"].conf["rows"]["xcom"]
        return context["ti"].xcom_pull(dag_id=parent["dag_id"], run_id=parent["run_id"], task_ids=task_id)

    @task
    def peek() -> None:
        record(task="peek", lines=_parent_xcom("rows").count(b"\n"))

    @task(retries=2, retry_delay=0)
    def snoop() -> None:
        try:
            record(task="snoop", seen=_parent_xcom("show_grant") is None)
        except Exception as refused:
            record(task="snoop", error=type(refused).__name__)
            raise

    @task
    def tally() -> None:
        from taskflow_exclusive.xcom import claim_task_xcom

        record(task="tally", value=claim_task_xcom(granted="count"))

    load() >> [peek(), snoop(), tally()]


the_dag = grant_xcom_child()
