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
    for name, option in options.items():
        # Airflow lists no value unless asked (--show-values): each description states its default.
        assert option["description"].strip(), name
        assert "\nDefault: " in option["description"], name
        assert option["sensitive"] is False, name


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


def _config_list(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real ``airflow config list`` in a fresh, isolated AIRFLOW_HOME (no airflow.cfg yet)."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}, **(env or {})}
    env["AIRFLOW_HOME"] = str(home)
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "config", "list", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def test_airflow_config_list_shows_the_sections_defaults_where_airflow_shows_any(tmp_path):
    home = tmp_path / "home"
    plain = _config_list(home, "--section", "taskflow_exclusive")
    if "Values are hidden by default" in plain.stderr:
        # Airflow 3.2 and newer hide every value of every section unless asked (core too).
        assert "[taskflow_exclusive]\n# xcom_threshold = \n# xcom_compression = \n" in plain.stdout
        core = _config_list(home, "--section", "core")
        assert "# dags_folder = \n" in core.stdout
        show = ("--show-values",)
    else:  # Airflow 3.1 shows them
        show = ()
    shown = _config_list(home, "--section", "taskflow_exclusive", *show)
    assert "xcom_threshold = 65536\n" in shown.stdout
    assert "xcom_compression = \n" in shown.stdout
    # --defaults: descriptions that state each default, examples and the environment variables.
    described = _config_list(home, "--section", "taskflow_exclusive", "--defaults").stdout
    assert "# Default: 65536 (64 KiB)." in described
    assert "# Example: xcom_threshold = 1048576" in described
    assert "# Variable: AIRFLOW__TASKFLOW_EXCLUSIVE__XCOM_THRESHOLD" in described
    assert "# Default: empty (not compressed)." in described
    assert "# Example: xcom_compression = gzip" in described
    # A value set in the environment is what the listing reports.
    overridden = _config_list(
        home,
        "--section",
        "taskflow_exclusive",
        *show,
        env={"AIRFLOW__TASKFLOW_EXCLUSIVE__XCOM_COMPRESSION": "gzip"},
    )
    assert "xcom_compression = gzip\n" in overridden.stdout
