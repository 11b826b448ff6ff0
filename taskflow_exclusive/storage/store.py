"""The object store: streaming hashed writes, verified reads, atomic publish.

A :class:`Store` is one fsspec filesystem plus a base location. It knows
nothing about claims or serializers; it moves bytes and guarantees that

- a value is written once, in chunks, with its digest (BLAKE3, see
  :mod:`taskflow_exclusive.storage.digests`) and size computed on the way
  (never a second full copy in memory), and on a local disk it is
  ``fsync``-ed before :meth:`Store.write_stream` returns: a manifest
  committed after it never points at data an OS crash could lose;
- a failed or interrupted write leaves no committed value: the manifest that
  commits a value is published only after the data is complete, and the data
  of a failed write is discarded (an aborted multipart upload on S3);
- a write the store refuses (full, read-only, a name too long, a file where a
  folder should be, a server that cannot be reached) raises
  :class:`StorageWriteError` saying what to fix, never a bare ``OSError``;
- the digest of a streamed write (or chunked read) is computed by one worker
  thread, which never reads a buffer after the call that handed it over has
  returned or raised;
- a read returns bytes only after their size and digest match what the
  handle promises, with the algorithm the handle names (``blake3:`` or, for
  values written before #13, ``sha256:``; :class:`IntegrityError` otherwise);
- a read that cannot reach the store (refused connection, timeout, server
  error) raises :class:`ClaimStoreUnavailableError` naming the store, never a
  bare driver exception: nothing was handed out, and a retry is safe.

Example::

    >>> store = Store.from_url("memory://docs")
    >>> size, digest = store.write_stream("/docs/x.bin", lambda f: f.write(b"hello"))
    >>> store.read_verified("/docs/x.bin", size=size, digest=digest, uri="memory:///docs/x.bin")
    b'hello'
"""

from __future__ import annotations

import errno
import io
import logging
import mmap
import os
import queue
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import IO, TYPE_CHECKING, Any

from taskflow_exclusive.errors import (
    ExclusiveError,
    IntegrityError,
    ObjectMissingError,
    StorageWriteError,
)
from taskflow_exclusive.faults import claim_failure
from taskflow_exclusive.storage import atomic
from taskflow_exclusive.storage.digests import ALGORITHM, algorithm_of, digest_of, new_hash
from taskflow_exclusive.storage.filesystems import StorageLocation, filesystem_for, parse_storage_url

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

__all__ = ["Store"]

log = logging.getLogger("taskflow_exclusive.storage")

_WRITE_BUFFER = 1 << 20
_CHUNK = 8 << 20  # bytes per hand-off to the hashing worker
_INLINE_BELOW = 1 << 20  # smaller pieces are hashed inline: a hand-off would cost more than it saves


class _Hasher:
    """The digest of a stream of chunks, hashed by one worker thread while the caller does I/O.

    ``blake3``, ``hashlib`` and file I/O all release the GIL, so the worker hashes chunk
    *k* while the caller writes it (or reads chunk *k+1*). The worker reads a
    submitted chunk *later*: the caller must keep every buffer it submits
    alive and unchanged until :meth:`drain` returns, and drains in a
    ``finally`` before it returns, releases or reuses one, on every path
    (a ``BufferedWriter`` frees or reuses the memory behind the view it hands
    to ``write()`` as soon as ``write()`` returns). :meth:`close` stops the
    worker; one :class:`_Hasher` serves one write or read.
    """

    def __init__(self, algorithm: str = ALGORITHM) -> None:
        self.algorithm = algorithm
        self._hash = new_hash(algorithm)
        self._queue: queue.Queue[memoryview | None] = queue.Queue(maxsize=2)
        self._worker: threading.Thread | None = None
        self._failure: BaseException | None = None

    def update(self, chunk: memoryview) -> None:
        """Hash ``chunk`` now, in this thread (after everything submitted before it)."""
        self.drain()
        self._hash.update(chunk)

    def submit(self, chunk: memoryview) -> None:
        """Hand ``chunk`` to the worker; it must stay unchanged until :meth:`drain` returns."""
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="taskflow-exclusive-digest", daemon=True)
            self._worker.start()
        self._queue.put(chunk)  # blocks while the worker is two chunks behind

    def _work(self) -> None:
        while True:
            chunk = self._queue.get()
            try:
                if chunk is None:
                    return
                if self._failure is None:
                    self._hash.update(chunk)
            except BaseException as exc:  # reported by digest(); the worker keeps draining
                self._failure = exc
            finally:
                chunk = None  # hold no view of the caller's buffer once it may be released
                self._queue.task_done()

    def drain(self) -> None:
        """Wait until the worker has hashed every submitted chunk.

        An interrupt (``KeyboardInterrupt``, an exception from a signal
        handler) does not cut the wait short, since the worker may still be
        reading the caller's buffer: it is re-raised once the wait is over.
        """
        if self._worker is None:
            return
        interrupted: BaseException | None = None
        while True:
            try:
                self._queue.join()
                break
            except BaseException as exc:
                interrupted = interrupted or exc
        if interrupted is not None:
            raise interrupted

    def close(self) -> None:
        """Drain, then stop the worker thread."""
        if self._worker is None:
            return
        self.drain()
        self._queue.put(None)
        self._worker.join()
        self._worker = None

    def digest(self) -> str:
        """``algorithm:hex`` of everything hashed so far (after draining the worker)."""
        self.drain()
        if self._failure is not None:
            raise RuntimeError("the digest worker failed; the digest is unknown") from self._failure
        return f"{self.algorithm}:{self._hash.hexdigest()}"


