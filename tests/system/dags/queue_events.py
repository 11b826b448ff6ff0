"""Event-driven: DAG runs started by asset watchers on ExclusiveQueues, each item in one run.

Two DAGs, two queues: ``sys_queue_events`` whose trigger waits
``TFX_QUEUE_EVENTS_MIN_INTERVAL`` seconds after each event (one run per item),
and ``sys_queue_events_burst`` whose trigger fires as fast as items come (Airflow
makes fewer runs than events). The queue's Redis comes from
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


def per_item_dag(dag_id: str, queue_name: str, min_interval: float):
    trigger = ExclusiveQueueEventTrigger(SPEC, queue_name, poll_interval=0.2, min_interval=min_interval)
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


paced = per_item_dag(
    "sys_queue_events", "events", float(os.environ.get("TFX_QUEUE_EVENTS_MIN_INTERVAL", "3"))
)
burst = per_item_dag("sys_queue_events_burst", "events_burst", 0.0)
