"""Claim-once semantics of handles: one holder, retries, max_claims, release."""

from __future__ import annotations

import json
import pickle

import pytest

from taskflow_exclusive import (
    AlreadyClaimedError,
    ClaimError,
    ExclusiveError,
    ExclusiveHandle,
    InvalidArgumentError,
    exclusive_output,
    publish,
)
from taskflow_exclusive.identity import local_consumer_id


def test_first_consumer_gets_the_value_and_the_second_is_told_who_holds_it(storage_url):
    handle = publish({"n": 1}, storage=storage_url)
    assert handle.claim(consumer_id="loader") == {"n": 1}
    with pytest.raises(AlreadyClaimedError) as refused:
        handle.claim(consumer_id="auditor")
    error = refused.value
    assert error.holder == "loader"
    assert error.consumer_id == "auditor"
    assert error.uri == handle.uri
    assert "'loader'" in str(error)
    assert error.claimed_at.isoformat(timespec="seconds") in str(error)
    assert isinstance(error, ClaimError)
    assert isinstance(error, ExclusiveError)


def test_a_retry_of_the_same_consumer_gets_the_value_again(storage_url):
    handle = publish([1, 2, 3], storage=storage_url)
    first = handle.claim(consumer_id="dag/run/task/-1")
    for _ in range(3):
        assert handle.claim(consumer_id="dag/run/task/-1") == first == [1, 2, 3]
    assert [h.consumer_id for h in handle.holders()] == ["dag/run/task/-1"]


def test_max_claims_lets_that_many_distinct_consumers_claim_each_once(storage_url):
    handle = publish("shared", storage=storage_url, max_claims=3)
    assert [handle.claim(consumer_id=c) for c in ("a", "b", "c")] == ["shared"] * 3
    assert handle.claim(consumer_id="b") == "shared"  # b's retry, still fine
    with pytest.raises(AlreadyClaimedError) as refused:
        handle.claim(consumer_id="d")
    assert [h.consumer_id for h in refused.value.holders] == ["a", "b", "c"]
    assert "all 3 claims" in str(refused.value).lower()
    assert sorted(h.slot for h in handle.holders()) == [0, 1, 2]


def test_claim_without_consumer_id_outside_airflow_uses_a_stable_local_id(storage_url):
    handle = publish("mine", storage=storage_url)
    assert handle.claim() == "mine"
    assert handle.claim() == "mine"
    assert handle.holders()[0].consumer_id == local_consumer_id()
    with pytest.raises(AlreadyClaimedError):
        handle.claim(consumer_id="someone-else")


def test_release_frees_the_claim_for_another_consumer_and_is_logged(storage_url, caplog):
    handle = publish("value", storage=storage_url)
    handle.claim(consumer_id="crashed-worker")
    with pytest.raises(InvalidArgumentError, match="reason"):
        handle.release("crashed-worker", reason=" ")
    assert handle.release("nobody", reason="cleanup") is None
    with caplog.at_level("WARNING", logger="taskflow_exclusive.claims"):
        released = handle.release("crashed-worker", reason="worker node lost")
    assert released.consumer_id == "crashed-worker"
    assert "worker node lost" in caplog.text
    assert handle.claim(consumer_id="replacement") == "value"


def test_handles_are_small_json_that_round_trip_and_carry_no_value(storage_url):
    handle = publish("x" * 100_000, storage=storage_url)
    carried = handle.to_json()
    assert len(carried) < 600
    assert "xxxx" not in carried
    data = json.loads(carried)
    assert {"uri", "serializer", "size", "digest", "producer", "created_at", "max_claims"} <= set(data)
    assert data["digest"].startswith("blake3:") and "sha256" not in data
    assert ExclusiveHandle.from_json(carried) == handle
    assert pickle.loads(pickle.dumps(handle)) == handle


def test_exclusive_output_decorator_returns_a_handle_bare_and_with_arguments(storage_url, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_STORAGE_URL", storage_url)

    @exclusive_output
    def bare(n):
        return list(range(n))

    @exclusive_output(serializer="pickle", compression="gzip", max_claims=2)
    def configured(n):
        return tuple(range(n))

    first, second = bare(3), configured(4)
    assert isinstance(first, ExclusiveHandle)
    assert first.uri.startswith(storage_url.split("@")[0].split("://")[0])
    assert "/_local/" in first.uri and "bare" in first.uri
    assert (second.serializer, second.compression, second.max_claims) == ("pickle", "gzip", 2)
    assert first.claim(consumer_id="c") == [0, 1, 2]
    assert second.claim(consumer_id="c1") == second.claim(consumer_id="c2") == (0, 1, 2, 3)


def test_decorator_arguments_are_checked_when_decorating():
    with pytest.raises(ValueError, match="max_claims"):
        exclusive_output(max_claims=0)
    with pytest.raises(ExclusiveError, match="Unknown serializer 'yaml'"):
        exclusive_output(serializer="yaml")
    with pytest.raises(ExclusiveError, match="compression 'brotli9'"):
        exclusive_output(compression="brotli9")
