"""A split output cannot be granted whole: grant() of a list of handles is refused at run time.

``@exclusive_output(split=True)`` under ``@task`` (whose split the DAG file cannot see) puts
a list of handles in XCom; the grant task refuses it before anything is recorded. (An
``@exclusive_task(split=True)`` output is refused earlier, when the DAG file is parsed.)
"""

import pendulum
from airflow.sdk import dag, task

from taskflow_exclusive import exclusive_output, grant


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 0},
)
def grant_split():
    @task
    @exclusive_output(split=True)
    def parts() -> list:
        return [[1], [2], [3]]

    grant(parts(), to="grant_child")


the_dag = grant_split()
