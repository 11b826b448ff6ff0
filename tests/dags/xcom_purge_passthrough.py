"""Retries under ExclusiveXCom purge only what the retried task itself stored.

- ``pass_through``: a plain @task receives an upstream handle, pushes ``[handle]`` and fails
  on try 1; try 2 returns ``[handle]`` again. The retry's purge must leave the upstream value
  alone: ``consume`` claims it afterwards.
- ``nested_pass_through``: the same with the handle nested in a dict of lists.
- ``own_value``: a plain @task publishes a value of its own, pushes ``[handle]`` and fails on
  try 1; try 2 publishes nothing. Its try-1 value is its own output: the retry purges it.

conf: {"results": folder}
"""

import pendulum
from airflow.sdk import dag, get_current_context, task

from taskflow_exclusive import exclusive_task, publish
from tests.airflow_harness import record


def _push_then_fail_on_try_1(value) -> None:
    ti = get_current_context()["ti"]
    if ti.try_number == 1:
        ti.xcom_push(key="return_value", value=value)
        raise RuntimeError("failing try 1 after pushing, on purpose")


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 1, "retry_delay": 0},
)
def xcom_purge_passthrough():
    @exclusive_task
    def produce():
        return {"rows": list(range(100))}

    @exclusive_task
    def produce_nested():
        return "nested value"

    @task
    def pass_through(handle):
        _push_then_fail_on_try_1([handle])
        return [handle]

    @task
    def nested_pass_through(handle):
        _push_then_fail_on_try_1({"inner": [handle]})
        return {"inner": [handle]}

    @task
    def own_value():
        ti = get_current_context()["ti"]
        if ti.try_number == 1:
            handle = publish({"mine": True})
            record(check="own", try_number=1, uri=handle.uri)
            _push_then_fail_on_try_1([handle])
        return "try 2 published nothing"

    @task(retries=0)
    def consume(handles):
        (handle,) = handles
        record(check="consume", uri=handle.uri, value=handle.claim())

    @task(retries=0)
    def consume_nested(wrapped):
        (handle,) = wrapped["inner"]
        record(check="consume_nested", uri=handle.uri, value=handle.claim())

    consume(pass_through(produce()))
    consume_nested(nested_pass_through(produce_nested()))
    own_value()


the_dag = xcom_purge_passthrough()
