"""ExclusiveXCom in real dag.test() runs (a fresh interpreter with the backend configured)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.airflow_harness import DAGS, recorded, run_dag_in_subprocess

BACKEND = "taskflow_exclusive.xcom.ExclusiveXCom"


def _env(storage: str, **extra: str) -> dict[str, str]:
    return {
        "AIRFLOW__CORE__XCOM_BACKEND": BACKEND,
        "AIRFLOW__TASKFLOW_EXCLUSIVE__XCOM_THRESHOLD": "1024",
        "AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_STORAGE_URL": storage,
        **extra,
    }


@pytest.fixture(scope="module")
def offload_run(airflow_db, tmp_path_factory):
    results = tmp_path_factory.mktemp("xcom-offload-results")
    storage = (tmp_path_factory.mktemp("xcom-offload-store")).as_uri()
    result = run_dag_in_subprocess(
        DAGS / "xcom_offload.py", conf={"results": str(results)}, env=_env(storage)
    )
    rows = recorded(results)
    return result, rows, storage


def _one(rows, check):
    found = [r for r in rows if r.get("check") == check]
    assert len(found) == 1, (check, rows)
    return found[0]


def test_every_task_of_the_offload_dag_succeeds(offload_run):
    result, _, _ = offload_run
    failed = {k: v for k, v in result.states.items() if v[0] != "success"}
    assert failed == {}, result.output[-5000:]
    assert result.state == "success"


def test_large_values_are_offloaded_and_small_ones_stay_inline(offload_run):
    _, rows, storage = offload_run
    stored = _one(rows, "rows")
    assert stored["big"] is True
    assert stored["frame"] is True
    assert stored["items"] is True
    assert stored["small"] is False
    assert stored["pair"] is False
    assert stored["small_key"] is False
    assert stored["big_key"] is True
    assert stored["big_uri"].startswith(storage)
    assert "/big_list/-1/xcom/return_value/" in stored["big_uri"]
    path = Path(stored["big_uri"].removeprefix("file://"))
    assert path.exists() and path.with_name(path.name.split(".")[0] + ".manifest.json").exists()


def test_types_survive_offloading(offload_run):
    _, rows, _ = offload_run
    values = _one(rows, "values")
    assert values["big_ok"] is True
    assert values["df_is_frame"] is True and values["df_ok"] is True
    assert values["small"] == {"a": 1}
    assert values["pair_type"] == "tuple" and values["pair"] == [1, "two"]
    assert values["big_key_ok"] is True and values["small_key"] == 7


def test_values_airflow_serde_cannot_encode_are_offloaded_whatever_their_size(offload_run):
    _, rows, _ = offload_run
    assert _one(rows, "rows")["raw"] is True
    values = _one(rows, "values")
    assert values["raw_type"] == "bytes" and values["raw_ok"] is True


def test_a_user_value_shaped_like_a_reference_is_escaped_and_never_followed(offload_run):
    _, rows, _ = offload_run
    assert _one(rows, "rows")["fake_stored_marker"] == "xcom-escaped/1"
    fake = _one(rows, "values")["fake"]
    assert fake["__taskflow_exclusive__"] == "xcom-ref/1"
    assert fake["handle"]["uri"] == "file:///etc/passwd"  # returned as data, not dereferenced


def test_mapped_tasks_expand_over_an_offloaded_list(offload_run):
    result, rows, _ = offload_run
    assert result.mapped_states("one_item") == dict.fromkeys(range(50), "success")
    items = sorted(r["item"] for r in rows if r.get("check") == "mapped")
    assert items == sorted(f"item-{i:03d}-" + "x" * 100 for i in range(50))


def test_classic_operator_xcoms_are_offloaded_and_xcom_pull_of_several_tasks_works(offload_run):
    _, rows, _ = offload_run
    stored = _one(rows, "rows")
    assert stored["loud"] is True and stored["loud_ok"] is True
    assert stored["several"] == [{"a": 1}, [1, "two"]]


def test_importing_the_backend_is_cheap_and_imports_no_storage_code():
    code = textwrap.dedent(
        """
        import sys
        import airflow.sdk.bases.xcom
        before = set(sys.modules)
        import taskflow_exclusive.airflow.xcom
        heavy_roots = {"fsspec", "s3fs", "gcsfs", "cloudpickle", "pandas", "pyarrow", "numpy"}
        ours = {"taskflow_exclusive.storage.store", "taskflow_exclusive.publishing"}
        new = set(sys.modules) - before
        print(sorted(m for m in new if m.split(".")[0] in heavy_roots or m in ours))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_misconfigured_backend_does_not_take_airflow_components_down(airflow_db):
    env = {
        **os.environ,
        **_env("nosuch://bucket/x"),
        "AIRFLOW__TASKFLOW_EXCLUSIVE__XCOM_THRESHOLD": "not-a-number",
    }
    for command in (["dags", "list"], ["config", "get-value", "core", "xcom_backend"]):
        done = subprocess.run(
            [sys.executable, "-m", "airflow", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    assert BACKEND in done.stdout


@pytest.fixture(scope="module")
def claims_run(airflow_db, tmp_path_factory):
    results = tmp_path_factory.mktemp("xcom-claims-results")
    storage = (tmp_path_factory.mktemp("xcom-claims-store")).as_uri()
    result = run_dag_in_subprocess(
        DAGS / "xcom_claims.py",
        conf={"results": str(results), "fail_producer_once": True},
        env=_env(storage),
    )
    return result, recorded(results)


def _claims(rows, target, key="return_value"):
    return [r for r in rows if r.get("check") == "claim" and r["target"] == target and r["key"] == key]


def test_two_tasks_racing_for_an_offloaded_xcom_one_wins_one_is_told_the_holder(claims_run):
    result, rows = claims_run
    outcomes = {r["who"]: r for r in _claims(rows, "big")}
    assert sorted(r["outcome"] for r in outcomes.values()) == ["refused", "won"]
    winner = next(r for r in outcomes.values() if r["outcome"] == "won")
    loser = next(r for r in outcomes.values() if r["outcome"] == "refused")
    assert winner["ok"] is True
    assert loser["holder"] == f"xcom_claims/{result.run_id}/{winner['who']}/-1"
    assert {result.task_state(winner["who"]), result.task_state(loser["who"])} == {"success", "failed"}
    assert "AlreadyClaimedError" in result.output


def test_inline_xcoms_are_claimable_once_too(claims_run):
    result, rows = claims_run
    outcomes = sorted(r["outcome"] for r in _claims(rows, "small"))
    assert outcomes == ["refused", "won"]
    assert sorted([result.task_state("inline_a"), result.task_state("inline_b")]) == ["failed", "success"]


@pytest.mark.parametrize("target", ["big", "small"], ids=["offloaded", "inline"])
def test_a_refused_xcom_claim_fails_the_task_without_using_its_retries(claims_run, target):
    """Both claimers have retries=2; the loser is refused once, on try 1 (the no-retry form)."""
    result, rows = claims_run
    refused = [r for r in _claims(rows, target) if r["outcome"] == "refused"]
    assert len(refused) == 1, refused
    assert refused[0]["no_retry"] is True
    assert result.task_state(refused[0]["who"]) == "failed"
    assert result.try_number(refused[0]["who"]) == 1


def test_a_claiming_task_that_fails_gets_the_same_value_on_its_retry(claims_run):
    result, rows = claims_run
    flaky = sorted((r["try_number"], r["value"]) for r in rows if r.get("check") == "flaky")
    assert flaky == [(1, 42), (2, 42)]
    assert result.task_state("flaky_claimer") == "success"
    assert result.try_number("flaky_claimer") == 2


def test_a_producer_retry_purges_the_objects_of_the_failed_try(claims_run):
    result, rows = claims_run
    assert result.try_number("big") == 2 and result.task_state("big") == "success"
    (first,) = [r["uri"] for r in rows if r.get("check") == "try1-object"]
    (final,) = [r["uri"] for r in rows if r.get("check") == "final-object"]
    assert first != final
    assert "/try1-" in first  # pushed inside try 1; the retry's return value is pushed after its context
    first_path = Path(first.removeprefix("file://"))
    assert not first_path.exists(), "try 1's object survived the retry"
    assert not first_path.with_name(first_path.name.split(".")[0] + ".manifest.json").exists()
    assert Path(final.removeprefix("file://")).exists()


def test_a_deleted_object_fails_the_consumer_with_object_missing_not_a_path_string(airflow_db, tmp_path):
    storage = (tmp_path / "store").as_uri()
    result = run_dag_in_subprocess(DAGS / "xcom_missing.py", conf={}, env=_env(storage))
    assert result.task_state("produce") == "success"
    assert result.task_state("lose_it") == "success"
    assert result.task_state("consume") == "failed"
    assert "ObjectMissingError" in result.output
    assert "does not exist" in result.output


def test_exclusive_task_handles_are_stored_as_handles_never_offloaded_twice(airflow_db, tmp_path):
    storage = (tmp_path / "store").as_uri()
    results = tmp_path / "results"
    result = run_dag_in_subprocess(
        DAGS / "xcom_with_exclusive_task.py",
        conf={"results": str(results)},
        env=_env(storage, AIRFLOW__TASKFLOW_EXCLUSIVE__XCOM_THRESHOLD="0"),
    )
    assert result.state == "success", result.output[-4000:]
    rows = recorded(results)
    (handle_row,) = [r for r in rows if r["check"] == "handle"]
    assert handle_row["is_handle"] is True and handle_row["value_ok"] is True
    assert handle_row["stored_classname"] == "taskflow_exclusive.handle.ExclusiveHandle"
    assert handle_row["stored_marker"] is None  # a handle, not a reference to an offloaded handle
    assert handle_row["plain_marker"] == "xcom-ref/1"  # threshold 0 does offload ordinary values
    assert handle_row["split_stored_as"] == "taskflow_exclusive.airflow.results.SplitHandles"
    assert sorted(r["value"] for r in rows if r["check"] == "part") == ["part-0", "part-1", "part-2"]
    # Only the exclusive values and the one offloaded plain value were written: no handle files.
    manifests = sorted(p.parent.parent.name for p in (tmp_path / "store").rglob("*.manifest.json"))
    assert manifests.count("produce") == 1 and manifests.count("parts") == 3