class _HashingWriter(io.RawIOBase):
    """Counts and hashes every byte on its way to ``target`` (which it never closes).

    An exception from ``target`` is turned into the store's error by
    ``failed`` at once, so that the serializer calling ``write()`` cannot
    mistake a full disk for a value it cannot serialize. After
    :meth:`abandon`, nothing more reaches ``target``.
    """

    def __init__(
        self, target: IO[bytes], hasher: _Hasher, failed: Callable[[Exception], BaseException]
    ) -> None:
        self._target = target
        self._hasher = hasher
        self._failed = failed
        self._abandoned = False
        self.size = 0

    def writable(self) -> bool:
        return True

    def abandon(self) -> None:
        self._abandoned = True

    def write(self, data: Any) -> int:
        if self._abandoned:
            raise ValueError("write to an abandoned object (its write failed and was discarded)")
        view = memoryview(data)
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        try:
            if view.nbytes < _INLINE_BELOW:
                self._hasher.update(view)
                self._send(view)
            else:
                for start in range(0, view.nbytes, _CHUNK):
                    chunk = view[start : start + _CHUNK]
                    self._hasher.submit(chunk)
                    self._send(chunk)
        finally:
            self._hasher.drain()  # the caller frees or reuses ``data`` once write() returns, or raises
        self.size += view.nbytes
        return view.nbytes

    def _send(self, chunk: memoryview) -> None:
        try:
            self._target.write(chunk)
        except Exception as exc:
            raise self._failed(exc) from exc


# errnos by which a local disk refuses a write (as opposed to failing to be reached)
_REFUSED = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.ENAMETOOLONG,
        errno.ENOTDIR,
        errno.EEXIST,
    }
)


