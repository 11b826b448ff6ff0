"""Optional compression of stored values through fsspec's codecs.

Any codec fsspec has registered and whose library is installed works:
``gzip``, ``bz2``, ``lzma``/``xz`` always; ``zstd`` (``taskflow-exclusive[zstd]``),
``lz4``, ``snappy`` when their packages are present. The checksum covers the
compressed bytes, so integrity is checked before anything is decompressed.

Example::

    >>> extension_for("gzip")
    'gz'
"""

from __future__ import annotations

import io
from typing import IO, Any

from taskflow_exclusive.errors import SerializationError

__all__ = ["available_compressions", "compressing_writer", "decompress", "extension_for"]

_UNSUITABLE = {"zip"}  # an archive format, not a stream codec


def available_compressions() -> list[str]:
    from fsspec.compression import available_compressions as fsspec_available

    return sorted(name for name in fsspec_available() if name and name not in _UNSUITABLE)


def _codec(name: str) -> Any:
    from fsspec.compression import compr

    if name in _UNSUITABLE or name not in compr:
        hint = " (pip install 'taskflow-exclusive[zstd]')" if name == "zstd" else ""
        raise SerializationError(
            f"Unknown or unavailable compression {name!r}{hint}. Available: "
            f"{', '.join(available_compressions())}.",
            serializer=None,
            value_type=None,
            available=available_compressions(),
        )
    return compr[name]


def extension_for(name: str) -> str:
    """The file extension fsspec associates with codec ``name`` (``gzip`` -> ``gz``)."""
    from fsspec.utils import compressions

    _codec(name)
    for extension, codec in compressions.items():
        if codec == name:
            return extension
    return name


def compressing_writer(name: str, file: IO[bytes]) -> IO[bytes]:
    """A writable file that compresses into ``file``; close it to flush the codec."""
    return _codec(name)(file, mode="wb")


def decompress(name: str, data: bytes) -> bytes:
    """Decompress verified bytes in memory."""
    with _codec(name)(io.BytesIO(data), mode="rb") as reader:
        return reader.read()
