"""Grants outside Airflow: signing, checking, and the two claims of a hand-off, on real storage."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskflow_exclusive import publish
from taskflow_exclusive.errors import (
    AlreadyClaimedError,
    GrantAddressError,
    GrantExpiredError,
    GrantNotInConfError,
    GrantRevokedError,
    GrantSignatureError,
    MalformedRecordError,
    SigningKeyError,
)
from taskflow_exclusive.grants import Grant, accept, grant_handle, grants_in, handoff_consumer_id
from taskflow_exclusive.host import StandaloneHost, install_host
from taskflow_exclusive.signing import SIGNING_VARIABLE, SigningKeys, signing_keys
from tests.ledgers import postgres_claims, redis_claims  # noqa: F401 - fixtures

OLD, NEW = "o" * 32, "n" * 40
KEYRING = json.dumps({"sign_with": "2026-11", "keys": {"2026-11": NEW, "2026-05": OLD}})
PARENT = "parent/r1/grant_extract_to_child/-1"


@pytest.fixture
def keys(monkeypatch) -> SigningKeys:
    monkeypatch.setenv(f"AIRFLOW_VAR_{SIGNING_VARIABLE.upper()}", KEYRING)  # read as a Variable
    return signing_keys()


def _granted(url: str, **kwargs) -> tuple[object, dict]:
    handle = publish({"orders": [1, 2, 3]}, storage=url)
    document = grant_handle(handle, "child", granted_by=PARENT, **kwargs).to_dict()
    return handle, document


def test_the_child_run_named_in_conf_gets_the_value_and_its_retry_gets_it_again(keys, file_url):
    _, document = _granted(file_url)
    conf = {"orders": document}
    grant = accept(document, dag_id="child", run_id="c1", conf=conf)
    assert grant.claim("child/c1/load/-1", conf=conf) == {"orders": [1, 2, 3]}
    assert grant.claim("child/c1/load/-1", conf=conf) == {"orders": [1, 2, 3]}
    assert [r.consumer_id for r in grant.holders()] == ["child/c1/load/-1"]


def test_a_second_child_run_replaying_the_conf_is_refused_naming_the_first(keys, file_url):
    _, document = _granted(file_url)
    conf = {"orders": document}
    accept(document, dag_id="child", run_id="c1", conf=conf).claim("child/c1/load/-1", conf=conf)
    with pytest.raises(AlreadyClaimedError) as refused:
        accept(document, dag_id="child", run_id="c2", conf=conf).claim("child/c2/load/-1", conf=conf)
    assert refused.value.holder == "child/c1/load/-1"


def test_the_parents_tasks_can_no_longer_claim_a_handed_off_value(keys, file_url):
    handle, _ = _granted(file_url)
    with pytest.raises(AlreadyClaimedError) as refused:
        handle.claim("parent/r1/load/-1")
    assert refused.value.holder == handoff_consumer_id("child", None, PARENT)
    assert [r.consumer_id for r in handle.holders()] == ["handoff to child by " + PARENT]


def test_a_retry_of_the_granting_task_grants_again_and_another_granter_is_refused(keys, file_url):
    handle, first = _granted(file_url)
    again = grant_handle(handle, "child", granted_by=PARENT).to_dict()
    assert again["uri"] == first["uri"]
    with pytest.raises(AlreadyClaimedError):
        grant_handle(handle, "child", granted_by="parent/r1/other_grant/-1")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda d: d.update(to_dag="other"), GrantSignatureError),  # tampered: the signature breaks first
        (lambda d: d.update(signature="0" * 64), GrantSignatureError),
        (lambda d: d.update(key_id="2025-01"), GrantSignatureError),
    ],
    ids=["tampered-addressee", "forged-signature", "unknown-key"],
)
def test_an_altered_grant_is_refused_before_anything_is_claimed(keys, file_url, change, error):
    handle, document = _granted(file_url)
    change(document)
    with pytest.raises(error):
        accept(document, dag_id="child", run_id="c1", conf={"orders": document})
    assert [r.consumer_id for r in handle.holders()] == ["handoff to child by " + PARENT]


def test_a_grant_for_another_dag_or_run_is_refused(keys, file_url):
    _, document = _granted(file_url)
    with pytest.raises(GrantAddressError, match="addressed to DAG 'child', not to 'intruder'"):
        accept(document, dag_id="intruder", run_id="c1", conf={"orders": document})
    _, to_run = _granted(file_url, to_run="c7")
    with pytest.raises(GrantAddressError, match="run 'c7'"):
        accept(to_run, dag_id="child", run_id="c8", conf={"orders": to_run})
    assert accept(to_run, dag_id="child", run_id="c7", conf={"orders": to_run}).to_run == "c7"


def test_an_expired_grant_is_refused(keys, file_url):
    _, document = _granted(file_url, expires_in=timedelta(minutes=5))
    later = datetime.now(timezone.utc) + timedelta(minutes=6)
    accept(document, dag_id="child", run_id="c1", conf={"o": document})  # still valid now
    with pytest.raises(GrantExpiredError, match="expired at"):
        accept(document, dag_id="child", run_id="c1", conf={"o": document}, now=later)


def test_a_grant_that_is_not_in_this_runs_conf_is_refused(keys, file_url):
    _, document = _granted(file_url)
    _, other = _granted(file_url)
    with pytest.raises(GrantNotInConfError, match="not in this DAG run's conf"):
        accept(document, dag_id="child", run_id="c1", conf={"orders": other})
    grant = Grant.from_dict(document)
    with pytest.raises(GrantNotInConfError):
        grant.claim("child/c1/load/-1", conf={"orders": other})


def test_several_grants_in_one_conf_each_go_to_their_claimer(keys, file_url):
    _, first = _granted(file_url)
    _, second = _granted(file_url)
    conf = {"orders": first, "more": [second]}
    assert grants_in(conf) == [first, second]
    assert accept(second, dag_id="child", run_id="c1", conf=conf).claim("child/c1/b/-1", conf=conf)
    assert accept(first, dag_id="child", run_id="c1", conf=conf).claim("child/c1/a/-1", conf=conf)


def test_a_released_hand_off_revokes_the_grant(keys, file_url):
    handle, document = _granted(file_url)
    handle.release(handoff_consumer_id("child", None, PARENT), reason="revoking the hand-off")
    with pytest.raises(GrantRevokedError, match="revoked"):
        Grant.from_dict(document).claim("child/c1/load/-1", conf={"orders": document})


def test_rotation_old_grants_stay_valid_while_the_new_key_signs(keys, file_url, monkeypatch):
    old_only = json.dumps({"sign_with": "2026-05", "keys": {"2026-05": OLD}})
    monkeypatch.setenv(f"AIRFLOW_VAR_{SIGNING_VARIABLE.upper()}", old_only)
    _, signed_old = _granted(file_url)
    assert signed_old["key_id"] == "2026-05"
    monkeypatch.setenv(f"AIRFLOW_VAR_{SIGNING_VARIABLE.upper()}", KEYRING)  # rotate: new signs, old accepted
    _, signed_new = _granted(file_url)
    assert signed_new["key_id"] == "2026-11"
    conf = {"a": signed_old, "b": signed_new}
    assert accept(signed_old, dag_id="child", run_id="c1", conf=conf).key_id == "2026-05"
    only_new = json.dumps({"sign_with": "2026-11", "keys": {"2026-11": NEW}})
    monkeypatch.setenv(f"AIRFLOW_VAR_{SIGNING_VARIABLE.upper()}", only_new)  # old key retired
    with pytest.raises(GrantSignatureError, match="2026-05"):
        accept(signed_old, dag_id="child", run_id="c1", conf=conf)


def test_without_a_key_nothing_is_granted_and_the_error_names_both_settings(file_url, monkeypatch):
    monkeypatch.delenv(f"AIRFLOW_VAR_{SIGNING_VARIABLE.upper()}", raising=False)
    previous = install_host(StandaloneHost())
    try:
        handle = publish([1], storage=file_url)
        with pytest.raises(SigningKeyError) as missing:
            grant_handle(handle, "child", granted_by=PARENT)
        assert "taskflow_exclusive_signing" in str(missing.value)
        assert SIGNING_VARIABLE in str(missing.value)
        assert handle.holders() == []  # nothing was recorded
    finally:
        install_host(previous)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("short", "fewer than 32"),
        ('{"sign_with": "a", "keys": {"b": "' + "x" * 32 + '"}}', "not among its keys"),
        ('{"sign_with": "a b", "keys": {"a b": "' + "x" * 32 + '"}}', "is not 1-64 characters"),
        ("{not json", "not JSON"),
    ],
)
def test_an_unusable_keyring_is_refused_without_showing_the_secret(text, problem):
    with pytest.raises(SigningKeyError, match=problem) as refused:
        SigningKeys.parse(text, source="test")
    assert "x" * 32 not in str(refused.value)
    assert "x" * 32 not in repr(SigningKeys.parse("x" * 32))


def _hand_off_once(url: str, claims: str | None) -> None:
    handle = publish(b"bytes " * 100, storage=url, claims=claims)
    document = grant_handle(handle, "child", granted_by=PARENT).to_dict()
    conf = {"v": document}
    grant = accept(document, dag_id="child", run_id="c1", conf=conf)
    assert grant.claim("child/c1/load/-1", conf=conf) == b"bytes " * 100
    with pytest.raises(AlreadyClaimedError, match="child/c1/load/-1"):
        grant.claim("child/c2/load/-1", conf=conf)
    with pytest.raises(AlreadyClaimedError, match="handoff to child"):
        handle.claim("parent/r1/load/-1")
    assert handle.purge() >= 4  # value, manifest, the hand-off record and the child's claim
    assert handle.holders() == [] and grant.holders() == []


def test_a_hand_off_is_two_atomic_claims_on_every_store(keys, storage_url):
    _hand_off_once(storage_url, None)


@pytest.mark.parametrize("ledger", ["redis_claims", "postgres_claims"])
def test_a_hand_off_is_two_atomic_claims_in_every_ledger(keys, file_url, ledger, request):
    _hand_off_once(file_url, request.getfixturevalue(ledger))


# --- properties ---------------------------------------------------------------------------------

_JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_change_to_a_signed_grant_is_refused(keys, file_url, data):
    if not hasattr(test_any_change_to_a_signed_grant_is_refused, "document"):
        test_any_change_to_a_signed_grant_is_refused.document = _granted(file_url)[1]
    document = json.loads(json.dumps(test_any_change_to_a_signed_grant_is_refused.document))
    field = data.draw(st.sampled_from(sorted(document)))
    replacement = data.draw(_JSON_SCALARS.filter(lambda v: v != document[field]))
    if isinstance(document[field], dict) and data.draw(st.booleans()):
        inner = data.draw(st.sampled_from(sorted(document[field])))
        document[field][inner] = data.draw(_JSON_SCALARS.filter(lambda v, i=inner: v != document[field][i]))
    else:
        document[field] = replacement
    with pytest.raises((GrantSignatureError, MalformedRecordError)):
        accept(document, dag_id="child", run_id="c1", conf={"orders": document})


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        _JSON_SCALARS,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    )
)
def test_anything_that_is_not_a_grant_is_refused_as_malformed(value):
    with pytest.raises(MalformedRecordError):
        Grant.from_dict(value)


def test_the_cli_shows_the_hand_off_and_who_holds_the_value_in_the_child(keys, file_url, capsys, tmp_path):
    from taskflow_exclusive.cli.main import main

    handle, document = _granted(file_url)
    (tmp_path / "handle.json").write_text(handle.to_json())
    assert main(["holders", f"@{tmp_path / 'handle.json'}"]) == 0
    before = capsys.readouterr().out
    assert f"'handoff to child by {PARENT}'" in before
    assert "handed off to DAG child: not claimed there yet" in before
    conf = {"orders": document}
    accept(document, dag_id="child", run_id="c1", conf=conf).claim("child/c1/load/-1", conf=conf)
    assert main(["holders", f"@{tmp_path / 'handle.json'}"]) == 0
    assert "handed off to DAG child: held by 'child/c1/load/-1' since " in capsys.readouterr().out
