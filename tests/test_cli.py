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
from taskflow_exclusive.handle_forms import ACCEPTED_FORMS, envelope, reference_row, ui_text
from taskflow_exclusive.storage.store import Store

SCRIPT = Path(sys.executable).with_name("taskflow-exclusive")


def _run(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},  # the Airflow connections of the test servers
        timeout=120,
        check=False,
    )


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    """The command's whole standard error, asserted to be a single ``error:`` line."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return lines[0]


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


def test_a_handle_that_is_not_one_is_refused_with_the_reason_and_the_forms_accepted(tmp_path):
    not_json = _run("holders", "not a handle")
    assert not_json.returncode == 1
    assert _one_line_error(not_json).startswith(
        "error: Not a taskflow-exclusive handle in the HANDLE argument"
    )
    assert "neither JSON nor the UI's text" in not_json.stderr
    for form in ACCEPTED_FORMS:
        assert form in not_json.stderr
    wrong_format = _run("holders", json.dumps({"uri": "s3://bucket/key"}))
    assert wrong_format.returncode == 1
    assert "Not a taskflow-exclusive handle (format None" in _one_line_error(wrong_format)


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


# --- every form a handle can be copied in ------------------------------------------------------


def _copied_forms(handle) -> dict[str, str]:
    """The handle as each place shows it: its JSON, the REST API, an ExclusiveXCom row, the UI."""
    entry = {"key": "return_value", "dag_id": "etl", "run_id": "run-1", "task_id": "extract", "map_index": -1}
    return {
        "handle json": handle.to_json(),
        "serde envelope (REST API)": json.dumps(envelope(handle), indent=2),
        "ExclusiveXCom reference row": json.dumps(reference_row(handle)),
        "UI text": ui_text(handle),
        "REST API XCom entry": json.dumps({**entry, "value": envelope(handle)}),
        "REST API XCom entry, deserialize=true": json.dumps({**entry, "value": ui_text(handle)}),
    }


def test_holders_accepts_every_form_as_argument_file_and_stdin(claimed, tmp_path):
    handle, _ = claimed
    for form, text in _copied_forms(handle).items():
        copied = tmp_path / "copied.txt"
        copied.write_text(text + "\n")
        for args, stdin in (([text], None), ([f"@{copied}"], None), (["-"], text)):
            result = _run("holders", "--json", *args, stdin=stdin)
            assert result.returncode == 0, (form, args, result.stderr)
            assert [r["consumer_id"] for r in json.loads(result.stdout)] == ["etl/run-1/load/-1"], form


def test_release_accepts_the_ui_text_and_frees_the_claim(claimed):
    handle, _ = claimed
    result = _run("release", ui_text(handle), "--consumer", "etl/run-1/load/-1", "--reason", "copied from UI")
    assert result.returncode == 0, result.stderr
    assert handle.holders() == []


def test_a_form_carrying_a_forged_handle_is_refused_like_its_json(claimed):
    handle, _ = claimed
    forged = {**handle.to_dict(), "digest": "not-a-digest", "uri": "file:///etc/passwd"}
    for text in (
        json.dumps({**envelope(handle), "__data__": forged}),
        json.dumps({**reference_row(handle), "handle": forged}),
        ui_text(handle).replace(handle.digest, "not-a-digest"),
    ):
        result = _run("holders", text)
        assert result.returncode == 1
        assert "digest is not 'blake3:' followed by 64 lowercase hex digits" in _one_line_error(result)


# --- one-line errors ----------------------------------------------------------------------------


def test_a_missing_handle_file_is_bad_usage_in_one_line(tmp_path):
    result = _run("holders", f"@{tmp_path / 'nowhere.json'}")
    assert result.returncode == 2
    line = _one_line_error(result)
    assert f"file '{tmp_path / 'nowhere.json'}'" in line
    assert "No such file or directory" in line


def test_s3_without_credentials_is_one_line_naming_the_fix(s3_server, file_url):
    # The real S3 server, through a connection that names its endpoint but holds no credentials.
    no_credentials = json.dumps({"conn_type": "aws", "extra": {"endpoint_url": s3_server.endpoint}})
    env = {"AIRFLOW_CONN_TFX_NO_CREDENTIALS": no_credentials, "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
    env_without_keys = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    result = subprocess.run(
        [str(SCRIPT), "cleanup", f"s3://tfx_no_credentials@{s3_server.bucket}/x", "--dry-run"],
        capture_output=True,
        text=True,
        env={**env_without_keys, **env, "AWS_EC2_METADATA_DISABLED": "true"},
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    line = _one_line_error(result)
    assert "no credentials were found" in line
    assert "s3://CONN_ID@bucket/prefix" in line and "AWS_ACCESS_KEY_ID" in line


def test_s3_with_wrong_credentials_is_one_line_and_shows_no_secret(s3_server):
    wrong = json.dumps(
        {
            "conn_type": "aws",
            "login": "AKIAWRONGKEY",
            "password": "wrong-secret-do-not-print",
            "extra": {"endpoint_url": s3_server.endpoint, "region_name": "us-east-1"},
        }
    )
    result = _run("cleanup", f"s3://tfx_wrong@{s3_server.bucket}/x", env={"AIRFLOW_CONN_TFX_WRONG": wrong})
    assert result.returncode == 1
    line = _one_line_error(result)
    assert "wrong-secret-do-not-print" not in result.stderr + result.stdout
    assert "refused access (Forbidden)" in line or "the server refused the credentials" in line


@pytest.mark.parametrize("storage", ["file", "s3"])
def test_cleanup_of_a_prefix_that_does_not_exist_is_one_line(request, storage):
    url = request.getfixturevalue(f"{storage}_url")  # a fresh prefix: nothing written under it
    if storage == "s3":
        url = f"s3://tfx_test_s3@no-such-bucket-{uuid.uuid4().hex[:8]}/x"
    result = _run("cleanup", url, "--dry-run")
    assert result.returncode == 1
    line = _one_line_error(result)
    assert f"Nothing exists at {url}" in line


def test_traceback_is_shown_only_when_asked(tmp_path):
    url = (tmp_path / "absent").as_uri()
    assert "Traceback" not in _run("cleanup", url).stderr
    shown = _run("--traceback", "cleanup", url)
    assert shown.returncode == 1
    assert "Traceback (most recent call last)" in shown.stderr
    assert "StorageConfigError" in shown.stderr


# --- cleanup output: once per entry, a summary, progress only on a terminal ---------------------


def _orphans(storage_url: str, count: int) -> list[str]:
    """``count`` data files without a manifest (interrupted writes) beside one committed value."""
    store = Store.from_url(storage_url)
    publish(b"committed", storage=storage_url, label="cli")
    folder = f"{store.location.path}/_local/cli"
    if store.is_local:
        store.fs.makedirs(folder, exist_ok=True)
    paths = [f"{folder}/{uuid.uuid4().hex}.bin" for _ in range(count)]
    for path in paths:
        store.fs.pipe_file(path, b"half")
    return [store.uri(path) for path in paths]


@pytest.mark.parametrize("storage", ["file", "s3"])
def test_dry_run_prints_each_entry_once_and_a_summary(request, storage):
    storage_url = request.getfixturevalue(f"{storage}_url")
    orphans = _orphans(storage_url, 3)
    dry = _run("cleanup", storage_url, "--older-than", "0s", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    for uri in orphans:
        assert (dry.stdout + dry.stderr).count(uri) == 1
    assert dry.stderr == ""
    summary = dry.stdout[dry.stdout.index("Summary for") :]
    assert f"Summary for {storage_url}: would remove 3 leftover(s), 12 bytes" in summary
    assert "3 data without manifest" in summary
    # Listed: the orphans, the committed value's data and its manifest.
    assert "Kept: 5 file(s) listed; 2 file(s) that are committed values or not names this library" in summary
    assert "0 leftover(s) younger than 0:00:00" in summary
    young = _run("cleanup", storage_url, "--dry-run")  # default grace: 1 hour
    assert "would remove 0 leftover(s)" in young.stdout
    assert (
        "3 leftover(s) younger than 1:00:00 (a write may still be running; see --older-than)" in young.stdout
    )
    assert all(Store.from_url(storage_url).exists(Store.from_url(u).location.path) for u in orphans)


def _run_on_a_terminal(*args: str) -> tuple[int, str, str]:
    """Run the command with standard error on a pseudo-terminal; return (status, stdout, terminal)."""
    import pty

    controller, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [str(SCRIPT), *args],
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
            env=dict(os.environ),
            timeout=120,
            check=False,
        )
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
    return done.returncode, done.stdout, shown.decode(errors="replace")


def test_cleanup_shows_progress_on_a_terminal_and_none_when_piped(file_url):
    orphans = _orphans(file_url, 40)
    status, stdout, terminal = _run_on_a_terminal("cleanup", file_url, "--older-than", "0s", "--dry-run")
    assert status == 0, terminal
    assert f"listing {file_url} ..." in terminal
    assert "checking leftovers: 40 of 40" in terminal
    assert terminal.rstrip("\r\n").endswith("\x1b[K")  # the status line is cleared at the end
    assert stdout.count("would remove data without manifest") == len(orphans)
    piped = _run("cleanup", file_url, "--older-than", "0s")
    assert piped.returncode == 0
    assert "\r" not in piped.stderr and "listing" not in piped.stderr and "of 40" not in piped.stderr
    assert piped.stdout.count("removed data without manifest") == len(orphans)
