"""split=True + .expand at scale: each mapped consumer reads its own handle, not the whole list.

Through a real ``dag.test()``: XCom's ``return_value`` of a split producer
stays small whatever the count, and a mapped consumer rebuilds exactly one
handle (its own). The costs as the count grows are measured by ``bench/scale.py``.
"""

from __future__ import annotations

import pytest

from taskflow_exclusive.airflow.results import HANDLES_PER_ROW, SplitHandles
from tests.airflow_harness import DAGS, recorded, run_dag
from tests.taskflow_helpers import by_task, use_storage

ITEMS = 40  # tests/dags/exclusive_split_rows.py


def test_each_mapped_consumer_rebuilds_only_its_own_handle(airflow_db, tmp_path, monkeypatch, file_url):
    use_storage(monkeypatch, file_url)
    result = run_dag(DAGS / "exclusive_split_rows.py", conf={"results": str(tmp_path)})
    assert result.state == "success", result.states
    assert ITEMS > 2 * HANDLES_PER_ROW  # the items span several rows, the last one partial
    takes = {row["map_index"]: row for row in by_task(recorded(tmp_path))["take"]}
    assert sorted(takes) == list(range(ITEMS))
    assert {i: row["value"] for i, row in takes.items()} == {i: i for i in range(ITEMS)}
    assert len({row["uri"] for row in takes.values()}) == ITEMS
    # Before, every mapped task pulled and rebuilt all ITEMS handles; now only its own.
    assert {i: row["rebuilt"] for i, row in takes.items()} == {i: [row["uri"]] for i, row in takes.items()}


def test_return_value_of_a_split_output_holds_where_the_handles_are_not_the_handles(
    airflow_db, tmp_path, monkeypatch, file_url
):
    use_storage(monkeypatch, file_url)
    result = run_dag(DAGS / "exclusive_split_rows.py", conf={"results": str(tmp_path)})
    assert result.state == "success", result.states
    [size] = by_task(recorded(tmp_path))["row_size"]
    assert size["bytes"] < 400  # 40 handles would be about 24,000 bytes
    [elsewhere] = by_task(recorded(tmp_path))["elsewhere"]  # a reference never leads to another run
    assert "belongs to another DAG run" in elsewhere["refused"] and "grant()" in elsewhere["refused"]


@pytest.mark.parametrize(
    ("data", "version"),
    [
        ({"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": -1, "length": -1, "per_row": 16}, 1),
        ({"dag_id": "", "run_id": "r", "task_id": "t", "map_index": -1, "length": 3, "per_row": 16}, 1),
        ({"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": -1, "length": 3, "per_row": 0}, 1),
        ({"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": -1, "length": 3}, 1),
        ("not a dict", 1),
    ],
)
def test_malformed_split_handles_in_xcom_are_refused_with_what_to_do(data, version):
    with pytest.raises(ValueError, match=r"malformed SplitHandles .* re-run the producer task"):
        SplitHandles.deserialize(data, version)


def test_split_handles_of_a_newer_version_are_refused():
    data = {"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": -1, "length": 3, "per_row": 16}
    with pytest.raises(ValueError, match=r"serde version 2.*same taskflow-exclusive on every worker"):
        SplitHandles.deserialize(data, 2)


def test_split_handles_index_like_a_sequence_in_the_producer(memory_url):
    from taskflow_exclusive import publish

    handles = [publish(n, storage=memory_url) for n in range(5)]
    items = SplitHandles(
        dag_id="d", run_id="r", task_id="t", map_index=-1, length=5, per_row=2, handles=handles
    )
    assert (items[0], items[-1], items[1:3]) == (handles[0], handles[4], handles[1:3])
    assert [len(row) for row in items.rows()] == [2, 2, 1]
    with pytest.raises(IndexError, match="item 5 of a split output of 5 item"):
        items[5]
