"""Serializers: how a value becomes bytes in storage, chosen by name or by the value's type.

Built in, in the order automatic selection tries them:

==========  ===================================================  =========
name        takes (automatically)                                 extension
==========  ===================================================  =========
``bytes``   ``bytes``                                             ``bin``
``text``    ``str``                                               ``txt``
``json``    dict/list/str/int/float/bool/None that round-trip     ``json``
            exactly (str keys, no tuples, no subclasses)
``parquet`` pandas / polars DataFrames, pyarrow Tables            ``parquet``
``numpy``   numpy arrays without object dtype (``.npy``)          ``npy``
``pickle``  anything cloudpickle can pickle (lambdas, closures)   ``pkl``
==========  ===================================================  =========

Automatic selection never picks a lossy format: a tuple goes to pickle, not
to JSON. Serializers you register are tried before the built-in ones.

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

import io
import json
import mmap
import threading
from abc import ABC, abstractmethod
from typing import IO, Any, Union

from taskflow_exclusive.errors import SerializationError

Buffer = Union[bytes, bytearray, memoryview, "mmap.mmap"]  # what load() receives: bytes-like

__all__ = [
    "Serializer",
    "available_serializers",
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


# --- built-in serializers ---------------------------------------------------------------------


class BytesSerializer(Serializer):
    name = "bytes"
    extension = "bin"

    def accepts(self, value: Any) -> bool:
        return type(value) is bytes

    def dump(self, value: Any, file: IO[bytes]) -> None:
        try:
            view = memoryview(value)
        except TypeError:
            raise TypeError(f"expected a bytes-like value, got {type(value).__name__}") from None
        file.write(view)

    def load(self, data: Buffer) -> bytes:
        return data if isinstance(data, bytes) else bytes(data)


class TextSerializer(Serializer):
    name = "text"
    extension = "txt"
    _chunk = 1 << 22  # characters per encoded chunk, so a large string is never encoded whole

    def accepts(self, value: Any) -> bool:
        return type(value) is str

    def dump(self, value: Any, file: IO[bytes]) -> None:
        if not isinstance(value, str):
            raise TypeError(f"expected str, got {type(value).__name__}")
        for start in range(0, len(value), self._chunk):
            file.write(value[start : start + self._chunk].encode("utf-8", "surrogatepass"))

    def load(self, data: Buffer) -> str:
        return str(data, "utf-8", "surrogatepass")


_JSON_SCALARS = (str, int, float, bool, type(None))


def is_plain_json(value: Any) -> bool:
    """True when ``json.loads(json.dumps(value)) == value`` with the same types, exactly."""
    return _round_trips_as_json(value)


def _round_trips_as_json(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in _JSON_SCALARS:
            continue
        if kind is list:
            stack.extend(item)
        elif kind is dict:
            for key, inner in item.items():
                if type(key) is not str:
                    return False
                stack.append(inner)
        else:
            return False
    return True


class JsonSerializer(Serializer):
    """JSON, encoded by the C encoder in batches of top-level items.

    Batching keeps memory to one batch of encoded text (never the whole
    document at once) while staying at the C encoder's speed.
    """

    name = "json"
    extension = "json"
    _batch = 10_000

    def accepts(self, value: Any) -> bool:
        return _round_trips_as_json(value)

    def dump(self, value: Any, file: IO[bytes]) -> None:
        encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
        if isinstance(value, list) and len(value) > self._batch:
            self._dump_batches(file, b"[", b"]", value, lambda part: encode(part)[1:-1])
        elif isinstance(value, dict) and len(value) > self._batch:
            items = list(value.items())
            self._dump_batches(file, b"{", b"}", items, lambda part: encode(dict(part))[1:-1])
        else:
            file.write(encode(value).encode("utf-8", "surrogatepass"))

    def _dump_batches(
        self, file: IO[bytes], opening: bytes, closing: bytes, items: list, encode: Any
    ) -> None:
        file.write(opening)
        for start in range(0, len(items), self._batch):
            if start:
                file.write(b",")
            file.write(encode(items[start : start + self._batch]).encode("utf-8", "surrogatepass"))
        file.write(closing)

    def load(self, data: Buffer) -> Any:
        return json.loads(data if isinstance(data, (bytes, bytearray)) else bytes(data))


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


class ParquetSerializer(Serializer):
    """pandas and polars DataFrames and pyarrow Tables, as Parquet (needs pyarrow).

    The flavour is recorded in the file's schema metadata, so a polars frame
    comes back a polars frame and a pandas frame (with its index) a pandas frame.
    """

    name = "parquet"
    extension = "parquet"
    _flavor_key = b"taskflow_exclusive.flavor"

    def accepts(self, value: Any) -> bool:
        return _dataframe_flavor(value) is not None

    def dump(self, value: Any, file: IO[bytes]) -> None:
        pa, pq = _import_pyarrow()
        flavor = _dataframe_flavor(value)
        if flavor == "pandas":
            table = pa.Table.from_pandas(value)
        elif flavor == "polars":
            table = value.to_arrow()
        elif flavor == "arrow":
            table = value
        else:
            raise TypeError(
                f"parquet takes pandas or polars DataFrames and pyarrow Tables, not {type(value).__name__}"
            )
        metadata = dict(table.schema.metadata or {})
        metadata[self._flavor_key] = flavor.encode()
        pq.write_table(table.replace_schema_metadata(metadata), file)

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


class NumpySerializer(Serializer):
    """numpy arrays as ``.npy`` (never with pickled object arrays)."""

    name = "numpy"
    extension = "npy"
    loads_in_place = True

    def accepts(self, value: Any) -> bool:
        return (
            type(value).__module__ == "numpy"
            and type(value).__name__ == "ndarray"
            and not value.dtype.hasobject
        )

    def dump(self, value: Any, file: IO[bytes]) -> None:
        import numpy as np

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


class PickleSerializer(Serializer):
    """Anything cloudpickle can pickle; loaded only after the sha256 check."""

    name = "pickle"
    extension = "pkl"

    def accepts(self, value: Any) -> bool:
        return True

    def dump(self, value: Any, file: IO[bytes]) -> None:
        import pickle

        import cloudpickle

        cloudpickle.dump(value, file, protocol=pickle.HIGHEST_PROTOCOL)

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


def serializer_for(value: Any) -> Serializer:
    """The first serializer whose ``accepts(value)`` is true."""
    for serializer in _all():
        try:
            if serializer.accepts(value):
                return serializer
        except Exception:  # a custom accepts() that fails means "not for this value"
            continue
    raise no_serializer_error(value, None, None)


def no_serializer_error(
    value: Any, serializer: str | None, cause: BaseException | None
) -> SerializationError:
    """The error for a value that ``serializer`` (or, if None, any serializer) cannot take."""
    value_type = f"{type(value).__module__}.{type(value).__qualname__}"
    available = available_serializers()
    if serializer is None:
        what = f"No serializer can take a value of type {value_type}"
    else:
        what = f"Serializer {serializer!r} cannot write a value of type {value_type}"
    reason = f": {cause}" if cause is not None else ""
    return SerializationError(
        f"{what}{reason}. Available serializers: {', '.join(available)}. Choose one with "
        "serializer=..., or register your own with taskflow_exclusive.register_serializer().",
        value_type=value_type,
        serializer=serializer,
        available=available,
    )
