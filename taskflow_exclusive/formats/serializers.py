"""Serializers: how a value becomes bytes in storage, chosen by name or by the value's type.

Built in, in the order automatic selection tries them:

==========  ===================================================  =========
name        takes (automatically)                                 extension
==========  ===================================================  =========
``bytes``   ``bytes`` (not bytearray, not memoryview)             ``bin``
``text``    ``str`` (not a subclass)                              ``txt``
``json``    dict/list/str/int/float/bool/None that round-trip     ``json``
            exactly (str keys, no tuples, no subclasses, ints
            of at most 640 digits, at most 500 levels deep)
``parquet`` pandas / polars DataFrames and pyarrow Tables whose   ``parquet``
            dtypes parquet brings back exactly (see below)
``numpy``   plain numpy arrays of fixed-size dtypes (``.npy``)    ``npy``
``pickle``  anything else cloudpickle can pickle exactly          ``pkl``
==========  ===================================================  =========

Never lossy: a value comes back equal, of the same type (and for frames with
the same dtypes, index and column labels), or it is refused. Automatic
selection picks the first built-in serializer that brings the value back
exactly: a tuple goes to pickle, not to JSON; a pandas frame with an object
column (dicts, lists, mixed types, ``None``) goes to pickle, not to parquet.
A serializer named explicitly refuses a value it would change, with a
:class:`SerializationError` that says what would be lost and what to name
instead, before anything is written. Values nothing stores exactly (a
``memoryview``, an open file) are refused. Serializers you register are
tried before the built-in ones, and what they bring back is their business.

Parquet takes a pandas frame when every column has one of these dtypes:
bool, int, uint, float, datetime64 in ms/us/ns (with a ``zoneinfo`` or
``datetime.timezone`` time zone, or none), timedelta64, the nullable
``Int*``/``UInt*``/``Float*``/``boolean``, pyarrow-backed strings
(``str``, ``string[pyarrow]``), categoricals of strings, periods, and flat
``ArrowDtype``; with unique ``str`` column labels, a ``RangeIndex`` or a
flat index of those dtypes (no ``freq``), and empty ``attrs``. Polars frames
go to parquet unless they hold ``Object`` or 128-bit integer columns; pyarrow
Tables unless they hold maps, unions, intervals, ``date64``, second-unit
times or timestamps, or dictionaries of non-string values.

A serializer writes to a binary file object (values stream to storage and
are never held twice in memory) and reads from bytes whose sha256 has
already been verified, so ``pickle`` only ever loads checked bytes.

Example: a custom serializer::

    import io
    from taskflow_exclusive import Serializer, register_serializer

    class CsvSerializer(Serializer):
        name = "csv"
        extension = "csv"

        def accepts(self, value):
            return False  # only when asked for by name

        def dump(self, value, file):
            value.to_csv(io.TextIOWrapper(file, encoding="utf-8", write_through=True), index=False)

        def load(self, data):
            import pandas as pd
            return pd.read_csv(io.BytesIO(data))

    register_serializer(CsvSerializer())
"""

from __future__ import annotations

import functools
import io
import itertools
import json
import math
import mmap
import operator
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import IO, Any, ClassVar, Union

from taskflow_exclusive.errors import SerializationError

Buffer = Union[bytes, bytearray, memoryview, "mmap.mmap"]  # what load() receives: bytes-like

__all__ = [
    "Serializer",
    "available_serializers",
    "choose_serializer",
    "get_serializer",
    "is_plain_json",
    "register_serializer",
    "serializer_for",
]


