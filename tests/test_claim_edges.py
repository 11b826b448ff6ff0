"""The promise at its edges, on every ledger: releases, retries, purges, bounds, bad input.

Invariants (README, "Guarantees and errors"): a value goes to at most
``max_claims`` consumers at once, each consumer holds at most one slot, a
release frees at most one slot (and only the one it saw), and every failure
is an ``ExclusiveError``. Races run between real processes
(:mod:`tests.edge_racing`), each beside its negative control: a deliberately
broken ledger (:mod:`tests.broken_ledgers`) that the same harness must catch.

Counts: ``TFX_RELEASE_RACE_ROUNDS`` (default 300) per ledger,
``TFX_PURGE_RACE_ROUNDS`` (default 40).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from taskflow_exclusive import (
    AlreadyClaimedError,
    ClaimStoreConfigError,
    ClaimStoreUnavailableError,
    ExclusiveError,
    InvalidArgumentError,
    MalformedRecordError,
    ObjectMissingError,
    publish,
)
from taskflow_exclusive.claims import open_ledger
from taskflow_exclusive.claims.base import MAX_CLAIMS_LIMIT
from taskflow_exclusive.storage.store import Store
from tests import broken_ledgers, ledgers
from tests.conftest import env_count
from tests.edge_racing import race_actions

redis_claims, postgres_claims, mysql_claims, sqlite_claims = (
    ledgers.redis_claims,
    ledgers.postgres_claims,
    ledgers.mysql_claims,
    ledgers.sqlite_claims,
)

LEDGERS = ["store", "redis", "postgres", "mysql", "sqlite"]


@pytest.fixture(params=LEDGERS)
def claims(request: pytest.FixtureRequest) -> str | None:
    """Each ledger in turn: the object store beside the value (None), Redis, PostgreSQL, MariaDB, SQLite."""
    return None if request.param == "store" else request.getfixturevalue(f"{request.param}_claims")


def _connections() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))}


# --- 1. concurrent releases ----------------------------------------------------------------------

RELEASE_RACE = [("release", "A"), ("release", "A"), ("claim-until", "B"), ("claim-until", "C")]


def _release_race(storage: str, claims: str | None, rounds: int):
    handles = [
        publish(number, storage=storage, claims=claims, label="release-race") for number in range(rounds)
    ]
    for handle in handles:
        handle.claim(consumer_id="A")
    race = race_actions([h.to_json() for h in handles], RELEASE_RACE, env=_connections())
    both_got_it = race.count(lambda n: all(outcome[0] == "value" for outcome in race.of(n, "claim")))
    two_released = race.count(
        lambda n: sum(outcome == ("released", "A") for outcome in race.of(n, "release")) > 1
    )
    return handles, race, both_got_it, two_released


@pytest.mark.slow
def test_two_releases_racing_two_claims_free_one_slot_and_one_consumer_gets_the_value(file_url, claims):
    rounds = env_count("TFX_RELEASE_RACE_ROUNDS", 300)
    handles, race, both_got_it, two_released = _release_race(file_url, claims, rounds)
    assert race.raw_errors() == []
    assert both_got_it == 0, f"{both_got_it} of {rounds} rounds gave the value to both B and C"
    assert two_released == 0, f"{two_released} rounds freed two slots for one holder"
    for number, handle in enumerate(handles):
        # A held the value, so exactly one of the two releases freed it.
        assert sum(o == ("released", "A") for o in race.of(number, "release")) == 1
        winners = [c for c in "BC" if race.of(number, "claim", c) == [("value", number)]]
        losers = [c for c in "BC" if race.of(number, "claim", c)[0][0] == "refused"]
        assert len(winners) + len(losers) == 2  # each claim got the exact value or was refused
        # The ledger agrees: the one who got the value holds it, or nobody (both came too early).
        assert [h.consumer_id for h in handle.holders()] == winners
    where = claims or "object store"
    print(f"release race ({where}): {rounds} rounds in {race.seconds:.1f} s, 0 double deliveries")


@pytest.mark.slow
def test_negative_control_a_release_that_does_not_compare_gives_the_value_twice(file_url):
    """The harness above catches a ledger whose release deletes without comparing.

    Both ledgers wait a remote store's round trip (5 ms) between a release's read and its delete:
    the broken one gives one value to two consumers; the correct one, with the same wait, never.
    """
    rounds = env_count("TFX_RELEASE_RACE_ROUNDS", 300)
    broken = broken_ledgers.spec(broken_ledgers.BLIND_RELEASE, file_url)
    _, _, broken_both, _ = _release_race(file_url, broken, rounds)
    correct = broken_ledgers.spec(broken_ledgers.SLOW_RELEASE, file_url)
    _, race, correct_both, correct_two_released = _release_race(file_url, correct, rounds)
    print(
        f"negative control: blind release gave the value to B and C in {broken_both} of {rounds} "
        f"rounds; compare-and-delete with the same delay in {correct_both}"
    )
    assert broken_both > 0
    assert race.raw_errors() == []
    assert correct_both == 0 and correct_two_released == 0


def test_two_sequential_releases_of_one_holder_free_only_its_slot(file_url, claims):
    handle = publish("v", storage=file_url, claims=claims)
    handle.claim(consumer_id="A")
    assert handle.release("A", reason="gone").consumer_id == "A"
    assert handle.claim(consumer_id="B") == "v"
    assert handle.release("A", reason="gone again") is None  # B's slot is not A's to free
    with pytest.raises(AlreadyClaimedError) as refused:
        handle.claim(consumer_id="C")
    assert refused.value.holder == "B"


def test_a_release_compares_the_exact_claim_not_just_the_consumer(file_url, claims):
    """A release that read A's first claim cannot free A's later claim of the same slot."""
    handle = publish("v", storage=file_url, claims=claims)
    ledger = open_ledger(claims, Store.from_url(file_url))
    first = ledger.claim(handle.uri, "A")
    assert ledger._delete_if_held(handle.uri, first) is True
    second = ledger.claim(handle.uri, "A")
    assert ledger._delete_if_held(handle.uri, first) is False  # stale: that claim was freed already
    assert [h.consumer_id for h in ledger.holders(handle.uri)] == ["A"]
    assert ledger.holders(handle.uri)[0].claimed_at == second.claimed_at


# --- 2. one slot per consumer --------------------------------------------------------------------


def test_a_consumer_retry_finds_its_own_slot_wherever_it_is(file_url, claims):
    handle = publish("v", storage=file_url, claims=claims, max_claims=2)
    handle.claim(consumer_id="B")
    handle.claim(consumer_id="A")
    handle.release("B", reason="B's worker is gone")
    assert handle.claim(consumer_id="A") == "v"  # its retry: slot 1, not a second slot in slot 0
    assert [(h.consumer_id, h.slot) for h in handle.holders()] == [("A", 1)]
    assert handle.claim(consumer_id="C") == "v"
    assert sorted(h.consumer_id for h in handle.holders()) == ["A", "C"]
    with pytest.raises(AlreadyClaimedError) as refused:
        handle.claim(consumer_id="D")
    assert sorted(h.consumer_id for h in refused.value.holders) == ["A", "C"]


def test_a_consumer_found_in_two_slots_keeps_the_lowest_and_frees_the_other(file_url, claims):
    """Two tries of one consumer racing each other can land in two slots; the next look repairs it."""
    from taskflow_exclusive.claims.base import ClaimRecord

    handle = publish("v", storage=file_url, claims=claims, max_claims=3)
    ledger = open_ledger(claims, Store.from_url(file_url))
    for slot in (0, 2):  # what two concurrent tries leave behind
        record = ClaimRecord("A", slot=slot)
        assert ledger._create_or_get(handle.uri, slot, record) is record
    assert ledger.claim(handle.uri, "A", max_claims=3).slot == 0
    assert [(h.consumer_id, h.slot) for h in ledger.holders(handle.uri)] == [("A", 0)]


# B holds slot 0; three tries of A race B's release, so A's tries see different slots free.
SELF_RACE = [("claim", "A"), ("claim", "A"), ("claim", "A"), ("release", "B")]


def _self_race(storage: str, claims: str | None, rounds: int):
    handles = [
        publish(number, storage=storage, claims=claims, max_claims=3, label="self-race")
        for number in range(rounds)
    ]
    for handle in handles:
        handle.claim(consumer_id="B")
    race = race_actions([h.to_json() for h in handles], SELF_RACE, env=_connections())
    doubled = sum(1 for handle in handles if [h.consumer_id for h in handle.holders()].count("A") > 1)
    return handles, race, doubled


@pytest.mark.slow
def test_three_tries_of_one_consumer_racing_a_release_end_in_one_slot(file_url, claims):
    rounds = env_count("TFX_SELF_RACE_ROUNDS", 100)
    handles, race, doubled = _self_race(file_url, claims, rounds)
    assert race.raw_errors() == []
    assert doubled == 0, f"A held two slots after {doubled} of {rounds} races"
    for number, handle in enumerate(handles):
        assert race.of(number, "claim") == [("value", number)] * 3  # every try got it
        assert race.of(number, "release") == [("released", "B")]
        assert [h.consumer_id for h in handle.holders()] == ["A"]


@pytest.mark.slow
def test_negative_control_without_the_repair_racing_tries_keep_two_slots(file_url):
    rounds = env_count("TFX_SELF_RACE_ROUNDS", 100)
    _, _, doubled = _self_race(file_url, broken_ledgers.spec(broken_ledgers.NO_REPAIR, file_url), rounds)
    print(f"negative control (no repair): A held two slots after {doubled} of {rounds} races")
    assert doubled > 0


# --- 3. the cost of max_claims -------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["2", 0, -1, True, 2**63, MAX_CLAIMS_LIMIT + 1, 1.0, None])
def test_max_claims_outside_one_to_the_limit_is_refused_before_anything_is_written(file_url, bad):
    with pytest.raises(InvalidArgumentError, match="max_claims") as refused:
        publish(1, storage=file_url, max_claims=bad)
    assert refused.value.argument == "max_claims"
    assert str(MAX_CLAIMS_LIMIT) in str(refused.value)
    assert not list(Path(file_url[len("file://") :]).rglob("*.*"))


class _Counting:
    """Counts calls to a real ledger's primitives (the ledger itself does the work)."""

    def __init__(self, ledger):
        self.ledger, self.calls = ledger, {}
        for name in ("_create_or_get", "_list", "_delete_if_held"):
            real = getattr(ledger, name)

            def counted(*args, _real=real, _name=name):
                self.calls[_name] = self.calls.get(_name, 0) + 1
                return _real(*args)

            setattr(ledger, name, counted)


