"""The Airflow provider: metadata Airflow accepts, the real CLI, and @task.exclusive in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import jsonschema

from taskflow_exclusive.airflow.provider import get_provider_info
from tests.airflow_harness import DAGS, recorded, run_dag_in_subprocess
from tests.taskflow_helpers import STORAGE_ENV, by_task


def _airflow(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "airflow", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def test_provider_info_passes_airflows_own_schema_and_names_this_distribution():
    import airflow

    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    info = get_provider_info()
    jsonschema.validate(info, schema)
    # Airflow refuses a provider whose package-name differs from the installed distribution's name.
    assert info["package-name"] == metadata.distribution("taskflow-exclusive").metadata["Name"]
    [entry_point] = [
        ep for ep in metadata.entry_points(group="apache_airflow_provider") if ep.value.startswith("taskflow")
    ]
    assert entry_point.load() is get_provider_info
    options = info["config"]["taskflow_exclusive"]["options"]
    assert options["xcom_threshold"]["default"] == "65536"
    assert options["xcom_compression"]["default"] == ""
    for option in options.values():
        assert option["description"].strip() and option["type"] in ("string", "integer")


def test_airflow_providers_list_shows_the_package(airflow_db):
    providers = json.loads(_airflow("providers", "list", "-o", "json"))
    [ours] = [p for p in providers if p["package_name"] == "taskflow-exclusive"]
    assert ours["version"] == metadata.version("taskflow-exclusive")
    assert "@task.exclusive" in ours["description"]


def test_config_options_have_their_declared_defaults_and_can_be_overridden(airflow_db):
    assert _airflow("config", "get-value", "taskflow_exclusive", "xcom_threshold").strip() == "65536"
    overridden = _airflow(
        "config",
        "get-value",
        "taskflow_exclusive",
        "xcom_threshold",
        env={"AIRFLOW__TASKFLOW_EXCLUSIVE__XCOM_THRESHOLD": "1048576"},
    )
    assert overridden.strip() == "1048576"


def test_task_exclusive_is_resolved_through_the_provider_in_a_fresh_process(airflow_db, tmp_path):
    result = run_dag_in_subprocess(
        DAGS / "exclusive_via_provider.py",
        conf={"results": str(tmp_path / "r")},
        env={STORAGE_ENV: (tmp_path / "store").as_uri()},
    )
    assert result.state == "success", (result.states, result.output[-4000:])
    rows = by_task(recorded(tmp_path / "r"))
    [operator] = rows["operator_of"]
    assert operator["operator"] == "taskflow_exclusive.airflow.operator.ExclusiveDecoratedOperator"
    assert operator["custom_operator_name"] == "@task.exclusive"
    consumed = sorted(rows["consume"], key=lambda r: repr(r["value"]))
    assert [(r["value"], r["compression"]) for r in consumed] == [
        ("a", "gzip"),
        ("b", "gzip"),
        (["bare"], None),
    ]
    assert {r["type"] for r in consumed} == {"taskflow_exclusive.handle.ExclusiveHandle"}
    assert result.mapped_states("consume") == {0: "success", 1: "success"}
