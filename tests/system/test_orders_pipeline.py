"""The bundled example DAG ``orders_pipeline`` runs on a real deployment, every hand-over a claim."""

from __future__ import annotations

import pytest

from taskflow_exclusive.examples import orders

pytestmark = pytest.mark.system


def test_orders_pipeline_succeeds_and_each_value_has_its_one_consumer(deployed):
    run = deployed["orders_pipeline"]
    assert run.state == "success", run.explain()
    assert {ti.key: (ti.state, ti.try_number) for ti in run.task_instances.values()} == {
        ("extract", -1): ("success", 1),
        ("split_by_region", -1): ("success", 1),
        ("summarize", 0): ("success", 1),
        ("summarize", 1): ("success", 1),
        ("summarize", 2): ("success", 1),
        ("report", -1): ("success", 1),
        ("audit", -1): ("success", 1),
    }, run.explain()

    summaries = [orders.summarize(batch) for batch in orders.batches_by_region(orders.extract_orders())]
    assert run.xcom("report") == orders.format_report(summaries)

    # audit came after split_by_region and was refused, told who holds the orders.
    extract = run.handles("extract")
    assert run.xcom("audit") == {"refused": extract.uri, "holder": run.consumer_id("split_by_region")}

    # The store's claim records: every value is held by exactly the task that consumed it.
    assert [h.consumer_id for h in extract.holders()] == [run.consumer_id("split_by_region")]
    batches = run.handles("split_by_region")
    assert len(batches) == 3
    for index, batch in enumerate(batches):
        assert [h.consumer_id for h in batch.holders()] == [run.consumer_id("summarize", index)]
        summary = run.handles("summarize", map_index=index)
        assert [h.consumer_id for h in summary.holders()] == [run.consumer_id("report")]
    assert extract.uri.startswith(f"{deployed.storage_url}/orders_pipeline/")
