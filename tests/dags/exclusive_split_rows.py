"""split=True + .expand: each mapped consumer rebuilds only its own handle, whatever the count.

``numbers`` publishes ``ITEMS`` items (more than two rows of handles);
``take`` (plain @task) is expanded over them. A spy on
``ExclusiveHandle.deserialize`` lists every handle this process rebuilds; each
``take`` records the handles rebuilt since the previous one ran (dag.test()
runs task instances one after another in this process), which must be its own
alone. ``row_size`` records how many bytes XCom's ``return_value`` holds;
``elsewhere`` records the refusal of a reference to another run's rows.
"""

import json

import pendulum
from airflow.sdk import dag, get_current_context, task

from taskflow_exclusive import ExclusiveHandle, exclusive_task
from tests.airflow_harness import record

ITEMS = 40
_rebuilt: list[str] = []
_deserialize = ExclusiveHandle.deserialize.__func__


def _spy(cls, data, version, *, where=None):
    handle = _deserialize(cls, data, version, where=where)
    _rebuilt.append(handle.uri)
    return handle


ExclusiveHandle.deserialize = classmethod(_spy)


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def exclusive_split_rows():
    @exclusive_task(split=True)
    def numbers() -> list:
        _rebuilt.clear()
        return list(range(ITEMS))

    @task
    def take(item: ExclusiveHandle) -> None:
        rebuilt = list(_rebuilt)
        _rebuilt.clear()
        record(
            task="take",
            map_index=get_current_context()["ti"].map_index,
            uri=item.uri,
            value=item.claim(),
            rebuilt=rebuilt,
        )

    @task
    def row_size() -> None:
        from taskflow_exclusive.airflow._compat import stored_xcom_value

        ti = get_current_context()["ti"]
        stored = stored_xcom_value(key="return_value", dag_id=ti.dag_id, task_id="numbers", run_id=ti.run_id)
        record(task="row_size", bytes=len(json.dumps(stored)))

    @task
    def elsewhere() -> None:
        """A reference naming another run's rows (as forged XCom content would) is refused."""
        from taskflow_exclusive.airflow.results import SplitHandles

        ti = get_current_context()["ti"]
        forged = SplitHandles(
            dag_id=ti.dag_id, run_id="another run", task_id="numbers", map_index=-1, length=3
        )
        try:
            forged[0]
        except ValueError as exc:
            record(task="elsewhere", refused=str(exc))

    produced = numbers()
    mapped = take.expand(item=produced)
    sizer = row_size()
    produced >> sizer
    mapped >> sizer
    produced >> elsewhere()


the_dag = exclusive_split_rows()
