"""Exactly one winner per round when 16 processes claim one handle at the same moment."""

from __future__ import annotations

import pytest

from taskflow_exclusive import publish
from tests.conftest import env_count
from tests.racing import race_handles


def _prove_exactly_once(storage: str, rounds: int) -> None:
    handles = [publish({"round": r}, storage=storage).to_json() for r in range(rounds)]
    report = race_handles(handles, expected=lambda r: {"round": r}, processes=16)
    print(report.summary())
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
