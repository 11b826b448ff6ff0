"""A task given queue events (in its run's conf) addressed to this DAG and to another one."""

import pendulum
from airflow.sdk import dag, get_current_context, task

from taskflow_exclusive.airflow.queues_triggers import value_from_event
from taskflow_exclusive.errors import InvalidArgumentError
from tests.airflow_harness import record


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def queue_event_addressed():
    @task
    def take() -> None:
        conf = get_current_context()["dag_run"].conf
        try:
            value_from_event(conf["elsewhere"])
        except InvalidArgumentError as exc:
            record(refused=str(exc))
        record(value=value_from_event(conf["here"]))

    take()


the_dag = queue_event_addressed()
