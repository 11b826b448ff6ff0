"""Cleanup finds what interrupted writes leave, removes only that, and only after a grace period.

Leftovers are planted the way a killed producer leaves them (a data object
without its manifest, a temporary file, an orphaned multipart upload); the
real thing, with producers killed mid-write, is in ``test_crashes.py``.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from taskflow_exclusive import publish
from taskflow_exclusive.storage.cleanup import (
    CLAIMS,
    DATA,
    MULTIPART,
    PROBE,
    TEMPORARY,
    find_uncommitted,
    remove_uncommitted,
)
from taskflow_exclusive.storage.store import Store

NOW = timedelta(0)
LATER = timedelta(hours=2)


def _plant(store: Store, relative: str, data: bytes = b"partial") -> str:
    path = f"{store.location.path}/{relative}"
    if store.is_local:
        store.fs.makedirs(path.rpartition("/")[0], exist_ok=True)
    store.fs.pipe_file(path, data)
    return path


def _in_two_hours() -> datetime:
    return datetime.now(timezone.utc) + LATER


def test_committed_values_and_their_claims_are_never_reported(storage_url):
    handle = publish({"kept": True}, storage=storage_url, label="kept")
    handle.claim(consumer_id="holder")
    assert find_uncommitted(storage_url, older_than=NOW, now=_in_two_hours()) == []
    assert remove_uncommitted(storage_url, older_than=NOW, now=_in_two_hours()) == []
    assert handle.claim(consumer_id="holder") == {"kept": True}


def test_data_without_a_manifest_is_reported_only_once_the_grace_period_is_over(storage_url):
    store = Store.from_url(storage_url)
    orphan = _plant(store, f"_local/killed/{uuid.uuid4().hex}.json")
    assert find_uncommitted(storage_url, older_than=timedelta(hours=1)) == []  # may be a write in progress
    found = find_uncommitted(storage_url, older_than=timedelta(hours=1), now=_in_two_hours())
    assert [(f.kind, f.path) for f in found] == [(DATA, orphan)]
    assert found[0].uri == store.uri(orphan)
    assert found[0].size == len(b"partial")


def test_removal_takes_the_leftovers_and_leaves_values_and_foreign_files(storage_url):
    store = Store.from_url(storage_url)
    kept = publish(b"value", storage=storage_url, label="mixed")
    folder = "_local/mixed"
    planted = {
        _plant(store, f"{folder}/{uuid.uuid4().hex}.bin"): DATA,
        _plant(store, f"etl/run/load/-1/try2-{uuid.uuid4().hex}.parquet"): DATA,
        _plant(store, f"{folder}/{uuid.uuid4().hex}.claims/slot-0.json", b"{}"): CLAIMS,
    }
    probe = _plant(store, f"{folder}/.taskflow-exclusive-probe/{uuid.uuid4().hex}")
    if store.location.protocol in ("s3", "gs"):
        planted[probe] = PROBE  # probes are made on object stores only
    foreign = [
        _plant(store, f"{folder}/notes.txt"),
        _plant(store, f"{folder}/report.json"),
        _plant(store, f"{folder}/{uuid.uuid4().hex[:30]}.json"),  # not a stem this library writes
        _plant(store, f"{folder}/try2-{uuid.uuid4().hex}.parquet"),  # no try number outside Airflow
    ]
    removed = remove_uncommitted(storage_url, older_than=NOW, now=_in_two_hours())
    assert {r.path: r.kind for r in removed} == planted
    assert not any(store.exists(path) for path in planted)
    assert all(store.exists(path) for path in foreign)
    assert kept.claim(consumer_id="after") == b"value"
    assert find_uncommitted(storage_url, older_than=NOW, now=_in_two_hours()) == []


def test_a_dry_run_reports_and_removes_nothing(storage_url):
    store = Store.from_url(storage_url)
    orphan = _plant(store, f"_local/dry/{uuid.uuid4().hex}.txt")
    would = remove_uncommitted(storage_url, older_than=NOW, dry_run=True, now=_in_two_hours())
    assert [w.path for w in would] == [orphan]
    assert store.exists(orphan)


def test_temporary_files_of_atomic_local_writes_are_leftovers(file_url):
    store = Store.from_url(file_url)
    temporary = _plant(store, f"_local/t/.{uuid.uuid4().hex}.manifest.json.{uuid.uuid4().hex}.tmp")
    found = find_uncommitted(file_url, older_than=NOW, now=_in_two_hours())
    assert [(f.kind, f.path) for f in found] == [(TEMPORARY, temporary)]


def test_a_negative_grace_period_is_refused(file_url):
    with pytest.raises(ValueError, match="older_than"):
        find_uncommitted(file_url, older_than=timedelta(seconds=-1))


# --- S3 multipart uploads ----------------------------------------------------------------------


def _start_upload(store: Store, key: str) -> str:
    bucket = store.location.path.split("/", 1)[0]
    upload = store.fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)
    store.fs.call_s3(
        "upload_part", Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 1024
    )
    return upload["UploadId"]


def _uploads(store: Store, prefix: str) -> set[tuple[str, str]]:
    bucket = store.location.path.split("/", 1)[0]
    listed = store.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix)
    return {(u["Key"], u["UploadId"]) for u in listed.get("Uploads", [])}


def test_orphaned_multipart_uploads_under_the_prefix_are_aborted_and_no_others(s3_url):
    store = Store.from_url(s3_url)
    bucket, _, prefix = store.location.path.partition("/")
    neighbour = f"t-{uuid.uuid4().hex[:12]}"  # another storage prefix in the same bucket
    keys = {
        "ours": f"{prefix}/_local/big/{uuid.uuid4().hex}.bin",
        "foreign name": f"{prefix}/_local/big/backup.tar",
        "elsewhere": f"{neighbour}/_local/big/{uuid.uuid4().hex}.bin",
    }
    uploads = {name: (key, _start_upload(store, key)) for name, key in keys.items()}
    ours, foreign_name, elsewhere = uploads["ours"], uploads["foreign name"], uploads["elsewhere"]
    try:
        assert find_uncommitted(s3_url, older_than=timedelta(hours=1)) == []  # still uploading
        found = find_uncommitted(s3_url, older_than=NOW, now=_in_two_hours())
        assert [(f.kind, f.path, f.upload_id) for f in found] == [(MULTIPART, f"{bucket}/{ours[0]}", ours[1])]
        assert [r.upload_id for r in remove_uncommitted(s3_url, older_than=NOW, now=_in_two_hours())] == [
            ours[1]
        ]
        assert _uploads(store, f"{prefix}/") == {foreign_name}
        assert _uploads(store, f"{neighbour}/") == {elsewhere}
    finally:
        for key, upload_id in (foreign_name, elsewhere):
            store.fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)