def test_every_ledger_operation_costs_a_few_round_trips_whatever_max_claims_is(file_url, claims):
    handle = publish(1, storage=file_url, claims=claims, max_claims=MAX_CLAIMS_LIMIT)
    counting = _Counting(open_ledger(claims, Store.from_url(file_url)))
    ledger = counting.ledger
    for consumer in ("a", "b", "c"):
        ledger.claim(handle.uri, consumer, max_claims=MAX_CLAIMS_LIMIT)
    assert [h.consumer_id for h in ledger.holders(handle.uri)] == ["a", "b", "c"]
    ledger.release(handle.uri, "b", reason="test")
    ledger.claim(handle.uri, "a", max_claims=MAX_CLAIMS_LIMIT)  # a retry
    # 3 claims (list, create, list again) + holders + release (list, delete) + a retry (list).
    assert sum(counting.calls.values()) <= 3 * 3 + 1 + 2 + 1, counting.calls


# --- 4. purge order and purges racing claims -----------------------------------------------------

_PURGE_UNTIL_KILLED = textwrap.dedent(
    """
    import os, signal, sys
    from taskflow_exclusive import ExclusiveHandle
    from taskflow_exclusive.claims.base import ClaimLedger
    from taskflow_exclusive.storage.store import Store

    steps_left = int(sys.argv[2])

    def step(real):
        def counted(*args, **kwargs):
            global steps_left
            if steps_left == 0:
                os.kill(os.getpid(), signal.SIGKILL)
            steps_left -= 1
            return real(*args, **kwargs)
        return counted

    Store.remove = step(Store.remove)
    ClaimLedger.forget = step(ClaimLedger.forget)
    ExclusiveHandle.from_json(open(sys.argv[1]).read()).purge()
    """
)


