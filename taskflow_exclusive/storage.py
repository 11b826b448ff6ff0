"""The object store: streaming hashed writes, verified reads, atomic publish.

A :class:`Store` is one fsspec filesystem plus a base location. It knows
nothing about claims or serializers; it moves bytes and guarantees that

- a value is written once, in chunks, with its sha256 and size computed on
  the way (never a second full copy in memory);
- a failed or interrupted write leaves no committed value: the manifest that
  commits a value is published only after the data is complete, and the data
  of a failed write is discarded (an aborted multipart upload on S3);
- a read returns bytes only after their size and sha256 match what the
  handle promises (:class:`IntegrityError` otherwise);
- a read that cannot reach the store (refused connection, timeout, server
  error) raises :class:`ClaimStoreUnavailableError` naming the store, never a
  bare driver exception: nothing was handed out, and a retry is safe.

Example::

    >>> store = Store.from_url("memory://docs")
    >>> size, digest = store.write_stream("/docs/x.bin", lambda f: f.write(b"hello"))
    >>> store.read_verified("/docs/x.bin", size=size, sha256=digest, uri="memory:///docs/x.bin")
    b'hello'
"""

from __future__ import annotations

import hashlib
import io
import logging
import mmap
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

from taskflow_exclusive import atomic
from taskflow_exclusive.errors import (
    ClaimStoreUnavailableError,
    ExclusiveError,
    IntegrityError,
    ObjectMissingError,
)
from taskflow_exclusive.filesystems import StorageLocation, filesystem_for, parse_storage_url

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

__all__ = ["Store"]

log = logging.getLogger("taskflow_exclusive.storage")

_WRITE_BUFFER = 1 << 20


_CHUNK = 8 << 20  # bytes hashed in the background while the next chunk is written or read


class _HashBehind:
    """sha256 computed in a helper thread, one chunk behind the I/O.

    ``hashlib`` and file I/O both release the GIL, so hashing chunk *k* while
    chunk *k* is written (or *k+1* is read) overlaps the two. A chunk handed
    to :meth:`update` must stay unchanged until the next ``update``,
    :meth:`wait` or :meth:`hexdigest`.
    """

    def __init__(self) -> None:
        self._sha256 = hashlib.sha256()
        self._thread: threading.Thread | None = None

    def update(self, chunk: memoryview) -> None:
        self.wait()
        if chunk.nbytes < _CHUNK // 8:  # not worth a thread
            self._sha256.update(chunk)
            return
        self._thread = threading.Thread(target=self._sha256.update, args=(chunk,), daemon=True)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def hexdigest(self) -> str:
        self.wait()
        return self._sha256.hexdigest()


class _HashingWriter(io.RawIOBase):
    """Counts and hashes every byte on its way to ``target`` (which it never closes)."""

    def __init__(self, target: IO[bytes]) -> None:
        self._target = target
        self._hasher = _HashBehind()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        for start in range(0, view.nbytes, _CHUNK):
            chunk = view[start : start + _CHUNK]
            self._hasher.update(chunk)
            self._target.write(chunk)
        self._hasher.wait()  # the caller may reuse its buffer once write() returns
        self.size += view.nbytes
        return view.nbytes

    def hexdigest(self) -> str:
        return self._hasher.hexdigest()


