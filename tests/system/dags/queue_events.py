"""Event-driven: DAG runs started by asset watchers on ExclusiveQueues, each item in one run.

Two DAGs, two queues: ``sys_queue_events`` whose trigger names the DAG
(``dag_id=``: it takes the next item once the scheduler has made a run for the
last one, so each item gets its own run; ``lease_seconds=``: each item stays
leased until its run's task completes it), and ``sys_queue_events_burst`` whose
trigger fires as fast as items come (the control: Airflow makes fewer runs than
events). The queue's Redis comes from
``TFX_QUEUE_EVENTS_SPEC``; each run's task writes the values it got to
``TFX_QUEUE_EVENTS_RECORDS/<dag id>/<run id>.json`` (LocalExecutor: one machine).
"""

import json
import os
from pathlib import Path

import pendulum
from airflow.sdk import Asset, AssetWatcher, dag, task

from taskflow_exclusive.airflow.queues_triggers import ExclusiveQueueEventTrigger, value_from_event

SPEC = os.environ.get("TFX_QUEUE_EVENTS_SPEC", "redis://127.0.0.1:6379/14")


def per_item_dag(dag_id: str, queue_name: str, one_run_each: bool):
    if one_run_each:  # one run per item, delivered at least once (leased until the run takes it)
        trigger = ExclusiveQueueEventTrigger(
            SPEC, queue_name, poll_interval=0.2, dag_id=dag_id, lease_seconds=300
        )
    else:
        trigger = ExclusiveQueueEventTrigger(SPEC, queue_name, poll_interval=0.2)
    items = Asset(
        f"tfx_{queue_name}", watchers=[AssetWatcher(name=f"tfx_{queue_name}_watcher", trigger=trigger)]
    )

    @dag(
        dag_id=dag_id,
        schedule=[items],
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=16,
    )
    def events_dag():
        @task
        def handle_items(**context) -> None:
            values = [value_from_event(event) for event in context["triggering_asset_events"][items]]
            folder = Path(os.environ["TFX_QUEUE_EVENTS_RECORDS"]) / dag_id
            folder.mkdir(parents=True, exist_ok=True)
            run_id = context["dag_run"].run_id
            record = {"run_id": run_id, "values": values}
            (folder / f"{run_id.replace('/', '_').replace(':', '_')}.json").write_text(json.dumps(record))

        handle_items()

    return events_dag()


paced = per_item_dag("sys_queue_events", "events", one_run_each=True)
burst = per_item_dag("sys_queue_events_burst", "events_burst", one_run_each=False)
