"""The operator commands, run as the installed ``taskflow-exclusive`` console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from taskflow_exclusive import AlreadyClaimedError, publish
from taskflow_exclusive.storage.store import Store

SCRIPT = Path(sys.executable).with_name("taskflow-exclusive")


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=dict(os.environ),  # the Airflow connections of the test servers
        timeout=120,
        check=False,
    )


@pytest.fixture(params=["file", "s3"])
def claimed(request, tmp_path):
    """A value on local disk or S3 (through an Airflow connection), claimed by one consumer."""
    url = request.getfixturevalue(f"{request.param}_url")
    handle = publish({"orders": 3}, storage=url)
    handle.claim(consumer_id="etl/run-1/load/-1")
    handle_file = tmp_path / "handle.json"
    handle_file.write_text(handle.to_json())
    return handle, handle_file


def test_holders_prints_who_holds_the_value_and_since_when(claimed):
    handle, handle_file = claimed
    since = handle.holders()[0].claimed_at.isoformat()
    result = _run("holders", f"@{handle_file}")
    assert result.returncode == 0, result.stderr
    assert handle.uri in result.stdout
    assert f"'etl/run-1/load/-1' since {since}" in result.stdout


def test_holders_reads_the_handle_from_stdin_or_the_argument_and_prints_json(claimed):
    handle, _ = claimed
    from_stdin = _run("holders", "--json", "-", stdin=handle.to_json())
    from_argument = _run("holders", "--json", handle.to_json())
    assert from_stdin.returncode == from_argument.returncode == 0, from_stdin.stderr
    records = json.loads(from_stdin.stdout)
    assert json.loads(from_argument.stdout) == records
    assert [r["consumer_id"] for r in records] == ["etl/run-1/load/-1"]
    assert datetime.fromisoformat(records[0]["claimed_at"]) == handle.holders()[0].claimed_at


def test_holders_of_an_unclaimed_value_says_so(file_url):
    handle = publish("free", storage=file_url)
    result = _run("holders", handle.to_json())
    assert result.returncode == 0
    assert "not claimed" in result.stdout


def test_release_frees_the_claim_logs_the_reason_and_lets_another_consumer_claim(claimed):
    handle, handle_file = claimed
    with pytest.raises(AlreadyClaimedError):
        handle.claim(consumer_id="etl/run-1/load-again/-1")
    result = _run(
        "release", f"@{handle_file}", "--consumer", "etl/run-1/load/-1", "--reason", "worker vm-7 lost"
    )
    assert result.returncode == 0, result.stderr
    assert "Released the claim of 'etl/run-1/load/-1'" in result.stdout
    assert "WARNING" in result.stderr
    assert "Reason: worker vm-7 lost" in result.stderr
    assert handle.holders() == []
    assert handle.claim(consumer_id="etl/run-1/load-again/-1") == {"orders": 3}


def test_release_of_a_consumer_that_holds_nothing_changes_nothing_and_fails(claimed):
    handle, handle_file = claimed
    result = _run("release", f"@{handle_file}", "--consumer", "someone-else", "--reason", "typo")
    assert result.returncode == 1
    assert "'someone-else' holds no claim" in result.stderr
    assert "'etl/run-1/load/-1'" in result.stderr  # who does hold it
    assert [r.consumer_id for r in handle.holders()] == ["etl/run-1/load/-1"]


def test_release_without_a_reason_is_refused_before_anything_changes(claimed):
    handle, handle_file = claimed
    result = _run("release", f"@{handle_file}", "--consumer", "etl/run-1/load/-1")
    assert result.returncode == 2
    assert "--reason" in result.stderr
    assert [r.consumer_id for r in handle.holders()] == ["etl/run-1/load/-1"]


def test_a_handle_that_is_not_one_is_refused_with_the_reason(tmp_path):
    not_json = _run("holders", "not a handle")
    assert not_json.returncode == 1
    assert "not a handle's JSON" in not_json.stderr
    wrong_format = _run("holders", json.dumps({"uri": "s3://bucket/key"}))
    assert wrong_format.returncode == 1
    assert "Not a taskflow-exclusive handle" in wrong_format.stderr


@pytest.mark.parametrize("storage", ["file", "s3"])
def test_cleanup_removes_leftovers_after_the_grace_period_and_keeps_values(request, storage):
    storage_url = request.getfixturevalue(f"{storage}_url")
    store = Store.from_url(storage_url)
    kept = publish(b"committed", storage=storage_url, label="cli")
    orphan = f"{store.location.path}/_local/cli/{uuid.uuid4().hex}.bin"
    if store.is_local:
        store.fs.makedirs(orphan.rpartition("/")[0], exist_ok=True)
    store.fs.pipe_file(orphan, b"half a value")

    young = _run("cleanup", storage_url)  # default grace period: 1 hour
    assert young.returncode == 0, young.stderr
    assert "0 leftover(s)" in young.stdout
    dry = _run("cleanup", storage_url, "--older-than", "0s", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would remove data without manifest: {store.uri(orphan)}" in dry.stdout
    assert store.exists(orphan)
    done = _run("cleanup", storage_url, "--older-than", "0s")
    assert done.returncode == 0, done.stderr
    assert f"removed data without manifest: {store.uri(orphan)}" in done.stdout
    assert "1 leftover(s)" in done.stdout
    assert not store.exists(orphan)
    assert kept.claim(consumer_id="after-cleanup") == b"committed"


def test_cleanup_refuses_a_duration_it_cannot_read(file_url):
    result = _run("cleanup", file_url, "--older-than", "soon")
    assert result.returncode == 2
    assert "not a duration" in result.stderr


def test_the_demo_still_runs():
    result = _run("demo")
    assert result.returncode == 0, result.stderr