class Store:
    """Bytes in and out of one fsspec filesystem, with integrity and atomic publish."""

    def __init__(self, location: StorageLocation, fs: AbstractFileSystem | None = None) -> None:
        self.location = location
        self.fs = fs if fs is not None else filesystem_for(location)

    @classmethod
    def from_url(cls, url: str, source: str = "argument") -> Store:
        return cls(parse_storage_url(url, source))

    # -- naming -----------------------------------------------------------------------------

    def uri(self, path: str) -> str:
        """The full URL of ``path`` on this store (with the connection id, no secrets)."""
        return self.location.uri(path)

    @property
    def is_local(self) -> bool:
        return self.location.protocol == "file"

    def describe(self) -> str:
        return self.location.uri()

    def describe_root(self) -> str:
        """The store itself, for messages: ``s3://conn@bucket``, ``file:///base``."""
        location = self.location
        if location.protocol in ("file", "memory"):
            return location.uri()
        return location.uri(location.path.strip("/").split("/", 1)[0])

    # -- writing ----------------------------------------------------------------------------

    def write_stream(self, path: str, dump: Callable[[IO[bytes]], Any]) -> tuple[int, str]:
        """Stream what ``dump(file)`` writes into ``path``; return ``(size, sha256)``.

        On any exception the partial object is discarded before re-raising.
        """
        if self.is_local:
            self.fs.makedirs(path.rpartition("/")[0], exist_ok=True)
        target = self.fs.open(path, "wb")
        try:
            hashing = _HashingWriter(target)
            buffered = io.BufferedWriter(hashing, buffer_size=_WRITE_BUFFER)
            dump(buffered)
            buffered.close()
            target.close()
        except BaseException:
            self._discard_partial(target, path)
            raise
        return hashing.size, hashing.hexdigest()

    def _discard_partial(self, target: Any, path: str) -> None:
        """Throw away a failed write; problems here are logged, never raised over the cause."""
        from fsspec.spec import AbstractBufferedFile

        try:
            if isinstance(target, AbstractBufferedFile) and not target.closed:
                target.discard()  # aborts an S3 multipart / GCS resumable upload, commits nothing
            elif not getattr(target, "closed", True):
                target.close()
            self.remove([path])
        except Exception:
            log.warning("Could not remove the partial object %s", self.uri(path), exc_info=True)

    def put_complete(self, path: str, data: bytes) -> None:
        """Publish ``data`` at ``path`` all at once (readers never see a prefix)."""
        atomic.put_complete(self.fs, path, data)

    def create_if_absent(self, path: str, data: bytes) -> bool:
        """Atomically create ``path`` holding ``data``; ``False`` if it already existed."""
        return atomic.create_if_absent(self.fs, path, data)

    # -- reading ----------------------------------------------------------------------------

    @contextmanager
    def reaching(self, path: str) -> Iterator[None]:
        """Report a store that cannot be reached as :class:`ClaimStoreUnavailableError`.

        A missing object (``FileNotFoundError``) and our own errors pass
        through; anything else (refused connection, timeout, server or
        permission error) means the read could not be done.
        """
        try:
            yield
        except (FileNotFoundError, ExclusiveError):
            raise
        except Exception as exc:
            where = self.describe_root()
            raise ClaimStoreUnavailableError(
                f"Could not read {self.uri(path)} from the object store {where}: "
                f"{type(exc).__name__}: {exc}. No value was handed out; retry when the store is "
                "reachable (a consumer whose claim was recorded gets the value on retry).",
                ledger=f"object store {where}",
                uri=self.uri(path),
            ) from exc

    def read_small(self, path: str) -> bytes | None:
        """The bytes at ``path``, or ``None`` when it does not exist."""
        try:
            with self.reaching(path):
                return self.fs.cat_file(path)
        except FileNotFoundError:
            return None

    def read_verified(
        self,
        path: str,
        *,
        size: int,
        sha256: str,
        uri: str,
        written_on: str | None = None,
        writable: bool = False,
    ) -> bytes | mmap.mmap:
        """The bytes at ``path``, returned only if their size and sha256 match.

        What is checked is exactly what is returned. By default the object is
        read in one call into ``bytes`` and then hashed (the fastest way to
        end up with an immutable copy). With ``writable=True`` a large object
        is instead read in chunks into an anonymous memory map of the promised
        size (no zero-filling) while the chunks already read are hashed in the
        background: for loaders that keep using the buffer in place.
        """
        try:
            with self.reaching(path), self.fs.open(path, "rb") as source:
                if not writable or size < _CHUNK:
                    data: bytes | mmap.mmap = source.read(size + 1)
                    filled, longer = min(len(data), size), len(data) > size
                    actual = hashlib.sha256(data).hexdigest()
                else:
                    data, filled, longer, actual = self._read_large(source, size)
        except FileNotFoundError as exc:
            raise self.missing(uri, written_on) from exc
        if filled != size or longer:
            found = f"{filled} bytes" if not longer else f"more than {size} bytes"
            raise IntegrityError(
                f"{uri} holds {found} but its handle promises {size}: the object was "
                "truncated or replaced after it was written. The value was not returned.",
                uri=uri,
                expected=size,
                actual=filled if not longer else f">{size}",
            )
        if actual != sha256:
            raise IntegrityError(
                f"{uri} does not match its handle's sha256 (expected {sha256}, found {actual}): "
                "the object was altered after it was written. The value was not returned.",
                uri=uri,
                expected=sha256,
                actual=actual,
            )
        return data

    @staticmethod
    def _read_large(source: IO[bytes], size: int) -> tuple[mmap.mmap, int, bool, str]:
        buffer = mmap.mmap(-1, size)
        view = memoryview(buffer)
        hasher = _HashBehind()
        filled = 0
        try:
            while filled < size:
                count = source.readinto(view[filled : filled + _CHUNK])
                if not count:
                    break
                hasher.update(view[filled : filled + count])
                filled += count
            actual = hasher.hexdigest()
        finally:
            hasher.wait()
            view.release()
        longer = filled == size and bool(source.read(1))
        return buffer, filled, longer, actual

    def missing(self, uri: str, written_on: str | None) -> ObjectMissingError:
        """The error for a value that is not (or no longer) in storage."""
        here = socket.gethostname()
        if self.is_local and written_on and written_on != here:
            return ObjectMissingError(
                f"{uri} does not exist on this machine ({here}). It was written on host "
                f"{written_on!r} to local storage, which other machines cannot see: set the Airflow "
                "Variable 'taskflow_exclusive_storage_url' to shared storage (s3://..., gs://...).",
                uri=uri,
                written_on=written_on,
            )
        detail = f" It was written on host {written_on!r}." if self.is_local and written_on else ""
        return ObjectMissingError(
            f"{uri} does not exist: it was deleted or purged after it was written, or never "
            f"committed.{detail}",
            uri=uri,
            written_on=written_on,
        )

    # -- housekeeping -----------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(path))

    def list_folder(self, folder: str) -> list[str]:
        """Entry paths directly inside ``folder`` (empty when it does not exist)."""
        try:
            return [str(p).rstrip("/") for p in self.fs.ls(folder, detail=False, refresh=True)]
        except FileNotFoundError:
            return []
        except TypeError:  # filesystems whose ls() takes no refresh argument
            return [str(p).rstrip("/") for p in self.fs.ls(folder, detail=False)]

    def remove(self, paths: Iterable[str], recursive: bool = False) -> int:
        """Delete ``paths``, ignoring those already gone; return how many were deleted."""
        removed = 0
        for path in paths:
            try:
                if recursive:
                    if not self.fs.exists(path):
                        continue
                    self.fs.rm(path, recursive=True)
                else:
                    self.fs.rm_file(path)
                removed += 1
            except FileNotFoundError:
                continue
        return removed
