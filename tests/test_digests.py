"""Digests name their algorithm: BLAKE3 for every value written now, sha256 still verified (#13).

A handle written before #13 carries ``"sha256": "<hex>"``; one written now carries
``"digest": "blake3:<hex>"``. The old ones stay readable, claimable, verifiable and,
when signed, their signatures still verify: integrity is not negotiable, the algorithm is.

The "old" handles here are written through the real store the way taskflow-exclusive wrote
them before #13: the same serialized bytes, and a manifest whose JSON carries the sha256 of
those bytes instead of a digest field.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import blake3
import pytest

from taskflow_exclusive import publish
from taskflow_exclusive.errors import IntegrityError, InvalidArgumentError, MalformedRecordError
from taskflow_exclusive.grants import Grant, accept, grant_handle
from taskflow_exclusive.handle import ExclusiveHandle
from taskflow_exclusive.signing import SIGNING_VARIABLE, signing_keys
from taskflow_exclusive.storage.digests import digest_of
from taskflow_exclusive.storage.layout import ObjectPaths
from taskflow_exclusive.storage.store import Store

KEY_ENV = f"AIRFLOW_VAR_{SIGNING_VARIABLE.upper()}"
KEYRING = json.dumps({"sign_with": "k1", "keys": {"k1": "1" * 40}})


@pytest.fixture
def keyring(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEYRING)


def _stored_bytes(handle: ExclusiveHandle) -> bytes:
    return Path(handle.uri.removeprefix("file://")).read_bytes()


def _as_written_before_13(handle: ExclusiveHandle, *, sign: bool = False) -> str:
    """Rewrite ``handle``'s manifest as taskflow-exclusive wrote it before #13; return the handle JSON."""
    data = {k: v for k, v in handle.to_dict().items() if k not in ("digest", "key_id", "signature")}
    data["sha256"] = hashlib.sha256(_stored_bytes(handle)).hexdigest()
    old = ExclusiveHandle.from_dict(data)
    if sign:
        old = old.signed(signing_keys())
    text = old.to_json()
    store = Store.from_url(handle.uri)
    paths = ObjectPaths.from_data_path(store.location.path, uri=handle.uri)
    store.put_complete(paths.manifest, text.encode())
    return text


# --- what is written now ----------------------------------------------------------------------------


def test_a_new_handle_carries_a_blake3_digest_of_the_stored_bytes(file_url):
    handle = publish({"rows": [1, 2, 3]}, storage=file_url)
    data = json.loads(handle.to_json())
    assert data["digest"] == "blake3:" + blake3.blake3(_stored_bytes(handle)).hexdigest()
    assert "sha256" not in data and handle.sha256 is None
    assert handle.claim("me") == {"rows": [1, 2, 3]}


def test_a_new_handle_whose_bytes_changed_is_refused_naming_blake3(file_url):
    handle = publish(b"x" * 1000, storage=file_url)
    Path(handle.uri.removeprefix("file://")).write_bytes(b"y" * 1000)
    with pytest.raises(IntegrityError, match="blake3 digest") as refused:
        handle.claim("me")
    assert refused.value.expected == handle.digest
    assert refused.value.actual == digest_of(b"y" * 1000)


# --- handles written before #13 ---------------------------------------------------------------------


def test_a_handle_of_before_13_reads_back_byte_for_byte_and_claims(file_url):
    text = _as_written_before_13(publish({"rows": 3}, storage=file_url))
    old = ExclusiveHandle.from_json(text)
    assert old.digest.startswith("sha256:") and old.sha256 == json.loads(text)["sha256"]
    assert old.to_json() == text  # what the manifest holds and what a signature covers
    assert old.claim("me") == {"rows": 3}
    assert old.claim("me") == {"rows": 3}  # a retry of the same consumer, verified again


def test_a_handle_of_before_13_whose_bytes_changed_is_refused_naming_sha256(file_url):
    handle = publish(b"a" * 4096, storage=file_url)
    old = ExclusiveHandle.from_json(_as_written_before_13(handle))
    Path(handle.uri.removeprefix("file://")).write_bytes(b"b" * 4096)
    with pytest.raises(IntegrityError, match="sha256 digest") as refused:
        old.claim("me")
    assert refused.value.actual == "sha256:" + hashlib.sha256(b"b" * 4096).hexdigest()


