"""16 processes race for every handle, for each Redis and SQL ledger: one winner, always, told to all.

The values live on local disk; the claims go to the ledger under test. Each
round contests a batch of handles (every process claims every handle of the
batch, each in its own random order), so every handle is contested by all 16.
Counts: ``TFX_RACE_HANDLES_REDIS``, ``TFX_RACE_HANDLES_POSTGRES``,
``TFX_RACE_HANDLES_MYSQL``, ``TFX_RACE_HANDLES_SQLITE`` (default 1000 each);
``TFX_RACE_BATCH`` handles per round (default 25).
"""

from __future__ import annotations

import pytest

from taskflow_exclusive import publish
from taskflow_exclusive.claims import open_ledger
from taskflow_exclusive.storage.store import Store
from tests import crashing, ledgers
from tests.conftest import env_count
from tests.racing import race_batches

redis_claims, postgres_claims, mysql_claims, sqlite_claims = (
    ledgers.redis_claims,
    ledgers.postgres_claims,
    ledgers.mysql_claims,
    ledgers.sqlite_claims,
)

PROCESSES = 16


def _table_exists(spec: str) -> bool:
    from sqlalchemy import inspect

    url, _, query = spec.partition("?")
    table = dict(part.split("=", 1) for part in query.split("&"))["table"]
    engine = ledgers.sql_engine(url)
    try:
        return inspect(engine).has_table(table)
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("ledger", ["redis", "postgres", "mysql", "sqlite"])
def test_sixteen_processes_race_for_every_handle_and_exactly_one_wins_each(ledger, request, file_url):
    spec = request.getfixturevalue(f"{ledger}_claims")
    count = env_count(f"TFX_RACE_HANDLES_{ledger.upper()}", 1000)
    batch = env_count("TFX_RACE_BATCH", 25)
    handles = [
        publish({"handle": number}, storage=file_url, claims=spec, label="race") for number in range(count)
    ]
    assert {handle.claims for handle in handles} == {spec}
    if ledger != "redis":
        assert not _table_exists(spec)  # the 16 processes also race to create the table

    report = race_batches(
        [handle.to_json() for handle in handles],
        expected=lambda number: {"handle": number},
        processes=PROCESSES,
        batch=batch,
        context=crashing.context(),  # fork server: workers start in milliseconds
    )
    print(f"{ledger}: {report.summary()}")
    assert report.errors == [], report.summary()
    assert report.rounds == count
    assert report.double_claims == 0, report.summary()
    assert report.lost_claims == 0, report.summary()
    assert report.losers_misinformed == 0, report.summary()
    assert report.wrong_values == []
    assert all(len(report.losers[number]) == PROCESSES - 1 for number in range(count))
    assert report.overlapping >= count // 2, report.summary()  # claims really were in flight together

    # The ledger agrees with what the processes were told: one holder per handle, the winner.
    guard = open_ledger(spec, Store.from_url(file_url))
    for number, handle in enumerate(handles):
        assert [h.consumer_id for h in guard.holders(handle.uri)] == report.winners[number]
