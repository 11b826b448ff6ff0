"""An offloaded XCom whose object disappears: the consumer must fail with ObjectMissingError."""

import pendulum
from airflow.sdk import dag, get_current_context, task


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def xcom_missing():
    @task
    def produce():
        return "v" * 5000

    @task
    def lose_it():
        import os

        from taskflow_exclusive.airflow._compat import stored_xcom_value

        ti = get_current_context()["ti"]
        row = stored_xcom_value(
            key="return_value", dag_id=ti.dag_id, task_id="produce", run_id=ti.run_id, map_index=-1
        )
        os.unlink(row["handle"]["uri"].removeprefix("file://"))

    @task(retries=0)
    def consume(value):
        return len(value)

    value = produce()
    lost = lose_it()
    value >> lost >> consume(value)


the_dag = xcom_missing()
