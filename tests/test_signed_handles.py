"""Signed handles: with a signing key every handle is signed, and consumers check it first.

The threat: someone who can write both the store and an XCom row writes a pickle of their
choosing, its manifest, and a handle to it. Everything matches, except that they do not
hold the key. With ``require_signed_handles`` such a handle is refused before anything is
read.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskflow_exclusive import publish
from taskflow_exclusive.errors import IntegrityError, MalformedRecordError, SigningKeyError
from taskflow_exclusive.handle import ExclusiveHandle
from taskflow_exclusive.signing import SIGNING_VARIABLE
from tests.airflow_harness import DAGS, recorded, run_dag_in_subprocess

KEY_ENV = f"AIRFLOW_VAR_{SIGNING_VARIABLE.upper()}"
REQUIRE_ENV = "AIRFLOW__TASKFLOW_EXCLUSIVE__REQUIRE_SIGNED_HANDLES"
OURS = json.dumps({"sign_with": "k2", "keys": {"k2": "2" * 40, "k1": "1" * 40}})


class Payload:
    """What an attacker would like a worker to unpickle."""

    def __reduce__(self):
        return (print, ("the attacker's code ran",))


@pytest.fixture
def keyring(monkeypatch):
    monkeypatch.setenv(KEY_ENV, OURS)


def test_with_a_key_every_handle_is_signed_and_claims_as_before(keyring, file_url):
    handle = publish({"rows": 3}, storage=file_url)
    assert (handle.key_id, len(handle.signature)) == ("k2", 64)
    assert ExclusiveHandle.from_json(handle.to_json()) == handle
    assert handle.claim("me") == {"rows": 3}


def test_without_a_key_handles_are_unsigned_and_read_as_before(file_url, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    handle = publish([1], storage=file_url)
    assert handle.signature is None and "signature" not in handle.to_dict()
    assert handle.claim("me") == [1]


@pytest.mark.parametrize(
    "change",
    [
        {"uri": "file:///nowhere/at/all/" + "0" * 32 + ".pickle"},
        {"max_claims": 5},
        {"digest": "blake3:" + "f" * 64},
        {"digest": "sha256:" + "f" * 64},
        {"key_id": "k1"},
    ],
    ids=["uri", "max_claims", "digest", "digest-algorithm", "key_id"],
)
def test_an_altered_signed_handle_is_refused_before_the_store_is_touched(keyring, file_url, change):
    handle = publish([1, 2], storage=file_url)
    forged = replace(handle, **change)
    with pytest.raises(IntegrityError, match="does not match its signature"):
        forged.claim("me")  # a missing object would be ObjectMissingError: the store was not read
    assert handle.holders() == []


def test_a_value_planted_with_store_and_xcom_access_is_refused_when_signatures_are_required(
    keyring, file_url, monkeypatch, capfd
):
    monkeypatch.setenv(KEY_ENV, json.dumps({"sign_with": "evil", "keys": {"evil": "e" * 40}}))
    planted = publish(Payload(), storage=file_url, serializer="pickle")  # their key, their pickle
    monkeypatch.delenv(KEY_ENV)
    unsigned = publish(Payload(), storage=file_url, serializer="pickle")  # no key at all
    monkeypatch.setenv(KEY_ENV, OURS)
    monkeypatch.setenv(REQUIRE_ENV, "True")
    with pytest.raises(IntegrityError, match="key 'evil' is not in the keyring"):
        planted.claim("victim")
    with pytest.raises(IntegrityError, match="is not signed, and this deployment requires signed handles"):
        unsigned.claim("victim")
    assert "the attacker's code ran" not in capfd.readouterr().out
    # The control: without require_signed_handles an unsigned handle is still accepted.
    monkeypatch.setenv(REQUIRE_ENV, "False")
    unsigned.claim("victim")
    assert "the attacker's code ran" in capfd.readouterr().out


def test_a_handle_signed_with_a_rotated_out_key_is_refused(keyring, file_url, monkeypatch):
    monkeypatch.setenv(KEY_ENV, json.dumps({"sign_with": "k1", "keys": {"k1": "1" * 40}}))
    old = publish([1], storage=file_url)
    monkeypatch.setenv(KEY_ENV, OURS)  # k2 signs, k1 still accepted
    assert old.claim("a") == [1]
    monkeypatch.setenv(KEY_ENV, json.dumps({"sign_with": "k2", "keys": {"k2": "2" * 40}}))
    with pytest.raises(IntegrityError, match="key 'k1' is not in the keyring"):
        old.claim("a")


def test_requiring_signatures_without_a_keyring_is_a_clear_error(file_url, monkeypatch):
    handle = publish([1], storage=file_url)
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setenv(REQUIRE_ENV, "True")
    with pytest.raises(SigningKeyError, match="No signing key is configured"):
        handle.claim("me")
    monkeypatch.setenv(REQUIRE_ENV, "perhaps")
    with pytest.raises(SigningKeyError, match="not True or False"):
        handle.claim("me")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_change_to_a_signed_handle_is_refused(keyring, file_url, data):
    if not hasattr(test_any_change_to_a_signed_handle_is_refused, "handle"):
        test_any_change_to_a_signed_handle_is_refused.handle = publish({"a": 1}, storage=file_url)
    document = test_any_change_to_a_signed_handle_is_refused.handle.to_dict()
    field = data.draw(st.sampled_from(sorted(set(document) - {"format"})))
    document[field] = data.draw(
        st.one_of(st.none(), st.integers(0, 9), st.text(max_size=70)).filter(lambda v: v != document[field])
    )
    with pytest.raises((IntegrityError, MalformedRecordError)):
        ExclusiveHandle.from_dict(document).claim("me")


def test_a_dag_on_a_deployment_that_requires_signed_handles(airflow_db, tmp_path, file_url):
    env = {KEY_ENV: OURS, REQUIRE_ENV: "True", "AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_STORAGE_URL": file_url}
    result = run_dag_in_subprocess(
        DAGS / "exclusive_two_consumers.py", conf={"results": str(tmp_path / "results")}, env=env
    )
    assert result.task_state("first") == "success", result.output[-3000:]
    assert [row["value"] for row in recorded(tmp_path / "results") if row["task"] == "first"] == [
        ["only", "once"]
    ]
    assert '"key_id":"k2"' in next((tmp_path / "store").rglob("*.manifest.json")).read_text()
