"""Claiming XComs through ExclusiveXCom: races between tasks, retries, purge, lost objects.

conf: {"results": folder, "fail_producer_once": bool}
"""

import pendulum
from airflow.sdk import dag, get_current_context, task

from tests.airflow_harness import record

BIG = [f"payload-{i:05d}" for i in range(5000)]


def _claim(task_id, who, key="return_value"):
    from taskflow_exclusive import AlreadyClaimedError
    from taskflow_exclusive.airflow.xcom import claim_task_xcom

    try:
        value = claim_task_xcom(task_id, key=key)
    except AlreadyClaimedError as exc:
        from taskflow_exclusive.airflow._compat import AirflowFailException

        no_retry = isinstance(exc, AirflowFailException)
        record(
            check="claim",
            who=who,
            target=task_id,
            key=key,
            outcome="refused",
            holder=exc.holder,
            no_retry=no_retry,
        )
        raise
    record(
        check="claim", who=who, target=task_id, key=key, outcome="won", ok=value == _expected(task_id, key)
    )
    return value


def _expected(task_id, key):
    return {"big": BIG, "small": {"n": 1}}[task_id] if key == "return_value" else 42


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 1, "retry_delay": 0},
)
def xcom_claims():
    @task
    def big():
        from taskflow_exclusive.airflow._compat import stored_xcom_value

        context = get_current_context()
        ti = context["ti"]
        ti.xcom_push(key="extra", value=42)
        row = stored_xcom_value(
            key="extra", dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id, map_index=-1
        )
        record(check="pushed-extra", try_number=ti.try_number, inline=not isinstance(row, dict))
        if context["dag_run"].conf.get("fail_producer_once") and ti.try_number == 1:
            # Push the big value by hand, remember where it went, then fail: the retry must purge it.
            ti.xcom_push(key="return_value", value=BIG)
            row = stored_xcom_value(
                key="return_value", dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id, map_index=-1
            )
            record(check="try1-object", uri=row["handle"]["uri"])
            raise RuntimeError("producer fails on try 1")
        return BIG

    @task
    def small():
        return {"n": 1}

    @task(retries=2)  # a refusal must not use them
    def claimer_a():
        _claim("big", "claimer_a")

    @task(retries=2)  # a refusal must not use them
    def claimer_b():
        _claim("big", "claimer_b")

    @task(retries=2)  # a refusal must not use them
    def inline_a():
        _claim("small", "inline_a")

    @task(retries=2)  # a refusal must not use them
    def inline_b():
        _claim("small", "inline_b")

    @task(retries=1)
    def flaky_claimer():
        from taskflow_exclusive.airflow.xcom import claim_task_xcom

        ti = get_current_context()["ti"]
        value = claim_task_xcom("big", key="extra")
        record(check="flaky", try_number=ti.try_number, value=value)
        if ti.try_number == 1:
            raise RuntimeError("consumer fails after claiming, on try 1")

    @task
    def report_object():
        from taskflow_exclusive.airflow._compat import stored_xcom_value

        ti = get_current_context()["ti"]
        row = stored_xcom_value(
            key="return_value", dag_id=ti.dag_id, task_id="big", run_id=ti.run_id, map_index=-1
        )
        record(check="final-object", uri=row["handle"]["uri"])

    b, s = big(), small()
    b >> [claimer_a(), claimer_b(), report_object()]
    b >> flaky_claimer()
    s >> [inline_a(), inline_b()]


the_dag = xcom_claims()
