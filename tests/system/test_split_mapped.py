"""``split=True`` with ``.expand``: each item is delivered exactly once, to its own mapped task."""

from __future__ import annotations

from collections import Counter

import pytest

pytestmark = pytest.mark.system

ITEMS = 8


def test_each_item_goes_to_exactly_one_mapped_consumer(deployed, system_summary):
    run = deployed["sys_split_mapped"]
    assert run.state == "success", run.explain()
    mapped = run.mapped("consume")
    assert [(ti.map_index, ti.state, ti.try_number) for ti in mapped] == [
        (i, "success", 1) for i in range(ITEMS)
    ], run.explain()

    (produced,) = run.records_of("produce")
    delivered = [r for r in run.records if r["task_id"] == "consume"]
    assert sorted((r["map_index"], r["value"]["item"]) for r in delivered) == [(i, i) for i in range(ITEMS)]
    assert {r["value"]["nonce"] for r in delivered} == {produced["nonce"]}
    assert all(r["intact"] for r in delivered)

    handles = run.handles("produce")
    assert len({h.uri for h in handles}) == ITEMS
    for index, handle in enumerate(handles):
        assert [h.consumer_id for h in handle.holders()] == [run.consumer_id("consume", index)]

    if deployed.is_celery:
        workers = Counter(r["worker"] for r in delivered)
        system_summary.append(f"{deployed.name}: mapped consumers per worker {dict(sorted(workers.items()))}")
        assert set(workers) == {"w1", "w2"}, workers
