"""A real scheduler, DAG processor and triggerer: one asset event per queue item, each item in one run.

Its own LocalExecutor deployment on a fresh PostgreSQL database, with an
``airflow triggerer`` (the other system tests run none). Items put on an
ExclusiveQueue (shared Redis, own db and prefix) are taken by the asset
watcher's ExclusiveQueueEventTrigger; every item must give exactly one asset
event. With ``dag_id=`` each item must start a run of its own; the control, a
trigger without it fed a burst, gets fewer runs than items (Airflow puts the
events queued between two scheduler loops into one run).
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest

from taskflow_exclusive.queues import ExclusiveQueue
from tests.conftest import env_count, service_unavailable
from tests.ledgers import redis_prefix
from tests.queue_fixtures import QUEUE_REDIS_URL
from tests.system.deployment import Deployment, DeploymentError, create_database, drop_database

pytestmark = pytest.mark.system

DAG_FILE = Path(__file__).parent / "dags" / "queue_events.py"
DAG_ID = "sys_queue_events"
BURST_DAG_ID = "sys_queue_events_burst"
ITEMS = env_count("TFX_QUEUE_EVENT_ITEMS", 10)


def _runs(deployment: Deployment, dag_id: str) -> list[dict]:
    return deployment.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 1000})["dag_runs"]


def _values(records: Path, dag_id: str) -> list:
    return [v for p in (records / dag_id).glob("*.json") for v in json.loads(p.read_text())["values"]]


def _events(deployment: Deployment, queue_name: str) -> list[dict]:
    answer = deployment.api("GET", "/api/v2/assets/events", params={"limit": 1000})
    return [
        e
        for e in answer["asset_events"]
        if (e.get("extra") or {}).get("payload", {}).get("queue") == queue_name
    ]


def test_each_queue_item_starts_exactly_one_dag_run(tmp_path):
    records = tmp_path / "records"
    database = f"tfx_queue_events_{secrets.token_hex(4)}"
    with redis_prefix(QUEUE_REDIS_URL) as (spec, _):
        try:
            create_database(database)
        except Exception as exc:
            service_unavailable("PostgreSQL for the system deployment", f"{type(exc).__name__}: {exc}")
        deployment = Deployment(
            "queue-events",
            tmp_path / "deployment",
            executor="LocalExecutor",
            database=database,
            dag_files=[DAG_FILE],
            env={
                "TFX_QUEUE_EVENTS_SPEC": spec,
                "TFX_QUEUE_EVENTS_RECORDS": str(records),
                "AIRFLOW__TRIGGERER__CAPACITY": "100",
                # watchers are registered when the DAG file is parsed while the DAG is unpaused
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
                # asset-triggered runs are created by the scheduler's job schedule (off in deployment.py)
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",
            },
        )
        try:
            try:
                deployment.start()
                deployment._spawn("triggerer", ["triggerer"], deployment.home)
                deployment.wait_for_dags([DAG_ID, BURST_DAG_ID])
            except DeploymentError as exc:
                service_unavailable("the Airflow deployment", str(exc)[-2000:])
            values = [{"item": n, "pad": "p" * (n * 8000)} for n in range(ITEMS)]  # inline and stored
            one_each = ExclusiveQueue(spec, name="events")
            burst = ExclusiveQueue(spec, name="events_burst")
            one_each.put_many(values)
            burst.put_many(values)
            deadline = time.monotonic() + 150 + 3 * ITEMS
            while time.monotonic() < deadline and len(_values(records, DAG_ID)) < ITEMS:
                time.sleep(2)
            time.sleep(5)  # anything extra would show up by now
            runs = _runs(deployment, DAG_ID)
            burst_runs = _runs(deployment, BURST_DAG_ID)
            burst_got = _values(records, BURST_DAG_ID)
            got = _values(records, DAG_ID)
            facts = (len(runs), [r["state"] for r in runs], deployment.log_tails())
            print(
                f"dag_id=: {ITEMS} items, {len(_events(deployment, 'events'))} asset events, "
                f"{len(runs)} runs; "
                f"burst: {len(_events(deployment, 'events_burst'))} asset events, {len(burst_runs)} runs, "
                f"{len(burst_got)} items seen by a run"
            )
            for queue_name in ("events", "events_burst"):  # one asset event per item, never two
                items = [e["extra"]["payload"]["item"]["id"] for e in _events(deployment, queue_name)]
                assert len(items) == len(set(items)) == ITEMS, (queue_name, len(items), facts)
            assert sorted(v["item"] for v in got) == list(range(ITEMS)), facts  # each item in one run
            assert all(v in values for v in got)
            assert {r["state"] for r in runs} == {"success"}, facts
            per_run = [len(json.loads(p.read_text())["values"]) for p in (records / DAG_ID).glob("*.json")]
            assert per_run == [1] * ITEMS, per_run
            assert len(runs) == ITEMS and len(one_each) == 0 and len(burst) == 0  # dag_id=: one run per item
            # lease_seconds=: each item was completed by its run's task, none left leased
            assert (one_each.in_flight(), one_each.stats()["acked"]) == ([], ITEMS)
            # the control, a burst without dag_id=: Airflow made fewer runs than events (each run
            # sees the first event queued since the last run), and no item reached two runs
            burst_items = [v["item"] for v in burst_got]
            assert len(burst_items) == len(set(burst_items)) and len(burst_runs) < ITEMS, facts
        finally:
            deployment.stop()
            drop_database(database)
