"""Opt-in lineage: ``outlets=[Asset(...)]`` on @exclusive_task, proven with dag.test().

The asset graph the UI draws comes from the task-outlet references Airflow
stores for the DAG, and each run's asset event carries the stored values.
"""

from __future__ import annotations

from taskflow_exclusive.airflow.lineage import EXTRA_KEY
from tests.airflow_harness import DAGS, recorded, run_dag_in_subprocess
from tests.taskflow_helpers import STORAGE_ENV, by_task

ORDERS = "taskflow-exclusive://lineage/orders"
REGIONS = "taskflow-exclusive://lineage/regions"


def _events(run_id: str) -> dict[str, list]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = (
        select(AssetModel.uri, AssetEvent.source_task_id, AssetEvent.extra)
        .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
        .where(AssetEvent.source_dag_id == "exclusive_lineage", AssetEvent.source_run_id == run_id)
    )
    with create_session() as session:
        found: dict[str, list] = {}
        for uri, task_id, extra in session.execute(query):
            found.setdefault(uri, []).append((task_id, extra))
        return found


def _producers() -> set[tuple[str, str]]:
    from airflow.models.asset import AssetModel, TaskOutletAssetReference
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = (
        select(TaskOutletAssetReference.task_id, AssetModel.uri)
        .join(AssetModel, TaskOutletAssetReference.asset_id == AssetModel.id)
        .where(TaskOutletAssetReference.dag_id == "exclusive_lineage")
    )
    with create_session() as session:
        return {tuple(row) for row in session.execute(query)}


def test_asset_outlets_record_which_task_stored_which_values(airflow_db, tmp_path):
    result = run_dag_in_subprocess(
        DAGS / "exclusive_lineage.py",
        conf={"results": str(tmp_path / "r")},
        env={STORAGE_ENV: (tmp_path / "store").as_uri()},
    )
    assert result.state == "success", (result.states, result.output[-4000:])
    notes = {row["task"]: row for rows in by_task(recorded(tmp_path / "r")).values() for row in rows}

    # The asset graph: the decorated tasks are the producers of their assets, and only they.
    assert _producers() == {("extract", ORDERS), ("regions", REGIONS)}

    events = _events(result.run_id)
    assert set(events) == {ORDERS, REGIONS}  # no_outlets added nothing: lineage is opt-in
    [(task_id, extra)] = events[ORDERS]
    assert task_id == "extract"
    described = extra[EXTRA_KEY]
    assert described["count"] == 1
    assert [v["uri"] for v in described["values"]] == notes["extract"]["uris"]
    assert [v["digest"] for v in described["values"]] == notes["extract"]["digests"]
    assert described["values"][0]["serializer"] == "json" and described["values"][0]["max_claims"] == 1

    [(task_id, extra)] = events[REGIONS]
    assert task_id == "regions"
    assert extra[EXTRA_KEY]["count"] == 3
    assert [v["uri"] for v in extra[EXTRA_KEY]["values"]] == notes["regions"]["uris"]
    assert not any("password" in str(v) or "secret" in str(v) for v in extra[EXTRA_KEY]["values"])
