"""``taskflow-exclusive queue ...`` run as the installed console script against the shared Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from taskflow_exclusive.queues import ExclusiveQueue
from tests import queue_fixtures

queue_spec, queue_name = queue_fixtures.queue_spec, queue_fixtures.queue_name
SCRIPT = Path(sys.executable).with_name("taskflow-exclusive")


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT), "queue", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
        check=False,
    )


def _with_a_dead_letter_and_a_lease(spec: str, name: str) -> ExclusiveQueue:
    queue = ExclusiveQueue(spec, name=name, max_deliveries=1)
    queue.put_many(["poison", "held", "waiting"])
    queue.lease(consumer_id="worker-1").fail("bad input")
    queue.lease(consumer_id="worker-2", seconds=600)
    return queue


def test_list_and_show_report_depth_leases_with_holders_and_counters(queue_spec, queue_name):
    _with_a_dead_letter_and_a_lease(queue_spec, queue_name)
    listed = _run("list", "--url", queue_spec, "--json")
    assert listed.returncode == 0, listed.stderr
    assert {"queue": queue_name, "waiting": 1, "in_flight": 1, "dead": 1} in json.loads(listed.stdout)
    shown = _run("show", queue_name, "--url", queue_spec, "--json")
    facts = json.loads(shown.stdout)
    (lease,) = facts["in_flight"]
    assert (lease["holder"], lease["expired"], lease["delivery"]) == ("worker-2", False, 1)
    assert facts["stats"] == {"leased": 2, "dead": 1} and facts["dead"] == 1 and len(facts["next"]) == 1
    text = _run("show", queue_name, "--url", queue_spec).stdout
    assert "'worker-2' token" in text and "1 waiting, 1 in flight, 1 dead" in text


def test_dead_lists_reasons_and_requeue_puts_them_back(queue_spec, queue_name):
    queue = _with_a_dead_letter_and_a_lease(queue_spec, queue_name)
    (dead,) = json.loads(_run("dead", queue_name, "--url", queue_spec, "--json").stdout)
    assert (dead["reason"], dead["deliveries"]) == ("bad input", 1)
    done = _run("requeue", queue_name, dead["item"], "--url", queue_spec)
    assert done.returncode == 0 and "Requeued 1" in done.stdout
    assert (len(queue), queue.dead_letters()) == (2, [])


def test_purge_refuses_without_confirmation_and_purges_with_the_name_typed_back(queue_spec, queue_name):
    queue = _with_a_dead_letter_and_a_lease(queue_spec, queue_name)
    refused = _run("purge", queue_name, "--url", queue_spec, stdin="")
    assert refused.returncode == 1 and "refused without --yes" in refused.stderr
    assert len(queue) == 1
    done = _run("purge", queue_name, "--url", queue_spec, "--yes")
    assert done.returncode == 0 and "3 item(s) removed" in done.stdout
    assert (len(queue), queue.in_flight(), queue.dead_letters()) == (0, [], [])
    listed = json.loads(_run("list", "--url", queue_spec, "--json").stdout)
    assert queue_name not in [row["queue"] for row in listed]


def test_drop_dead_asks_for_confirmation(queue_spec, queue_name):
    queue = _with_a_dead_letter_and_a_lease(queue_spec, queue_name)
    refused = _run("drop-dead", queue_name, "--all", "--url", queue_spec)
    assert refused.returncode == 1 and len(queue.dead_letters()) == 1
    done = _run("drop-dead", queue_name, "--all", "--url", queue_spec, "--yes")
    assert done.returncode == 0 and queue.dead_letters() == []


def test_an_expired_lease_shows_as_expired(queue_spec, queue_name):
    queue = ExclusiveQueue(queue_spec, name=queue_name)
    queue.put("x")
    queue.lease(consumer_id="gone", seconds=0.05)
    time.sleep(0.1)
    assert "EXPIRED" in _run("show", queue_name, "--url", queue_spec).stdout


def test_purging_a_queue_of_stored_values_shows_progress_on_a_terminal_only(queue_spec, queue_name, file_url):
    from tests.test_cli import _run_on_a_terminal

    queue = ExclusiveQueue(queue_spec, name=queue_name, storage=file_url, inline_max_bytes=0)
    queue.put_many([f"value {n}" for n in range(40)])  # every value stored, one purge each
    status, stdout, terminal = _run_on_a_terminal("queue", "purge", queue_name, "--url", queue_spec, "--yes")
    assert status == 0 and "40 item(s) removed" in stdout
    assert "removing stored values: 40 of 40" in terminal
    queue.put_many(["again"] * 5)
    piped = _run("purge", queue_name, "--url", queue_spec, "--yes")
    assert piped.returncode == 0 and "5 item(s) removed" in piped.stdout
    assert "removing stored values" not in piped.stderr
