"""Queue items round-trip exactly, and anything else is refused whole (property tests)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskflow_exclusive import IntegrityError, MalformedRecordError
from taskflow_exclusive.queues.items import QueueItem, load_inline, pack

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(st.one_of(json_values, st.binary(), st.text()))
@settings(max_examples=200, deadline=None)
def test_an_inline_item_round_trips_through_json_and_gives_back_the_value(value):
    item = pack(value, inline_max_bytes=1 << 20, producer="p")
    again = QueueItem.from_json(item.to_json())
    assert again == item
    assert load_inline(again) == value


@given(st.binary(min_size=1), st.integers(min_value=0, max_value=200))
@settings(max_examples=200, deadline=None)
def test_any_change_to_inline_bytes_is_refused_before_deserializing(data, position):
    item = pack(data, inline_max_bytes=1 << 20, producer="p")
    changed = bytearray(item.data)
    changed[position % len(changed)] ^= 0x01
    forged = QueueItem(
        item.id, item.producer, item.created_at, bytes(changed), item.serializer, None, item.size, item.sha256
    )
    with pytest.raises(IntegrityError):
        load_inline(QueueItem.from_json(forged.to_json()))


@given(st.one_of(json_values, st.text(), st.binary()))
@settings(max_examples=300, deadline=None)
def test_text_that_is_not_an_item_is_refused_as_malformed(garbage):
    text = garbage if isinstance(garbage, (str, bytes)) else json.dumps(garbage)
    with pytest.raises(MalformedRecordError):
        QueueItem.from_json(text)


_FIELD_EDITS = [
    lambda r: r.update(id="xyz"),
    lambda r: r.update(extra=1),
    lambda r: r.pop("producer"),
    lambda r: r["inline"].update(size=-1),
    lambda r: r["inline"].update(size=True),
    lambda r: r["inline"].update(sha256="0" * 63),
    lambda r: r["inline"].update(data="not base64!"),
    lambda r: r["inline"].pop("serializer"),
    lambda r: r.update(handle={"format": "nope"}),
    lambda r: r.update(format="taskflow-exclusive/queue-item/2"),
]


@pytest.mark.parametrize("edit", range(len(_FIELD_EDITS)))
def test_an_item_with_a_bad_field_is_refused(edit):
    record = pack("value", producer="p").to_dict()
    _FIELD_EDITS[edit](record)
    with pytest.raises(MalformedRecordError):
        QueueItem.from_dict(record)


def test_a_value_over_the_threshold_is_not_inlined(tmp_path):
    from taskflow_exclusive import ExclusiveOutput

    item = pack(
        "y" * 100, inline_max_bytes=99, output=ExclusiveOutput(storage=tmp_path.as_uri()), producer="p"
    )
    assert item.handle is not None and item.handle.size == 100
    assert pack("y" * 99, inline_max_bytes=99, producer="p").data == b"y" * 99
