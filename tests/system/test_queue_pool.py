"""A work queue on a real deployment: a producer task and a pool of four mapped drain tasks.

Every item is completed by exactly one drain task; the one that failed on its
first delivery was completed by the same task instance's retry (it resumes its
own lease); on the CeleryExecutor both workers drained.
"""

from __future__ import annotations

from collections import Counter

import pytest

from taskflow_exclusive.queues import ExclusiveQueue
from tests.ledgers import with_query
from tests.queue_fixtures import QUEUE_REDIS_URL
from tests.system.conftest import queue_prefix

pytestmark = pytest.mark.system

ITEMS = 24


def test_a_drain_pool_completes_each_item_once(deployed, system_summary):
    run = deployed["sys_queue_pool"]
    assert run.state == "success", run.explain()
    assert run.xcom("orders") == {"queue": "sys_pool", "items": ITEMS}
    drains = run.mapped("ship")
    assert [(ti.map_index, ti.state) for ti in drains] == [(i, "success") for i in range(4)], run.explain()

    shipped = [r for r in run.records if r["task_id"] == "ship" and "failed_on_try" not in r]
    assert Counter(r["order"] for r in shipped) == Counter(range(ITEMS))  # each item completed once
    assert all(r["intact"] for r in shipped)  # inline and S3-stored values alike
    (failure,) = [r for r in run.records if "failed_on_try" in r]
    (retried,) = [r for r in shipped if r["order"] == 3]
    assert (retried["map_index"], retried["try_number"]) == (failure["map_index"], 2)
    assert [ti.try_number for ti in drains if ti.map_index == failure["map_index"]] == [2]

    queue = ExclusiveQueue(with_query(QUEUE_REDIS_URL, prefix=queue_prefix(deployed.name)), name="sys_pool")
    assert (len(queue), queue.in_flight(), queue.dead_letters(), queue.stats()["acked"]) == (0, [], [], ITEMS)

    if deployed.is_celery:
        workers = Counter(r["worker"] for r in shipped)
        system_summary.append(f"{deployed.name}: queue items per worker {dict(sorted(workers.items()))}")
        assert set(workers) == {"w1", "w2"}, workers
