"""Hand-offs on a real deployment: the example parent triggers its child, which alone gets the value.

``orders_handoff`` grants its orders to ``orders_report`` in the conf of Airflow's own
TriggerDagRunOperator; the scheduler starts the child run, whose ``report`` claims the
orders. A second run of the child with the same conf (a replay through the REST API) is
refused, naming the first; the parent's ``audit`` was refused, naming the hand-off.
"""

from __future__ import annotations

import pytest

from taskflow_exclusive.examples import orders
from taskflow_exclusive.grants import Grant, handoff_consumer_id
from tests.system.deployment import FinishedRun

pytestmark = pytest.mark.system


def _finished(deployed, dag_id: str, run_id: str) -> FinishedRun:
    deployment = deployed.deployment
    states = deployment.wait_for_runs([(dag_id, run_id)], timeout=240)
    tis = {ti.key: ti for ti in deployment.task_instances(dag_id, run_id)}
    return FinishedRun(deployment, dag_id, run_id, states[dag_id], tis, [])


def test_the_triggered_child_alone_claims_what_its_parent_granted(deployed):
    parent = deployed["orders_handoff"]
    assert parent.state == "success", parent.explain()
    deployment = deployed.deployment
    (triggered,) = deployment.api("GET", "/api/v2/dags/orders_report/dagRuns")["dag_runs"]
    child = _finished(deployed, "orders_report", triggered["dag_run_id"])
    assert child.state == "success", child.explain()
    assert (child.ti("report").state, child.ti("report").try_number) == ("success", 1)
    summaries = [orders.summarize(b) for b in orders.batches_by_region(orders.extract_orders())]
    assert child.handles("report").claim("system-test") == orders.format_report(summaries)

    # The ledger records the hand-off on the value, and the child's report as its holder.
    hand_off = handoff_consumer_id(
        "orders_report", None, parent.consumer_id("grant_extract_to_orders_report")
    )
    extract = parent.handles("extract")
    assert [h.consumer_id for h in extract.holders()] == [hand_off]
    grant = Grant.from_dict(triggered["conf"]["orders"])
    assert [h.consumer_id for h in grant.holders()] == [child.consumer_id("report")]
    # The parent's audit came after the trigger and was refused, naming the hand-off.
    assert parent.xcom("audit") == {"refused": extract.uri, "holder": hand_off}

    # A second run of the child replaying the same conf is refused at once, naming the first.
    replay = _finished(deployed, "orders_report", deployment.trigger("orders_report", conf=triggered["conf"]))
    assert replay.state == "failed"
    assert (replay.ti("granted_orders").state, replay.ti("report").state) == ("success", "failed")
    assert replay.ti("report").try_number == 1, replay.explain()
    log = deployment.task_logs("orders_report", replay.run_id, "report")
    assert f"already claimed by '{child.consumer_id('report')}'" in log, log[-3000:]
