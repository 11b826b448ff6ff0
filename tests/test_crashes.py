"""Crashes: producers killed during a 100 MB write, consumers killed right after claiming.

Real processes, killed with SIGKILL (no cleanup code of theirs runs), on local
disk, S3 (SeaweedFS) and GCS (fake-gcs-server). Counts from the environment:

    TFX_CRASH_PRODUCERS_FILE / _S3 / _GCS   producers killed per storage (default 50)
    TFX_CRASH_CONSUMERS_FILE / _S3 / _GCS   consumers killed per storage (default 50)
    TFX_CRASH_VALUE_MB                      size of a producer's value (default 100)
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

import blake3
import pytest

from taskflow_exclusive import AlreadyClaimedError, ExclusiveHandle, publish
from taskflow_exclusive.consuming import load_verified
from taskflow_exclusive.storage.cleanup import MULTIPART, find_uncommitted, remove_uncommitted
from taskflow_exclusive.storage.layout import MANIFEST_SUFFIX
from taskflow_exclusive.storage.store import Store
from tests.conftest import env_count
from tests.crashing import run_consumer, run_producer

STORAGES = ["file", "s3", "gcs"]


@dataclass(frozen=True)
class Payload:
    path: str
    size: int
    digest: str  # blake3, what the library writes


@pytest.fixture(scope="module")
def payload(tmp_path_factory) -> Payload:
    size = env_count("TFX_CRASH_VALUE_MB", 100) << 20
    data = random.Random(20261124).randbytes(size)
    path = tmp_path_factory.mktemp("crash") / "payload.bin"
    path.write_bytes(data)
    return Payload(str(path), size, "blake3:" + blake3.blake3(data).hexdigest())


def _connections() -> dict[str, str]:
    """What a child needs of this process's environment: the Airflow connections to the servers."""
    return {k: v for k, v in os.environ.items() if k.startswith(("AIRFLOW_CONN_", "GCSFS_"))}


def _manifests(store: Store) -> list[ExclusiveHandle]:
    store.fs.invalidate_cache()
    paths = [p for p in store.fs.find(store.location.path) if p.endswith(MANIFEST_SUFFIX)]
    return [ExclusiveHandle.from_json(store.read_small(p)) for p in paths]


def _multipart_uploads(store: Store) -> list[str]:
    if store.location.protocol != "s3":
        return []
    bucket, _, prefix = store.location.path.partition("/")
    listed = store.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=f"{prefix}/")
    return [upload["Key"] for upload in listed.get("Uploads", [])]


# --- producers -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("storage", STORAGES)
def test_a_producer_killed_during_a_large_write_never_leaves_a_partial_value_and_cleanup_removes_the_rest(
    request, storage, payload
):
    url = request.getfixturevalue(f"{storage}_url")
    count = env_count(f"TFX_CRASH_PRODUCERS_{storage.upper()}", 50)
    env = _connections()
    calibration = run_producer(url, payload.path, "calibration", env, kill_after=None)
    assert calibration.handle_json is not None
    write_seconds = calibration.write_seconds
    rng = random.Random(f"producers/{storage}")
    # Kill points spread over the whole write, its commit, and a little after.
    runs = [
        run_producer(url, payload.path, "crash", env, kill_after=rng.uniform(0, 1.15 * write_seconds))
        for _ in range(count)
    ]

    store = Store.from_url(url)
    committed = _manifests(store)
    emitted = [ExclusiveHandle.from_json(run.handle_json) for run in runs if run.handle_json]
    # Every manifest present points at complete data that verifies (size and digest).
    for handle in committed:
        assert (handle.size, handle.digest) == (payload.size, payload.digest)
        assert len(load_verified(handle)) == payload.size
    # Every handle a producer emitted is committed (none was emitted for an incomplete write).
    assert {h.uri for h in emitted} <= {h.uri for h in committed}

    leftovers = find_uncommitted(url, older_than=timedelta(0))
    kinds = Counter(leftover.kind for leftover in leftovers)
    multipart_before = len(_multipart_uploads(store))
    print(
        f"{storage}: {count} producers killed within {1.15 * write_seconds:.2f}s of starting a "
        f"{payload.size >> 20} MiB write (a full write took {write_seconds:.2f}s): "
        f"{len(committed) - 1} committed before the kill ({len(emitted)} handles emitted), "
        f"leftovers {dict(kinds)}"
    )
    assert leftovers, "no kill landed inside a write: the kill points do not cover the write"
    assert kinds[MULTIPART] == multipart_before
    # Within the grace period nothing is touched (a write in progress looks like this).
    assert find_uncommitted(url, older_than=timedelta(hours=1)) == []
    assert remove_uncommitted(url, older_than=timedelta(hours=1)) == []

    removed = remove_uncommitted(url, older_than=timedelta(0))
    assert sorted(r.uri for r in removed) == sorted(r.uri for r in leftovers)
    assert find_uncommitted(url, older_than=timedelta(0)) == []
    assert _multipart_uploads(store) == []
    # Committed values survive the cleanup, whole, and can still be claimed.
    assert sorted(h.uri for h in _manifests(store)) == sorted(h.uri for h in committed)
    survivor = committed[0]
    assert len(survivor.claim(consumer_id="after-cleanup")) == payload.size
    for handle in committed:  # 100 MB each: the emulator keeps them in memory
        handle.purge()


# --- consumers -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("storage", STORAGES)
def test_a_consumer_killed_after_claiming_gets_the_value_on_retry_and_nobody_else_does(request, storage):
    url = request.getfixturevalue(f"{storage}_url")
    count = env_count(f"TFX_CRASH_CONSUMERS_{storage.upper()}", 50)
    env = _connections()
    value = random.Random(storage).randbytes(4 << 20)
    digest = hashlib.sha256(value).hexdigest()
    with ThreadPoolExecutor(4) as pool:
        handles = list(pool.map(lambda _: publish(value, storage=url, label="consumers"), range(count + 1)))
    rng = random.Random(f"consumers/{storage}")
    calibration = handles.pop()
    assert run_consumer(calibration.to_json(), "calibration", env, kill="never", rng=rng).sha256 == digest
    started = time.monotonic()
    load_verified(calibration)
    read_seconds = time.monotonic() - started  # "while reading" kills land within this

    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    for index, handle in enumerate(handles):
        consumer = f"dag/run/consumer/{index}"
        kill = "before-reading" if index % 2 == 0 else "while-reading"
        crashed = run_consumer(handle.to_json(), consumer, env, kill=kill, rng=rng, read_seconds=read_seconds)
        outcomes[f"claimed then killed {kill}"] += crashed.claimed
        outcomes["finished reading before the kill"] += crashed.finished_reading
        retry = run_consumer(handle.to_json(), consumer, env, kill="never", rng=rng)
        if retry.sha256 == digest:
            outcomes["retry got the value"] += 1
        else:
            failures.append(f"{handle.uri}: the retry of {consumer} got {retry}")
        try:
            handle.claim(consumer_id="someone-else")
            failures.append(f"{handle.uri}: another consumer got the value")
        except AlreadyClaimedError as refused:
            outcomes["other consumer refused, told the holder"] += refused.holder == consumer
        assert [record.consumer_id for record in handle.holders()] == [consumer]
    print(f"{storage}: {count} consumers killed after claiming: {dict(outcomes)}")
    for handle in [*handles, calibration]:
        handle.purge()
    assert failures == []
    assert (
        outcomes["claimed then killed before-reading"] + outcomes["claimed then killed while-reading"]
        == count
    )
    assert outcomes["retry got the value"] == count
    assert outcomes["other consumer refused, told the holder"] == count
