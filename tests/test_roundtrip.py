"""Every serializer round-trips through file://, memory:// and a real S3 server."""

from __future__ import annotations

import math
import os

import blake3
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from taskflow_exclusive import ExclusiveHandle, publish
from taskflow_exclusive.formats.serializers import available_serializers


def _closure_factory(offset: int):
    return lambda x: x + offset


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def __hash__(self) -> int:
        return hash((self.x, self.y))


def _roundtrip(value, storage_url, **options):
    handle = publish(value, storage=storage_url, **options)
    # What XCom would carry: a JSON string, rebuilt on the consumer's side.
    carried = ExclusiveHandle.from_json(handle.to_json())
    return handle, carried.claim(consumer_id="roundtrip-test")


SIMPLE_VALUES = {
    "bytes": (b"\x00\x01binary\xff" * 1000, "bytes"),
    "text": ("naïve café ☕ — " * 1000, "text"),
    "json": ({"rows": [1, 2.5, None, True, "x"], "nested": {"a": []}}, "json"),
    "tuple_goes_to_pickle": ((1, "two", 3.0), "pickle"),
    "int_keys_go_to_pickle": ({1: "a", 2: "b"}, "pickle"),
    "numpy_scalar_goes_to_pickle": ({"x": np.float64(1.5)}, "pickle"),
    "custom_class": (Point(3, 4), "pickle"),
    "numpy": (np.arange(120, dtype=np.float32).reshape(10, 12), "numpy"),
    "numpy_fortran_order": (np.asfortranarray(np.arange(12.0).reshape(3, 4)), "numpy"),
    "numpy_zero_dim": (np.array(3.5), "numpy"),
    "numpy_structured_big_endian": (np.array([(1, 2.0)], dtype=[("a", ">i4"), ("b", "<f8")]), "numpy"),
    "numpy_object_dtype_goes_to_pickle": (np.array([{"a": 1}, None], dtype=object), "pickle"),
}


@pytest.mark.parametrize("name", sorted(SIMPLE_VALUES))
def test_value_round_trips_with_the_serializer_chosen_by_type(storage_url, name):
    value, expected_serializer = SIMPLE_VALUES[name]
    handle, back = _roundtrip(value, storage_url)
    assert handle.serializer == expected_serializer
    if isinstance(value, np.ndarray):
        assert back.dtype == value.dtype
        assert back.shape == value.shape
        assert back.flags.f_contiguous == value.flags.f_contiguous
        assert back.flags.writeable
        assert list(back.ravel()) == list(value.ravel())
    else:
        assert type(back) is type(value)
        assert back == value


def test_pickle_carries_lambdas_and_closures(storage_url):
    handle, back = _roundtrip({"double": lambda x: 2 * x, "add5": _closure_factory(5)}, storage_url)
    assert handle.serializer == "pickle"
    assert back["double"](21) == 42
    assert back["add5"](1) == 6


def test_pandas_dataframe_round_trips_as_parquet_with_index_and_dtypes(storage_url):
    frame = pd.DataFrame(
        {
            "id": np.arange(1000, dtype=np.int64),
            "price": np.linspace(0, 1, 1000),
            "city": pd.Categorical(["Oslo", "Lima"] * 500),
            "when": pd.date_range("2026-01-01", periods=1000, freq="min", tz="UTC"),
        },
        index=pd.Index(np.arange(1000) * 7, name="row"),
    )
    handle, back = _roundtrip(frame, storage_url)
    assert handle.serializer == "parquet"
    assert handle.uri.endswith(".parquet")
    pd.testing.assert_frame_equal(back, frame)


def test_polars_dataframe_comes_back_as_polars(storage_url):
    frame = pl.DataFrame({"a": [1, 2, 3], "b": ["x", None, "z"]})
    handle, back = _roundtrip(frame, storage_url)
    assert handle.serializer == "parquet"
    assert isinstance(back, pl.DataFrame)
    assert back.equals(frame)


def test_pyarrow_table_comes_back_as_a_table(storage_url):
    table = pa.table({"k": pa.array([1, 2, 3], pa.int16()), "v": ["a", "b", "c"]})
    handle, back = _roundtrip(table, storage_url)
    assert handle.serializer == "parquet"
    assert isinstance(back, pa.Table)
    assert back.equals(table)


@pytest.mark.parametrize("serializer", ["json", "pickle", "text"])
def test_serializer_chosen_by_name_wins_over_the_type(storage_url, serializer):
    value = "a string" if serializer == "text" else ["a", "list"]
    value = '"quoted"' if serializer == "json" else value
    handle, back = _roundtrip(value, storage_url, serializer=serializer)
    assert handle.serializer == serializer
    assert back == value


@pytest.mark.parametrize("codec", ["gzip", "zstd", "bz2"])
def test_compressed_values_round_trip_and_are_smaller(storage_url, codec):
    value = "the same line again\n" * 20000
    plain = publish(value, storage=storage_url)
    handle, back = _roundtrip(value, storage_url, compression=codec)
    assert back == value
    assert handle.compression == codec
    assert handle.size < plain.size / 10
    assert handle.uri.endswith({"gzip": ".txt.gz", "zstd": ".txt.zst", "bz2": ".txt.bz2"}[codec])


def test_every_builtin_serializer_is_registered():
    assert available_serializers()[-6:] == ["bytes", "text", "json", "parquet", "numpy", "pickle"]


def test_empty_and_special_float_values_round_trip(storage_url):
    for value in (b"", "", [], {}, 0, None):
        assert _roundtrip(value, storage_url)[1] == value
    back = _roundtrip([math.inf, -math.inf], storage_url)[1]
    assert back == [math.inf, -math.inf]


LARGE = int(os.environ.get("TFX_LARGE_VALUE_MB", "200")) * 1024 * 1024


@pytest.mark.slow
def test_a_200_mb_value_round_trips(storage_url):
    block = os.urandom(1 << 20)
    value = block * (LARGE // len(block))
    handle, back = _roundtrip(value, storage_url)
    assert handle.size == len(value)
    assert handle.digest == "blake3:" + blake3.blake3(value).hexdigest()
    assert len(back) == len(value)
    assert back == value


def test_a_large_array_is_read_in_place_into_a_writable_buffer(storage_url):
    value = np.random.default_rng(1).random((3000, 1000))  # 24 MB: the chunked in-place read path
    handle, back = _roundtrip(value, storage_url)
    assert handle.serializer == "numpy"
    assert back.flags.writeable
    back[0, 0] = -1.0  # the buffer is the claimer's own
    np.testing.assert_array_equal(back[1:], value[1:])
