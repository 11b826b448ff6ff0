"""Consumers racing for one value: exactly one gets it, the others fail on try 1.

Two plain ``@task`` consumers wait at a start line (in the object store) and then
call ``handle.claim()`` at the same moment; two ``@exclusive_task`` consumers with
``Claimed`` inputs race for a second value as the scheduler starts them. Every
consumer has ``retries=2``, yet a refused claim must fail the task without a retry.
"""

from datetime import timedelta
from uuid import uuid4

import pendulum
from airflow.sdk import dag, task
from airflow.sdk.exceptions import AirflowFailException
from tfx_system_records import arrive_and_wait, record

from taskflow_exclusive import AlreadyClaimedError, Claimed, ExclusiveHandle, exclusive_task


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=1)},
)
def sys_racing_consumers():
    @exclusive_task
    def produce() -> list:
        value = [uuid4().hex, *range(100)]
        record(value=value)
        return value

    @task
    def plain_consumer(handle: ExclusiveHandle) -> None:
        arrived = arrive_and_wait("claim", expected=2)
        try:
            value = handle.claim()
        except AlreadyClaimedError as refused:
            no_retry = isinstance(refused, AirflowFailException)
            record(outcome="refused", arrived=arrived, holder=refused.holder, no_retry=no_retry)
            raise
        record(outcome="claimed", arrived=arrived, value=value)

    @exclusive_task
    def claimed_consumer(value: Claimed[list]) -> None:
        record(outcome="claimed", value=value)

    plain = produce.override(task_id="produce_plain")()
    plain_consumer.override(task_id="plain_a")(plain)
    plain_consumer.override(task_id="plain_b")(plain)
    claimed = produce.override(task_id="produce_claimed")()
    claimed_consumer.override(task_id="claimed_a")(claimed)
    claimed_consumer.override(task_id="claimed_b")(claimed)


sys_racing_consumers()
