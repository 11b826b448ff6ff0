"""The SQL claim ledger on PostgreSQL, MariaDB and SQLite: the table, the key, the specs."""

from __future__ import annotations

import importlib.util
import json

import pytest

from taskflow_exclusive import (
    AlreadyClaimedError,
    ClaimStoreConfigError,
    ClaimStoreUnavailableError,
    StorageConfigError,
    publish,
)
from taskflow_exclusive.claims import open_ledger
from taskflow_exclusive.claims.sql import SqlLedger
from taskflow_exclusive.storage.store import Store
from tests import ledgers
from tests.ledgers import sql_engine, unique
from tests.private_services import PASSWORD

sql_claims, postgres_claims, mysql_claims, sqlite_claims = (
    ledgers.sql_claims,
    ledgers.postgres_claims,
    ledgers.mysql_claims,
    ledgers.sqlite_claims,
)
postgres_server, private_postgres = ledgers.postgres_server, ledgers.private_postgres


def _ledger(spec: str) -> SqlLedger:
    ledger = open_ledger(spec, Store.from_url("memory://unused"))
    assert isinstance(ledger, SqlLedger)
    return ledger


def _rows(spec: str, table: str) -> list[dict]:
    from sqlalchemy import text

    url = spec.split("?", 1)[0]
    engine = sql_engine(url)
    try:
        with engine.connect() as conn:
            found = conn.execute(text(f"SELECT * FROM {table} ORDER BY value_key, slot")).mappings()
            return [dict(row) for row in found]
    finally:
        engine.dispose()


def test_a_handle_guarded_by_sql_goes_to_one_consumer_and_records_the_ledger(file_url, sql_claims):
    handle = publish({"rows": 3}, storage=file_url, claims=sql_claims)
    assert handle.claims == sql_claims
    assert handle.claim(consumer_id="loader") == {"rows": 3}
    assert handle.claim(consumer_id="loader") == {"rows": 3}  # its retry
    with pytest.raises(AlreadyClaimedError) as refused:
        handle.claim(consumer_id="auditor")
    assert refused.value.holder == "loader"
    assert "SQL ledger" in str(refused.value)


def test_the_table_is_made_on_first_use_with_a_primary_key_and_columns_for_operators(file_url, sql_claims):
    from sqlalchemy import exc, inspect, text

    ledger = _ledger(sql_claims)
    handle = publish("v", storage=file_url, claims=sql_claims)
    engine = sql_engine(sql_claims.split("?", 1)[0])
    try:
        assert not inspect(engine).has_table(ledger.table_name)
        handle.claim(consumer_id="dag/run/task/3")
        assert inspect(engine).get_pk_constraint(ledger.table_name)["constrained_columns"] == [
            "value_key",
            "slot",
        ]
        [row] = _rows(sql_claims, ledger.table_name)
        assert row["uri"] == handle.uri
        assert row["consumer_id"] == "dag/run/task/3"
        assert row["slot"] == 0
        assert row["claimed_at"].endswith("+00:00")
        assert row["value_key"] == ledger.value_key(handle.uri)
        # The key is the database's: a second row for the same slot is refused by the table itself.
        with pytest.raises(exc.IntegrityError), engine.begin() as conn:
            columns = ", ".join(row)
            values = ", ".join(f":{name}" for name in row)
            conn.execute(text(f"INSERT INTO {ledger.table_name} ({columns}) VALUES ({values})"), row)
    finally:
        engine.dispose()


def test_each_slot_is_a_row_and_holders_release_and_purge_work(file_url, sql_claims, caplog):
    ledger = _ledger(sql_claims)
    handle = publish("value", storage=file_url, claims=sql_claims, max_claims=2)
    handle.claim(consumer_id="crashed-worker")
    handle.claim(consumer_id="other")
    with pytest.raises(AlreadyClaimedError):
        handle.claim(consumer_id="third")
    assert [(h.consumer_id, h.slot) for h in handle.holders()] == [("crashed-worker", 0), ("other", 1)]
    with caplog.at_level("WARNING", logger="taskflow_exclusive.claims"):
        assert handle.release("crashed-worker", reason="node lost").consumer_id == "crashed-worker"
    assert "node lost" in caplog.text and "SQL ledger" in caplog.text
    assert handle.claim(consumer_id="third") == "value"
    assert len(_rows(sql_claims, ledger.table_name)) == 2
    handle.purge()
    assert _rows(sql_claims, ledger.table_name) == []


def test_a_constraint_violation_other_than_the_key_is_an_error_and_never_taken_for_a_holder(sql_claims):
    """Only a duplicate key means "taken" (no INSERT IGNORE that would swallow anything else)."""
    from sqlalchemy import CheckConstraint

    from taskflow_exclusive.claims.sql import _claims_table

    ledger = _ledger(sql_claims)
    guarded = _claims_table(ledger.table_name)
    guarded.append_constraint(CheckConstraint("consumer_id <> 'forbidden'", name="no_forbidden"))
    engine = sql_engine(sql_claims.split("?", 1)[0])
    try:
        guarded.create(engine)
    finally:
        engine.dispose()
    uri = f"file:///values/{unique('v')}.json"
    with pytest.raises(ClaimStoreConfigError) as failed:  # permanent: never "retry later"
        ledger.claim(uri, "forbidden")
    assert "IntegrityError" in str(failed.value) or "constraint" in str(failed.value).lower()
    assert not isinstance(failed.value, ClaimStoreUnavailableError)
    assert ledger.holders(uri) == []
    assert ledger.claim(uri, "allowed").consumer_id == "allowed"


