"""Model-based tests of every ledger: random sequences of claims, retries, releases and purges.

Hypothesis drives a state machine through real ledgers (local disk, Redis,
PostgreSQL, MariaDB, SQLite) and checks every answer against a model that is
just the set of current holders:

- a consumer in the set gets the value again (its retry);
- a consumer outside it gets the value while fewer than ``max_claims`` hold
  it, and is refused with the holders named otherwise;
- a release frees its consumer's slot once (a second release returns None);
- after a purge every claim is ``ObjectMissingError`` and nobody holds anything;
- at every step: at most ``max_claims`` holders, each consumer in one slot.

Examples per ledger: ``TFX_MODEL_EXAMPLES`` (default 25), steps per example 25.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from taskflow_exclusive import AlreadyClaimedError, ObjectMissingError, publish
from tests import ledgers
from tests.conftest import env_count

redis_claims, postgres_claims, mysql_claims, sqlite_claims = (
    ledgers.redis_claims,
    ledgers.postgres_claims,
    ledgers.mysql_claims,
    ledgers.sqlite_claims,
)

CONSUMERS = st.sampled_from(["A", "B", "C", "D"])


class LedgerModel(RuleBasedStateMachine):
    storage: str = ""
    claims: str | None = None

    def __init__(self) -> None:
        super().__init__()
        self.handle = None
        self.max_claims = 1
        self.holders: set[str] = set()
        self.purged = False

    @initialize(max_claims=st.integers(min_value=1, max_value=3), value=st.integers())
    def produce(self, max_claims: int, value: int) -> None:
        self.max_claims, self.value = max_claims, value
        self.handle = publish(value, storage=self.storage, claims=self.claims, max_claims=max_claims)

    @rule(consumer=CONSUMERS)
    def claim(self, consumer: str) -> None:
        if self.purged:
            with pytest.raises(ObjectMissingError):
                self.handle.claim(consumer_id=consumer)
        elif consumer in self.holders or len(self.holders) < self.max_claims:
            assert self.handle.claim(consumer_id=consumer) == self.value
            self.holders.add(consumer)
        else:
            with pytest.raises(AlreadyClaimedError) as refused:
                self.handle.claim(consumer_id=consumer)
            assert {h.consumer_id for h in refused.value.holders} == self.holders

    @rule(consumer=CONSUMERS)
    def release(self, consumer: str) -> None:
        released = self.handle.release(consumer, reason="model test")
        if consumer in self.holders and not self.purged:
            assert released is not None and released.consumer_id == consumer
            self.holders.discard(consumer)
        else:
            assert released is None

    @rule()
    def purge(self) -> None:
        self.handle.purge()
        self.purged, self.holders = True, set()

    @invariant()
    def ledger_agrees_with_the_model(self) -> None:
        if self.handle is None:
            return
        records = self.handle.holders()
        consumers = [record.consumer_id for record in records]
        assert len(consumers) == len(set(consumers)), f"a consumer holds two slots: {consumers}"
        assert len(records) <= self.max_claims
        assert all(0 <= record.slot < self.max_claims for record in records)
        assert set(consumers) == self.holders


@pytest.mark.parametrize("ledger", ["store", "redis", "postgres", "mysql", "sqlite"])
def test_random_claims_retries_releases_and_purges_keep_the_invariants(ledger, request, file_url):
    class Machine(LedgerModel):
        storage = file_url
        claims = None if ledger == "store" else request.getfixturevalue(f"{ledger}_claims")

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=env_count("TFX_MODEL_EXAMPLES", 25),
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def _first_free_slot_claim(self, uri, consumer_id, max_claims=1):
    """The claim loop before the fix: takes the first free slot without looking for its own."""
    from taskflow_exclusive.claims.base import ClaimRecord

    holders = []
    for slot in range(max_claims):
        record = ClaimRecord(consumer_id, slot=slot)
        stored = self._create_or_get(uri, slot, record)
        if stored.consumer_id == consumer_id:
            return stored
        holders.append(stored)
    raise AlreadyClaimedError(uri, consumer_id, holders, self.describe())


def test_negative_control_the_model_catches_a_consumer_in_two_slots(file_url, monkeypatch):
    """The same machine finds the pre-fix bug: claim B, claim A, release B, claim A gives A two slots."""
    from taskflow_exclusive.claims.base import ClaimLedger

    monkeypatch.setattr(ClaimLedger, "claim", _first_free_slot_claim)

    class Machine(LedgerModel):
        storage = file_url

    with pytest.raises(AssertionError, match="holds two slots"):
        run_state_machine_as_test(
            Machine,
            # Derandomized: the same examples every run, so the control cannot pass by luck.
            settings=settings(
                max_examples=1000, stateful_step_count=25, deadline=None, database=None, derandomize=True
            ),
        )
