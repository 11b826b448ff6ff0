"""Core API inside plain @task functions: the consumer id comes from the task instance.

The producer publishes and returns the handle as a dict; two consumers claim
it: exactly one succeeds. The loser's failure is recorded with the holder.
"""

import pendulum
from airflow.sdk import dag, task

from tests.airflow_harness import record


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 0},
)
def core_in_plain_tasks():
    @task
    def produce() -> dict:
        from airflow.sdk import get_current_context

        from taskflow_exclusive import publish

        storage = get_current_context()["dag_run"].conf["storage"]
        return publish({"rows": [1, 2, 3]}, storage=storage).to_dict()

    @task
    def consume(handle_dict: dict, name: str) -> None:
        from taskflow_exclusive import AlreadyClaimedError, ExclusiveHandle

        handle = ExclusiveHandle.from_dict(handle_dict)
        try:
            value = handle.claim()
        except AlreadyClaimedError as exc:
            record(task=name, outcome="refused", holder=exc.holder, producer=handle.producer)
            raise
        record(task=name, outcome="claimed", value=value, producer=handle.producer, uri=handle.uri)

    handle = produce()
    consume.override(task_id="first")(handle, "first") >> consume.override(task_id="second")(handle, "second")


the_dag = core_in_plain_tasks()