@pytest.mark.parametrize("steps_done", [0, 1, 2, 3, 4, 5, 99])
def test_a_purge_killed_at_any_step_never_leaves_a_committed_value_without_its_claims(
    tmp_path, file_url, claims, steps_done
):
    """Killed before its N-th removal (manifest, data, the ledger's forget and the removals in it)."""
    handle = publish({"v": 1}, storage=file_url, claims=claims)
    assert handle.claim(consumer_id="A") == {"v": 1}
    (tmp_path / "handle.json").write_text(handle.to_json())
    killed = subprocess.run(
        [sys.executable, "-c", _PURGE_UNTIL_KILLED, str(tmp_path / "handle.json"), str(steps_done)],
        capture_output=True,
        text=True,
        env={**os.environ, **_connections()},
        check=False,
    )
    assert killed.returncode in (-signal.SIGKILL, 0), killed.stderr
    assert (killed.returncode == 0) == (steps_done == 99) or steps_done > 2
    # Whatever step it died at, nobody but A can ever get the value.
    with pytest.raises((AlreadyClaimedError, ObjectMissingError)) as other:
        handle.claim(consumer_id="B")
    if steps_done == 0:
        assert isinstance(other.value, AlreadyClaimedError) and other.value.holder == "A"
        assert handle.claim(consumer_id="A") == {"v": 1}
    else:
        assert isinstance(other.value, ObjectMissingError)
        with pytest.raises(ObjectMissingError):
            handle.claim(consumer_id="A")


