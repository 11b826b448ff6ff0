"""The Redis claim ledger: atomic claims with the holder in one round trip, records, keys, specs."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from taskflow_exclusive import (
    AlreadyClaimedError,
    ClaimStoreConfigError,
    ClaimStoreUnavailableError,
    StorageConfigError,
    publish,
)
from taskflow_exclusive.claims import open_ledger
from taskflow_exclusive.claims.redis import RedisLedger
from taskflow_exclusive.claims.specs import forget_opened
from taskflow_exclusive.storage.store import Store
from tests import ledgers
from tests.ledgers import REDIS_URL, redis_client, unique
from tests.private_services import PASSWORD

redis_claims, redis_server, private_redis = ledgers.redis_claims, ledgers.redis_server, ledgers.private_redis


def _ledger(spec: str) -> RedisLedger:
    ledger = open_ledger(spec, Store.from_url("memory://unused"))
    assert isinstance(ledger, RedisLedger)
    return ledger


def _key_prefix(spec: str) -> str:
    return spec.split("prefix=", 1)[1].split("&", 1)[0]


def test_a_handle_guarded_by_redis_goes_to_one_consumer_and_records_the_ledger(file_url, redis_claims):
    handle = publish({"rows": 3}, storage=file_url, claims=redis_claims)
    assert handle.claims == redis_claims
    assert handle.claim(consumer_id="loader") == {"rows": 3}
    assert handle.claim(consumer_id="loader") == {"rows": 3}  # its retry
    with pytest.raises(AlreadyClaimedError) as refused:
        handle.claim(consumer_id="auditor")
    assert refused.value.holder == "loader"
    assert "Redis ledger redis://127.0.0.1" in str(refused.value)
    store = Store.from_url(file_url)  # the value's folder holds no claim records: Redis does
    assert not [path for path in store.fs.find(store.location.path) if ".claims/" in path]


def test_a_claim_is_one_hash_field_under_the_prefix_holding_the_record_with_no_expiry(redis_claims):
    ledger = _ledger(redis_claims)
    uri = f"file:///values/{unique('v')}.json"
    before = datetime.now(timezone.utc)
    record = ledger.claim(uri, "dag/run/task/-1")
    key = f"{_key_prefix(redis_claims)}:claims:{hashlib.sha256(uri.encode()).hexdigest()}"
    assert ledger.key(uri) == key
    client = redis_client()
    assert client.hkeys(key) == [b"0"]
    stored = json.loads(client.hget(key, "0"))
    assert stored["consumer_id"] == "dag/run/task/-1"
    claimed_at = datetime.fromisoformat(stored["claimed_at"])
    assert before <= claimed_at <= datetime.now(timezone.utc) + timedelta(seconds=1)
    assert claimed_at == record.claimed_at
    assert client.ttl(key) == -1  # never expires under its holder


def test_max_claims_uses_one_field_per_slot_and_refuses_the_fourth_consumer(redis_claims):
    ledger = _ledger(redis_claims)
    uri = f"file:///values/{unique('v')}.json"
    slots = [ledger.claim(uri, consumer, max_claims=3).slot for consumer in ("a", "b", "c")]
    assert slots == [0, 1, 2]
    assert ledger.claim(uri, "b", max_claims=3).slot == 1
    with pytest.raises(AlreadyClaimedError) as refused:
        ledger.claim(uri, "d", max_claims=3)
    assert [h.consumer_id for h in refused.value.holders] == ["a", "b", "c"]
    assert sorted(redis_client().hkeys(ledger.key(uri))) == [b"0", b"1", b"2"]


def test_holders_release_and_purge_work_on_redis(file_url, redis_claims, caplog):
    handle = publish("value", storage=file_url, claims=redis_claims, max_claims=2)
    handle.claim(consumer_id="crashed-worker")
    handle.claim(consumer_id="other")
    assert [(h.consumer_id, h.slot) for h in handle.holders()] == [("crashed-worker", 0), ("other", 1)]
    with caplog.at_level("WARNING", logger="taskflow_exclusive.claims"):
        released = handle.release("crashed-worker", reason="node lost")
    assert released.consumer_id == "crashed-worker"
    assert "node lost" in caplog.text and "Redis ledger" in caplog.text
    assert handle.claim(consumer_id="replacement") == "value"
    ledger = _ledger(redis_claims)
    assert handle.purge() == 4  # data, manifest and both claims
    assert redis_client().exists(ledger.key(handle.uri)) == 0


def test_the_claims_variable_chooses_redis_when_no_argument_does(file_url, redis_claims, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_CLAIMS_URL", redis_claims)
    handle = publish([1], storage=file_url)
    assert handle.claims == redis_claims
    assert handle.claim(consumer_id="x") == [1]
    assert redis_client().hexists(_ledger(redis_claims).key(handle.uri), "0")


def test_an_airflow_connection_id_picks_redis_by_conn_type_and_is_what_the_handle_records(
    file_url, monkeypatch
):
    conn_id = unique("tfx_redis_conn")
    prefix = unique("tfx_test")
    host, port = REDIS_URL.split("//", 1)[1].split("/", 1)[0].split(":")
    connection = {"conn_type": "redis", "host": host, "port": int(port), "extra": {"claims_prefix": prefix}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
    try:
        handle = publish("via connection", storage=file_url, claims=conn_id)
        assert handle.claims == conn_id
        assert handle.claim(consumer_id="c1") == "via connection"
        ledger = _ledger(conn_id)
        assert ledger.key(handle.uri).startswith(f"{prefix}:claims:")
        assert redis_client().hexists(ledger.key(handle.uri), "0")
        assert f"Airflow connection {conn_id!r}" in ledger.describe()
    finally:
        for key in redis_client().scan_iter(match=f"{prefix}:*"):
            redis_client().delete(key)


def test_a_connection_of_another_type_or_a_missing_one_is_refused_clearly(file_url, monkeypatch):
    conn_id = unique("tfx_http_conn")
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "http", "host": "x"}))
    with pytest.raises(StorageConfigError, match="conn_type 'http'") as wrong:
        publish(1, storage=file_url, claims=conn_id)
    assert "redis" in str(wrong.value) and "postgres" in str(wrong.value)
    missing = unique("tfx_missing_conn")
    with pytest.raises(StorageConfigError, match=f"AIRFLOW_CONN_{missing.upper()}"):
        publish(1, storage=file_url, claims=missing)


def test_a_password_never_reaches_the_handle_and_the_consumer_takes_it_from_its_variable(
    file_url, redis_server, monkeypatch
):
    spec = redis_server.url + "?prefix=" + unique("tfx_test")
    handle = publish("secret-guarded", storage=file_url, claims=spec)
    assert PASSWORD not in handle.to_json()
    assert handle.claims == spec.replace(PASSWORD, "***")

    # A consumer elsewhere: a fresh process holding the handle and its own Variable.
    program = (
        "import sys\n"
        "from taskflow_exclusive import ExclusiveHandle, StorageConfigError\n"
        "handle = ExclusiveHandle.from_json(sys.argv[1])\n"
        "try:\n"
        "    print('VALUE', handle.claim(consumer_id='remote'))\n"
        "except StorageConfigError as exc:\n"
        "    print('REFUSED', exc)\n"
    )

    def consume(variable: str | None) -> str:
        env = {k: v for k, v in __import__("os").environ.items() if "CLAIMS_URL" not in k}
        if variable is not None:
            env["AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_CLAIMS_URL"] = variable
        done = subprocess.run(
            [sys.executable, "-c", program, handle.to_json()],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=True,
        )
        return done.stdout

    unset = consume(None)
    assert unset.startswith("REFUSED") and PASSWORD not in unset
    assert "taskflow_exclusive_claims_url" in unset and "is not set" in unset
    elsewhere = consume("redis://:other-password@127.0.0.1:1/0")
    assert elsewhere.startswith("REFUSED") and "names another ledger" in elsewhere
    assert "other-password" not in elsewhere
    assert consume(spec).strip() == "VALUE secret-guarded"
    with pytest.raises(AlreadyClaimedError) as refused:
        monkeypatch.setenv("AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_CLAIMS_URL", spec)
        handle.claim(consumer_id="local")
    assert refused.value.holder == "remote"
    assert PASSWORD not in str(refused.value)


def test_a_wrong_password_is_a_configuration_error_without_the_password(file_url, redis_server, monkeypatch):
    wrong = redis_server.url.replace(PASSWORD, "not-the-password")
    monkeypatch.setenv("AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_CLAIMS_URL", wrong)
    handle = publish("x", storage=file_url)
    with pytest.raises(ClaimStoreConfigError) as failed:  # permanent: a retry cannot help
        handle.claim(consumer_id="c")
    assert not isinstance(failed.value, ClaimStoreUnavailableError)
    assert "password" in str(failed.value)
    assert "not-the-password" not in str(failed.value)
    assert redis_server.address in str(failed.value)
    assert "***" in failed.value.ledger


def test_a_redis_without_aof_gets_a_warning_that_claims_are_lost_on_restart(caplog):
    from tests.private_services import start_private_redis

    volatile = start_private_redis(password=None, appendonly=False)
    try:
        with caplog.at_level("WARNING", logger="taskflow_exclusive.claims"):
            _ledger(volatile.url).claim("file:///v/1.json", "c")
            _ledger(volatile.url).claim("file:///v/2.json", "c")
        warnings = [r for r in caplog.records if "appendonly" in r.getMessage()]
        assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    finally:
        volatile.stop()


def test_a_redis_with_aof_gets_no_durability_warning(redis_server, caplog):
    with caplog.at_level("WARNING", logger="taskflow_exclusive.claims"):
        _ledger(redis_server.url + "?prefix=" + unique("p")).claim("file:///v/1.json", "c")
    assert "appendonly" not in caplog.text


def test_a_malformed_redis_url_is_refused_when_publishing(file_url):
    forget_opened()
    with pytest.raises(StorageConfigError, match="not a valid Redis URL"):
        publish(1, storage=file_url, claims="redis://127.0.0.1:6379/0?socket_timeout=abc")


def test_inside_airflow_tasks_the_claims_variable_puts_the_claims_in_redis(
    airflow_db, tmp_path, file_url, redis_claims
):
    from tests.airflow_harness import DAGS, recorded, run_dag_in_subprocess

    result = run_dag_in_subprocess(
        DAGS / "core_in_plain_tasks.py",
        conf={"results": str(tmp_path), "storage": file_url},
        env={"AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_CLAIMS_URL": redis_claims},
    )
    assert result.task_state("first") == "success"
    assert result.task_state("second") == "failed"
    rows = {row["task"]: row for row in recorded(tmp_path)}
    holder = f"core_in_plain_tasks/{result.run_id}/first/-1"
    assert rows["second"]["holder"] == holder
    stored = redis_client().hget(_ledger(redis_claims).key(rows["first"]["uri"]), "0")
    assert json.loads(stored)["consumer_id"] == holder
