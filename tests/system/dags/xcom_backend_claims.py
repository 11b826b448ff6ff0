"""ExclusiveXCom on a deployment: plain ``@task`` XComs claimed once, offloaded or inline.

Needs ``[core] xcom_backend = taskflow_exclusive.xcom.ExclusiveXCom`` and a small
``[taskflow_exclusive] xcom_threshold`` (the test deployment uses 1024 bytes):
``big`` returns more than that (offloaded to the object store), ``small`` less
(stays inline). Two consumers race for each with ``claim_task_xcom`` and
``ExclusiveXCom.claim_xcom``; ``flaky`` claims ``big``'s ``extra`` XCom, fails on
try 1 and claims it again on try 2.
"""

import hashlib
import json
from uuid import uuid4

from airflow.sdk import dag, get_current_context, task
from tfx_system_records import arrive_and_wait, dag_arguments, record, record_refusal

from taskflow_exclusive import AlreadyClaimedError
from taskflow_exclusive.xcom import ExclusiveXCom, claim_task_xcom


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _race(target: str, how: str) -> None:
    ti = get_current_context()["ti"]
    arrived = arrive_and_wait(target, expected=2)
    try:
        if how == "claim_task_xcom":
            value = claim_task_xcom(target)
        else:
            consumer = f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{ti.map_index}"
            value = ExclusiveXCom.claim_xcom(
                "return_value", consumer, dag_id=ti.dag_id, task_id=target, run_id=ti.run_id
            )
    except AlreadyClaimedError as refused:
        record_refusal(refused, arrived=arrived)
        raise
    record(outcome="claimed", arrived=arrived, digest=_digest(value), nonce=value["nonce"])


@dag(**dag_arguments(retries=2))
def sys_xcom_backend_claims():
    @task
    def big():
        value = {"nonce": uuid4().hex, "rows": [f"row-{i:05d}" for i in range(2000)]}
        extra = {"nonce": uuid4().hex, "rows": [f"extra-{i:05d}" for i in range(2000)]}
        get_current_context()["ti"].xcom_push(key="extra", value=extra)
        record(digest=_digest(value), nonce=value["nonce"], extra_digest=_digest(extra))
        return value

    @task
    def small():
        value = {"nonce": uuid4().hex, "n": 1}
        record(digest=_digest(value), nonce=value["nonce"])
        return value

    @task
    def big_a():
        _race("big", "claim_task_xcom")

    @task
    def big_b():
        _race("big", "claim_task_xcom")

    @task
    def small_a():
        _race("small", "claim_xcom")

    @task
    def small_b():
        _race("small", "claim_xcom")

    @task
    def flaky():
        ti = get_current_context()["ti"]
        value = claim_task_xcom("big", key="extra")
        record(digest=_digest(value))
        if ti.try_number == 1:
            raise RuntimeError("failing try 1 after claiming, on purpose")

    producer = big()
    producer >> [big_a(), big_b(), flaky()]
    small() >> [small_a(), small_b()]


sys_xcom_backend_claims()