@pytest.mark.slow
def test_purges_racing_claims_give_each_claimer_the_exact_value_or_an_exclusive_error(file_url, claims):
    rounds = env_count("TFX_PURGE_RACE_ROUNDS", 40)
    handles = [
        publish({"n": number}, storage=file_url, claims=claims, max_claims=3, label="purge-race")
        for number in range(rounds)
    ]
    actions = [("purge", ""), ("claim", "B"), ("claim", "C"), ("claim", "D")]
    race = race_actions([h.to_json() for h in handles], actions, env=_connections())
    assert race.raw_errors() == []
    for number in range(rounds):
        for outcome in race.of(number, "claim"):
            assert outcome in (("value", {"n": number}), ("exclusive_error", "ObjectMissingError")), outcome
    got_value = sum(o[0] == "value" for n in range(rounds) for o in race.of(n, "claim"))
    missing = sum(o[0] == "exclusive_error" for n in range(rounds) for o in race.of(n, "claim"))
    print(f"purge race ({claims or 'object store'}): {got_value} values, {missing} ObjectMissingError")
    assert missing > 0  # the purge did race the claims (the test would prove nothing otherwise)


# --- 8, 9, 10. bad records, permanent failures, consumer ids -------------------------------------


@pytest.mark.parametrize("bad", [5, "", "   ", b"A", "a\nb", "x" * 1025])
def test_a_consumer_id_must_be_a_printable_string(file_url, claims, bad):
    handle = publish("v", storage=file_url, claims=claims)
    with pytest.raises(InvalidArgumentError, match="consumer id") as refused:
        handle.claim(consumer_id=bad)
    assert refused.value.argument == "consumer_id"
    assert handle.holders() == []  # nothing recorded


def test_claim_5_is_refused_rather_than_recorded_as_the_string_5(file_url):
    handle = publish("v", storage=file_url)
    with pytest.raises(InvalidArgumentError):
        handle.claim(consumer_id=5)
    assert handle.claim(consumer_id="5") == "v"
    assert handle.claim(consumer_id="5") == "v"


def _plant_garbage(handle, claims, file_url: str, garbage: bytes) -> None:
    """Put ``garbage`` where slot 0's claim record lives, in the ledger's own storage."""
    ledger = open_ledger(claims, Store.from_url(file_url))
    if claims is None:
        path = ledger._paths(handle.uri).claim_record(0)
        ledger.store.fs.makedirs(path.rpartition("/")[0], exist_ok=True)
        ledger.store.fs.pipe_file(path, garbage)
    elif claims.startswith("redis"):
        ledgers.redis_client().hset(ledger.key(handle.uri), "0", garbage)
    else:
        from sqlalchemy import insert

        ledger._ensure_table()
        with ledger._engine.connect() as conn:
            conn.execute(
                insert(ledger.table),
                {
                    "value_key": ledger.value_key(handle.uri),
                    "slot": 0,
                    "uri": handle.uri,
                    "consumer_id": garbage.decode(errors="replace"),
                    "claimed_at": "not a time",
                    "host": "",
                    "pid": 0,
                },
            )


def test_a_garbage_claim_record_is_a_malformed_record_error_that_hands_nothing_out(file_url, claims):
    handle = publish("v", storage=file_url, claims=claims)
    _plant_garbage(handle, claims, file_url, b"{not json")
    with pytest.raises(MalformedRecordError) as refused:
        handle.claim(consumer_id="B")
    assert refused.value.kind == "claim record"
    assert "Nothing was handed out" in str(refused.value)
    with pytest.raises(MalformedRecordError):
        handle.holders()


def test_a_sqlite_ledger_in_a_missing_folder_is_a_configuration_error_not_an_outage(tmp_path, file_url):
    spec = f"sqlite:///{tmp_path / 'no-such-folder' / 'claims.db'}"
    handle = publish("v", storage=file_url, claims=spec)
    with pytest.raises(ClaimStoreConfigError, match="folder must exist") as refused:
        handle.claim(consumer_id="A")
    assert not isinstance(refused.value, ClaimStoreUnavailableError)


def test_a_claims_table_of_another_shape_is_a_configuration_error(tmp_path, file_url):
    database = tmp_path / "claims.db"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE wrong_shape (value_key TEXT PRIMARY KEY, owner TEXT)")
    handle = publish("v", storage=file_url, claims=f"sqlite:///{database}?table=wrong_shape")
    with pytest.raises(ClaimStoreConfigError, match="another shape") as refused:
        handle.claim(consumer_id="A")
    assert isinstance(refused.value, ExclusiveError)
