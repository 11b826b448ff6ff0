"""ExclusiveXCom as a deployment's XCom backend: plain XComs offloaded, and claimed by one task.

Only the Celery deployment configures the backend (see conftest): tasks on two
workers race for the same XCom.
"""

from __future__ import annotations

import pytest

from taskflow_exclusive.handle import ExclusiveHandle

pytestmark = [pytest.mark.system, pytest.mark.parametrize("deployed", ["celery"], indirect=True)]

DAG = "sys_xcom_backend_claims"
REFERENCE_MARKER = "__taskflow_exclusive__"


def _reference(run, task_id: str, key: str = "return_value") -> ExclusiveHandle:
    stored = run.xcom(task_id, key=key)
    assert isinstance(stored, dict)
    assert stored.get(REFERENCE_MARKER) == "xcom-ref/1", stored
    return ExclusiveHandle.from_dict(stored["handle"])


def _race(run, consumers: tuple[str, str], produced: dict):
    """Exactly one consumer got the producer's value; every refusal named it. (winner, loser)"""
    tis = [run.ti(task_id) for task_id in consumers]
    assert sorted(ti.state for ti in tis) == ["failed", "success"], run.explain()
    winner = next(ti for ti in tis if ti.state == "success")
    loser = next(ti for ti in tis if ti.state == "failed")
    (won,) = run.records_of(winner.task_id)
    assert (won["outcome"], won["digest"]) == ("claimed", produced["digest"])
    refusals = run.records_of(loser.task_id)
    assert refusals, run.explain()
    assert {(r["outcome"], r["holder"]) for r in refusals} == {("refused", run.consumer_id(winner.task_id))}
    return winner, loser


def test_an_offloaded_xcom_goes_to_one_of_two_racing_consumers(deployed):
    run = deployed[DAG]
    handle = _reference(run, "big")
    assert handle.uri.startswith(f"{deployed.storage_url}/{DAG}/")
    assert "/big/-1/xcom/return_value/" in handle.uri
    (produced,) = run.records_of("big")
    winner, loser = _race(run, ("big_a", "big_b"), produced)
    assert [h.consumer_id for h in handle.holders()] == [run.consumer_id(winner.task_id)]
    # retries=2, yet refused once and never retried
    assert (loser.raw["max_tries"], loser.try_number) == (2, 1), run.explain()
    assert [r["no_retry"] for r in run.records_of(loser.task_id)] == [True]


def test_an_inline_xcom_goes_to_one_of_two_racing_consumers(deployed):
    run = deployed[DAG]
    (produced,) = run.records_of("small")
    assert run.xcom("small") == {"nonce": produced["nonce"], "n": 1}  # below the threshold: inline
    _race(run, ("small_a", "small_b"), produced)


def test_a_refused_inline_xcom_claim_is_not_retried(deployed):
    run = deployed[DAG]
    loser = next(run.ti(t) for t in ("small_a", "small_b") if run.ti(t).state == "failed")
    assert [r["no_retry"] for r in run.records_of(loser.task_id)] == [True]
    assert (loser.raw["max_tries"], loser.try_number) == (2, 1), run.explain()


def test_a_retried_xcom_claimer_gets_the_same_value_again(deployed):
    run = deployed[DAG]
    ti = run.ti("flaky")
    assert (ti.state, ti.try_number) == ("success", 2), run.explain()
    (produced,) = run.records_of("big")
    tries = run.records_of("flaky")
    assert [r["try_number"] for r in tries] == [1, 2]
    assert tries[0]["digest"] == tries[1]["digest"] == produced["extra_digest"]
    handle = _reference(run, "big", key="extra")
    assert [h.consumer_id for h in handle.holders()] == [run.consumer_id("flaky")]
