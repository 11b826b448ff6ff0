"""ExclusiveXCom's DataFrame and list-of-dicts paths (issue #13): one exactness check, no wasted encoding.

The backend is called directly here (real Airflow config, real local storage, no DAG run);
tests/test_xcom_backend.py runs the same paths through dag.test().
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskflow_exclusive.formats.serializers import get_serializer, is_plain_json

KEY = "return_value"
WHERE = {"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": -1}


@pytest.fixture
def backend(tmp_path, monkeypatch):
    """ExclusiveXCom with a 64 KiB threshold and local storage, called outside any task."""
    from taskflow_exclusive.airflow.xcom import ExclusiveXCom

    monkeypatch.setenv("AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_STORAGE_URL", (tmp_path / "store").as_uri())
    monkeypatch.setenv("AIRFLOW__TASKFLOW_EXCLUSIVE__XCOM_THRESHOLD", "65536")
    return ExclusiveXCom


def _push_pull(backend: Any, value: Any) -> tuple[Any, Any]:
    from taskflow_exclusive.airflow.xcom import _Wrapped

    stored = backend.serialize_value(value, key=KEY, **WHERE)
    return stored, backend.deserialize_value(_Wrapped(stored))


def _handle(stored: Any) -> dict[str, Any]:
    from taskflow_exclusive.airflow.xcom import MARKER, REFERENCE

    assert isinstance(stored, dict) and stored.get(MARKER) == REFERENCE, str(stored)[:200]
    return stored["handle"]


# --- the list-of-dicts path ---------------------------------------------------------------------


def test_a_large_list_of_small_dicts_is_offloaded_as_json_and_comes_back_equal(backend):
    rows = [{"id": i, "name": f"name-{i}", "ok": i % 2 == 0} for i in range(20_000)]
    stored, back = _push_pull(backend, rows)
    assert _handle(stored)["serializer"] == "json"
    assert back == rows


def test_a_large_list_with_one_tuple_deep_inside_goes_to_pickle_and_keeps_the_tuple(backend):
    rows = [{"id": i, "tags": ["a", {"deep": [i]}]} for i in range(20_000)]
    rows[-1]["tags"][1]["deep"] = (1, 2)
    stored, back = _push_pull(backend, rows)
    assert _handle(stored)["serializer"] == "pickle"
    assert back == rows and type(back[-1]["tags"][1]["deep"]) is tuple


def test_a_list_whose_json_is_small_but_whose_serde_form_is_large_is_still_offloaded(backend):
    # Airflow's serde writes each tuple as {"__classname__": "builtins.tuple", ...}: about 60 bytes
    # more than its JSON. The threshold applies to what the row would hold, as before.
    pairs = [(i, i) for i in range(2_000)]
    assert len(str(pairs)) < 65536
    stored, back = _push_pull(backend, pairs)
    assert _handle(stored)["serializer"] == "pickle"
    assert back == pairs and all(type(pair) is tuple for pair in back)


def test_a_small_plain_list_stays_inline_exactly_as_given(backend):
    rows = [{"id": i} for i in range(100)]
    stored, back = _push_pull(backend, rows)
    assert stored == rows
    assert back == rows


def test_a_large_string_with_a_lone_surrogate_inside_a_list_is_offloaded_not_an_error(backend):
    rows = ["x" * 70_000 + "\ud800"]
    stored, back = _push_pull(backend, rows)
    assert _handle(stored)["serializer"] == "json"
    assert back == rows


# --- the exactness check --------------------------------------------------------------------------


def _exact_one_by_one(value: Any, depth: int = 0) -> bool:
    """The JSON exactness rule, written the obvious way (a reference for the bulk check)."""
    kind = type(value)
    if kind is list or kind is dict:
        if depth + 1 > 500:
            return False
        if kind is dict:
            return all(type(k) is str for k in value) and all(
                _exact_one_by_one(v, depth + 1) for v in value.values()
            )
        return all(_exact_one_by_one(v, depth + 1) for v in value)
    if kind is int:
        return -(10**640) < value < 10**640
    return kind in (str, float, bool, type(None))


class _Text(str):
    pass


class _Number(int):
    pass


_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**640, -(10**640), 10**640 - 1, 2**2126, 2**2127]),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.builds(_Text, st.text(max_size=3)),
    st.builds(_Number, st.integers()),
    st.tuples(st.integers()),
    st.binary(max_size=3),
)
_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(st.text(max_size=3), inner, max_size=4),
        st.dictionaries(st.one_of(st.integers(), st.text(max_size=2)), inner, max_size=3),
    ),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(_values)
def test_the_bulk_exactness_check_agrees_with_an_item_by_item_walk(value):
    assert is_plain_json(value) == _exact_one_by_one(value)


@pytest.mark.parametrize("depth", [498, 499, 500, 501])
def test_the_depth_limit_is_the_same_for_lists_and_dicts(depth):
    as_lists: Any = []
    as_dicts: Any = {}
    for _ in range(depth):
        as_lists, as_dicts = [as_lists], {"k": as_dicts}
    assert is_plain_json(as_lists) == (depth < 500)  # 499 wraps: 500 levels of containers
    assert is_plain_json(as_dicts) == (depth < 500)


def test_a_list_holding_itself_a_thousand_times_is_refused_without_walking_every_path():
    loop: list[Any] = []
    loop.extend([loop] * 1000)  # 1000**500 paths: each container is looked at once per level
    assert "nested more than 500 levels" in (get_serializer("json").loses(loop) or "")


def test_a_container_shared_by_many_items_is_checked_like_separate_ones():
    bad = {"pair": (1, 2)}
    assert get_serializer("json").loses([bad] * 1000 + [{"ok": 1}]) == "a tuple would come back as a list"
    good = {"pair": [1, 2]}
    assert get_serializer("json").loses([good] * 1000) is None


# --- the DataFrame path ---------------------------------------------------------------------------


def _column_encodings(path: Path) -> dict[str, set[str]]:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata.row_group(0)
    return {meta.column(i).path_in_schema: set(meta.column(i).encodings) for i in range(meta.num_columns)}


def test_a_frame_is_written_with_dictionaries_for_its_string_columns_only(backend):
    import numpy as np
    import pandas as pd

    rows = 50_000
    frame = pd.DataFrame(
        {
            "id": np.arange(rows),
            "x": np.random.default_rng(1).random(rows),
            "city": pd.Series(["Paris", "Lyon", "Nice"] * (rows // 3) + ["Paris"] * (rows % 3), dtype="str"),
            "kind": pd.Categorical(["a", "b"] * (rows // 2)),
        }
    )
    stored, back = _push_pull(backend, frame)
    handle = _handle(stored)
    assert handle["serializer"] == "parquet"
    assert back.equals(frame) and list(back.dtypes) == list(frame.dtypes)
    encodings = _column_encodings(Path(handle["uri"].removeprefix("file://")))
    dictionary = {"PLAIN_DICTIONARY", "RLE_DICTIONARY"}
    assert not encodings["id"] & dictionary
    assert not encodings["x"] & dictionary
    assert encodings["city"] & dictionary
    assert encodings["kind"] & dictionary


def test_a_frame_with_nested_columns_keeps_dictionaries_everywhere_and_comes_back_equal(backend):
    import pyarrow as pa

    table = pa.table({"id": pa.array(range(20_000)), "tags": pa.array([["a", "b"]] * 20_000)})
    stored, back = _push_pull(backend, table)
    assert _handle(stored)["serializer"] == "parquet"
    assert back.equals(table)
    encodings = _column_encodings(Path(_handle(stored)["uri"].removeprefix("file://")))
    assert all(found & {"PLAIN_DICTIONARY", "RLE_DICTIONARY"} for found in encodings.values())


@pytest.mark.parametrize(
    "value",
    [
        [float("nan"), float("inf"), -float("inf"), -0.0, 5e-324, 1.7976931348623157e308],
        ["lone \ud800 surrogate", "\u2028 separators \u0000"],
        [10**639, -(10**639), 2**64, -(2**63) - 1],
        {"nested": [{"a": [None, True, False, 1.5]}] * 3, "": ""},
    ],
    ids=["special-floats", "odd-strings", "long-ints", "nested"],
)
def test_json_reads_back_what_it_wrote_whichever_decoder_reads_it(value, tmp_path):
    import math

    from taskflow_exclusive import publish

    handle = publish(value, storage=(tmp_path / "store").as_uri())
    assert handle.serializer == "json"
    back = handle.claim(consumer_id="reader")
    assert repr(back) == repr(value)  # same types and digits; repr also tells -0.0 from 0.0
    if isinstance(value, list) and isinstance(value[0], float):
        assert math.isnan(back[0]) and math.copysign(1.0, back[3]) == -1.0


def test_json_writes_from_a_thread_that_never_checked_a_value_before():
    import io
    import threading

    written: list[bytes] = []

    def dump() -> None:
        file = io.BytesIO()
        get_serializer("json").dump([1.5, {"a": float("nan")}], file)
        written.append(file.getvalue())

    worker = threading.Thread(target=dump)
    worker.start()
    worker.join()
    assert written == [b'[1.5,{"a":NaN}]']
