"""ExclusiveQueue on the shared Redis: both delivery modes, leases, dead letters, verification."""

from __future__ import annotations

import base64
import pickle
import threading
import time
from pathlib import Path

import pytest

from taskflow_exclusive import (
    AlreadyClaimedError,
    IntegrityError,
    LeaseExpiredError,
    MalformedRecordError,
    QueueEmptyError,
    QueueUnavailableError,
)
from taskflow_exclusive.queues import ExclusiveQueue
from tests import queue_fixtures
from tests.private_services import PASSWORD

queue_spec, queue_name = queue_fixtures.queue_spec, queue_fixtures.queue_name


@pytest.fixture
def queue(queue_spec, queue_name, file_url) -> ExclusiveQueue:
    return ExclusiveQueue(queue_spec, name=queue_name, storage=file_url, inline_max_bytes=1024)


def _replace_head(q: ExclusiveQueue, change) -> None:
    """Rewrite the first waiting item's element in Redis (what someone with write access could do)."""
    client, key = q.backend._client, q.backend.key["ready"]
    client.lset(key, 0, change(client.lindex(key, 0)))


class Exploding:
    """Unpickling it writes a marker file: proof that bytes were deserialized."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).write_text, ("unpickled",))


# -- both modes ---------------------------------------------------------------------------------


def test_values_come_out_in_order_each_to_one_get(queue):
    ids = queue.put_many([{"n": i} for i in range(5)])
    assert len(ids) == len(set(ids)) == 5 and len(queue) == 5
    assert [queue.get(consumer_id="a") for _ in range(3)] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert queue.get_many(10, consumer_id="b") == [{"n": 3}, {"n": 4}]
    assert len(queue) == 0
    with pytest.raises(QueueEmptyError):
        queue.get(consumer_id="a")


def test_a_small_value_rides_inline_and_a_large_one_is_stored_with_a_handle_claimed_by_its_getter(queue):
    queue.put("small")
    queue.put("x" * 5000)
    small, large = queue.peek(2)
    assert small.inline and small.data == b"small" and small.handle is None
    assert not large.inline and large.handle.size == 5000 and large.handle.uri.startswith("file://")
    assert large.handle.claims == queue.backend.spec  # the queue's own Redis guards stored values
    assert queue.get(consumer_id="a") == "small"
    assert queue.get(consumer_id="b") == "x" * 5000
    assert [h.consumer_id for h in large.handle.holders()] == ["b"]
    with pytest.raises(AlreadyClaimedError):
        large.handle.claim(consumer_id="c")


def test_inline_max_bytes_zero_stores_every_value(queue_spec, queue_name, file_url):
    q = ExclusiveQueue(queue_spec, name=queue_name, storage=file_url, inline_max_bytes=0)
    q.put(1)
    assert q.peek(1)[0].handle is not None
    assert q.get() == 1


def test_peek_reads_records_without_taking_or_claiming(queue):
    queue.put_many(["a", "b"])
    assert [item.data for item in queue.peek(5)] == [b"a", b"b"]
    assert len(queue) == 2


def test_get_waits_for_a_put_and_times_out_when_none_comes(queue):
    started = time.monotonic()
    with pytest.raises(QueueEmptyError) as empty:
        queue.get(timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 1.5
    assert empty.value.timeout == 0.3 and queue.name in empty.value.queue
    threading.Timer(0.2, queue.put, args=("late",)).start()
    assert queue.get(timeout=5) == "late"


def test_an_altered_inline_item_is_refused_before_anything_is_unpickled(queue, tmp_path):
    marker = tmp_path / "marker"
    queue.put(Exploding(str(marker)))
    item = queue.peek(1)[0]
    forged = pickle.dumps(Exploding(str(marker)), protocol=5) + b"."
    _replace_head(
        queue, lambda element: element.replace(base64.b64encode(item.data), base64.b64encode(forged))
    )
    with pytest.raises(IntegrityError) as refused:
        queue.get()
    assert refused.value.expected == item.size and not marker.exists()


def test_a_body_that_is_not_an_item_is_refused_whole(queue):
    item_id = queue.put("fine")
    _replace_head(queue, lambda element: item_id.encode() + b' {"format": "something else"}')
    with pytest.raises(MalformedRecordError) as refused:
        queue.get()
    assert refused.value.kind == "queue item"
    queue.put("fine")
    _replace_head(queue, lambda element: b"no id here")
    with pytest.raises(MalformedRecordError):
        queue.get()


def test_an_unreachable_queue_names_the_server_without_its_password(queue_name):
    q = ExclusiveQueue(f"redis://app:{PASSWORD}@127.0.0.1:1/0", name=queue_name)
    with pytest.raises(QueueUnavailableError) as refused:
        q.put("x")
    assert PASSWORD not in str(refused.value) and PASSWORD not in repr(refused.value.__dict__)
    assert "127.0.0.1:1" in str(refused.value) and "***" in str(refused.value)


# -- at least once ------------------------------------------------------------------------------


def test_an_acked_lease_removes_the_item_and_counts_once(queue):
    queue.put("job")
    lease = queue.lease(consumer_id="a")
    assert (lease.value, lease.delivery, lease.consumer_id) == ("job", 1, "a")
    assert [info.item_id for info in queue.in_flight()] == [lease.item_id]
    lease.ack()
    lease.ack()  # its reply lost, sent again: "already acked", not counted twice
    assert queue.stats()["acked"] == 1
    assert (len(queue), queue.in_flight()) == (0, [])


def test_an_expired_lease_goes_to_the_next_consumer_and_the_late_ack_is_refused(queue):
    queue.put("job")
    first = queue.lease(consumer_id="a", seconds=0.2)
    time.sleep(0.3)
    second = queue.lease(consumer_id="b")
    assert (second.item_id, second.value, second.delivery) == (first.item_id, "job", 2)
    assert second.token > first.token  # fencing: a later holder always has a larger token
    with pytest.raises(LeaseExpiredError) as refused:
        first.ack()
    facts = refused.value
    assert (facts.item_id, facts.consumer_id, facts.token) == (first.item_id, "a", first.token)
    assert "'b'" in str(facts) and "does not count" in str(facts)
    second.ack()
    assert queue.stats()["acked"] == 1


def test_an_ack_after_the_deadline_is_refused_even_before_anyone_else_takes_the_item(queue):
    queue.put("job")
    lease = queue.lease(consumer_id="a", seconds=0.1)
    time.sleep(0.2)
    with pytest.raises(LeaseExpiredError):
        lease.ack()
    assert queue.lease(consumer_id="b").delivery == 2


def test_extend_keeps_a_lease_past_its_first_deadline(queue):
    queue.put("long job")
    lease = queue.lease(consumer_id="a", seconds=0.3)
    for _ in range(3):
        time.sleep(0.15)
        lease.extend(0.3)
    with pytest.raises(QueueEmptyError):
        queue.lease(consumer_id="b")
    lease.ack()


def test_a_failing_block_requeues_its_item_then_sends_it_to_the_dead_letters(queue_spec, queue_name):
    q = ExclusiveQueue(queue_spec, name=queue_name, max_deliveries=2)
    q.put(0)
    for _ in range(2):
        with pytest.raises(ZeroDivisionError), q.lease(consumer_id="a") as lease:
            _ = 1 / lease.value
    with pytest.raises(QueueEmptyError):
        q.lease(consumer_id="a")
    (dead,) = q.dead_letters()
    assert dead.deliveries == 2 and dead.reason.startswith("ZeroDivisionError")
    assert q.requeue_dead() == 1 and q.dead_letters() == []
    with q.lease(consumer_id="a") as lease:
        assert (lease.value, lease.delivery) == (0, 1)  # deliveries start again
    assert q.stats()["acked"] == 1


def test_dropping_dead_letters_removes_their_stored_values(queue_spec, queue_name, file_url):
    q = ExclusiveQueue(queue_spec, name=queue_name, storage=file_url, inline_max_bytes=0, max_deliveries=1)
    q.put({"big": True})
    handle = q.peek(1)[0].handle
    q.lease(consumer_id="a").fail("bad input")
    assert [d.reason for d in q.dead_letters()] == ["bad input"]
    assert q.drop_dead() == 1 and q.dead_letters() == []
    assert not Path(handle.uri.removeprefix("file://")).exists()


def test_a_retried_consumer_resumes_its_own_lease_under_a_new_token(queue_spec, queue_name):
    ExclusiveQueue(queue_spec, name=queue_name).put_many(["mine", "other"])
    before = ExclusiveQueue(queue_spec, name=queue_name).lease(consumer_id="dag/run/drain/0")
    retried = ExclusiveQueue(queue_spec, name=queue_name)  # a new process: the task's next try
    again = retried.lease(consumer_id="dag/run/drain/0")
    assert (again.item_id, again.value) == (before.item_id, "mine") and again.token > before.token
    with pytest.raises(LeaseExpiredError):
        before.ack()  # the earlier try's token no longer counts
    again.ack()
    assert retried.lease(consumer_id="dag/run/drain/0").value == "other"


def test_a_stored_value_completed_by_a_killed_consumer_is_not_completed_again(
    queue_spec, queue_name, file_url
):
    from taskflow_exclusive.queues.queue import _claim_in_ledger

    q = ExclusiveQueue(queue_spec, name=queue_name, storage=file_url, inline_max_bytes=0)
    q.put("stored")
    first = q.lease(consumer_id="a", seconds=0.2)
    _claim_in_ledger(first.item.handle, "a")  # 'a' recorded completion, then died before the queue's ack
    time.sleep(0.3)
    second = q.lease(consumer_id="b")
    with pytest.raises(LeaseExpiredError) as refused:
        second.ack()
    assert refused.value.completed_by == "a"
    assert (len(q), q.in_flight(), q.dead_letters()) == (0, [], [])  # and it is not handed out again


def test_a_stored_value_acked_under_a_lease_is_claimed_by_its_consumer(queue_spec, queue_name, file_url):
    q = ExclusiveQueue(queue_spec, name=queue_name, storage=file_url, inline_max_bytes=0)
    q.put([1, 2, 3])
    with q.lease(consumer_id="a") as lease:
        assert lease.value == [1, 2, 3]
    assert [h.consumer_id for h in lease.item.handle.holders()] == ["a"]


def test_purge_removes_every_key_of_the_queue(queue):
    queue.put_many(["a", "b", "x" * 5000])
    queue.lease(consumer_id="a")
    assert queue.purge() == 3
    client = queue.backend._client
    assert [k for k in client.scan_iter(match=f"{queue.backend.prefix}:queue:*") if b":acked:" not in k] == []
