"""Hand-offs to triggered DAGs through real dag.test() runs of a parent and a child DAG file.

The parent hands two values to ``grant_child`` with Airflow's own TriggerDagRunOperator;
the child claims them from its run's conf. Grants for the refusal cases are made here
with the same library calls the parent's grant task makes, on the same storage.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import taskflow_exclusive.examples
from taskflow_exclusive import publish
from taskflow_exclusive.consuming import record_claim
from taskflow_exclusive.grants import grant_handle, handoff_consumer_id, sign
from taskflow_exclusive.signing import SIGNING_VARIABLE, SigningKeys
from tests.airflow_harness import DAGS, recorded, run_dag, run_dag_in_subprocess
from tests.taskflow_helpers import by_task, use_storage

KEY_ENV = f"AIRFLOW_VAR_{SIGNING_VARIABLE.upper()}"
OLD, NEW = "old-" + "o" * 40, "new-" + "n" * 40


@pytest.fixture
def storage(monkeypatch, file_url) -> str:
    monkeypatch.setenv(KEY_ENV, "k" * 40)
    return use_storage(monkeypatch, file_url)


def _child(conf: dict, results) -> tuple[object, dict]:
    """Run the child in its own interpreter (its log is the evidence), with this process's settings."""
    result = run_dag_in_subprocess(DAGS / "grant_child.py", conf={**conf, "results": str(results)})
    return result, by_task(recorded(results)) if results.exists() else {}


def _own_grants(count: int = 3, **kwargs) -> dict:
    """Grants to grant_child for its three consumers (the first ``count`` of them)."""
    values = {"orders": [1, 2, 3], "totals": [20, 5], "count": 2}
    return {
        name: grant_handle(
            publish(value, storage=None), "grant_child", granted_by="test/r/grant/-1", **kwargs
        ).to_dict()
        for name, value in list(values.items())[:count]
    }


def test_the_parent_hands_off_and_the_child_claims_in_both_styles(airflow_db, storage, tmp_path):
    parent = run_dag(DAGS / "grant_parent.py", conf={"results": str(tmp_path / "parent")})
    assert parent.task_state("trigger_child") == "success", parent.states
    # A parent task claiming a handed-off value is refused at once, naming the hand-off.
    assert (parent.task_state("steal"), parent.try_number("steal")) == ("failed", 1)
    rows = by_task(recorded(tmp_path / "parent"))
    granter = f"grant_parent/{parent.run_id}/grant_extract_to_grant_child/-1"
    assert parent.task_state("grant_summarize_count_to_grant_child") == "success"
    assert rows["steal"] == [{"task": "steal", "holder": handoff_consumer_id("grant_child", None, granter)}]
    conf = {name: rows["show_grants"][0][name] for name in ("orders", "totals", "count")}
    assert json.loads(json.dumps(conf)) == conf  # conf stays JSON

    child, seen = _child(conf, tmp_path / "child")
    assert child.state == "success", child.states
    assert seen["load"] == [{"task": "load", "value": [{"id": 1, "total": 20}, {"id": 2, "total": 5}]}]
    assert seen["audit"] == [{"task": "audit", "value": [20, 5]}]
    assert seen["count"] == [{"task": "count", "value": 2}]

    # A second child run replaying the same conf is refused, naming the first run's consumers.
    replay, refused = _child(conf, tmp_path / "replay")
    assert (replay.task_state("load"), replay.try_number("load")) == ("failed", 1)
    assert (replay.task_state("audit"), replay.try_number("audit")) == ("failed", 1)
    assert refused["audit"] == [
        {"task": "audit", "error": "AlreadyClaimedError", "holder": f"grant_child/{child.run_id}/audit/-1"}
    ]
    assert f"already claimed by 'grant_child/{child.run_id}/load/-1'" in replay.output


@pytest.mark.parametrize(
    ("spoil", "error"),
    [
        (lambda d: d.update(digest="blake3:" + "0" * 64), "GrantSignatureError"),
        (lambda d: d.update(signature="f" * 64), "GrantSignatureError"),
        (lambda d: d.update(to_run="someone-elses-run"), "GrantSignatureError"),
    ],
    ids=["value-swapped", "signature-forged", "addressee-edited"],
)
def test_a_tampered_grant_fails_the_child_on_its_first_try(airflow_db, storage, tmp_path, spoil, error):
    conf = _own_grants(1)
    spoil(conf["orders"])
    child, _ = _child(conf, tmp_path)
    assert (child.task_state("granted_orders"), child.try_number("granted_orders")) == ("failed", 1)
    assert child.task_state("load") == "upstream_failed"
    assert f"{error}: " in child.output
    assert "The task fails without retrying" in child.output


