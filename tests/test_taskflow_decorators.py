"""@exclusive_task and @exclusive_output in real dag.test() runs: shapes, Claimed inputs, handles.

Every DAG stores through the Airflow Variable (see tests/taskflow_helpers.py).
"""

from __future__ import annotations

import pytest

from taskflow_exclusive import Claimed, ExclusiveHandle, exclusive_output, exclusive_task
from tests.airflow_harness import DAGS, recorded, run_dag
from tests.taskflow_helpers import by_task, use_storage


def test_consumers_receive_handle_objects_and_claimed_inputs_on_every_storage(
    airflow_db, tmp_path, monkeypatch, storage_url
):
    use_storage(monkeypatch, storage_url)
    result = run_dag(DAGS / "exclusive_happy_path.py", conf={"results": str(tmp_path)})
    assert result.state == "success", result.states
    rows = by_task(recorded(tmp_path))

    inspected = rows["inspect_handle"][0]
    assert (inspected["module"], inspected["type"]) == ("taskflow_exclusive.handle", "ExclusiveHandle")
    assert inspected["value"] == [{"id": 1, "total": 9.5}, {"id": 2, "total": 20.0}]
    assert inspected["uri"].startswith(storage_url.rstrip("/").split("://")[0] + "://")
    assert "/exclusive_happy_path/" in inspected["uri"] and "/extract/-1/try1-" in inspected["uri"]
    assert inspected["producer"] == f"exclusive_happy_path/{result.run_id}/extract/-1#try1"
    assert inspected["holders"] == [f"exclusive_happy_path/{result.run_id}/inspect_handle/-1"]

    # Claimed[list]: transform got the value (pickled, gzip), load got transform's published result.
    assert rows["transform"] == [{"task": "transform", "received": [3, 4, 5]}]
    assert rows["load"] == [{"task": "load", "received": [30, 40, 50]}]
    # A sink returning None publishes nothing, so nothing is pushed to XCom.
    assert rows["after_load"] == [{"task": "after_load", "pushed": None}]


def test_split_streams_items_and_each_mapped_task_gets_its_own_handle(
    airflow_db, tmp_path, monkeypatch, file_url
):
    use_storage(monkeypatch, file_url)
    result = run_dag(DAGS / "exclusive_split.py", conf={"results": str(tmp_path)})
    assert result.state == "success", result.states
    assert result.mapped_states("consume") == {0: "success", 1: "success", 2: "success"}
    assert result.mapped_states("double") == {0: "success", 1: "success", 2: "success", 3: "success"}
    rows = by_task(recorded(tmp_path))

    # The generator is consumed one item at a time: item k is stored before item k+1 is made.
    produced = sorted(rows["produce"], key=lambda r: r["item"])
    assert [r["stored_before_item"] for r in produced] == [0, 1, 2]

    consumed = {r["map_index"]: r for r in rows["consume"]}
    assert {i: r["value"]["region"] for i, r in consumed.items()} == {0: "north", 1: "south", 2: "east"}
    assert {r["type"] for r in consumed.values()} == {"ExclusiveHandle"}
    assert len({r["uri"] for r in consumed.values()}) == 3  # each item is its own object
    assert rows["count"] == [{"task": "count", "n": 3, "types": ["ExclusiveHandle"]}]
    # Claimed[list] over the handles of a mapped @exclusive_task (a lazy XCom sequence).
    assert rows["collect"] == [{"task": "collect", "value": [2, 4, 6, 8]}]


def test_multiple_outputs_store_one_value_per_key(airflow_db, tmp_path, monkeypatch, file_url):
    use_storage(monkeypatch, file_url)
    result = run_dag(DAGS / "exclusive_multiple_outputs.py", conf={"results": str(tmp_path)})
    assert result.state == "success", result.states
    rows = by_task(recorded(tmp_path))
    keys = {r["key"]: r for r in rows["one_key"]}
    assert keys["orders"]["value"] == [1, 2]
    assert keys["customers"]["value"] == ["ann", "bob"]
    assert keys["orders"]["uri"] != keys["customers"]["uri"]
    assert "/inferred/-1/try1-" in keys["orders"]["uri"]
    # Explicit multiple_outputs=True: the whole dict of handles, claimed with Claimed[dict].
    assert rows["both"] == [{"task": "both", "value": {"raw": "b'\\x00\\x01'", "note": "'text'"}}]


def test_exclusive_output_under_task_gives_what_exclusive_task_gives(
    airflow_db, tmp_path, monkeypatch, file_url
):
    use_storage(monkeypatch, file_url)
    result = run_dag(DAGS / "exclusive_output_under_task.py", conf={"results": str(tmp_path)})
    assert result.state == "success", result.states
    checks = by_task(recorded(tmp_path))["check"]
    shapes: dict[str, list] = {}
    for row in checks:
        shapes.setdefault(row["name"], []).append((row["shape"], row["value"]))

    handle = "ExclusiveHandle"
    assert shapes["single"] == [(handle, [1, 2])] * 2
    assert shapes["keys"] == [({"a": handle, "b": handle}, {"a": 1, "b": [2]})] * 3
    assert shapes["items"] == [([handle] * 3, ["x", "y", "z"])] * 2
    assert shapes["python"] == [(handle, ["via", "task.python"])]
    assert shapes["claimed"] == [(handle, "claimed under task")]
    assert sorted(r["value"] for r in by_task(recorded(tmp_path))["item"]) == ["x", "y", "z"]
    assert result.mapped_states("item") == {0: "success", 1: "success", 2: "success"}


# -- arguments are checked when the DAG file is parsed, not when the task runs -----------------


def test_invalid_arguments_fail_at_decoration():
    with pytest.raises(ValueError, match="split=True and multiple_outputs=True"):
        exclusive_task(split=True, multiple_outputs=True)
    with pytest.raises(ValueError, match="max_claims must be an int from 1 to 10000"):
        exclusive_task(max_claims=0)
    with pytest.raises(Exception, match="nope"):
        exclusive_task(serializer="nope")
    with pytest.raises(ValueError, match="split=True and multiple_outputs=True"):
        exclusive_output(split=True, multiple_outputs=True)


def test_async_functions_are_refused_when_the_task_is_created():
    from airflow.sdk import DAG

    @exclusive_task
    async def fetch() -> list:
        return [1]

    with DAG("tfx_async_refused", schedule=None), pytest.raises(TypeError, match="async function 'fetch'"):
        fetch()


def test_claimed_parameter_must_receive_handles(memory_url):
    @exclusive_output(storage=memory_url)
    def count(rows: Claimed[list]) -> int:
        return len(rows)

    with pytest.raises(TypeError, match=r"Parameter 'rows' is annotated Claimed\[\.\.\.\].*received a list"):
        count([1, 2, 3])
    from taskflow_exclusive import publish

    handle = count(publish([1, 2, 3], storage=memory_url))
    assert isinstance(handle, ExclusiveHandle)
    assert handle.claim(consumer_id="reader") == 3
