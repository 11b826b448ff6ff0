"""Atomic writes on fsspec filesystems: the primitive every claim stands on.

Two operations, each with a strategy per filesystem:

``create_if_absent(fs, path, data)``
    Creates ``path`` holding all of ``data`` if and only if it does not exist,
    in one atomic step, and reports whether this call created it. Never
    check-then-write.

    - local disk: write the data to an unnamed file (``O_TMPFILE``) in the
      same folder, ``fsync`` it, then ``link`` it to ``path`` (``link`` fails
      if ``path`` exists, and the content is complete and durable the moment
      the name appears), then ``fsync`` the folder so that the name itself
      survives a power cut (folders made on the way are fsynced into their
      parents too). Where ``O_TMPFILE`` is not supported, a named
      temporary file is linked and removed instead. A name that already
      exists is answered with ``False`` before anything is written (one
      ``lstat``: a loser pays no ``fsync``); the ``link`` alone decides every
      race. fsspec's ``pipe_file(mode="create")`` on local disk checks
      ``exists()`` first and is *not* atomic.
    - S3 (s3fs): a single PUT with ``If-None-Match: *``. AWS and moto answer
      a loser with ``FileExistsError``; SeaweedFS's 412 surfaces as
      ``OSError(EINVAL)`` caused by a ``PreconditionFailed`` ClientError, and
      AWS may answer 409 ``ConditionalRequestConflict`` while another
      conditional write is in flight (retried here).
    - GCS (gcsfs): a single upload with ``ifGenerationMatch=0``
      (``pipe_file(mode="create")``; small payloads go through the checked
      multipart upload).
    - memory: a process-wide lock (the memory filesystem lives in one process).

    Any other filesystem is refused with :class:`StorageConfigError`.

``put_complete(fs, path, data)``
    Replaces ``path`` so readers see all of ``data`` or the old state, never a
    prefix (temporary file + rename locally; a single PUT on object stores).

Example::

    >>> import fsspec
    >>> fs = fsspec.filesystem("memory")
    >>> create_if_absent(fs, "/demo/claim", b"first"), create_if_absent(fs, "/demo/claim", b"second")
    (True, False)
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from taskflow_exclusive.errors import StorageConfigError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

__all__ = ["create_if_absent", "ensure_create_is_atomic", "put_complete", "supports_atomic_create"]

_memory_lock = threading.Lock()
_CONFLICT_RETRIES = 8


def _protocols(fs: AbstractFileSystem) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _kind(fs: AbstractFileSystem) -> str | None:
    protocols = _protocols(fs)
    if "file" in protocols:
        return "file"
    if "memory" in protocols:
        return "memory"
    if "s3" in protocols:
        return "s3"
    if "gs" in protocols or "gcs" in protocols:
        return "gs"
    return None


def supports_atomic_create(fs: AbstractFileSystem) -> bool:
    """Whether taskflow-exclusive knows an atomic create-if-absent for ``fs``."""
    return _kind(fs) is not None


# --- create_if_absent -------------------------------------------------------------------------


def create_if_absent(fs: AbstractFileSystem, path: str, data: bytes) -> bool:
    """Atomically create ``path`` with ``data``; ``False`` if it already existed.

    Raises :class:`StorageConfigError` for a filesystem without a known atomic
    create, and lets connection errors propagate (callers decide how to report
    an unreachable store).
    """
    kind = _kind(fs)
    strategy = _CREATE_STRATEGIES.get(kind) if kind else None
    if strategy is None:
        raise StorageConfigError(
            f"The {type(fs).__name__} filesystem ({'/'.join(_protocols(fs))}://) offers no atomic "
            "create-if-absent that taskflow-exclusive can trust, so it cannot guard claims. Use "
            "file://, s3:// or gs:// storage, or put the claims in Redis or SQL "
            "(claims='redis://...' or the Airflow Variable taskflow_exclusive_claims_url).",
            url=None,
            source="filesystem",
        )
    return strategy(fs, path, data)


def _create_local(fs: AbstractFileSystem, path: str, data: bytes) -> bool:
    target = fs._strip_protocol(path)
    if os.path.lexists(target):
        return False  # taken already: the answer is known without writing (the link decides races)
    folder = os.path.dirname(target)
    try:
        created = _link_complete(folder, target, data)
    except FileNotFoundError:
        make_folder_durably(folder)  # the first file in this folder (or made by a racer just now)
        created = _link_complete(folder, target, data)
    if created:
        _fsync_folder(folder)  # the new name itself survives a power cut, not only its content
    return created


def _fsync_folder(folder: str) -> None:
    """Make the entries of ``folder`` durable (POSIX: a new name is durable once its folder is)."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_folder_durably(folder: str) -> None:
    """``makedirs``, then fsync the parent of every folder made, so the path survives a power cut.

    Local disk only (``folder`` is an OS path). A folder that exists already costs one ``stat``.
    """
    missing = []
    head = folder
    while head and not os.path.isdir(head):
        missing.append(head)
        head = os.path.dirname(head)
    os.makedirs(folder, exist_ok=True)
    for made in reversed(missing):
        _fsync_folder(os.path.dirname(made) or ".")


