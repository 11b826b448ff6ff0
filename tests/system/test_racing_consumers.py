"""Consumers racing for one value in separate task processes: one gets it, the others fail on try 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.system


def _race(run, producer: str, consumers: tuple[str, str]):
    tis = [run.ti(task_id) for task_id in consumers]
    assert sorted(ti.state for ti in tis) == ["failed", "success"], run.explain()
    winner = next(ti for ti in tis if ti.state == "success")
    loser = next(ti for ti in tis if ti.state == "failed")
    assert winner.try_number == 1, run.explain()
    # The loser had retries left and used none of them: a refused claim is final.
    assert loser.raw["max_tries"] >= 2
    assert loser.try_number == 1, run.explain()
    holders = run.handles(producer).holders()
    assert [h.consumer_id for h in holders] == [run.consumer_id(winner.task_id)]
    return winner, loser


def test_plain_consumers_claiming_at_the_same_moment(deployed, system_summary):
    run = deployed["sys_racing_consumers"]
    assert run.state == "failed", run.explain()  # the loser fails the run
    winner, loser = _race(run, "produce_plain", ("plain_a", "plain_b"))
    (produced,) = run.records_of("produce_plain")
    (won,) = run.records_of(winner.task_id)
    assert won["outcome"] == "claimed"
    assert won["value"] == produced["value"]
    (refused,) = run.records_of(loser.task_id)  # one record: there was no second try
    assert refused["outcome"] == "refused"
    assert refused["holder"] == run.consumer_id(winner.task_id)
    assert refused["no_retry"]  # the error a task sees is also Airflow's AirflowFailException
    system_summary.append(
        f"{deployed.name}: racing plain consumers met at the start line: "
        f"{won['arrived'] == 2 and refused['arrived'] == 2}; winner {winner.task_id} on {won['worker']}, "
        f"loser on {refused['worker']}"
    )


def test_claimed_inputs_racing(deployed):
    run = deployed["sys_racing_consumers"]
    winner, loser = _race(run, "produce_claimed", ("claimed_a", "claimed_b"))
    (produced,) = run.records_of("produce_claimed")
    (won,) = run.records_of(winner.task_id)
    assert won["value"] == produced["value"]
    assert run.records_of(loser.task_id) == []  # refused before its function ran


def test_the_holders_command_names_the_winner(deployed):
    run = deployed["sys_racing_consumers"]
    handle = run.handles("produce_plain")
    winner = next(t for t in ("plain_a", "plain_b") if run.ti(t).state == "success")
    command = Path(sys.executable).with_name("taskflow-exclusive")
    done = subprocess.run(
        [str(command), "holders", "--json", "-"],
        input=handle.to_json(),
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)
    assert [r["consumer_id"] for r in records] == [run.consumer_id(winner)]