def test_a_grant_for_another_dag_is_refused(airflow_db, storage, tmp_path):
    handle = publish([1], storage=None)
    conf = {"orders": grant_handle(handle, "other_child", granted_by="test/r/grant/-1").to_dict()}
    child, _ = _child(conf, tmp_path)
    assert (child.task_state("granted_orders"), child.try_number("granted_orders")) == ("failed", 1)
    assert "GrantAddressError" in child.output and "addressed to DAG 'other_child'" in child.output


def test_an_expired_grant_is_refused(airflow_db, storage, tmp_path):
    handle = publish([1], storage=None)
    record_claim(handle, handoff_consumer_id("grant_child", None, "test/r/grant/-1"))
    expired = sign(
        uri=handle.uri,
        digest=handle.digest,
        handle=handle,
        xcom=None,
        to_dag="grant_child",
        to_run=None,
        granted_by="test/r/grant/-1",
        expires_in=timedelta(hours=1),
        now=datetime.now(timezone.utc) - timedelta(hours=2),
    )
    child, _ = _child({"orders": expired.to_dict()}, tmp_path)
    assert (child.task_state("granted_orders"), child.try_number("granted_orders")) == ("failed", 1)
    assert "GrantExpiredError" in child.output and "expired at" in child.output


def test_without_a_signing_key_the_child_refuses_and_says_which_settings(
    airflow_db, storage, tmp_path, monkeypatch
):
    conf = _own_grants(1)
    monkeypatch.delenv(KEY_ENV)
    child, _ = _child(conf, tmp_path)
    assert child.task_state("granted_orders") == "failed"
    assert "SigningKeyError: No signing key is configured" in child.output
    assert "taskflow_exclusive_signing" in child.output and SIGNING_VARIABLE in child.output


def test_a_grant_signed_before_a_key_rotation_is_still_accepted(airflow_db, storage, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, json.dumps({"sign_with": "old", "keys": {"old": OLD}}))
    conf = _own_grants()
    assert {document["key_id"] for document in conf.values()} == {"old"}
    monkeypatch.setenv(KEY_ENV, json.dumps({"sign_with": "new", "keys": {"new": NEW, "old": OLD}}))
    child, seen = _child(conf, tmp_path / "rotated")
    assert child.state == "success", child.states
    assert seen["load"][0]["value"] == [1, 2, 3]
    # Once the old key is retired, what it signed is refused.
    monkeypatch.setenv(KEY_ENV, json.dumps({"sign_with": "new", "keys": {"new": NEW}}))
    retired, _ = _child(_resigned_copy(conf), tmp_path / "retired")
    assert retired.task_state("granted_orders") == "failed"
    assert "signed with key 'old', which this deployment does not accept" in retired.output


def _resigned_copy(conf: dict) -> dict:
    """The same documents (still signed with the old key): only the keyring changed."""
    return json.loads(json.dumps(conf))


def test_the_keyring_is_never_logged(airflow_db, storage, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, json.dumps({"sign_with": "new", "keys": {"new": NEW, "old": OLD}}))
    conf = _own_grants()
    child, _ = _child(conf, tmp_path)
    assert child.state == "success", child.states
    assert NEW not in child.output and OLD not in child.output
    assert "new" in repr(SigningKeys.parse(json.dumps({"sign_with": "new", "keys": {"new": NEW}})))


def _xcom_env(file_url: str, exclusive_mode: str) -> dict[str, str]:
    return {
        "AIRFLOW__CORE__XCOM_BACKEND": "taskflow_exclusive.xcom.ExclusiveXCom",
        "AIRFLOW__TASKFLOW_EXCLUSIVE__XCOM_THRESHOLD": "1024",
        "AIRFLOW__TASKFLOW_EXCLUSIVE__EXCLUSIVE_MODE": exclusive_mode,
        "AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_STORAGE_URL": file_url,
        KEY_ENV: "k" * 40,
    }


