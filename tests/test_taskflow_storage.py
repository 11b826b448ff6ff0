"""Where @exclusive_task stores: the Airflow Variable, from the environment or the metadata DB."""

from __future__ import annotations

import pytest

from tests.airflow_harness import DAGS, recorded, run_dag, run_dag_in_subprocess
from tests.taskflow_helpers import STORAGE_ENV, by_task, use_storage

VARIABLE = "taskflow_exclusive_storage_url"


def test_storage_comes_from_the_variables_environment_variable(airflow_db, tmp_path, monkeypatch):
    url = use_storage(monkeypatch, (tmp_path / "from-env").as_uri())
    result = run_dag(DAGS / "exclusive_storage_variable.py", conf={"results": str(tmp_path / "r")})
    assert result.state == "success", result.states
    [row] = by_task(recorded(tmp_path / "r"))["consume"]
    assert row["uri"].startswith(url + "/exclusive_storage_variable/")
    assert row["value"] == ["stored", "where", "the", "variable", "says"]


@pytest.fixture
def variable_in_db(airflow_db, tmp_path):
    """The storage Variable set in the metadata database (through Airflow's Variable model)."""
    from airflow.models.variable import Variable

    url = (tmp_path / "from-db").as_uri()
    Variable.set(VARIABLE, url)
    yield url
    Variable.delete(VARIABLE)


def test_storage_comes_from_the_variable_in_the_metadata_database(variable_in_db, tmp_path, monkeypatch):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    result = run_dag(DAGS / "exclusive_storage_variable.py", conf={"results": str(tmp_path / "r")})
    assert result.state == "success", result.states
    [row] = by_task(recorded(tmp_path / "r"))["consume"]
    assert row["uri"].startswith(variable_in_db + "/exclusive_storage_variable/")


def test_a_wrong_storage_url_fails_the_producer_with_storage_config_error_in_its_log(airflow_db, tmp_path):
    result = run_dag_in_subprocess(
        DAGS / "exclusive_storage_variable.py",
        conf={"results": str(tmp_path / "r")},
        env={STORAGE_ENV: "nosuchfs://bucket/values"},
    )
    assert result.task_state("produce") == "failed"
    assert result.task_state("consume") == "upstream_failed"
    assert "taskflow_exclusive.errors.StorageConfigError" in result.output, result.output[-4000:]
    log_line = next(line for line in result.output.splitlines() if "StorageConfigError:" in line)
    assert "nosuchfs" in log_line
    assert f"Airflow Variable '{VARIABLE}'" in log_line
    assert not (tmp_path / "r").exists()  # the consumer never ran
