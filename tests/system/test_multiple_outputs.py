"""``multiple_outputs``: each key stored on its own, with its own serializer, claimed by its own consumer."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.system

CONSUMERS = {"orders": "take_orders", "raw": "take_raw", "note": "take_note"}


def test_each_key_is_stored_and_claimed_on_its_own(deployed):
    run = deployed["sys_multiple_outputs"]
    assert run.state == "success", run.explain()
    assert all(ti.try_number == 1 for ti in run.task_instances.values()), run.explain()
    nonce = run.records_of("produce")[0]["nonce"]

    handles = {key: run.handles("produce", key=key) for key in CONSUMERS}
    assert {key: h.serializer for key, h in handles.items()} == {
        "orders": "json",
        "raw": "bytes",
        "note": "text",
    }
    assert len({h.uri for h in handles.values()}) == 3
    # The task's return value is the dict of the same handles.
    assert {key: h.uri for key, h in run.handles("produce").items()} == {
        key: h.uri for key, h in handles.items()
    }

    (orders,) = run.records_of("take_orders")
    assert orders["value"] == [{"id": 1, "total": 9.5}, {"id": 2, "total": 3.25}, nonce]
    (raw,) = run.records_of("take_raw")
    assert (raw["type"], raw["value"]) == ("bytes", (b"\x00\x01\xff" + nonce.encode()).hex())
    (note,) = run.records_of("take_note")
    assert (note["type"], note["value"]) == ("str", f"note {nonce}")

    for key, consumer in CONSUMERS.items():
        assert [h.consumer_id for h in handles[key].holders()] == [run.consumer_id(consumer)]
