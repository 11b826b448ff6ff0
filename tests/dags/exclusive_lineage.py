"""Opt-in lineage: an @exclusive_task with an Asset outlet, one without, and a split one."""

import pendulum
from airflow.sdk import Asset, dag, task

from taskflow_exclusive import exclusive_task
from tests.airflow_harness import record

ORDERS = Asset("taskflow-exclusive://lineage/orders")
REGIONS = Asset("taskflow-exclusive://lineage/regions")


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def exclusive_lineage():
    @exclusive_task(outlets=[ORDERS])
    def extract() -> list:
        return [{"id": 1}, {"id": 2}]

    @exclusive_task(split=True, outlets=[REGIONS])
    def regions() -> list:
        return ["east", "west", "north"]

    @exclusive_task
    def no_outlets() -> list:
        return ["unseen"]

    @task
    def note(handle, name: str) -> None:
        handles = handle if isinstance(handle, list) else [handle]
        record(task=name, uris=[h.uri for h in handles], digests=[h.digest for h in handles])

    note.override(task_id="note_extract")(extract(), "extract")
    note.override(task_id="note_regions")(regions(), "regions")
    note.override(task_id="note_no_outlets")(no_outlets(), "no_outlets")


the_dag = exclusive_lineage()