class Serializer(ABC):
    """One storage format. Subclass it and call :func:`register_serializer`.

    ``name`` identifies the format in handles (keep it stable), ``extension``
    ends the stored object's name.
    """

    name: str = ""
    extension: str = "bin"
    #: ``load()`` keeps using a writable buffer in place (large values are then read
    #: into a memory map instead of an immutable ``bytes``).
    loads_in_place: bool = False

    def accepts(self, value: Any) -> bool:
        """Whether automatic selection should pick this serializer for ``value``."""
        return False

    def loses(self, value: Any) -> str | None:
        """What writing ``value`` would not bring back exactly (a phrase), or ``None``.

        The built-in serializers answer exactly and refuse such values, before
        anything is written. The default (``None``) trusts a serializer that
        was named explicitly with the value: what it brings back is its business.
        """
        return None

    @abstractmethod
    def dump(self, value: Any, file: IO[bytes]) -> None:
        """Write ``value`` to the binary ``file`` (stream; avoid building one big copy)."""

    @abstractmethod
    def load(self, data: Buffer) -> Any:
        """Rebuild the value from ``data``: a bytes-like object, already integrity-checked.

        ``data`` is ``bytes`` for small values and a buffer (an anonymous memory
        map) for large ones; the value may keep referencing it (no copy needed).
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class _ExactSerializer(Serializer):
    """A built-in serializer: takes automatically exactly what it brings back exactly."""

    def accepts(self, value: Any) -> bool:
        return self.loses(value) is None

    def require_exact(self, value: Any) -> None:
        """Raise :class:`SerializationError` unless ``value`` comes back exactly (call before writing)."""
        if _vouched(self, value):
            return
        reason = self.loses(value)
        if reason is not None:
            raise _lossy_error(value, self, reason)


def _type_name(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _kind(value: Any) -> str:
    return type(value).__qualname__


# The last automatic choice in this thread: (serializer, value). dump() skips a check that
# serializer_for() has just made on the same object, so a large JSON value is walked once.
_last_choice = threading.local()


def _vouch(serializer: Serializer, value: Any) -> None:
    _last_choice.pair = (serializer, value)


def _vouched(serializer: Serializer, value: Any) -> bool:
    pair = getattr(_last_choice, "pair", None)
    _last_choice.pair = None  # never hold a value past its own dump
    return pair is not None and pair[0] is serializer and pair[1] is value


# --- built-in serializers ---------------------------------------------------------------------


class BytesSerializer(_ExactSerializer):
    name = "bytes"
    extension = "bin"

    def loses(self, value: Any) -> str | None:
        if type(value) is bytes:
            return None
        if isinstance(value, (bytearray, memoryview)) or type(value).__name__ == "mmap":
            return f"a {_kind(value)} would come back as bytes; pass bytes(value) to store bytes"
        return f"the bytes serializer stores bytes, not {_kind(value)}"

    def dump(self, value: Any, file: IO[bytes]) -> None:
        self.require_exact(value)
        file.write(value)

    def load(self, data: Buffer) -> bytes:
        return data if isinstance(data, bytes) else bytes(data)


class TextSerializer(_ExactSerializer):
    name = "text"
    extension = "txt"
    _chunk = 1 << 22  # characters per encoded chunk, so a large string is never encoded whole

    def loses(self, value: Any) -> str | None:
        if type(value) is str:
            return None
        if isinstance(value, str):
            return f"a {_kind(value)} (a str subclass) would come back as a plain str"
        return f"the text serializer stores str, not {_kind(value)}"

    def dump(self, value: Any, file: IO[bytes]) -> None:
        self.require_exact(value)
        for start in range(0, len(value), self._chunk):
            file.write(value[start : start + self._chunk].encode("utf-8", "surrogatepass"))

    def load(self, data: Buffer) -> str:
        return str(data, "utf-8", "surrogatepass")


# Python refuses to convert ints longer than sys.get_int_max_str_digits() (4300 by default,
# 640 at the least) to and from text: JSON takes only ints every process can read back.
_JSON_INT_LIMIT = 10**640
_JSON_MAX_DEPTH = 500  # the C encoder and decoder recurse; deeper values go to pickle


def is_plain_json(value: Any) -> bool:
    """True when ``json.loads(json.dumps(value)) == value`` with the same types, exactly."""
    return _json_loss(value) is None


def _json_loss(value: Any) -> str | None:
    """What JSON would not bring back exactly in ``value``, or ``None``."""
    return _json_check(value)[0]


def _json_check(value: Any) -> tuple[str | None, bool]:
    """``(what JSON would not bring back exactly, or None; whether every float is finite)``.

    Checked one nesting level at a time, in chunks of a level's items, each
    chunk in bulk by C-level iteration (its items' types listed once, then
    filtered with ``compress``; the keys of a level's dicts in one ``set``),
    never item by item in Python: a list of 100,000 small dicts takes about
    half the time of an item-by-item walk. Nothing the size of the value is
    built: a chunk's items and types, and the containers found on a level,
    each once (a value that holds itself stops at the depth limit).
    """
    lists: list[Any] = [[value]]  # the value is checked like a list's item
    dicts: list[Any] = []
    depth = 0
    finite = True
    while lists or dicts:
        found: dict[type, list[Any]] = {list: [], dict: []}
        level = _level_items(lists, dicts)
        while items := list(itertools.islice(level, _JSON_CHUNK)):
            types = list(map(type, items))
            kinds = set(types)
            if not kinds <= _JSON_KINDS:
                return _json_item_loss(next(i for i in items if type(i) not in _JSON_KINDS)), finite
            for kind in kinds & _JSON_CHECKED:
                exactly = itertools.compress(items, map(operator.is_, types, itertools.repeat(kind)))
                if kind is int:
                    loss = _long_int_loss(exactly)
                    if loss is not None:
                        return loss, finite
                elif kind is float:
                    finite = finite and all(map(math.isfinite, exactly))
                else:
                    found[kind].extend(exactly)
        lists, dicts = _unique(found[list]), _unique(found[dict])
        depth += 1
        if (lists or dicts) and depth > _JSON_MAX_DEPTH:
            return f"it is nested more than {_JSON_MAX_DEPTH} levels deep", finite
        if dicts and not set(map(type, itertools.chain.from_iterable(dicts))) <= _STR_ONLY:
            return "a dict key that is not a str would come back as a str", finite
    return None, finite


def _level_items(lists: list[Any], dicts: list[Any]) -> Iterator[Any]:
    """The items of every list and the values of every dict on one level, in one iterator."""
    chain = itertools.chain
    return chain(chain.from_iterable(lists), chain.from_iterable(map(dict.values, dicts)))


def _long_int_loss(ints: Iterator[int]) -> str | None:
    ints = list(ints)
    if max(map(int.bit_length, ints)) <= _JSON_SAFE_INT_BITS:
        return None
    too_long = (item for item in ints if not -_JSON_INT_LIMIT < item < _JSON_INT_LIMIT)
    return next(map(_json_item_loss, too_long), None)


def _unique(containers: list[Any]) -> list[Any]:
    """Each container once (by identity): shared or self-holding values are walked once per level."""
    if len(set(map(id, containers))) == len(containers):
        return containers
    return list(dict(zip(map(id, containers), containers, strict=True)).values())


_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})
_JSON_KINDS = _JSON_SCALARS | {list, dict}
_STR_ONLY = frozenset({str})
_JSON_SAFE_INT_BITS = 2126  # 2**2126 < 10**640: shorter ints need no exact comparison
_JSON_CHECKED = frozenset({int, float, list, dict})  # the kinds whose items are looked at again
_JSON_CHUNK = 1 << 16  # items of a level checked at once


def _json_item_loss(item: Any) -> str:
    if type(item) is int:
        return "an int of more than 640 digits is past what every Python reads back from JSON"
    if type(item) is tuple:
        return "a tuple would come back as a list"
    if isinstance(item, (str, int, float, list, dict)):
        return f"a {_kind(item)} (a subclass) would come back as its base type"
    return f"JSON has no type for {_type_name(item)}"


class JsonSerializer(_ExactSerializer):
    """JSON, encoded in batches of top-level items.

    Batching keeps memory to one batch of encoded text (never the whole
    document at once). A value whose exactness check found no ``NaN`` or
    infinite float is encoded by msgspec when it is installed (Airflow's task
    SDK requires it; about 8 times faster than the C encoder of ``json``);
    anything else, and any batch msgspec refuses (lone surrogates), by ``json``.
    """

    name = "json"
    extension = "json"
    _batch = 10_000

    def loses(self, value: Any) -> str | None:
        loss, finite = _json_check(value)
        _finite_floats.value = value if loss is None and finite else None
        return loss

    def dump(self, value: Any, file: IO[bytes]) -> None:
        self.require_exact(value)
        checked = getattr(_finite_floats, "value", None)  # set by loses() in this thread, if at all
        _finite_floats.value = None  # hold no value past its dump
        encode = _json_encoder(fast=checked is value)
        if isinstance(value, list) and len(value) > self._batch:
            self._dump_batches(file, b"[", b"]", value, lambda part: encode(part)[1:-1])
        elif isinstance(value, dict) and len(value) > self._batch:
            items = list(value.items())
            self._dump_batches(file, b"{", b"}", items, lambda part: encode(dict(part))[1:-1])
        else:
            file.write(encode(value))

    def _dump_batches(
        self, file: IO[bytes], opening: bytes, closing: bytes, items: list, encode: Any
    ) -> None:
        file.write(opening)
        for start in range(0, len(items), self._batch):
            if start:
                file.write(b",")
            file.write(encode(items[start : start + self._batch]))
        file.write(closing)

    def load(self, data: Buffer) -> Any:
        raw = data if isinstance(data, (bytes, bytearray)) else bytes(data)
        decode = _fast_json_decode()
        if decode is not None:
            try:
                return decode(raw)
            except ValueError:  # NaN, Infinity, lone surrogates: only json reads those back
                pass
        return json.loads(raw)


# The value the JSON serializer last found exact with only finite floats (this thread): msgspec
# writes NaN and infinities as null, so only such a value may be encoded by it.
_finite_floats = threading.local()


def _json_encoder(*, fast: bool) -> Any:
    """``value -> UTF-8 JSON bytes``: msgspec's when ``fast`` and installed, else ``json``'s."""
    slow = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

    def encode_slowly(part: Any) -> bytes:
        return slow(part).encode("utf-8", "surrogatepass")

    quick = _fast_json_encode() if fast else None
    if quick is None:
        return encode_slowly

    def encode(part: Any) -> bytes:
        try:
            return quick(part)
        except UnicodeEncodeError:  # a lone surrogate: json writes it (surrogatepass)
            return encode_slowly(part)

    return encode


@functools.cache
def _fast_json_encode() -> Any:
    try:
        import msgspec
    except ImportError:
        return None
    return msgspec.json.Encoder().encode


@functools.cache
def _fast_json_decode() -> Any:
    """``msgspec.json.decode`` when msgspec is installed (Airflow's task SDK requires it), else None.

    On what this serializer writes it gives what ``json.loads`` gives (same types,
    exact ints and floats) in about half the time; what it refuses (the ``NaN``
    and ``Infinity`` tokens, lone surrogates) it raises ``ValueError`` for, and
    ``json.loads`` reads instead. tests/test_lossless.py proves the round trips.
    """
    try:
        import msgspec
    except ImportError:
        return None
    return msgspec.json.decode


def _dataframe_flavor(value: Any) -> str | None:
    module = type(value).__module__.split(".", 1)[0]
    name = type(value).__name__
    if module == "pandas" and name == "DataFrame":
        return "pandas"
    if module == "polars" and name == "DataFrame":
        return "polars"
    if module == "pyarrow" and name == "Table":
        return "arrow"
    return None


class ParquetSerializer(_ExactSerializer):
    """pandas and polars DataFrames and pyarrow Tables, as Parquet (needs pyarrow).

    The flavour is recorded in the file's schema metadata, so a polars frame
    comes back a polars frame and a pandas frame (with its index) a pandas frame.
    Only frames whose dtypes Parquet brings back exactly are taken: the checks
    read dtypes and schemas, never the values.
    """

    name = "parquet"
    extension = "parquet"
    _flavor_key = b"taskflow_exclusive.flavor"

    def loses(self, value: Any) -> str | None:
        flavor = _dataframe_flavor(value)
        if flavor == "pandas":
            return _pandas_loss(value)
        if flavor == "polars":
            return _polars_loss(value)
        if flavor == "arrow":
            return _arrow_loss(value, self._flavor_key)
        return f"parquet stores pandas or polars DataFrames and pyarrow Tables, not {_kind(value)}"

    def dump(self, value: Any, file: IO[bytes]) -> None:
        self.require_exact(value)
        pa, pq = _import_pyarrow()
        flavor = _dataframe_flavor(value)
        if flavor == "pandas":
            table = pa.Table.from_pandas(value)
        elif flavor == "polars":
            table = value.to_arrow()
        else:
            table = value
        metadata = dict(table.schema.metadata or {})
        metadata[self._flavor_key] = str(flavor).encode()
        # Non-compliant nested types keep a list's item field name ("item"), so lists come back equal.
        pq.write_table(
            table.replace_schema_metadata(metadata),
            file,
            use_compliant_nested_type=False,
            use_dictionary=_dictionary_columns(table.schema),
        )

    def load(self, data: Buffer) -> Any:
        pa, pq = _import_pyarrow()
        table = pq.read_table(pa.BufferReader(pa.py_buffer(data)))
        metadata = dict(table.schema.metadata or {})
        flavor = metadata.pop(self._flavor_key, b"arrow").decode()
        table = table.replace_schema_metadata(metadata or None)
        if flavor == "pandas":
            return table.to_pandas(split_blocks=True, self_destruct=True)
        if flavor == "polars":
            import polars as pl

            return pl.from_arrow(table)
        return table


def _dictionary_columns(schema: Any) -> bool | list[str]:
    """The columns parquet should dictionary-encode: strings, binaries and dictionaries.

    On a numeric column dictionary encoding is wasted work that costs the size of
    the column: the writer keeps the dictionary and every index in memory until
    the dictionary outgrows its page (1 MiB), then encodes the column again,
    plainly. Measured on 1M rows of three numeric columns (pyarrow 26): 0.24 s
    and 3.5 frame-sized copies with it, 0.06 s and 0.7 copies without, files of
    the same size (snappy). A schema with nested columns keeps the default (all
    columns), since columns are named by their path.
    """
    import pyarrow as pa

    t = pa.types
    named: list[str] = []
    for field in schema:
        if t.is_nested(field.type):
            return True
        if t.is_dictionary(field.type) or any(
            check(field.type)
            for check in (
                t.is_string, t.is_large_string, t.is_string_view,
                t.is_binary, t.is_large_binary, t.is_binary_view, t.is_fixed_size_binary,
            )
        ):  # fmt: skip
            named.append(field.name)
    return named


def _import_pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise SerializationError(
            "The parquet serializer needs pyarrow: pip install 'taskflow-exclusive[parquet]'.",
            serializer="parquet",
            value_type=None,
            available=available_serializers(),
        ) from exc
    return pa, pq


# What parquet brings back exactly was measured (pandas 3.1, polars 2.1, pyarrow 26) and is
# proved by tests/test_lossless.py; anything not listed here goes to pickle.

_PANDAS_NULLABLE = {
    "Int8Dtype", "Int16Dtype", "Int32Dtype", "Int64Dtype",
    "UInt8Dtype", "UInt16Dtype", "UInt32Dtype", "UInt64Dtype",
    "Float32Dtype", "Float64Dtype", "BooleanDtype",
}  # fmt: skip
_TIME_UNITS = ("ms", "us", "ns")  # datetime64[s] comes back as [ms]


def _default_str_dtype() -> Any:
    import pandas as pd

    return pd.Index([""]).dtype  # object before pandas 3, str since


def _pandas_loss(frame: Any) -> str | None:
    import pandas as pd

    columns = frame.columns
    checks = (
        (lambda: frame.attrs, "DataFrame.attrs would not come back exactly"),
        (lambda: not frame.flags.allows_duplicate_labels, "allows_duplicate_labels=False would be lost"),
        (
            lambda: type(columns) is not pd.Index or not all(type(label) is str for label in columns),
            "parquet keeps only str column labels (others come back as str, or as another index type)",
        ),
        (
            lambda: columns.dtype != _default_str_dtype(),
            f"column labels of dtype {columns.dtype} would come back as {_default_str_dtype()}",
        ),
        (lambda: not columns.is_unique, "duplicate column labels cannot be stored"),
        (
            lambda: columns.name is not None and type(columns.name) is not str,
            "a column axis name that is not a str would come back as a str",
        ),
        (lambda: len(columns) == 0 and len(frame) > 0, "rows without columns would come back as no rows"),
    )
    for failed, reason in checks:
        if failed():
            return reason
    for label, dtype in frame.dtypes.items():
        reason = _pandas_dtype_loss(dtype, column=True)
        if reason is None and isinstance(dtype, pd.CategoricalDtype) and len(frame) == 0:
            reason = "an empty categorical column would lose its categories"
        if reason is not None:
            return f"column {label!r}: {reason}"
    return _pandas_index_loss(frame.index)


def _pandas_index_loss(index: Any) -> str | None:
    import pandas as pd

    if index.name is not None and type(index.name) is not str:
        return "an index name that is not a str would come back as a str"
    if type(index) is pd.RangeIndex:
        return None
    if type(index) not in (pd.Index, pd.DatetimeIndex, pd.TimedeltaIndex, pd.PeriodIndex):
        return f"a {type(index).__name__} would not come back exactly (parquet keeps flat indexes)"
    if getattr(index, "freq", None) is not None and type(index) is not pd.PeriodIndex:
        return f"the index's freq {index.freqstr!r} would be lost"
    reason = _pandas_dtype_loss(index.dtype, column=False)
    return None if reason is None else f"the index: {reason}"


def _pandas_dtype_loss(dtype: Any, *, column: bool) -> str | None:
    """What parquet would change in a pandas column (or index, if not ``column``) of ``dtype``."""
    import numpy as np
    import pandas as pd

    if isinstance(dtype, np.dtype):
        if dtype.kind in "biufm" or (dtype.kind == "M" and np.datetime_data(dtype)[0] in _TIME_UNITS):
            return None
        if dtype.kind == "O":
            return (
                "object dtype: parquet would change the values (str to the str dtype, lists to "
                "arrays, dicts to structs, tuples to lists, None and NaN to each other, mixed types)"
            )
        return f"dtype {dtype} would not come back exactly"
    if isinstance(dtype, pd.DatetimeTZDtype):
        return _pandas_tz_loss(dtype)
    if isinstance(dtype, pd.StringDtype) and dtype.storage != "pyarrow":
        return f"dtype {dtype!r} would come back with pyarrow storage"
    exact = isinstance(dtype, (pd.StringDtype, pd.PeriodDtype)) or (
        column
        and (
            type(dtype).__name__ in _PANDAS_NULLABLE
            or (isinstance(dtype, pd.CategoricalDtype) and dtype.categories.dtype == _default_str_dtype())
            or (isinstance(dtype, pd.ArrowDtype) and _arrow_flat(dtype.pyarrow_dtype))
        )
    )
    return None if exact else f"dtype {dtype} would not come back exactly"


def _pandas_tz_loss(dtype: Any) -> str | None:
    import datetime
    import zoneinfo

    if dtype.unit not in _TIME_UNITS:
        return f"dtype {dtype} would come back in milliseconds"
    if type(dtype.tz) not in (zoneinfo.ZoneInfo, datetime.timezone):
        return f"time zone {dtype.tz!r} would come back as a zoneinfo time zone"
    return None


def _arrow_flat(arrow_type: Any) -> bool:
    """A non-nested Arrow type that parquet brings back exactly."""
    import pyarrow as pa

    t = pa.types
    if t.is_timestamp(arrow_type):
        return arrow_type.unit != "s"  # timestamp[s] comes back as [ms]
    if t.is_time32(arrow_type):
        return arrow_type.unit != "s"
    return any(
        check(arrow_type)
        for check in (
            t.is_null, t.is_boolean, t.is_integer, t.is_floating, t.is_decimal, t.is_string,
            t.is_large_string, t.is_string_view, t.is_binary, t.is_large_binary, t.is_binary_view,
            t.is_fixed_size_binary, t.is_date32, t.is_time64, t.is_duration,
        )
    )  # fmt: skip


def _arrow_type_loss(arrow_type: Any) -> str | None:
    import pyarrow as pa

    t = pa.types
    if _arrow_flat(arrow_type):
        return None
    lists = (t.is_list, t.is_large_list, t.is_fixed_size_list, t.is_list_view, t.is_large_list_view)
    if any(check(arrow_type) for check in lists):
        return _arrow_type_loss(arrow_type.value_type)
    if t.is_struct(arrow_type):
        reasons = (_arrow_type_loss(arrow_type.field(i).type) for i in range(arrow_type.num_fields))
        return next((reason for reason in reasons if reason is not None), None)
    if t.is_dictionary(arrow_type) and not any(
        check(arrow_type.value_type) for check in (t.is_string, t.is_large_string, t.is_binary)
    ):
        return f"a dictionary of {arrow_type.value_type} would come back dense"
    return None if t.is_dictionary(arrow_type) else f"type {arrow_type} would not come back exactly"


def _arrow_loss(table: Any, flavor_key: bytes) -> str | None:
    schema = table.schema
    if flavor_key in (schema.metadata or {}):
        return f"the schema metadata key {flavor_key.decode()!r} is reserved"
    if table.num_columns == 0 and table.num_rows > 0:
        return "rows without columns would come back as an empty table"
    if len(set(schema.names)) != len(schema.names):
        return "duplicate column names cannot be read back"
    for field in schema:
        reason = _arrow_type_loss(field.type)
        if reason is not None:
            return f"column {field.name!r}: {reason}"
    return None


def _polars_loss(frame: Any) -> str | None:
    for name, dtype in frame.schema.items():
        reason = _polars_dtype_loss(dtype)
        if reason is not None:
            return f"column {name!r}: {reason}"
    return None


def _polars_dtype_loss(dtype: Any) -> str | None:
    import polars as pl

    if dtype in (pl.Object, pl.Int128, pl.UInt128):
        return f"dtype {dtype} would not come back exactly (Object becomes Binary)"
    if isinstance(dtype, (pl.List, pl.Array)):
        return _polars_dtype_loss(dtype.inner)
    if isinstance(dtype, pl.Struct):
        for field in dtype.fields:
            reason = _polars_dtype_loss(field.dtype)
            if reason is not None:
                return reason
    return None


class NumpySerializer(_ExactSerializer):
    """numpy arrays as ``.npy`` (never with pickled object arrays)."""

    name = "numpy"
    extension = "npy"
    loads_in_place = True

    def loses(self, value: Any) -> str | None:
        module = type(value).__module__.split(".", 1)[0]
        if module != "numpy" or not hasattr(value, "dtype") or not hasattr(value, "shape"):
            return f"the numpy serializer stores numpy arrays, not {_kind(value)}"
        if type(value).__name__ != "ndarray" or type(value).__module__ != "numpy":
            return f"a {_kind(value)} would come back as a plain numpy.ndarray"
        return _numpy_dtype_loss(value.dtype)

    def dump(self, value: Any, file: IO[bytes]) -> None:
        import numpy as np

        self.require_exact(value)
        np.save(file, value, allow_pickle=False)

    def load(self, data: Buffer) -> Any:
        """The array, sharing memory with ``data`` (no copy for a writable buffer)."""
        import numpy as np
        from numpy.lib import format as npy

        if isinstance(data, bytes):
            data = bytearray(data)  # small values arrive as immutable bytes; arrays must be writable

        header = io.BytesIO(memoryview(data)[: min(len(data), 1 << 16)])
        version = npy.read_magic(header)
        read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran_order, dtype = read_header(header)
        if dtype.hasobject:
            raise ValueError("refusing a .npy with object dtype (it would need pickle)")
        count = int(np.prod(shape, dtype=np.int64))
        array = np.frombuffer(data, dtype=dtype, count=count, offset=header.tell())
        return array.reshape(shape, order="F" if fortran_order else "C")


def _numpy_dtype_loss(dtype: Any) -> str | None:
    checks = (
        (lambda: dtype.hasobject, f"dtype {dtype} holds Python objects (.npy would need pickle)"),
        (lambda: dtype.metadata is not None, "dtype metadata is not saved in .npy"),
        (lambda: dtype.isalignedstruct, "an aligned struct dtype comes back unaligned"),
        (lambda: dtype.kind not in "biufcmMSUV", f"dtype {dtype} cannot be saved as .npy without pickle"),
        (lambda: not _latin_1(dtype), "field names beyond latin-1 need the .npy 3.0 header"),
    )
    for failed, reason in checks:
        if failed():
            return reason
    inner = [field[0] for field in (dtype.fields or {}).values()]
    if dtype.subdtype is not None:
        inner.append(dtype.subdtype[0])
    return next((reason for reason in map(_numpy_dtype_loss, inner) if reason is not None), None)


def _latin_1(dtype: Any) -> bool:
    from numpy.lib import format as npy

    try:
        repr(npy.dtype_to_descr(dtype)).encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _unpicklable_reason(value: Any) -> str | None:
    """Why pickle cannot bring ``value`` back as itself, for values it would quietly change."""
    if isinstance(value, memoryview):
        return (
            "a memoryview cannot be stored as itself (pickle would bring back bytes); "
            "publish bytes(view) instead, or the object it views"
        )
    if isinstance(value, io.IOBase):
        return (
            f"an open file ({_kind(value)}) is a handle, not a value (pickle would bring back "
            "a StringIO of its text, or fail); publish its content (read() it) or its path"
        )
    return None


def _refuse_nested(value: Any) -> Any:
    reason = _unpicklable_reason(value)
    raise SerializationError(
        f"Serializer 'pickle' cannot write a value holding a {_type_name(value)} exactly: {reason}.",
        value_type=_type_name(value),
        serializer="pickle",
        available=available_serializers(),
    )


@functools.cache
def _exact_pickler_class() -> Any:
    """cloudpickle's Pickler, minus its reducers that change a value (memoryview, text files)."""
    from collections import ChainMap

    import cloudpickle

    class ExactPickler(cloudpickle.Pickler):
        dispatch_table: ClassVar[ChainMap] = ChainMap(
            {memoryview: _refuse_nested, io.TextIOWrapper: _refuse_nested},
            cloudpickle.Pickler.dispatch_table,
        )

        def reducer_override(self, obj: Any) -> Any:
            if _is_swapped_time_array(obj):
                # numpy pickles a non-native-endian datetime64/timedelta64 array as native-endian
                # (numpy 2.4): store its bytes as same-endian int64, viewed back on load.
                swapped_int = obj.view(obj.dtype.byteorder + "i8")
                return operator.methodcaller("view", obj.dtype), (swapped_int,)
            return super().reducer_override(obj)

    return ExactPickler


def _is_swapped_time_array(obj: Any) -> bool:
    return (
        type(obj).__name__ == "ndarray"
        and type(obj).__module__ == "numpy"
        and obj.dtype.kind in "mM"
        and not obj.dtype.isnative
    )


class PickleSerializer(_ExactSerializer):
    """Anything cloudpickle can pickle exactly; loaded only after the sha256 check."""

    name = "pickle"
    extension = "pkl"

    def loses(self, value: Any) -> str | None:
        return _unpicklable_reason(value)

    def dump(self, value: Any, file: IO[bytes]) -> None:
        import pickle

        self.require_exact(value)
        _exact_pickler_class()(file, protocol=pickle.HIGHEST_PROTOCOL).dump(value)

    def load(self, data: Buffer) -> Any:
        import pickle

        return pickle.loads(data)  # bytes verified against the handle's sha256 by the caller


# --- registry ---------------------------------------------------------------------------------

_BUILTIN: list[Serializer] = [
    BytesSerializer(),
    TextSerializer(),
    JsonSerializer(),
    ParquetSerializer(),
    NumpySerializer(),
    PickleSerializer(),
]
_registered: list[Serializer] = []
_registry_lock = threading.Lock()


def register_serializer(serializer: Serializer, *, replace: bool = False) -> Serializer:
    """Add ``serializer`` to the registry; it is tried before the built-in ones.

    Raises :class:`ValueError` when the name is taken, unless ``replace=True``.
    Returns the serializer, so this also works as a class decorator on an instance.
    """
    if not isinstance(serializer, Serializer) or not serializer.name:
        raise TypeError("register_serializer takes a Serializer instance with a non-empty name")
    with _registry_lock:
        taken = [s for s in (*_registered, *_BUILTIN) if s.name == serializer.name]
        if taken and not replace:
            raise ValueError(
                f"A serializer named {serializer.name!r} is already registered; pass replace=True "
                "to override it."
            )
        _registered[:] = [s for s in _registered if s.name != serializer.name]
        _registered.insert(0, serializer)
    return serializer


def _all() -> list[Serializer]:
    with _registry_lock:
        custom = list(_registered)
    names = {s.name for s in custom}
    return custom + [s for s in _BUILTIN if s.name not in names]


def available_serializers() -> list[str]:
    """Names of every registered serializer, in selection order."""
    return [s.name for s in _all()]


def get_serializer(name: str | Serializer) -> Serializer:
    """The serializer called ``name`` (a Serializer instance is returned as is)."""
    if isinstance(name, Serializer):
        return name
    for serializer in _all():
        if serializer.name == name:
            return serializer
    raise SerializationError(
        f"Unknown serializer {name!r}. Available: {', '.join(available_serializers())}. "
        "Register your own with taskflow_exclusive.register_serializer().",
        serializer=name,
        value_type=None,
        available=available_serializers(),
    )


def _first_accepting(value: Any, skip: Serializer | None = None) -> Serializer | None:
    for serializer in _all():
        if serializer is skip:
            continue
        try:
            if serializer.accepts(value):
                return serializer
        except Exception:  # a custom accepts() that fails means "not for this value"
            continue
    return None


def serializer_for(value: Any) -> Serializer:
    """The first serializer whose ``accepts(value)`` is true: one that brings ``value`` back exactly.

    Raises :class:`SerializationError` (saying why and what to do) for a value
    no serializer brings back exactly, such as a ``memoryview`` or an open file.
    """
    serializer = _first_accepting(value)
    if serializer is None:
        raise no_serializer_error(value, None, None, reason=_unpicklable_reason(value))
    _vouch(serializer, value)
    return serializer


def choose_serializer(value: Any, requested: str | Serializer | None = None) -> Serializer:
    """The serializer to write ``value`` with, checked before anything is written.

    ``requested`` (a name or an instance) is used when given, and refused with a
    :class:`SerializationError` when it would not bring ``value`` back exactly;
    otherwise :func:`serializer_for` chooses.
    """
    if requested is None:
        return serializer_for(value)
    serializer = get_serializer(requested)
    if isinstance(serializer, _ExactSerializer):
        serializer.require_exact(value)
        _vouch(serializer, value)
    return serializer


def _lossy_error(value: Any, serializer: Serializer, reason: str) -> SerializationError:
    value_type = _type_name(value)
    instead = _first_accepting(value, skip=serializer)
    if instead is not None:
        fix = (
            f"Name serializer={instead.name!r} instead, or leave serializer unset: the automatic "
            "choice always brings a value back exactly."
        )
    else:
        other = _unpicklable_reason(value)
        fix = f"No serializer brings it back exactly: {other}." if other else ""
    return SerializationError(
        f"Serializer {serializer.name!r} cannot write a value of type {value_type} exactly: {reason}. "
        f"Nothing was written. {fix}".rstrip(),
        value_type=value_type,
        serializer=serializer.name,
        available=available_serializers(),
    )


def no_serializer_error(
    value: Any, serializer: str | None, cause: BaseException | None, *, reason: str | None = None
) -> SerializationError:
    """The error for a value that ``serializer`` (or, if None, any serializer) cannot take."""
    value_type = _type_name(value)
    available = available_serializers()
    if serializer is None:
        what = f"No serializer can take a value of type {value_type}"
    else:
        what = f"Serializer {serializer!r} cannot write a value of type {value_type}"
    if reason is None and cause is not None:
        reason = str(cause)
    because = f": {reason}" if reason else ""
    return SerializationError(
        f"{what}{because}. Available serializers: {', '.join(available)}. Choose one with "
        "serializer=..., or register your own with taskflow_exclusive.register_serializer().",
        value_type=value_type,
        serializer=serializer,
        available=available,
    )
