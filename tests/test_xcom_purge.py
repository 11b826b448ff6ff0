"""ExclusiveXCom.purge removes only what the purged XCom row itself stored (real dag.test() runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.airflow_harness import DAGS, recorded, run_dag_in_subprocess

BACKEND = "taskflow_exclusive.xcom.ExclusiveXCom"


@pytest.fixture(scope="module")
def passthrough_run(airflow_db, tmp_path_factory):
    results = tmp_path_factory.mktemp("xcom-purge-results")
    storage = tmp_path_factory.mktemp("xcom-purge-store").as_uri()
    result = run_dag_in_subprocess(
        DAGS / "xcom_purge_passthrough.py",
        conf={"results": str(results)},
        env={
            "AIRFLOW__CORE__XCOM_BACKEND": BACKEND,
            "AIRFLOW__TASKFLOW_EXCLUSIVE__XCOM_THRESHOLD": "1024",
            "AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_STORAGE_URL": storage,
        },
    )
    return result, recorded(results)


def test_a_retried_pass_through_task_leaves_the_upstream_value_to_its_consumer(passthrough_run):
    result, rows = passthrough_run
    assert result.try_number("pass_through") == 2 and result.task_state("pass_through") == "success"
    assert result.task_state("consume") == "success", result.output[-4000:]
    (consumed,) = [r for r in rows if r["check"] == "consume"]
    assert consumed["value"] == {"rows": list(range(100))}
    assert Path(consumed["uri"].removeprefix("file://")).exists()


def test_a_handle_nested_deeper_in_the_retried_row_is_not_purged_either(passthrough_run):
    result, rows = passthrough_run
    assert result.try_number("nested_pass_through") == 2
    assert result.task_state("consume_nested") == "success", result.output[-4000:]
    (consumed,) = [r for r in rows if r["check"] == "consume_nested"]
    assert consumed["value"] == "nested value"


def test_a_retry_still_purges_the_values_the_task_published_itself(passthrough_run):
    result, rows = passthrough_run
    assert result.try_number("own_value") == 2 and result.task_state("own_value") == "success"
    (own,) = [r for r in rows if r["check"] == "own"]
    data = Path(own["uri"].removeprefix("file://"))
    assert "/own_value/-1/try1-" in own["uri"]
    assert not data.exists(), "try 1's own value survived the retry"
    assert not data.with_name(data.name.split(".")[0] + ".manifest.json").exists()


# --- the same rule, called directly (no Airflow run) -----------------------------------------


def test_purge_of_a_row_carrying_an_upstream_handle_removes_only_the_tasks_own_values(tmp_path, monkeypatch):
    from airflow.sdk.bases.xcom import BaseXCom

    from taskflow_exclusive import ExclusiveOutput
    from taskflow_exclusive.airflow.serde import allow_handle_deserialization
    from taskflow_exclusive.airflow.xcom import ExclusiveXCom, _Coordinates, _deleting
    from taskflow_exclusive.identity import TaskInstanceId

    storage = (tmp_path / "store").as_uri()
    monkeypatch.setenv("AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_STORAGE_URL", storage)
    allow_handle_deserialization()
    output = ExclusiveOutput(storage=storage)
    upstream = output.publish("upstream's", task=TaskInstanceId("d", "r", "produce", -1, 1))
    own = output.publish("mine", task=TaskInstanceId("d", "r", "pass_through", -1, 1))
    row = type("Row", (), {"key": "return_value", "value": BaseXCom.serialize_value([upstream, {"x": own}])})

    token = _deleting.set(_Coordinates("d", "r", "pass_through", -1, "return_value"))
    try:
        ExclusiveXCom.purge(row)
    finally:
        _deleting.reset(token)

    assert upstream.claim(consumer_id="the real consumer") == "upstream's"
    assert not Path(own.uri.removeprefix("file://")).exists()