@pytest.mark.parametrize("exclusive_mode", ["True", "False"])
def test_an_xcom_offloaded_by_exclusive_xcom_is_handed_off_and_exclusive_mode_guards_the_rest(
    airflow_db, tmp_path, file_url, exclusive_mode
):
    env = _xcom_env(file_url, exclusive_mode)
    parent = run_dag_in_subprocess(
        DAGS / "grant_xcom_parent.py", conf={"results": str(tmp_path / "parent")}, env=env
    )
    assert parent.task_state("grant_rows_to_grant_xcom_child") == "success", parent.output[-3000:]
    assert (parent.task_state("steal"), parent.try_number("steal")) == ("failed", 1)
    rows = by_task(recorded(tmp_path / "parent"))
    document = rows["show_grant"][0]["document"]
    assert document["xcom"] == {
        "dag_id": "grant_xcom_parent",
        "run_id": parent.run_id,
        "task_id": "rows",
        "map_index": -1,
        "key": "return_value",
    }
    assert rows["steal"][0]["holder"].startswith("handoff to grant_xcom_child by grant_xcom_parent/")
    inline = rows["show_grant"][0]["inline"]
    assert inline["handle"] is None and inline["uri"].endswith(".inline")  # granted by its content
    assert (parent.task_state("steal_count"), parent.try_number("steal_count")) == ("failed", 1)
    assert rows["steal_count"][0]["holder"].startswith("handoff to grant_xcom_child by grant_xcom_parent/")
    conf = {"rows": document, "count": inline, "results": str(tmp_path / "child")}
    child = run_dag_in_subprocess(DAGS / "grant_xcom_child.py", conf=conf, env=env)
    seen = by_task(recorded(tmp_path / "child"))
    assert seen["load"] == [{"task": "load", "lines": 1000, "type": "bytes"}]
    assert seen["peek"] == [{"task": "peek", "lines": 1000}]  # granted: pulled from the parent's run
    assert seen["tally"] == [{"task": "tally", "value": {"n": 3}}]  # an inline XCom, claimed once
    if exclusive_mode == "True":  # not granted: refused at once, retries unused
        assert (child.task_state("snoop"), child.try_number("snoop")) == ("failed", 1)
        assert seen["snoop"] == [{"task": "snoop", "error": "GrantNotInConfError"}]
        assert "Exclusive mode is on" in child.output
    else:  # the control: without exclusive mode the same pull goes through
        assert child.state == "success", child.output[-3000:]
        assert seen["snoop"] == [{"task": "snoop", "seen": True}]


def test_the_example_pair_hands_the_orders_to_the_report_and_keeps_them_there(airflow_db, storage, tmp_path):
    from airflow.models.dagrun import DagRun

    from taskflow_exclusive.examples import orders

    examples = Path(taskflow_exclusive.examples.__file__).parent / "dags"
    env = {"AIRFLOW__CORE__DAGS_FOLDER": str(examples)}  # where the package's example DAGs live
    parent = run_dag_in_subprocess(examples / "orders_handoff.py", env=env)
    assert parent.state == "success", parent.states
    audit = _xcom(parent, "audit")
    assert audit["holder"] == handoff_consumer_id(
        "orders_report", None, f"orders_handoff/{parent.run_id}/grant_extract_to_orders_report/-1"
    )
    (triggered,) = DagRun.find(dag_id="orders_report")  # what TriggerDagRunOperator created
    child = run_dag_in_subprocess(examples / "orders_report.py", conf=dict(triggered.conf), env=env)
    assert child.state == "success", child.states
    summaries = [orders.summarize(b) for b in orders.batches_by_region(orders.extract_orders())]
    report = _xcom(child, "report")
    assert report.claim("test") == orders.format_report(summaries)
    replay = run_dag_in_subprocess(examples / "orders_report.py", conf=dict(triggered.conf), env=env)
    assert (replay.task_state("report"), replay.try_number("report")) == ("failed", 1)


def _xcom(result, task_id: str):
    from airflow.models.xcom import XComModel
    from airflow.sdk.bases.xcom import BaseXCom
    from airflow.utils.session import create_session

    from taskflow_exclusive.airflow.serde import allow_handle_deserialization

    allow_handle_deserialization()

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(
                run_id=result.run_id, dag_ids=result.dag_id, task_ids=task_id, key="return_value"
            )
        ).first()
        from airflow.sdk.bases.xcom import BaseXCom

        return BaseXCom.deserialize_value(row)


def test_a_split_output_cannot_be_granted_whole(airflow_db, storage):
    """Refused when the DAG file is parsed (@exclusive_task), else by the grant task at run time."""
    import pendulum
    from airflow.sdk import DAG

    from taskflow_exclusive import exclusive_task, grant

    with DAG("grant_split_parse", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):

        @exclusive_task(split=True)
        def parts() -> list:
            return [[1], [2]]

        with pytest.raises(TypeError, match=r"task 'parts' is split=True: its output is a list of handles"):
            grant(parts(), to="grant_child")

    result = run_dag_in_subprocess(DAGS / "grant_split.py")
    assert result.task_state("parts") == "success", result.states
    assert result.task_state("grant_parts_to_grant_child") == "failed", result.states
    assert "holds a list of handles: grant() hands off one value" in result.output
