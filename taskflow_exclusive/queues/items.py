"""What a queue carries: a small item holding the value inline or a handle to it.

A value whose serialized bytes fit in ``inline_max_bytes`` (default
:data:`INLINE_MAX_BYTES`, 64 KiB) rides inside the item, with its serializer,
compression, size and sha256; a larger one is published through
:class:`~taskflow_exclusive.publishing.ExclusiveOutput` exactly as handles are
(storage, serializer, checksum, claim ledger) and the item carries its
:class:`~taskflow_exclusive.handle.ExclusiveHandle`. Either way the bytes a
consumer gets are checked (size, sha256) before they are deserialized.

An item is one JSON object (:meth:`QueueItem.to_json`), read back whole or
refused (:class:`MalformedRecordError`): it crosses a trust boundary (anyone
who can write to the Redis can write an item).

Example::

    >>> item = pack("hello", inline_max_bytes=1024)
    >>> QueueItem.from_json(item.to_json()) == item
    True
    >>> load_inline(item)
    'hello'
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar

from taskflow_exclusive.errors import ExclusiveError, IntegrityError, MalformedRecordError
from taskflow_exclusive.formats import compression as codecs
from taskflow_exclusive.formats.serializers import (
    Serializer,
    choose_serializer,
    get_serializer,
    no_serializer_error,
)
from taskflow_exclusive.handle import ExclusiveHandle
from taskflow_exclusive.identity import local_producer_id, running_task

if TYPE_CHECKING:
    from taskflow_exclusive.publishing import ExclusiveOutput

__all__ = ["INLINE_MAX_BYTES", "QueueItem", "load_inline", "new_item_id", "pack"]

INLINE_MAX_BYTES = 64 * 1024
FORMAT = "taskflow-exclusive/queue-item/1"

_ID = re.compile(r"^[0-9a-f]{32}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_INLINE_FIELDS = frozenset({"serializer", "compression", "size", "sha256", "data"})


def new_item_id() -> str:
    """A fresh item id: 32 hex digits (128 random bits from the OS), never reused."""
    return os.urandom(16).hex()


@dataclass(frozen=True)
class QueueItem:
    """One queued value: inline bytes with their checksum, or the handle of a stored value.

    Exactly one of ``data`` and ``handle`` is set. ``serializer``,
    ``compression``, ``size`` and ``sha256`` describe ``data`` (for a stored
    value they are the handle's).
    """

    id: str
    producer: str
    created_at: str
    data: bytes | None = None
    serializer: str | None = None
    compression: str | None = None
    size: int | None = None
    sha256: str | None = None
    handle: ExclusiveHandle | None = None

    FORMAT: ClassVar[str] = FORMAT

    @property
    def inline(self) -> bool:
        return self.handle is None

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "format": FORMAT,
            "id": self.id,
            "producer": self.producer,
            "created_at": self.created_at,
        }
        if self.handle is not None:
            record["handle"] = self.handle.to_dict()
        else:
            record["inline"] = {
                "serializer": self.serializer,
                "compression": self.compression,
                "size": self.size,
                "sha256": self.sha256,
                "data": base64.b64encode(self.data or b"").decode("ascii"),
            }
        return record

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes, *, where: str | None = None) -> QueueItem:
        """Rebuild an item from :meth:`to_json`, refusing anything else whole."""
        try:
            data = json.loads(text)
        except (ValueError, TypeError, RecursionError) as exc:
            raise _malformed(where, f"it is not JSON ({type(exc).__name__})") from None
        return cls.from_dict(data, where=where)

    @classmethod
    def from_dict(cls, data: Any, *, where: str | None = None) -> QueueItem:
        if not isinstance(data, dict):
            raise _malformed(where, "it is not a JSON object")
        if data.get("format") != FORMAT:
            raise _malformed(where, f"its format is {str(data.get('format'))[:40]!r}, not {FORMAT!r}")
        body_keys = {"inline", "handle"} & data.keys()
        unknown = sorted(
            str(k)[:40]
            for k in data.keys() - {"format", "id", "producer", "created_at"} - {"inline", "handle"}
        )
        if unknown or len(body_keys) != 1:
            raise _malformed(
                where, f"it needs exactly one of 'inline' and 'handle' and no other fields ({unknown})"
            )
        item_id, producer, created = data.get("id"), data.get("producer"), data.get("created_at")
        if not (isinstance(item_id, str) and _ID.match(item_id)):
            raise _malformed(where, "its id is not 32 hex digits")
        if not (isinstance(producer, str) and isinstance(created, str)):
            raise _malformed(where, "its producer and created_at are not text")
        if "handle" in data:
            handle = ExclusiveHandle.from_dict(data["handle"], where=where or "a queue item")
            return cls(item_id, producer, created, handle=handle)
        inline = data["inline"]
        if not isinstance(inline, dict) or inline.keys() != _INLINE_FIELDS:
            raise _malformed(where, f"'inline' must hold exactly {sorted(_INLINE_FIELDS)}")
        size, digest, name, codec = (
            inline["size"],
            inline["sha256"],
            inline["serializer"],
            inline["compression"],
        )
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise _malformed(where, "its size is not a non-negative integer")
        if not (isinstance(digest, str) and _SHA256.match(digest)):
            raise _malformed(where, "its sha256 is not 64 lower-case hex digits")
        if not isinstance(name, str) or not (codec is None or isinstance(codec, str)):
            raise _malformed(where, "its serializer or compression is not text")
        if not isinstance(inline["data"], str):
            raise _malformed(where, "its data is not base64 text")
        try:
            raw = base64.b64decode(inline["data"].encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise _malformed(where, "its data is not base64") from None
        return cls(item_id, producer, created, raw, name, codec, size, digest)


def _malformed(where: str | None, problem: str) -> MalformedRecordError:
    place = where or "a queue item"
    return MalformedRecordError(
        f"Not a taskflow-exclusive queue item ({place}): {problem}. It was not delivered as a value; "
        "something other than ExclusiveQueue.put wrote to the queue's keys (check the key prefix).",
        kind="queue item",
        where=place,
        problem=problem,
    )


class _TooLarge(Exception):
    """Raised by :class:`_BoundedBuffer` once a value outgrows the inline threshold."""


class _BoundedBuffer(io.RawIOBase):
    """Collects bytes up to ``limit``; one more and serialization stops (the value goes to storage)."""

    def __init__(self, limit: int) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.limit = limit
        self.overflowed = False

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.size += len(chunk)
        if self.size > self.limit:
            self.overflowed = True
            raise _TooLarge
        self.parts.append(chunk)
        return len(chunk)


def _inline_bytes(value: Any, serializer: Serializer, compression: str | None, limit: int) -> bytes | None:
    """The value's (compressed) bytes if they fit in ``limit``, else ``None``."""
    buffer = _BoundedBuffer(limit)
    try:
        if compression:
            writer = codecs.compressing_writer(compression, buffer)
            serializer.dump(value, writer)
            writer.close()
        else:
            serializer.dump(value, buffer)
    except ExclusiveError:
        raise
    except Exception as exc:
        if buffer.overflowed:  # however the serializer wrapped our signal
            return None
        raise no_serializer_error(value, serializer.name, exc) from exc
    return b"".join(buffer.parts)


def pack(
    value: Any,
    *,
    inline_max_bytes: int = INLINE_MAX_BYTES,
    output: ExclusiveOutput | None = None,
    label: str = "queue",
    producer: str | None = None,
) -> QueueItem:
    """Make the item for ``value``: inline when it fits, else published through ``output``."""
    if output is None:
        from taskflow_exclusive.publishing import ExclusiveOutput

        output = ExclusiveOutput()
    if producer is None:
        task = running_task()
        producer = task.producer_id if task is not None else local_producer_id()
    created = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    serializer = choose_serializer(value, output.serializer)
    data = (
        _inline_bytes(value, serializer, output.compression, inline_max_bytes)
        if inline_max_bytes > 0
        else None
    )
    if data is None:
        handle = output.publish(value, label=label)
        return QueueItem(new_item_id(), producer, created, handle=handle)
    digest = hashlib.sha256(data).hexdigest()
    return QueueItem(
        new_item_id(), producer, created, data, serializer.name, output.compression, len(data), digest
    )


def load_inline(item: QueueItem, *, where: str = "") -> Any:
    """The inline value, after checking its size and sha256 (nothing unchecked is deserialized)."""
    data = item.data or b""
    uri = f"queue item {item.id}{where}"
    if len(data) != item.size:
        raise IntegrityError(
            f"The inline value of {uri} has {len(data)} bytes, not the {item.size} its producer recorded; "
            "it was not deserialized. The item was altered in the queue.",
            uri=uri,
            expected=item.size,
            actual=len(data),
        )
    actual = hashlib.sha256(data).hexdigest()
    if actual != item.sha256:
        raise IntegrityError(
            f"The inline value of {uri} does not match its sha256; it was not deserialized. "
            "The item was altered in the queue.",
            uri=uri,
            expected=item.sha256,
            actual=actual,
        )
    if item.compression:
        data = codecs.decompress(item.compression, data)
    return get_serializer(item.serializer or "").load(data)
