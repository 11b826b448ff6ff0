"""Exactly one winner per round when 16 processes claim one handle at the same moment."""

from __future__ import annotations

import pytest

from taskflow_exclusive import publish
from tests import broken_ledgers
from tests.conftest import env_count
from tests.racing import race_handles


def _race(storage: str, rounds: int, claims: str | None = None):
    handles = [publish({"round": r}, storage=storage, claims=claims).to_json() for r in range(rounds)]
    report = race_handles(handles, expected=lambda r: {"round": r}, processes=16)
    print(report.summary())
    return report


def _prove_exactly_once(storage: str, rounds: int) -> None:
    report = _race(storage, rounds)
    assert report.errors == []
    assert report.double_claims == 0, report.summary()
    assert report.lost_claims == 0, report.summary()
    assert report.losers_misinformed == 0, report.summary()
    assert report.wrong_values == []
    assert all(len(report.losers[r]) == 15 for r in range(rounds))


@pytest.mark.slow
def test_sixteen_processes_race_on_local_disk_with_one_winner_every_round(file_url):
    _prove_exactly_once(file_url, env_count("TFX_RACE_ROUNDS_FILE", 200))


@pytest.mark.slow
def test_sixteen_processes_race_on_the_s3_server_with_one_winner_every_round(s3_url):
    _prove_exactly_once(s3_url, env_count("TFX_RACE_ROUNDS_S3", 50))


@pytest.mark.slow
def test_negative_control_a_check_then_write_ledger_gives_double_claims_in_the_same_race(file_url):
    """The harness above catches a ledger that looks before it writes (two steps, not one)."""
    spec = broken_ledgers.spec(broken_ledgers.CHECK_THEN_WRITE, file_url)
    report = _race(file_url, env_count("TFX_RACE_ROUNDS_FILE", 200), claims=spec)
    assert report.double_claims > 0, report.summary()
