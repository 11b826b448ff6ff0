"""Consumers racing for one value: exactly one gets it, the others fail on try 1.

Two plain ``@task`` consumers wait at a start line (in the object store) and then
call ``handle.claim()`` at the same moment; two ``@exclusive_task`` consumers with
``Claimed`` inputs race for a second value as the scheduler starts them. Every
consumer has ``retries=2``, yet a refused claim must fail the task without a retry.
"""

from uuid import uuid4

from airflow.sdk import dag, task
from tfx_system_records import arrive_and_wait, dag_arguments, record, record_refusal

from taskflow_exclusive import AlreadyClaimedError, Claimed, ExclusiveHandle, exclusive_task


@dag(**dag_arguments(retries=2))
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
            record_refusal(refused, arrived=arrived)
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
