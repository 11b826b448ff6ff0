"""Claims between real Airflow task instances: one holder, refusals without retries, retries of both sides."""

from __future__ import annotations

from tests.airflow_harness import DAGS, recorded, run_dag, run_dag_in_subprocess
from tests.taskflow_helpers import STORAGE_ENV, by_task, stored_stems, task_folder, use_storage


def test_second_and_third_consumers_fail_at_once_naming_the_holder_in_their_log(tmp_path, airflow_db):
    storage = (tmp_path / "store").as_uri()
    result = run_dag_in_subprocess(
        DAGS / "exclusive_two_consumers.py",
        conf={"results": str(tmp_path / "results")},
        env={STORAGE_ENV: storage},
    )
    assert result.task_state("produce") == "success"
    assert result.task_state("first") == "success"
    holder = f"exclusive_two_consumers/{result.run_id}/first/-1"
    for refused in ("second", "third"):
        # retries=2, yet one try: a refused claim never succeeds on retry.
        assert (result.task_state(refused), result.try_number(refused)) == ("failed", 1)
        consumer = f"exclusive_two_consumers/{result.run_id}/{refused}/-1"
        assert (
            f"AlreadyClaimedError: The value at {storage}" in result.output
            and f"already claimed by '{holder}'" in result.output
            and f"consumer '{consumer}' cannot claim it" in result.output
        ), result.output[-4000:]
    assert "The task fails without retrying" in result.output
    rows = by_task(recorded(tmp_path / "results"))
    assert rows["first"] == [{"task": "first", "value": ["only", "once"]}]
    # The plain consumer can still catch it as taskflow_exclusive.AlreadyClaimedError.
    assert rows["second"] == [
        {"task": "second", "try_number": 1, "holder": holder, "error": "taskflow_exclusive.airflow.failures"}
    ]
    assert "third" not in rows


def test_a_retried_consumer_gets_the_same_value_again(airflow_db, tmp_path, monkeypatch, file_url):
    use_storage(monkeypatch, file_url)
    result = run_dag(DAGS / "exclusive_consumer_retry.py", conf={"results": str(tmp_path)})
    assert result.state == "success", result.states
    assert result.try_number("claim_then_fail_once") == 2
    assert result.try_number("claimed_then_fail_once") == 2
    rows = by_task(recorded(tmp_path))
    assert sorted((r["try_number"], r["value"]) for r in rows["plain"]) == [(1, [1, 2, 3]), (2, [1, 2, 3])]
    assert sorted((r["try_number"], r["value"]) for r in rows["claimed"]) == [(1, {"n": 4}), (2, {"n": 4})]


def test_producer_retries_leave_only_the_last_tries_objects(airflow_db, tmp_path, monkeypatch, file_url):
    use_storage(monkeypatch, file_url)
    result = run_dag(DAGS / "exclusive_producer_retry.py", conf={"results": str(tmp_path)})
    assert result.state == "success", result.states
    rows = by_task(recorded(tmp_path))
    consumed = {r["name"]: r for r in rows["consume"]}

    for producer in ("publish_then_fail", "split_fails_midway", "split_fails_after_publish"):
        assert result.try_number(producer) == 2
        folder = task_folder(file_url, "exclusive_producer_retry", result.run_id, producer)
        stems = stored_stems(folder)
        assert stems, f"nothing stored for {producer}"
        # Only try 2's objects remain; try 1's values, manifests (and claims) are gone.
        assert all(stem.startswith("try2-") for stem in stems), (producer, sorted(stems))
        assert {value["try"] for value in consumed[producer]["values"]} == {2}

    # What try 1 had stored before failing is gone: a committed value, two committed items
    # (removed when the generator failed), three items (removed by try 2's first publish).
    first_try = next(r for r in rows["publish_then_fail"] if r["try_number"] == 1)
    assert "/publish_then_fail/-1/try1-" in first_try["uri"]
    assert rows["split_fails_midway"] == [{"task": "split_fails_midway", "try_number": 1, "committed": 2}]
    after_publish = rows["split_fails_after_publish"]
    assert len(after_publish) == 1 and len(after_publish[0]["uris"]) == 3
    assert all("/split_fails_after_publish/-1/try1-" in uri for uri in after_publish[0]["uris"])
    assert consumed["split_fails_midway"]["values"] == [{"try": 2, "item": i} for i in range(3)]
    assert consumed["split_fails_after_publish"]["values"] == [{"try": 2, "item": i} for i in range(3)]