@pytest.mark.parametrize(
    "spec",
    ["sqlite:///relative/claims.db", "sqlite://", "sqlite:///:memory:"],
)
def test_a_sqlite_ledger_must_be_a_file_named_by_absolute_path(file_url, spec):
    with pytest.raises(StorageConfigError, match="absolute path"):
        publish(1, storage=file_url, claims=spec)


@pytest.mark.parametrize(
    ("option", "message"),
    [("timeout=soon", "not a number of seconds"), ("table=x;DROP TABLE y", "plain SQL identifier")],
)
def test_malformed_sql_options_are_refused_when_publishing(file_url, tmp_path, option, message):
    with pytest.raises(StorageConfigError, match=message):
        publish(1, storage=file_url, claims=f"sqlite:///{tmp_path}/c.db?{option}")


def test_a_database_other_than_postgres_mysql_or_sqlite_is_refused(file_url, monkeypatch):
    with pytest.raises(StorageConfigError, match="Unknown claim ledger") as unknown:
        publish(1, storage=file_url, claims="oracle://scott@db/orcl")
    assert "postgresql://" in str(unknown.value) and "redis://" in str(unknown.value)
    conn_id = unique("tfx_mssql")
    connection = {"conn_type": "postgres", "host": "db", "extra": {"sqlalchemy_scheme": "mssql+pymssql"}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
    with pytest.raises(StorageConfigError, match="does not support"):
        publish(1, storage=file_url, claims=conn_id)


@pytest.mark.skipif(importlib.util.find_spec("MySQLdb") is not None, reason="mysqlclient is installed")
def test_a_missing_driver_names_the_extra_to_install(file_url):
    with pytest.raises(StorageConfigError, match=r"taskflow-exclusive\[mysql\]"):
        publish(1, storage=file_url, claims="mysql+mysqldb://root@127.0.0.1/test")


def test_the_postgres_scheme_alias_that_sqlalchemy_dropped_is_accepted(file_url, postgres_claims):
    assert postgres_claims.startswith("postgresql")
    alias = "postgres" + postgres_claims[len("postgresql") :]
    handle = publish("alias", storage=file_url, claims=alias)
    assert handle.claims == alias
    assert handle.claim(consumer_id="a") == "alias"
    assert [row["consumer_id"] for row in _rows(postgres_claims, _ledger(alias).table_name)] == ["a"]


def test_the_claims_variable_chooses_sql_when_no_argument_does(file_url, sqlite_claims, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_CLAIMS_URL", sqlite_claims)
    handle = publish([1], storage=file_url)
    assert handle.claims == sqlite_claims
    assert handle.claim(consumer_id="x") == [1]
    assert [row["consumer_id"] for row in _rows(sqlite_claims, _ledger(sqlite_claims).table_name)] == ["x"]


def test_an_sqlite_airflow_connection_is_recorded_by_id(file_url, tmp_path, monkeypatch):
    conn_id, table = unique("tfx_sqlite_conn"), unique("claims")
    database = tmp_path / "conn-claims.db"
    connection = {"conn_type": "sqlite", "host": str(database), "extra": {"claims_table": table}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
    handle = publish("by id", storage=file_url, claims=conn_id)
    assert handle.claims == conn_id
    assert handle.claim(consumer_id="c") == "by id"
    assert [row["consumer_id"] for row in _rows(f"sqlite:///{database}", table)] == ["c"]


def test_a_postgres_connection_with_a_password_keeps_it_out_of_handles_and_errors(
    file_url, postgres_server, monkeypatch
):
    conn_id, table = unique("tfx_pg_conn"), unique("claims")
    connection = {
        "conn_type": "postgres",
        "host": "127.0.0.1",
        "port": postgres_server.port,
        "login": "postgres",
        "password": PASSWORD,
        "schema": "postgres",
        "extra": {"claims_table": table, "timeout": 3},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
    handle = publish("guarded", storage=file_url, claims=conn_id)
    assert handle.claims == conn_id and PASSWORD not in handle.to_json()
    assert handle.claim(consumer_id="first") == "guarded"
    with pytest.raises(AlreadyClaimedError) as refused:
        handle.claim(consumer_id="second")
    assert PASSWORD not in str(refused.value)
    assert f"Airflow connection {conn_id!r}" in str(refused.value)
    assert _ledger(conn_id).timeout == 3


def test_a_url_password_is_withheld_from_the_handle_and_found_again_in_the_variable(
    file_url, postgres_server, monkeypatch
):
    spec = f"{postgres_server.url}?table={unique('claims')}"
    handle = publish("guarded", storage=file_url, claims=spec)
    assert PASSWORD not in handle.to_json()
    assert handle.claims == spec.replace(PASSWORD, "***")
    with pytest.raises(StorageConfigError) as unresolved:
        handle.claim(consumer_id="consumer")
    message = str(unresolved.value)
    assert "taskflow_exclusive_claims_url" in message and "connection id" in message
    assert PASSWORD not in message
    monkeypatch.setenv("AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_CLAIMS_URL", spec)
    assert handle.claim(consumer_id="consumer") == "guarded"
    assert handle.holders()[0].consumer_id == "consumer"


def test_a_wrong_database_password_is_a_configuration_error_without_the_password(file_url, postgres_server):
    wrong = postgres_server.url.replace(PASSWORD, "not-the-password")
    ledger = _ledger(wrong + "?timeout=3")
    with pytest.raises(ClaimStoreConfigError) as failed:
        ledger.claim("file:///values/x.json", "c")
    assert not isinstance(failed.value, ClaimStoreUnavailableError)
    text = str(failed.value)
    assert "Check the user and password" in text
    assert "not-the-password" not in text and "password authentication failed" in text
    assert postgres_server.address.split(":")[1] in text


def _blocked_claims(engine, server: str, table: str) -> int:
    """How many statements on ``table`` wait for a row lock right now."""
    from sqlalchemy import text

    if server == "postgres":
        query = (
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE :pattern AND pid <> pg_backend_pid()"
        )
    else:
        query = (
            "SELECT count(*) FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT' "
            "AND trx_query LIKE :pattern"
        )
    with engine.connect() as conn:
        return int(conn.execute(text(query), {"pattern": f"%{table}%"}).scalar())


def _sessions_on(engine, server: str, table: str) -> list[tuple]:
    """What every session touching ``table`` is doing (state, wait, statement), for a failure message."""
    from sqlalchemy import text

    if server == "postgres":
        query = (
            "SELECT state, wait_event_type, wait_event, left(query, 160) FROM pg_stat_activity "
            "WHERE query LIKE :pattern AND pid <> pg_backend_pid()"
        )
    else:
        query = (
            "SELECT command, state, left(info, 160) FROM information_schema.PROCESSLIST "
            "WHERE info LIKE :pattern AND id <> CONNECTION_ID()"
        )
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(query), {"pattern": f"%{table}%"})]


@pytest.mark.parametrize("claimant", ["a", "b"])
@pytest.mark.parametrize("server", ["postgres", "mysql"])
def test_a_holder_released_and_replaced_during_a_claim_is_never_taken_for_the_holder(
    server, claimant, request
):
    """The claim's one statement reads the holder too; a row released meanwhile must not be that holder.

    Another session releases ``a`` and claims the slot for ``c`` in one transaction, which commits
    while the claim waits on its row lock. PostgreSQL's statement snapshot still shows ``a``'s
    row: taken for the holder, ``a`` would be handed the value again beside ``c``, and ``b`` would
    be told the wrong holder. Both must be refused, naming ``c``.
    """
    import threading
    import time

    from sqlalchemy import text

    spec = request.getfixturevalue(f"{server}_claims")
    ledger = _ledger(spec)
    uri = f"file:///values/{unique('v')}.json"
    ledger.claim(uri, "a")
    table, key = ledger.table_name, SqlLedger.value_key(uri)
    engine = sql_engine(spec.split("?", 1)[0])
    outcome: dict[str, object] = {}

    def claim() -> None:
        try:
            outcome["won"] = ledger.claim(uri, claimant).consumer_id
        except AlreadyClaimedError as refused:
            outcome["refused"] = refused.holder
        except Exception as error:  # reported by the assertion below
            outcome["error"] = repr(error)

    try:
        with engine.connect() as other:
            replacing = other.begin()
            other.execute(text(f"DELETE FROM {table} WHERE value_key = :key AND slot = 0"), {"key": key})
            other.execute(
                text(
                    f"INSERT INTO {table} (value_key, slot, uri, consumer_id, claimed_at, host, pid) "
                    "VALUES (:key, 0, :uri, 'c', '2026-01-01T00:00:00+00:00', 'elsewhere', 1)"
                ),
                {"key": key, "uri": uri},
            )
            claiming = threading.Thread(target=claim)
            claiming.start()
            deadline = time.monotonic() + 20
            blocked = _blocked_claims(engine, server, table)
            while not blocked and claiming.is_alive() and time.monotonic() < deadline:
                time.sleep(0.02)
                blocked = _blocked_claims(engine, server, table)
            if blocked != 1:
                sessions = _sessions_on(engine, server, table)
                replacing.rollback()
                claiming.join(timeout=30)
                pytest.fail(
                    f"the claim never waited for the row lock: {blocked} statements waited; the claim "
                    f"thread {'still ran' if claiming.is_alive() else 'had ended'} with {outcome}; "
                    f"sessions on the table: {sessions}"
                )
            replacing.commit()
            claiming.join(timeout=30)
    finally:
        engine.dispose()
    assert outcome == {"refused": "c"}
    assert [holder.consumer_id for holder in ledger.holders(uri)] == ["c"]