def _longest_name(path: str) -> int:
    """The longest file name (bytes) the filesystem holding ``path`` accepts (255 when unknown)."""
    folder = path
    while folder and not os.path.exists(folder):
        folder = os.path.dirname(folder.rstrip("/")) or "/"
    try:
        return int(os.pathconf(folder or "/", "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def _mount_point(path: str) -> str:
    """The mount point of the filesystem that holds (or would hold) local ``path``."""
    folder = os.path.abspath(path)
    while not os.path.ismount(folder):
        folder = os.path.dirname(folder)
    return folder


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

    def write_stream(
        self, path: str, dump: Callable[[IO[bytes]], Any], *, names: Mapping[str, str] | None = None
    ) -> tuple[int, str]:
        """Stream what ``dump(file)`` writes into ``path``; return ``(size, digest)``.

        ``digest`` is ``blake3:<hex>``. On a local disk the file is ``fsync``-ed
        before it is closed, so it is as durable as the manifest that commits it.

        A write the store refuses (full, read-only, a name too long, a file
        where a folder should be, a server that cannot be reached) raises
        :class:`StorageWriteError` (see :meth:`write_error`; ``names`` says
        which setting each path segment came from). On any exception the
        partial object is discarded before re-raising, and the hashing worker
        is stopped on every path.
        """
        hasher = _Hasher()
        target: Any = None
        hashing: _HashingWriter | None = None
        buffered: io.BufferedWriter | None = None
        try:
            with self.writing(path, names):
                if self.is_local:
                    # folders made here are fsynced into their parents: the manifest's commit
                    # fsyncs only the value's own folder, which a power cut could otherwise take
                    atomic.make_folder_durably(self._local_path(path.rpartition("/")[0]))
                target = self.fs.open(path, "wb")
            hashing = _HashingWriter(target, hasher, lambda exc: self.write_error(path, exc, names))
            buffered = io.BufferedWriter(hashing, buffer_size=_WRITE_BUFFER)
            dump(buffered)
            buffered.close()
            with self.writing(path, names):
                if self.is_local:
                    target.flush()
                    os.fsync(target.fileno())  # durable before the manifest can commit it
                target.close()
            return hashing.size, hasher.digest()
        except BaseException:
            if hashing is not None:
                hashing.abandon()  # what a codec still flushes when it is collected goes nowhere
            if buffered is not None:
                with suppress(Exception):
                    buffered.close()
            self._discard_partial(target, path)
            raise
        finally:
            hasher.close()

    def _discard_partial(self, target: Any, path: str) -> None:
        """Throw away a failed write; problems here are logged, never raised over the cause."""
        from fsspec.spec import AbstractBufferedFile

        if target is None:
            return  # never opened: nothing was written
        if not getattr(target, "closed", True):
            try:
                if isinstance(target, AbstractBufferedFile):
                    target.discard()  # aborts an S3 multipart / GCS resumable upload, commits nothing
                else:
                    target.close()  # a full disk fails this flush again; the file is removed below
            except Exception:
                log.debug("Closing the failed write to %s failed too", self.uri(path), exc_info=True)
        try:
            self.remove([path])
        except Exception as exc:  # the cause is what gets raised; cleanup finds what is left
            log.warning(
                "Could not remove the partial object %s: %s: %s", self.uri(path), type(exc).__name__, exc
            )

    def put_complete(self, path: str, data: bytes, *, names: Mapping[str, str] | None = None) -> None:
        """Publish ``data`` at ``path`` all at once (readers never see a prefix).

        A refused write raises :class:`StorageWriteError` and leaves no temporary file.
        """
        with self.writing(path, names):
            atomic.put_complete(self.fs, path, data)

    def prepare_local_folder(self, path: str) -> None:
        """On local disk, make the folder ``path`` now (a later ``put_complete`` beside it
        fsyncs the parent, which makes the new folder durable too); elsewhere nothing."""
        if self.is_local:
            with self.writing(path):
                os.makedirs(self._local_path(path), exist_ok=True)

    def create_if_absent(self, path: str, data: bytes) -> bool:
        """Atomically create ``path`` holding ``data``; ``False`` if it already existed.

        A local disk that refuses the write (full, read-only, a name too long,
        a file in the way) raises :class:`StorageWriteError`, and nothing is
        created. Other failures propagate as they are, for the claim ledger to
        classify (an unreachable server is not a refusal).
        """
        try:
            return atomic.create_if_absent(self.fs, path, data)
        except OSError as exc:
            if not self.is_local or isinstance(exc, ExclusiveError) or exc.errno not in _REFUSED:
                raise
            raise self.write_error(path, exc) from exc

    @contextmanager
    def writing(self, path: str, names: Mapping[str, str] | None = None) -> Iterator[None]:
        """Report any failure to write ``path`` as :class:`StorageWriteError` (ours pass through)."""
        try:
            yield
        except ExclusiveError:
            raise
        except Exception as exc:
            raise self.write_error(path, exc, names) from exc

    def write_error(
        self, path: str, exc: BaseException, names: Mapping[str, str] | None = None
    ) -> StorageWriteError:
        """The :class:`StorageWriteError` for ``exc``, saying what to fix.

        ``names`` maps path segments (as written) to the setting they came
        from (``run_id``, ``label``), so that a name too long for the
        filesystem is reported as the setting to shorten.
        """
        from taskflow_exclusive.faults import describe, is_unreachable

        root, disk = self._where_written()
        uri = self.uri(path)
        code = exc.errno if isinstance(exc, OSError) else None
        strerror = exc.strerror if isinstance(exc, OSError) else None
        reason = strerror or describe(exc)
        elsewhere = "or point the Airflow Variable 'taskflow_exclusive_storage_url' (storage=...) elsewhere"
        if code in (errno.ENOSPC, errno.EDQUOT):
            problem = f"the store at {root} is full ({reason}{disk}): free space there, {elsewhere}"
        elif code == errno.EFBIG:
            problem = f"the value is larger than a file on the store at {root} may be ({reason}): {elsewhere}"
        elif code == errno.EROFS:
            problem = f"the store at {root} is read-only ({reason}{disk}): remount it read-write, {elsewhere}"
        elif code in (errno.EACCES, errno.EPERM):
            problem = (
                f"the store at {root} is not writable by this process ({reason}): grant it write access "
                f"(on an object store: the connection's credentials and bucket policy), {elsewhere}"
            )
        elif code == errno.ENAMETOOLONG:
            problem = self._name_too_long(path, names or {})
        elif code in (errno.ENOTDIR, errno.EEXIST) and (blocker := self._file_in_the_way(path)):
            problem = (
                f"{self.uri(blocker)} is a file, not a folder, so nothing can be stored under it: "
                f"move or remove that file, {elsewhere}"
            )
        elif is_unreachable(exc):
            problem = (
                f"the store at {root} could not be reached ({describe(exc)}); retry when it is "
                "reachable (a retry writes a new object; nothing was published)"
            )
        else:
            problem = f"the store at {root} refused the write ({reason})"
        return StorageWriteError(
            f"Could not write {uri}: {problem}. Nothing half-written is kept.", uri=uri, reason=reason
        )

    def _where_written(self) -> tuple[str, str]:
        """The store for messages, and for local disks the mount point (`` on ... mounted at /x``).

        A store opened on one value (a handle's URL, when claiming) is named by
        the disk holding it, since its own URL is a file, not the store.
        """
        root = self.describe_root()
        if not self.is_local:
            return root, ""
        base = self._local_path(self.location.path)
        mount = _mount_point(base)
        if os.path.isfile(base):
            return f"file://{mount}", ""
        return root, "" if mount == base.rstrip("/") else f"; filesystem mounted at {mount}"

    def _local_path(self, path: str) -> str:
        return str(self.fs._strip_protocol(path))

    def _file_in_the_way(self, path: str) -> str | None:
        """The first folder of ``path`` (local stores) that exists as something else than a folder."""
        if not self.is_local:
            return None
        folders = self._local_path(path).rstrip("/").split("/")[:-1]
        for depth in range(2, len(folders) + 1):
            candidate = "/".join(folders[:depth])
            if not os.path.lexists(candidate):
                return None
            if not os.path.isdir(candidate):
                return candidate
        return None

    def _name_too_long(self, path: str, names: Mapping[str, str]) -> str:
        from taskflow_exclusive.storage.layout import decode_segment

        root = self.describe_root()
        local = self._local_path(path) if self.is_local else path
        limit = _longest_name(local) if self.is_local else 255
        for segment in local.split("/"):
            size = len(segment.encode())
            if size <= limit:
                continue
            setting = names.get(segment)
            text = decode_segment(segment) if setting else segment
            shown = repr(text if len(text) <= 40 else text[:40] + "...")
            if setting:
                return (
                    f"the {setting} {shown} ({len(text)} characters, {size} bytes as a "
                    f"file name) is longer than the filesystem at {root} allows (at most {limit} bytes): "
                    f"use a shorter {setting}"
                )
            return (
                f"the name {shown} is {size} bytes long, but the filesystem at {root} allows at most "
                f"{limit}: use a shorter name"
            )
        return (
            f"the path is {len(local.encode())} bytes long, more than the filesystem at {root} allows: "
            "use a shorter storage path or shorter names"
        )

    # -- reading ----------------------------------------------------------------------------

    @contextmanager
    def reaching(self, path: str) -> Iterator[None]:
        """Report a failed read as the claim error that says what to do.

        A missing object (``FileNotFoundError``) and our own errors pass
        through. A refused connection, a timeout or a server error means the
        store could not be reached (:class:`ClaimStoreUnavailableError`,
        retry is safe); refused credentials, a missing bucket or a path that
        is a folder are :class:`ClaimStoreConfigError` (fix the setting).
        """
        try:
            yield
        except (FileNotFoundError, ExclusiveError):
            raise
        except Exception as exc:
            where = self.describe_root()
            raise claim_failure(
                f"object store {where}",
                self.uri(path),
                exc,
                fix=_store_misconfigured(exc),
                unreachable=_store_unreachable(exc),
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
        digest: str,
        uri: str,
        written_on: str | None = None,
        writable: bool = False,
    ) -> bytes | mmap.mmap:
        """The bytes at ``path``, returned only if their size and digest match.

        ``digest`` is ``algorithm:hex`` (``blake3:`` or ``sha256:``, see
        :mod:`taskflow_exclusive.storage.digests`); the bytes are hashed with that
        algorithm. What is checked is exactly what is returned. By default the object is
        read in one call into ``bytes`` and then hashed (the fastest way to
        end up with an immutable copy; a large one on every core). With ``writable=True`` a large object
        is instead read in chunks into an anonymous memory map of the promised
        size (no zero-filling) while the chunks already read are hashed in the
        background: for loaders that keep using the buffer in place.
        """
        algorithm = algorithm_of(digest)
        try:
            with self.reaching(path), self.fs.open(path, "rb") as source:
                if not writable or size < _CHUNK:
                    data: bytes | mmap.mmap = source.read(size + 1)
                    filled, longer = min(len(data), size), len(data) > size
                    actual = digest_of(data, algorithm) if len(data) == size else ""  # else: wrong size
                else:
                    data, filled, longer, actual = self._read_large(source, size, algorithm)
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
        if actual != digest:
            raise IntegrityError(
                f"{uri} does not match its handle's {algorithm} digest (expected {digest}, found "
                f"{actual}): the object was altered after it was written. The value was not returned.",
                uri=uri,
                expected=digest,
                actual=actual,
            )
        return data

    @staticmethod
    def _read_large(source: IO[bytes], size: int, algorithm: str) -> tuple[mmap.mmap, int, bool, str]:
        buffer = mmap.mmap(-1, size)
        view = memoryview(buffer)
        hasher = _Hasher(algorithm)
        filled = 0
        try:
            while filled < size:
                count = source.readinto(view[filled : filled + _CHUNK])
                if not count:
                    break
                hasher.submit(view[filled : filled + count])  # hashed while the next chunk is read
                filled += count
            actual = hasher.digest()
        finally:
            hasher.close()  # the worker reads the map: stop it before the view is released
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


# botocore/s3fs error codes that mean "fix the credentials or the bucket", not "try again later".
_S3_PERMANENT_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket", "AllAccessDisabled"}
)


_S3_TRANSIENT_CODES = frozenset({"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout"})


def _store_misconfigured(exc: BaseException) -> str | None:
    """What to fix when the object store refused a read for a reason a retry will not cure."""
    if isinstance(exc, PermissionError) or _client_error_code(exc) in _S3_PERMANENT_CODES:
        return (
            "Check the credentials of the storage connection (or the Variable "
            "'taskflow_exclusive_storage_url') and that the bucket exists and may be read and written."
        )
    if isinstance(exc, (IsADirectoryError, NotADirectoryError)):
        return "A folder stands where a stored object should be (or the reverse): the store was altered."
    return None


def _store_unreachable(exc: BaseException) -> bool:
    """Errors of fsspec drivers that are outages: server errors (5xx) and throttling."""
    code = _client_error_code(exc)
    return code is not None and (
        code.startswith("5") or code in ("SlowDown", "InternalError", "ServiceUnavailable")
    )


def _client_error_code(exc: BaseException) -> str | None:
    current: BaseException | None = exc
    while current is not None:
        response = getattr(current, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            if code:
                return str(code)
        current = current.__cause__
    return None