def _link_complete(folder: str, target: str, data: bytes) -> bool:
    """Link a complete, fsynced file holding ``data`` to ``target``; ``False`` if it exists."""
    try:
        fd = _open_unnamed(folder)
        if fd is None:
            temporary = _write_temporary(folder, os.path.basename(target), data)
            try:
                os.link(temporary, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
            return True
        try:
            _write_all(fd, data)
            os.fsync(fd)  # the content is durable before its name can appear
            # linkat(AT_SYMLINK_FOLLOW) links the open file itself. Any dir fd makes CPython call
            # linkat with that flag rather than link() (which would link the /proc symlink); it
            # is ignored for an absolute path.
            os.link(f"/proc/self/fd/{fd}", target, src_dir_fd=fd)
        finally:
            os.close(fd)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise StorageConfigError(
                f"The local filesystem holding {folder} does not support hard links, which "
                "taskflow-exclusive uses for atomic create-if-absent. Put the storage on a "
                "filesystem that does (ext4, xfs, btrfs, tmpfs, NFSv4), or use s3:// or gs://.",
                url=f"file://{folder}",
                source="filesystem",
            ) from exc
        raise
    return True


@functools.cache
def _can_link_unnamed_files() -> bool:
    """Whether this system has ``O_TMPFILE`` and the ``/proc/self/fd`` links to link them by."""
    return hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")


def _open_unnamed(folder: str) -> int | None:
    """A writable file without a name in ``folder`` (``O_TMPFILE``), or ``None`` if unsupported.

    An unnamed file needs no removal afterwards and leaves nothing behind when
    the process dies.
    """
    if not _can_link_unnamed_files():
        return None
    try:
        return os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o644)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return None  # this filesystem (NFS, some FUSE) has no unnamed files: use a named one
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _create_memory(fs: AbstractFileSystem, path: str, data: bytes) -> bool:
    with _memory_lock:
        if fs.exists(path):
            return False
        fs.pipe_file(path, bytes(data))
        return True


def _create_s3(fs: AbstractFileSystem, path: str, data: bytes) -> bool:
    for attempt in range(_CONFLICT_RETRIES):
        try:
            fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        except OSError as exc:
            code = _client_error_code(exc)
            if code == "PreconditionFailed":
                return False
            if code == "ConditionalRequestConflict" and attempt + 1 < _CONFLICT_RETRIES:
                time.sleep(0.01 * 2**attempt)
                continue
            raise
        return True
    raise AssertionError("unreachable")  # pragma: no cover


def _create_gs(fs: AbstractFileSystem, path: str, data: bytes) -> bool:
    try:
        fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        return False
    return True


def _client_error_code(exc: BaseException) -> str | None:
    """The S3 error code behind an s3fs error, however deep botocore put it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            if code:
                return str(code)
        current = current.__cause__ or current.__context__
    return None


_CREATE_STRATEGIES: dict[str, Callable[[AbstractFileSystem, str, bytes], bool]] = {
    "file": _create_local,
    "memory": _create_memory,
    "s3": _create_s3,
    "gs": _create_gs,
}


# --- put_complete -----------------------------------------------------------------------------


def put_complete(fs: AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``path`` so that readers see either all of ``data`` or nothing new."""
    if _kind(fs) == "file":
        with _complete_temporary(fs, path, data) as (target, temporary):
            os.replace(temporary, target)
        _fsync_folder(os.path.dirname(target))  # the rename itself survives a power cut
        return
    # A single PUT (S3, GCS) or an in-memory assignment is all-or-nothing.
    fs.pipe_file(path, bytes(data))


@contextlib.contextmanager
def _complete_temporary(fs: AbstractFileSystem, path: str, data: bytes) -> Iterator[tuple[str, str]]:
    """``(target, temporary)``: ``data`` complete and fsynced beside ``path``, removed afterwards if left."""
    target = fs._strip_protocol(path)
    folder = os.path.dirname(target)
    make_folder_durably(folder)
    temporary = _write_temporary(folder, os.path.basename(target), data)
    try:
        yield target, temporary
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _write_temporary(folder: str, name: str, data: bytes) -> str:
    temporary = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)  # the content is durable before its name can appear
        finally:
            os.close(fd)  # can fail too (NFS reports a deferred write error here): then nothing is kept
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return temporary


# --- verifying a server honours preconditions --------------------------------------------------

_verified: set[tuple[str, str]] = set()
_verified_lock = threading.Lock()


def ensure_create_is_atomic(fs: AbstractFileSystem, folder: str, describe: str) -> None:
    """Check once per process and folder root that a second create of one name fails.

    Some S3-compatible servers and emulators ignore ``If-None-Match`` or
    ``ifGenerationMatch`` and silently overwrite: such a server cannot guard a
    claim, and is refused with :class:`StorageConfigError` instead of trusted.
    Local disk and memory need no probe (the strategy itself is atomic).
    """
    kind = _kind(fs)
    if kind in ("file", "memory"):
        return
    root = folder.strip("/").split("/", 1)[0]
    key = (f"{kind}:{id(fs)}", root)
    with _verified_lock:
        if key in _verified:
            return
    probe = f"{folder.rstrip('/')}/.taskflow-exclusive-probe/{uuid.uuid4().hex}"
    first = create_if_absent(fs, probe, b"first")
    try:
        second = create_if_absent(fs, probe, b"second")
        stored = fs.cat_file(probe)
    finally:
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(probe)
    if not first or second or stored != b"first":
        raise StorageConfigError(
            f"The storage at {describe} does not honour conditional creates: a second "
            "create-if-absent of one object succeeded (or the first failed). It cannot guard "
            "claims; use a server that supports If-None-Match / ifGenerationMatch, or keep the "
            "claims in Redis or SQL (claims='redis://...').",
            url=describe,
            source="filesystem",
        )
    with _verified_lock:
        _verified.add(key)
