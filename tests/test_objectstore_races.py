"""Exactly one winner per handle when 16 processes claim the same handles at once.

Every object-store ledger (local disk, S3 on SeaweedFS, GCS on
fake-gcs-server), with at least 1,000 contested handles each in CI: the
handles are contested in batches (see :func:`tests.racing.race_batches`),
every process claims every handle. Counts and batch shapes come from the
environment:

    TFX_RACE_HANDLES_FILE / _S3 / _GCS    handles per storage (CI: 1000)
    TFX_RACE_BATCH_FILE / _S3 / _GCS      handles per barrier round
    TFX_RACE_THREADS_FILE / _S3 / _GCS    claiming threads per process

moto is not raced: it is not atomic under races (FACTS.md).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from taskflow_exclusive import publish
from tests import crashing
from tests.conftest import env_count
from tests.racing import race_batches

PROCESSES = 16


def _publish_many(storage: str, count: int) -> list[str]:
    with ThreadPoolExecutor(8) as pool:
        handles = pool.map(lambda i: publish({"handle": i}, storage=storage, label="race"), range(count))
        return [handle.to_json() for handle in handles]


def _prove_exactly_once(storage: str, name: str, handles: int, batch: int, threads: int) -> None:
    count = env_count(f"TFX_RACE_HANDLES_{name}", handles)
    batch = env_count(f"TFX_RACE_BATCH_{name}", batch)
    threads = env_count(f"TFX_RACE_THREADS_{name}", threads)
    handles_json = _publish_many(storage, count)
    report = race_batches(
        handles_json,
        expected=lambda i: {"handle": i},
        processes=PROCESSES,
        batch=batch,
        threads=threads,
        context=crashing.context(),  # fork server: workers start in milliseconds
        timeout=max(1800, count),  # a 10,000-handle run on S3 takes about 20 minutes here
    )
    print(f"{name}: {report.summary()}")
    assert report.errors == [], report.summary()
    assert report.claims == count * PROCESSES  # every process claimed every handle
    assert report.double_claims == 0, report.summary()
    assert report.lost_claims == 0, report.summary()
    assert report.losers_misinformed == 0, report.summary()
    assert report.wrong_values == []
    assert all(len(report.losers[i]) == PROCESSES - 1 for i in range(count))
    # The race was a race: most handles had several claims in flight at the same moment.
    assert report.overlapping >= count // 2, report.summary()


@pytest.mark.slow
def test_sixteen_processes_race_for_handles_on_local_disk_with_one_winner_each(file_url):
    _prove_exactly_once(file_url, "FILE", handles=1000, batch=100, threads=1)


@pytest.mark.slow
def test_sixteen_processes_race_for_handles_on_s3_with_one_winner_each(s3_url):
    _prove_exactly_once(s3_url, "S3", handles=1000, batch=100, threads=1)


@pytest.mark.slow
def test_sixteen_processes_race_for_handles_on_gcs_with_one_winner_each(gcs_url):
    _prove_exactly_once(gcs_url, "GCS", handles=1000, batch=100, threads=1)
