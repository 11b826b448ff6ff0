"""A consumer that fails after claiming gets the same value on its retry, wherever the retry runs."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.system


def test_a_retried_consumer_gets_the_same_value_again(deployed, system_summary):
    run = deployed["sys_consumer_retry"]
    assert run.state == "success", run.explain()
    (items,) = run.records_of("produce_items")
    (one,) = run.records_of("produce_one")
    item_handles = run.handles("produce_items")
    assert len(item_handles) == 3
    consumers = [("flaky_claimed", i, items["value"][i], item_handles[i]) for i in range(3)]
    consumers.append(("flaky_plain", -1, one["value"], run.handles("produce_one")))

    moved = 0
    for task_id, map_index, expected, handle in consumers:
        ti = run.ti(task_id, map_index)
        assert (ti.state, ti.try_number) == ("success", 2), run.explain()
        tries = run.records_of(task_id, map_index)
        assert [r["try_number"] for r in tries] == [1, 2], run.explain()
        assert tries[0]["value"] == tries[1]["value"] == expected
        # One claim record, made by try 1's process: try 2 found it and was given the value.
        holders = handle.holders()
        assert [h.consumer_id for h in holders] == [run.consumer_id(task_id, map_index)]
        assert holders[0].pid == tries[0]["pid"] != tries[1]["pid"]
        moved += tries[0]["worker"] != tries[1]["worker"]
    if deployed.is_celery:
        system_summary.append(f"{deployed.name}: {moved} of {len(consumers)} retries ran on the other worker")
