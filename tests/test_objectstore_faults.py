"""Faults: the S3 server stops (or freezes) before or during claims.

A private SeaweedFS per test (the session's shared server is never stopped).
What must hold: a prompt :class:`ClaimStoreUnavailableError` that names the
store (with the connection id, never the credentials), nothing handed to two
consumers, and a state a retry recovers from once the server is back (no claim
recorded that blocks the rightful consumer).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from taskflow_exclusive import AlreadyClaimedError, ClaimStoreUnavailableError, publish
from tests.conftest import service_unavailable
from tests.servers import S3Server, ServerUnavailable, start_seaweedfs


@pytest.fixture
def private_s3():
    """A SeaweedFS of this test's own, reached through a connection of its own."""
    try:
        server = start_seaweedfs()
    except ServerUnavailable as exc:
        service_unavailable("S3 server (SeaweedFS)", str(exc))
    conn_id = f"tfx_private_{uuid.uuid4().hex[:8]}"
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = server.connection_uri_json()
    holder = {"server": server}
    yield holder, f"s3://{conn_id}@{server.bucket}/faults", conn_id
    os.environ.pop(f"AIRFLOW_CONN_{conn_id.upper()}", None)
    holder["server"].stop()


def _kill(server: S3Server) -> None:
    """Stop the server at once (SIGKILL: a crash, not a shutdown); its data stays for a restart."""
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait()


def _restart(holder: dict) -> S3Server:
    holder["server"] = start_seaweedfs(restart=holder["server"])
    return holder["server"]


def _assert_names_the_store_without_secrets(error: ClaimStoreUnavailableError, conn_id: str, server) -> None:
    message = str(error)
    assert f"s3://{conn_id}@{server.bucket}" in message
    assert f"s3://{conn_id}@{server.bucket}" in error.ledger
    assert server.key not in message
    assert server.secret not in message


def test_a_claim_on_a_stopped_server_fails_promptly_naming_the_store_and_a_retry_recovers(private_s3):
    holder, url, conn_id = private_s3
    server = holder["server"]
    handle = publish({"value": 1}, storage=url)
    _kill(server)

    started = time.monotonic()
    with pytest.raises(ClaimStoreUnavailableError) as raised:
        handle.claim(consumer_id="loader")
    elapsed = time.monotonic() - started
    print(f"claim on a stopped S3 server failed after {elapsed:.1f}s: {raised.value}")
    assert elapsed < 10
    _assert_names_the_store_without_secrets(raised.value, conn_id, server)
    with pytest.raises(ClaimStoreUnavailableError):
        handle.holders()

    _restart(holder)
    assert handle.claim(consumer_id="loader") == {"value": 1}
    with pytest.raises(AlreadyClaimedError) as refused:
        handle.claim(consumer_id="auditor")
    assert refused.value.holder == "loader"


def test_claims_in_flight_when_the_server_dies_fail_cleanly_and_every_one_recovers(private_s3):
    holder, url, conn_id = private_s3
    server = holder["server"]
    with ThreadPoolExecutor(8) as pool:
        handles = list(pool.map(lambda i: publish({"n": i}, storage=url, label="inflight"), range(80)))

    def claim(index: int) -> tuple[str, float, str]:
        started = time.monotonic()
        try:
            handles[index].claim(consumer_id=f"consumer-{index}")
            return "value", time.monotonic() - started, ""
        except ClaimStoreUnavailableError as exc:
            return "unavailable", time.monotonic() - started, str(exc)
        except Exception as exc:
            return "other error", time.monotonic() - started, f"{type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(claim, i) for i in range(len(handles))]
        while sum(f.done() for f in futures) < len(futures) // 4:
            time.sleep(0.005)
        _kill(server)  # mid-claim, no goodbye
        outcomes = [f.result() for f in futures]
    kinds = Counter(kind for kind, _, _ in outcomes)
    slowest = max(seconds for kind, seconds, _ in outcomes if kind != "value")
    print(f"{len(handles)} claims, server killed mid-way: {dict(kinds)}; slowest failure {slowest:.1f}s")
    assert kinds["other error"] == 0, [m for kind, _, m in outcomes if kind == "other error"][:3]
    assert kinds["value"] > 0
    assert kinds["unavailable"] > 0
    assert slowest < 10
    message = next(m for kind, _, m in outcomes if kind == "unavailable")
    assert server.secret not in message
    assert f"s3://{conn_id}@" in message

    _restart(holder)
    for index, handle in enumerate(handles):
        # Whether or not its claim was recorded before the crash, the rightful consumer gets it ...
        assert handle.claim(consumer_id=f"consumer-{index}") == {"n": index}
        # ... and nobody else does.
        with pytest.raises(AlreadyClaimedError) as refused:
            handle.claim(consumer_id="latecomer")
        assert refused.value.holder == f"consumer-{index}"


@pytest.mark.slow
def test_a_claim_on_a_frozen_server_fails_within_a_minute_not_after_many(private_s3):
    holder, url, conn_id = private_s3
    server = holder["server"]
    handle = publish({"value": 2}, storage=url)
    os.killpg(server.process.pid, signal.SIGSTOP)  # accepts connections, never answers
    try:
        started = time.monotonic()
        with pytest.raises(ClaimStoreUnavailableError) as raised:
            handle.claim(consumer_id="loader")
        elapsed = time.monotonic() - started
    finally:
        os.killpg(server.process.pid, signal.SIGCONT)
    print(f"claim on a frozen S3 server failed after {elapsed:.1f}s")
    assert elapsed < 60
    assert "timeout" in str(raised.value).lower()
    _assert_names_the_store_without_secrets(raised.value, conn_id, server)
    assert handle.claim(consumer_id="loader") == {"value": 2}
