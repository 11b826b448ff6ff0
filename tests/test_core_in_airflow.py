"""The core API inside real Airflow task instances (dag.test of a DAG file)."""

from __future__ import annotations

from tests.airflow_harness import DAGS, recorded, run_dag


def test_consumer_ids_come_from_the_task_instance_and_only_one_task_gets_the_value(
    airflow_db, tmp_path, file_url
):
    result = run_dag(DAGS / "core_in_plain_tasks.py", conf={"results": str(tmp_path), "storage": file_url})
    assert result.task_state("produce") == "success"
    assert result.task_state("first") == "success"
    assert result.task_state("second") == "failed"
    rows = {row["task"]: row for row in recorded(tmp_path)}
    assert rows["first"]["outcome"] == "claimed"
    assert rows["first"]["value"] == {"rows": [1, 2, 3]}
    holder = f"core_in_plain_tasks/{result.run_id}/first/-1"
    assert rows["second"] == {
        "task": "second",
        "outcome": "refused",
        "holder": holder,
        "producer": f"core_in_plain_tasks/{result.run_id}/produce/-1#try1",
    }
    # The value sits in the producing task instance's own folder, run id encoded.
    assert "/core_in_plain_tasks/" in rows["first"]["uri"]
    assert "/produce/-1/try1-" in rows["first"]["uri"]
    assert ":" not in rows["first"]["uri"].split("://", 1)[1]