def test_a_handle_of_before_13_with_an_altered_sha256_is_refused_before_any_claim(file_url):
    text = _as_written_before_13(publish([1, 2], storage=file_url))
    forged = ExclusiveHandle.from_dict({**json.loads(text), "sha256": "f" * 64})
    with pytest.raises(IntegrityError, match=r"fields sha256 differ"):
        forged.claim("attacker")
    assert forged.holders() == []


def test_a_handle_relabelled_from_sha256_to_blake3_is_refused(file_url):
    text = _as_written_before_13(publish([1, 2], storage=file_url))
    data = json.loads(text)
    relabelled = {**data, "digest": "blake3:" + data.pop("sha256")}
    del relabelled["sha256"]
    with pytest.raises(IntegrityError, match="does not match the manifest"):
        ExclusiveHandle.from_dict(relabelled).claim("attacker")


def test_a_signed_handle_of_before_13_still_verifies_and_an_altered_one_is_refused(keyring, file_url):
    text = _as_written_before_13(publish({"k": "v"}, storage=file_url), sign=True)
    old = ExclusiveHandle.from_json(text)
    assert old.key_id == "k1" and "sha256" in json.loads(text)
    assert old.claim("me") == {"k": "v"}
    altered = ExclusiveHandle.from_dict({**json.loads(text), "sha256": "0" * 64})
    with pytest.raises(IntegrityError, match="does not match its signature"):
        altered.claim("other")


def test_a_grant_of_a_handle_of_before_13_carries_its_sha256_and_is_accepted(keyring, file_url):
    old = ExclusiveHandle.from_json(_as_written_before_13(publish([7], storage=file_url)))
    document = grant_handle(old, "child", granted_by="parent/r/t/-1").to_dict()
    assert document["sha256"] == old.sha256 and "digest" not in document
    conf = {"v": document}
    assert accept(document, dag_id="child", run_id="c1", conf=conf).claim("child/c1/t/-1", conf=conf) == [7]


def test_a_grant_of_a_new_handle_carries_its_blake3_digest(keyring, file_url):
    handle = publish([8], storage=file_url)
    document = grant_handle(handle, "child", granted_by="parent/r/t/-1").to_dict()
    assert document["digest"] == handle.digest and "sha256" not in document
    assert Grant.from_dict(document).digest == handle.digest


# --- the record forms -------------------------------------------------------------------------------


def _record(**digest_fields: object) -> dict:
    return {
        "format": ExclusiveHandle.FORMAT,
        "uri": f"file:///v/{'a' * 32}.json",
        "serializer": "json",
        "size": 1,
        "producer": "p",
        "created_at": "t",
        "host": "h",
        **digest_fields,
    }


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({}, "neither a digest nor a sha256 field"),
        ({"digest": "blake3:" + "0" * 64, "sha256": "0" * 64}, "both a digest and a sha256 field"),
        ({"digest": "sha256:" + "0" * 64}, "carried as the field 'sha256'"),
        ({"digest": "md5:" + "0" * 32}, "digest is not 'blake3:' followed by 64"),
        ({"digest": "0" * 64}, "digest is not 'blake3:' followed by 64"),
        ({"sha256": "blake3:" + "0" * 64}, "sha256 is not 64 lowercase hex digits"),
    ],
    ids=["none", "both", "sha256-as-digest", "unknown-algorithm", "no-algorithm", "blake3-as-sha256"],
)
def test_a_record_whose_digest_is_not_in_one_of_the_two_forms_is_refused(fields, problem):
    with pytest.raises(MalformedRecordError, match=problem):
        ExclusiveHandle.from_dict(_record(**fields), where="a test")


def test_a_handle_cannot_be_built_with_a_digest_that_names_no_algorithm():
    with pytest.raises(InvalidArgumentError, match="'blake3:' or 'sha256:'"):
        ExclusiveHandle("file:///v/a.json", "json", 1, "0" * 64, "p", "t", "h")
