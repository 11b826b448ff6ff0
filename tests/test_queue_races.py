"""Work-queue proofs between real processes: 16 consumers, SIGKILLs, a Redis killed and restarted.

Counts come from the environment (CI sets them in .ci/run):
TFX_QUEUE_ITEMS (items drained per race, default 1000) and
TFX_QUEUE_KILLED_CONSUMERS (consumers SIGKILLed mid-run, default 50).
"""

from __future__ import annotations

import time
from urllib.parse import quote

import pytest

from tests import queue_fixtures
from tests.conftest import env_count, serving
from tests.queue_broken import READ_THEN_DELETE
from tests.queue_racing import AT_LEAST_ONCE, AT_MOST_ONCE, drain_race

ITEMS = env_count("TFX_QUEUE_ITEMS", 1000)
KILLS = env_count("TFX_QUEUE_KILLED_CONSUMERS", 50)

queue_spec, queue_name = queue_fixtures.queue_spec, queue_fixtures.queue_name


def _queue(spec: str, name: str):
    from taskflow_exclusive.queues import ExclusiveQueue

    return ExclusiveQueue(spec, name=name)


def test_at_most_once_16_consumers_never_take_an_item_twice(queue_spec, queue_name, tmp_path):
    report = drain_race(queue_spec, queue_name, items=ITEMS, mode=AT_MOST_ONCE, folder=tmp_path, idle=0.5)
    print(report.summary())
    assert report.taken_twice == 0
    assert report.done_twice == 0
    assert report.never_done == []
    assert sum(report.taken.values()) == ITEMS
    assert len(_queue(queue_spec, queue_name)) == 0


def test_at_most_once_loses_the_items_of_consumers_killed_mid_item(queue_spec, queue_name, tmp_path):
    report = drain_race(
        queue_spec,
        queue_name,
        items=ITEMS,
        mode=AT_MOST_ONCE,
        kills=KILLS,
        work=0.03,
        folder=tmp_path,
        idle=0.5,
    )
    print(report.summary())
    queue = _queue(queue_spec, queue_name)
    assert report.taken_twice == 0 and report.done_twice == 0  # never twice...
    lost = len(report.never_done)
    assert report.killed_mid_item > 0
    assert lost >= report.killed_mid_item  # ...but each consumer killed mid-item lost its item
    assert len(queue) == 0 and queue.in_flight() == []  # taken, so nobody else will get them
    print(f"at most once: {lost} of {ITEMS} items lost with {report.kills} consumers killed")


def test_at_least_once_every_item_is_acked_exactly_once_while_consumers_are_killed(
    queue_spec, queue_name, tmp_path
):
    report = drain_race(
        queue_spec, queue_name, items=ITEMS, mode=AT_LEAST_ONCE, kills=KILLS, work=0.03, folder=tmp_path
    )
    print(report.summary())
    queue = _queue(queue_spec, queue_name)
    stats = queue.stats()
    assert report.errors == []
    assert report.kills == KILLS and report.killed_mid_item > 0
    assert report.done_twice == 0
    assert stats["acked"] == ITEMS  # the server completed each item once
    # an item never reported done was acked by a consumer killed before it could write "done"
    assert len(report.never_done) <= report.kills
    # each item whose consumer died mid-item went to another consumer (unless it was acked first)
    assert report.redeliveries >= report.killed_mid_item - len(report.never_done)
    assert (len(queue), queue.in_flight(), queue.dead_letters()) == (0, [], [])
    assert queue.backend._client.hlen(queue.backend.key["held"]) == 0  # no item left behind


def test_negative_control_a_read_then_delete_pop_hands_items_out_twice(queue_spec, queue_name, tmp_path):
    report = drain_race(
        queue_spec,
        queue_name,
        items=ITEMS,
        mode=AT_MOST_ONCE,
        backend=READ_THEN_DELETE,
        work=0.0,
        folder=tmp_path,
        idle=0.5,
    )
    print(report.summary())
    assert report.taken_twice > 0  # the harness catches the broken pop


# -- a private Redis killed and restarted mid-run ----------------------------------------------------


@pytest.fixture
def aof_redis():
    from tests.private_services import start_private_redis

    yield from serving(lambda: start_private_redis(appendonly=True), "private redis-server (AOF)")


@pytest.fixture
def volatile_redis():
    from tests.private_services import start_private_redis

    yield from serving(lambda: start_private_redis(appendonly=False), "private redis-server (no AOF)")


def _restart_after(server, pause: float):
    def kill_and_restart(report) -> None:
        server.kill()
        time.sleep(pause)
        server.start()

    return kill_and_restart


def test_a_redis_with_aof_killed_and_restarted_mid_run_acks_no_item_twice_and_loses_none(
    aof_redis, queue_name, tmp_path
):
    spec = aof_redis.url + "?prefix=" + quote(queue_name)
    items = max(ITEMS // 2, 300)
    report = drain_race(
        spec,
        queue_name,
        items=items,
        mode=AT_LEAST_ONCE,
        processes=8,
        work=0.01,
        folder=tmp_path,
        during=_restart_after(aof_redis, 1.0),
    )
    print(report.summary())
    queue = _queue(spec, queue_name)
    assert report.retries > 0  # the consumers really saw the server go
    assert report.done_twice == 0
    assert queue.stats()["acked"] == items
    assert report.never_done == []  # a lost ack reply is answered "already acked" on retry
    assert (len(queue), queue.in_flight()) == (0, [])


def test_a_redis_without_aof_killed_and_restarted_forgets_every_item_not_yet_acked(
    volatile_redis, queue_name, tmp_path
):
    spec = volatile_redis.url + "?prefix=" + quote(queue_name)
    items = max(ITEMS // 2, 300)
    report = drain_race(
        spec,
        queue_name,
        items=items,
        mode=AT_LEAST_ONCE,
        processes=8,
        work=0.01,
        folder=tmp_path,
        during=_restart_after(volatile_redis, 1.0),
    )
    print(report.summary())
    lost = len(report.never_done)
    done = sum(1 for i in range(items) if report.done[i])
    print(f"without AOF: {lost} of {items} items lost (all waiting and in flight at the kill), {done} done")
    assert report.done_twice == 0
    assert lost > 0 and done >= items // 3  # what was acked before the kill stays done; the rest is gone
    assert _queue(spec, queue_name).stats().get("acked", 0) < items
