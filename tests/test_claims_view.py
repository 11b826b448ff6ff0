"""The Claims view: its inventory of a real DAG run, and its endpoints inside Airflow's own API app.

The example DAG ``orders_pipeline`` runs once with ``dag.test()`` (values on local disk,
the session's SQLite metadata database). The endpoints are exercised through Airflow's
real ``create_app()`` (the API server's app, with this package's plugin mounted by its
entry point) and its SimpleAuthManager, with tokens the auth manager signs for an
``admin`` and a ``viewer``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import taskflow_exclusive.examples
from tests.airflow_harness import run_dag_in_subprocess

ORDERS_DAGS = Path(taskflow_exclusive.examples.__file__).parent / "dags"
DAG_ID = "orders_pipeline"
PREFIX = "/taskflow-exclusive"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


@pytest.fixture(scope="module")
def orders_run(airflow_db, tmp_path_factory):
    """One finished run of the example DAG: ``(run_id, storage_url)``."""
    storage = (tmp_path_factory.mktemp("claims-view") / "store").as_uri()
    result = run_dag_in_subprocess(
        ORDERS_DAGS / "orders_pipeline.py",
        env={
            "AIRFLOW__CORE__DAGS_FOLDER": str(ORDERS_DAGS),
            "AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_STORAGE_URL": storage,
        },
    )
    assert result.state == "success", result.output[-4000:]
    return result.run_id, storage


def consumer(run_id: str, task_id: str, map_index: int = -1) -> str:
    return f"{DAG_ID}/{run_id}/{task_id}/{map_index}"


def test_loading_the_plugin_imports_neither_fastapi_nor_the_view():
    """Every Airflow component loads the plugin; only the API server's first request builds the app."""
    script = (
        "import json, sys\n"
        "import taskflow_exclusive.airflow.plugin\n"
        "view = 'taskflow_exclusive.airflow.'\n"
        "names = ('fastapi', view + 'claims_view', view + 'inventory')\n"
        "print(json.dumps([name for name in names if name in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.splitlines()[-1]) == []


# --- the inventory ---------------------------------------------------------------------------------


def test_the_inventory_lists_every_value_of_the_run_with_its_one_holder(orders_run):
    from taskflow_exclusive.airflow.inventory import run_inventory

    run_id, storage = orders_run
    inventory = run_inventory(DAG_ID, run_id)
    produced = sorted((v.task_id, v.map_index) for v in inventory.values)
    assert produced == [
        ("extract", -1),
        ("split_by_region", -1),
        ("split_by_region", -1),
        ("split_by_region", -1),
        ("summarize", 0),
        ("summarize", 1),
        ("summarize", 2),
    ]
    holders = {
        (v.task_id, v.map_index, v.places[0].path): [h.consumer_id for h in v.holders]
        for v in inventory.values
    }
    assert holders[("extract", -1, "")] == [consumer(run_id, "split_by_region")]
    for index in range(3):
        assert holders[("split_by_region", -1, f"[{index}]")] == [consumer(run_id, "summarize", index)]
        assert holders[("summarize", index, "")] == [consumer(run_id, "report")]
    extract = inventory.task_instance("extract")
    value = inventory.value(extract.produced[0])
    assert value.uri.startswith(f"{storage}/{DAG_ID}/")
    assert (value.serializer, value.form, value.max_claims) == ("json", "handle", 1)
    assert value.digest.startswith("blake3:") and len(value.digest) == 7 + 64 and value.size > 0
    assert value.producer.startswith(consumer(run_id, "extract"))
    assert value.holders[0].task_state == "success" and not value.stale
    assert inventory.unclaimed == [] and inventory.stale == [] and inventory.problems == ()


def test_each_task_instance_knows_what_it_claimed(orders_run):
    from taskflow_exclusive.airflow.inventory import run_inventory

    run_id, _ = orders_run
    inventory = run_inventory(DAG_ID, run_id)
    report = inventory.task_instance("report")
    assert sorted(inventory.value(uri).map_index for uri in report.claimed) == [0, 1, 2]
    assert report.produced == ()  # a plain @task: its string stays in XCom
    audit = inventory.task_instance("audit")
    assert audit.claimed == ()  # refused: it holds nothing
    only = run_inventory(DAG_ID, run_id, task_id="summarize", map_index=1)
    assert [(ti.task_id, ti.map_index) for ti in only.task_instances] == [("summarize", 1)]
    # what summarize[1] produced, and the batch it claimed from split_by_region
    assert sorted((v.task_id, v.places[0].path) for v in only.values) == [
        ("split_by_region", "[1]"),
        ("summarize", ""),
    ]


def test_a_value_nobody_claimed_and_a_holder_that_failed_for_good_are_flagged(orders_run):
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import update

    from taskflow_exclusive.airflow.claims_view import render_page
    from taskflow_exclusive.airflow.inventory import run_inventory

    run_id, _ = orders_run
    before = run_inventory(DAG_ID, run_id)
    summary_0 = next(v for v in before.values if (v.task_id, v.map_index) == ("summarize", 0))
    summary_0.handle().release(consumer(run_id, "report"), reason="test: nobody holds it now")
    where = (TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == run_id, TaskInstance.task_id == "report")
    with create_session() as session:
        session.execute(update(TaskInstance).where(*where).values(state="failed"))
    try:
        after = run_inventory(DAG_ID, run_id)
        assert [v.uri for v in after.unclaimed] == [summary_0.uri]
        stale = sorted((v.task_id, v.map_index) for v in after.stale)
        assert stale == [("summarize", 1), ("summarize", 2)]
        assert all(h.stale and h.task_state == "failed" for v in after.stale for h in v.holders)
        assert after.task_instance("report").failed_for_good
        assert after.to_dict()["unclaimed"] == [summary_0.uri]
        page = render_page(after)
        assert "7 value(s); 1 unclaimed; 2 held by a task that failed for good" in page
        assert page.count(">stale</span>") == 2  # the two values report holds
        assert page.count("class='flag stale'>failed for good</span>") == 2  # report, beside each
        assert page.count("class='flag unclaimed'") == 1
    finally:
        with create_session() as session:
            session.execute(update(TaskInstance).where(*where).values(state="success"))
        summary_0.handle().claim(consumer(run_id, "report"))  # as it was, for the other tests


def test_exclusive_xcom_reference_rows_are_listed_and_a_lookalike_is_not(airflow_db, tmp_path_factory):
    """A run with ExclusiveXCom as the XCom backend: its offloaded XComs are values too."""
    from taskflow_exclusive.airflow.inventory import run_inventory
    from tests.airflow_harness import DAGS, run_dag_in_subprocess

    storage = tmp_path_factory.mktemp("claims-view-xcom").as_uri()
    results = tmp_path_factory.mktemp("claims-view-xcom-results")
    result = run_dag_in_subprocess(
        DAGS / "xcom_offload.py",
        conf={"results": str(results)},
        env={
            "AIRFLOW__CORE__XCOM_BACKEND": "taskflow_exclusive.xcom.ExclusiveXCom",
            "AIRFLOW__TASKFLOW_EXCLUSIVE__XCOM_THRESHOLD": "1024",
            "AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_STORAGE_URL": storage,
        },
    )
    assert result.state == "success", result.output[-4000:]
    inventory = run_inventory("xcom_offload", result.run_id)
    offloaded = {(v.task_id, v.places[0].key): v for v in inventory.values}
    assert set(offloaded) == {
        ("big_list", "return_value"),
        ("frame", "return_value"),
        ("small_bytes", "return_value"),
        ("split_outputs", "big"),
        ("split_outputs", "return_value"),  # multiple_outputs pushes the whole dict again
        ("items", "return_value"),
        ("loud", "return_value"),
    }
    assert {v.form for v in inventory.values} == {"xcom-reference"}
    assert offloaded[("frame", "return_value")].serializer == "parquet"
    assert offloaded[("small_bytes", "return_value")].serializer == "bytes"
    assert all(v.uri.startswith(storage) and "/xcom/" in v.uri for v in inventory.values)
    # pulled by xcom_pull, never claimed; the user's lookalike row is data, neither a value nor a problem
    assert len(inventory.unclaimed) == len(inventory.values) and inventory.problems == ()


def test_an_xcom_row_that_only_looks_like_a_reference_is_reported_not_followed():
    from taskflow_exclusive.airflow.inventory import _build

    forged = {
        "__taskflow_exclusive__": "xcom-ref/1",
        "key": "return_value",
        "handle": {"uri": "file:///etc/passwd"},
    }
    inventory = _build("etl", "run1", [("extract", -1, "return_value", forged)], [])
    assert inventory.values == ()
    assert len(inventory.problems) == 1 and "extract return_value" in inventory.problems[0]


def test_an_unknown_run_has_an_empty_inventory(airflow_db):
    from taskflow_exclusive.airflow.inventory import run_inventory

    inventory = run_inventory(DAG_ID, "no-such-run")
    assert inventory.values == () and inventory.task_instances == ()


# --- the endpoints, inside Airflow's API app --------------------------------------------------------


@pytest.fixture(scope="module")
def api(orders_run):
    """Airflow's API app with the plugin mounted; a client and tokens for an admin and a viewer."""
    from airflow.configuration import conf
    from fastapi.testclient import TestClient

    keys = ("simple_auth_manager_users", "simple_auth_manager_all_admins", "auth_manager")
    saved = {key: conf.get("core", key, fallback=None) for key in keys}
    conf.set("core", "simple_auth_manager_users", "admin:admin,viewer:viewer")
    conf.set("core", "simple_auth_manager_all_admins", "False")
    conf.set("core", "auth_manager", SIMPLE_AUTH_MANAGER)
    from airflow.api_fastapi.app import create_app, get_auth_manager, purge_cached_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    purge_cached_app()
    app = create_app(apps="core")
    manager = get_auth_manager()
    tokens = {
        role: manager.generate_jwt(SimpleAuthManagerUser(username=role, role=role))
        for role in ("admin", "viewer")
    }
    with TestClient(app) as client:
        yield client, tokens, orders_run[0]
    purge_cached_app()
    for key, value in saved.items():
        if value is None:
            conf.remove_option("core", key, remove_default=False)
        else:
            conf.set("core", key, value)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_plugin_registers_a_claims_tab_on_dag_runs_and_task_instances(api):
    client, tokens, _ = api
    answer = client.get("/api/v2/plugins", headers=_auth(tokens["admin"]))
    assert answer.status_code == 200, answer.text
    plugin = next(p for p in answer.json()["plugins"] if p["name"] == "taskflow_exclusive")
    views = {view["destination"]: view for view in plugin["external_views"]}
    assert set(views) == {"dag_run", "task_instance"}
    assert all(view["name"] == "Claims" and not view["href"].startswith("/") for view in views.values())
    assert "{RUN_ID}" in views["dag_run"]["href"] and "{MAP_INDEX}" in views["task_instance"]["href"]
    assert plugin["fastapi_apps"][0]["url_prefix"] == PREFIX


@pytest.mark.parametrize("path", ["/claims", "/api/claims"])
def test_without_a_token_the_claims_are_refused(api, path):
    client, _, run_id = api
    answer = client.get(f"{PREFIX}{path}", params={"dag_id": DAG_ID, "run_id": run_id})
    assert answer.status_code == 401
    assert run_id not in answer.text
    forged = client.get(
        f"{PREFIX}{path}", params={"dag_id": DAG_ID, "run_id": run_id}, headers=_auth("not-a-token")
    )
    assert forged.status_code in (401, 403)


def test_a_run_id_with_a_plus_sign_is_found_whether_the_ui_encoded_it_or_not(api):
    """Airflow 3.3's UI fills {RUN_ID} in URL-encoded (%2B), 3.1's as is (a raw '+')."""
    client, tokens, run_id = api
    assert "+" in run_id  # manual__...+00:00
    for shown in (run_id, run_id.replace("+", "%2B")):
        answer = client.get(
            f"{PREFIX}/api/claims?dag_id={DAG_ID}&run_id={shown}&task_id=extract&map_index=-1",
            headers=_auth(tokens["viewer"]),
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["run_id"] == run_id
        assert [v["task_id"] for v in answer.json()["values"]] == ["extract"]


def test_a_release_without_a_token_is_refused(api):
    client, _, run_id = api
    answer = client.post(
        f"{PREFIX}/api/release",
        params={"dag_id": DAG_ID, "run_id": run_id},
        json={"uri": "file:///x", "consumer_id": "c", "reason": "r"},
    )
    assert answer.status_code == 401


def test_a_viewer_reads_the_claims_as_json_metadata_only(api):
    client, tokens, run_id = api
    answer = client.get(
        f"{PREFIX}/api/claims", params={"dag_id": DAG_ID, "run_id": run_id}, headers=_auth(tokens["viewer"])
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["can_release"] is False
    extract = next(v for v in body["values"] if v["task_id"] == "extract")
    assert [h["consumer_id"] for h in extract["holders"]] == [consumer(run_id, "split_by_region")]
    assert set(extract) >= {"serializer", "size", "digest", "uri", "created_at", "created_on", "holders"}
    for word in ("north", "12.25", "revenue"):  # the orders and summaries themselves: never
        assert word not in answer.text


def test_the_page_shows_the_holder_and_a_viewer_cannot_release(api):
    client, tokens, run_id = api
    answer = client.get(
        f"{PREFIX}/claims",
        params={"dag_id": DAG_ID, "run_id": run_id, "task_id": "extract", "map_index": -1},
        headers=_auth(tokens["viewer"]),
    )
    assert answer.status_code == 200, answer.text
    page = answer.text
    assert "Values extract produced" in page and "split_by_region" in page
    assert f"data-consumer='{consumer(run_id, 'split_by_region')}'" in page
    assert "read only" in page and "disabled" in page

    released = client.post(
        f"{PREFIX}/api/release",
        params={"dag_id": DAG_ID, "run_id": run_id},
        json={"uri": "file:///anything", "consumer_id": consumer(run_id, "split_by_region"), "reason": "x"},
        headers=_auth(tokens["viewer"]),
    )
    assert released.status_code == 403


def test_an_admin_releases_a_claim_with_a_reason_and_the_ledger_shows_it_free(api, caplog):
    from taskflow_exclusive.airflow.inventory import run_inventory

    client, tokens, run_id = api
    value = next(
        v for v in run_inventory(DAG_ID, run_id).values if (v.task_id, v.map_index) == ("summarize", 2)
    )
    holder = consumer(run_id, "report")
    params = {"dag_id": DAG_ID, "run_id": run_id}
    request = {"uri": value.uri, "consumer_id": holder, "reason": ""}
    no_reason = client.post(
        f"{PREFIX}/api/release", params=params, json=request, headers=_auth(tokens["admin"])
    )
    assert no_reason.status_code == 400
    assert [h.consumer_id for h in value.handle().holders()] == [holder]

    with caplog.at_level(logging.WARNING, logger="taskflow_exclusive"):
        answer = client.post(
            f"{PREFIX}/api/release",
            params=params,
            json={**request, "reason": "report was rerun elsewhere"},
            headers=_auth(tokens["admin"]),
        )
    try:
        assert answer.status_code == 200, answer.text
        assert answer.json()["released"]["consumer_id"] == holder
        assert value.handle().holders() == []
        logged = [r.getMessage() for r in caplog.records if "Released claim" in r.getMessage()]
        assert len(logged) == 1 and "report was rerun elsewhere" in logged[0] and "'admin'" in logged[0]

        again = client.post(
            f"{PREFIX}/api/release",
            params=params,
            json={**request, "reason": "twice"},
            headers=_auth(tokens["admin"]),
        )
        assert again.status_code == 409
        page = client.get(f"{PREFIX}/claims", params=params, headers=_auth(tokens["admin"])).text
        assert "1 unclaimed" in page and "class='flag unclaimed'" in page
    finally:
        value.handle().claim(holder)  # as it was, for the other tests


def test_a_release_of_a_value_of_another_run_is_refused(api):
    client, tokens, run_id = api
    answer = client.post(
        f"{PREFIX}/api/release",
        params={"dag_id": DAG_ID, "run_id": run_id},
        json={"uri": "file:///tmp/elsewhere/x.json", "consumer_id": "someone", "reason": "because"},
        headers=_auth(tokens["admin"]),
    )
    assert answer.status_code == 404


def test_a_release_sent_as_a_form_is_refused(api):
    client, tokens, run_id = api
    answer = client.post(
        f"{PREFIX}/api/release",
        params={"dag_id": DAG_ID, "run_id": run_id},
        content='{"uri": "x", "consumer_id": "c", "reason": "r"}',
        headers={**_auth(tokens["admin"]), "Content-Type": "text/plain"},
    )
    assert answer.status_code in (415, 422)


def test_the_page_escapes_what_it_shows():
    """Consumer ids, hosts and task ids come from ledgers and XCom rows: shown as text, never markup."""
    from datetime import datetime, timezone

    from taskflow_exclusive.airflow.claims_view import render_page
    from taskflow_exclusive.airflow.inventory import Holder, RunInventory, StoredValue, XComPlace

    evil = "<script>alert('x')</script>"
    holder = Holder(evil, datetime(2026, 1, 1, tzinfo=timezone.utc), 0, f"host{evil}", 1)
    value = StoredValue(
        task_id="extract",
        map_index=-1,
        form="handle",
        uri="file:///store/etl/run1/extract/-1/try1-abc.json",
        serializer="json",
        compression=None,
        size=3,
        digest="blake3:" + "0" * 64,
        producer="etl/run1/extract/-1#try1",
        created_at="2026-01-01T00:00:00+00:00",
        created_on=evil,
        max_claims=1,
        ledger="object store (beside the value)",
        places=(XComPlace("extract", -1, "return_value"),),
        holders=(holder,),
    )
    page = render_page(RunInventory("etl", "run1", (value,), ()), user=evil, can_release=True)
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert page.count("<script") == 1  # the page's own script tag


# --- the CLI finds a run's handles itself ---------------------------------------------------------


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "taskflow_exclusive.cli.main", *argv],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
        check=False,
    )


def test_the_cli_lists_a_runs_values_and_holders_from_the_metadata_database(orders_run):
    run_id, _ = orders_run
    done = _cli("holders", "--dag", "orders_pipeline", "--run", run_id)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    summary = "7 value(s), 0 unclaimed, 0 held by a task that failed for good"
    assert lines[0] == f"Run {run_id!r} of DAG 'orders_pipeline': {summary}"
    assert sum(line.startswith("extract ") for line in lines) == 1
    holder = f"'orders_pipeline/{run_id}/split_by_region/-1'"
    extract = lines.index(next(line for line in lines if line.startswith("extract ")))
    assert lines[extract + 1].startswith(f"  slot 0: {holder} since ") and lines[extract + 1].endswith(
        ", success)"
    )
    as_json = json.loads(_cli("holders", "--dag", "orders_pipeline", "--run", run_id, "--json").stdout)
    assert {value["task_id"] for value in as_json["values"]} == {"extract", "split_by_region", "summarize"}
    one = _cli(
        "holders", "--dag", "orders_pipeline", "--run", run_id, "--task", "summarize", "--map-index", "1"
    )
    assert one.returncode == 0 and "summarize[1] " in one.stdout and "summarize[0] " not in one.stdout


def test_the_cli_says_how_to_ask_for_a_run(orders_run):
    neither = _cli("holders")
    assert neither.returncode == 2 and "HANDLE, or --dag and --run" in neither.stderr
    no_run = _cli("holders", "--dag", "orders_pipeline")
    assert no_run.returncode == 2 and "--dag needs --run" in no_run.stderr
    nothing = _cli("holders", "--dag", "orders_pipeline", "--run", "no-such-run")
    assert nothing.returncode == 0
    assert (
        nothing.stdout.strip()
        == "No taskflow-exclusive values in run 'no-such-run' of DAG 'orders_pipeline'."
    )
