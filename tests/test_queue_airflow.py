"""Work queues in real DAG runs (dag.test()), the triggers, and the messaging provider's registration."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter

import pytest

from taskflow_exclusive.queues import ExclusiveQueue
from tests import queue_fixtures
from tests.airflow_harness import DAGS, recorded, run_dag
from tests.private_services import PASSWORD
from tests.taskflow_helpers import by_task, use_storage

queue_spec = queue_fixtures.queue_spec
QUEUE_VARIABLE = "AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_QUEUE_URL"


def test_a_producer_and_a_pool_of_four_drain_tasks_complete_each_item_once(
    airflow_db, tmp_path, monkeypatch, queue_spec, file_url
):
    use_storage(monkeypatch, file_url)
    monkeypatch.setenv(QUEUE_VARIABLE, queue_spec)
    result = run_dag(DAGS / "queue_pool.py", conf={"results": str(tmp_path)})
    assert result.task_state("orders") == "success", result.states
    assert result.mapped_states("ship") == dict.fromkeys(range(4), "success"), result.states
    rows = [r for r in by_task(recorded(tmp_path))["ship"] if "failed_on_try" not in r]
    assert Counter(r["order"] for r in rows) == Counter(range(20))  # each item completed once
    assert all(r["size"] == r["order"] * 10_000 for r in rows)  # inline and stored values alike
    (failure,) = [r for r in recorded(tmp_path) if "failed_on_try" in r]
    (retried,) = [r for r in rows if r["order"] == 3]
    # the failing task instance's retry took up its own lease: same map index, try 2
    assert (retried["map_index"], retried["try_number"]) == (failure["map_index"], 2)
    queue = ExclusiveQueue(queue_spec, name="pool")
    assert (len(queue), queue.in_flight(), queue.stats()["acked"]) == (0, [], 20)


def test_a_deferred_wait_resumes_when_the_items_arrive(airflow_db, tmp_path, monkeypatch, queue_spec):
    monkeypatch.setenv(QUEUE_VARIABLE, queue_spec)
    queue = ExclusiveQueue(queue_spec, name="waiting")
    timer = threading.Timer(1.5, queue.put_many, args=(["a", "b", "c"],))
    timer.start()
    try:
        result = run_dag(DAGS / "queue_wait.py", conf={"results": str(tmp_path)})
    finally:
        timer.cancel()
    assert result.task_state("wait") == "success" and result.task_state("take") == "success", result.states
    assert sorted(r["value"] for r in by_task(recorded(tmp_path))["take"]) == ["a", "b", "c"]


def test_the_items_trigger_fires_once_enough_items_wait(queue_spec):
    from taskflow_exclusive.airflow.queues_triggers import QueueItemsTrigger

    queue = ExclusiveQueue(queue_spec, name="depth")
    queue.put_many([1, 2])
    trigger = QueueItemsTrigger(queue.backend.spec, "depth", min_items=2, poll_interval=0.05)

    async def first():
        async for event in trigger.run():
            return event.payload
        return None

    assert asyncio.run(asyncio.wait_for(first(), 10)) == {"queue": "depth", "depth": 2}


def test_event_triggers_sharing_a_queue_fire_one_event_per_item(queue_spec, file_url):
    """Three watchers on one queue: 30 items give 30 events in all, each item in exactly one."""
    from taskflow_exclusive.airflow.queues_triggers import ExclusiveQueueEventTrigger, value_from_event

    queue = ExclusiveQueue(queue_spec, name="events", storage=file_url)
    values = [{"n": n, "pad": "p" * (n * 5000)} for n in range(30)]
    queue.put_many(values)
    triggers = [
        ExclusiveQueueEventTrigger(queue.backend.spec, "events", poll_interval=0.05) for _ in range(3)
    ]
    events: list[dict] = []

    async def watch(trigger):
        async for event in trigger.run():
            events.append(event.payload)

    async def run_all():
        tasks = [asyncio.ensure_future(watch(t)) for t in triggers]
        for _ in range(200):
            if len(events) >= 30:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # nothing more comes
        for task in tasks:
            task.cancel()

    asyncio.run(run_all())
    assert len(events) == 30
    got = [value_from_event(event, consumer_id=f"run-{i}") for i, event in enumerate(events)]
    assert sorted(v["n"] for v in got) == list(range(30)) and all(v in values for v in got)
    assert queue.backend.spec == ExclusiveQueueEventTrigger(**triggers[0].serialize()[1]).spec
    assert "***" not in queue.backend.spec and len(queue) == 0


def test_leased_events_redeliver_a_lost_event_and_refuse_its_stale_run(queue_spec, file_url):
    """At least once: an event nobody takes comes again under a new token; the old one is refused."""
    from taskflow_exclusive.airflow.queues_triggers import ExclusiveQueueEventTrigger, value_from_event
    from taskflow_exclusive.errors import LeaseExpiredError

    queue = ExclusiveQueue(queue_spec, name="leased", storage=file_url)
    values = [{"n": 0, "pad": "inline"}, {"n": 1, "pad": "p" * 100_000}]  # inline and stored
    queue.put_many(values)
    trigger = ExclusiveQueueEventTrigger(queue.backend.spec, "leased", poll_interval=0.05, lease_seconds=1.5)
    events: list[dict] = []

    async def watch():
        async for event in trigger.run():
            events.append(event.payload)
            if len(events) == 4:
                return

    asyncio.run(asyncio.wait_for(watch(), 30))  # 2 events, nobody takes them, 2 more after 1.5 s
    first = sorted(events[:2], key=lambda e: e["item"]["id"])  # leases ending in the same
    second = sorted(events[2:], key=lambda e: e["item"]["id"])  # millisecond come back in any order
    # the live events first, within their 1.5 s leases
    got = [value_from_event(live, consumer_id=f"run-{n}") for n, live in enumerate(second)]
    assert sorted(got, key=lambda v: v["n"]) == values
    assert [e["item"]["id"] for e in first] == [e["item"]["id"] for e in second]
    assert all(new["token"] > old["token"] for old, new in zip(first, second, strict=True))
    for n, (stale, live) in enumerate(zip(first, second, strict=True)):
        with pytest.raises(LeaseExpiredError, match="had ended before this run took it") as refused:
            value_from_event(stale, consumer_id=f"stale-{n}")
        assert refused.value.token == stale["token"] and refused.value.item_id == stale["item"]["id"]
        assert value_from_event(live, consumer_id=f"run-{n}") == got[n]  # the run's retry
    assert (len(queue), queue.in_flight(), queue.stats()["acked"]) == (0, [], 2)


def test_an_event_fired_for_one_dag_is_refused_in_another(airflow_db, tmp_path, queue_spec):
    queue = ExclusiveQueue(queue_spec, name="addressed")
    queue.put_many(["for orders", "for this dag"])
    first, second = (item.to_dict() for item in queue.peek(2))
    event = {"queue": "addressed", "spec": queue.backend.spec}
    conf = {
        "results": str(tmp_path),
        "elsewhere": {**event, "item": first, "dag_id": "orders"},
        "here": {**event, "item": second, "dag_id": "queue_event_addressed"},
    }
    result = run_dag(DAGS / "queue_event_addressed.py", conf=conf)
    assert result.task_state("take") == "success", result.states
    refused, taken = recorded(tmp_path)
    assert (
        "fired for a run of DAG 'orders'" in refused["refused"]
        and "queue_event_addressed" in refused["refused"]
    )
    assert taken == {"value": "for this dag"}


def test_an_asset_event_extra_with_the_payload_inside_is_read_too(queue_spec):
    from taskflow_exclusive.airflow.queues_triggers import value_from_event

    queue = ExclusiveQueue(queue_spec, name="extra")
    queue.put("inline")
    item = queue.peek(1)[0]

    class AssetEvent:
        def __init__(self, extra: dict) -> None:
            self.extra = extra

    event = AssetEvent({"from_trigger": True, "payload": {"queue": "extra", "item": item.to_dict()}})
    assert value_from_event(event) == "inline"


def test_the_provider_registers_the_exclusive_redis_scheme_for_message_queue_triggers():
    from taskflow_exclusive.airflow.provider import get_provider_info
    from taskflow_exclusive.airflow.queues_triggers import (
        ExclusiveQueueEventTrigger,
        ExclusiveQueueMessageProvider,
    )

    (name,) = get_provider_info()["queues"]
    module, _, cls = name.rpartition(".")
    provider = getattr(__import__(module, fromlist=[cls]), cls)()
    assert isinstance(provider, ExclusiveQueueMessageProvider)
    assert provider.scheme_matches("exclusive+redis") and not provider.scheme_matches("redis+pubsub")
    assert provider.trigger_class() is ExclusiveQueueEventTrigger


def test_message_queue_trigger_builds_our_trigger_when_common_messaging_is_installed(queue_spec):
    pytest.importorskip(
        "airflow.providers.common.messaging", reason="apache-airflow-providers-common-messaging"
    )
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger

    from taskflow_exclusive.airflow.queues_triggers import ExclusiveQueueEventTrigger

    trigger = MessageQueueTrigger(scheme="exclusive+redis", spec=queue_spec, queue_name="orders")
    assert isinstance(trigger.trigger, ExclusiveQueueEventTrigger)
    assert trigger.serialize()[1]["queue_name"] == "orders"


def _watchers(node) -> list:
    """Every asset watcher in a serialized DAG, wherever the timetable keeps it."""
    if isinstance(node, dict):
        return list(node.get("watchers", [])) + [w for v in node.values() for w in _watchers(v)]
    if isinstance(node, list):
        return [w for v in node for w in _watchers(v)]
    return []


def _watched_dag(trigger):
    import pendulum
    from airflow.sdk import Asset, AssetWatcher, dag, task

    try:
        from airflow.serialization.serialized_objects import DagSerialization
    except ImportError:  # Airflow 3.1: the same to_dict on SerializedDAG
        from airflow.serialization.serialized_objects import SerializedDAG as DagSerialization

    asset = Asset("tfx_queue_items", watchers=[AssetWatcher(name="items", trigger=trigger)])

    @dag(schedule=[asset], start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
    def one_run_per_item():
        @task
        def handle() -> None: ...

        handle()

    found = _watchers(DagSerialization.to_dict(one_run_per_item()))
    (watcher,) = found
    return watcher


def test_an_asset_watcher_on_the_queue_serializes_without_the_password():
    from taskflow_exclusive.airflow.queues_triggers import ExclusiveQueueEventTrigger

    spec = f"redis://app:{PASSWORD}@127.0.0.1:6379/14?prefix=x"
    watcher = _watched_dag(ExclusiveQueueEventTrigger(spec, "orders"))
    assert watcher["trigger"]["classpath"].endswith("queues_triggers.ExclusiveQueueEventTrigger")
    assert watcher["trigger"]["kwargs"]["queue_name"] == "orders"
    assert PASSWORD not in json.dumps(watcher) and "app:***@" in watcher["trigger"]["kwargs"]["spec"]


def test_a_message_queue_trigger_watcher_serializes_as_our_trigger():
    pytest.importorskip(
        "airflow.providers.common.messaging", reason="apache-airflow-providers-common-messaging"
    )
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger

    trigger = MessageQueueTrigger(scheme="exclusive+redis", spec="tfx_queue_conn", queue_name="orders")
    watcher = _watched_dag(trigger)
    assert watcher["trigger"]["classpath"].endswith("queues_triggers.ExclusiveQueueEventTrigger")
    assert watcher["trigger"]["kwargs"] == {
        "spec": "tfx_queue_conn",
        "queue_name": "orders",
        "poll_interval": 1.0,
        "min_interval": 0.0,
        "dag_id": None,
        "lease_seconds": None,
    }
