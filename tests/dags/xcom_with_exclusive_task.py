"""@exclusive_task under ExclusiveXCom with xcom_threshold=0 (everything offloaded):
handles must be stored as handles, never offloaded a second time."""

import pendulum
from airflow.sdk import dag, get_current_context, task

from taskflow_exclusive import exclusive_task
from tests.airflow_harness import record


def _stored(task_id, key="return_value"):
    from taskflow_exclusive.airflow._compat import stored_xcom_value

    ti = get_current_context()["ti"]
    return stored_xcom_value(key=key, dag_id=ti.dag_id, task_id=task_id, run_id=ti.run_id, map_index=-1)


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def xcom_with_exclusive_task():
    @exclusive_task
    def produce():
        return {"rows": list(range(1000))}

    @exclusive_task(split=True)
    def parts():
        return [f"part-{i}" for i in range(3)]

    @task
    def plain_value():
        return {"plain": True}

    @task
    def consume(handle):
        from taskflow_exclusive import ExclusiveHandle

        stored = _stored("produce")
        record(
            check="handle",
            received_type=type(handle).__name__,
            is_handle=isinstance(handle, ExclusiveHandle),
            value_ok=handle.claim() == {"rows": list(range(1000))},
            stored_classname=stored.get("__classname__"),
            stored_marker=stored.get("__taskflow_exclusive__"),
            plain_marker=_stored("plain_value").get("__taskflow_exclusive__"),
            split_stored_as=_stored("parts").get("__classname__"),  # mapped over: SplitHandles
        )

    @task
    def take_part(handle):
        record(check="part", value=handle.claim())

    consume(produce())
    plain_value() >> take_part.expand(handle=parts())


the_dag = xcom_with_exclusive_task()
