"""Finding and removing what interrupted writes leave behind, never a committed value.

A producer killed while it writes (SIGKILL, a lost node, an out-of-memory
kill) never commits: the manifest that makes a value claimable is published
only after its data is complete (see :mod:`taskflow_exclusive.publishing`).
What it may leave behind, and what :func:`find_uncommitted` reports:

``data without manifest``
    ``<stem>.<ext>`` with no ``<stem>.manifest.json`` beside it: a write that
    never committed (on local disk, possibly a partial file).
``claims without value``
    claim records of a value whose manifest is gone (an interrupted purge).
``temporary file``
    ``.<name>.<32 hex>.tmp`` from an atomic local write (local disk only).
``probe``
    an object under ``.taskflow-exclusive-probe/`` from an interrupted
    check that the server honours conditional creates.
``multipart upload``
    an S3 multipart upload of a value's data that was never completed or
    aborted (s3fs streams large values in parts). Only uploads of names this
    library writes, under the storage prefix, are considered: never the
    whole bucket.

Only entries older than the grace period ``older_than`` (by the store's
modification time, or an upload's initiation time) are reported, so a write
still in progress is left alone: make the grace period longer than your
longest write. Committed values (those with a manifest), their manifests and
claims are never reported. Names this library does not write are ignored.

GCS resumable uploads of a killed producer cannot be listed through the API;
GCS discards them after a week.

Example::

    >>> from datetime import timedelta
    >>> from taskflow_exclusive import publish
    >>> handle = publish(b"kept", storage="memory://cleanup-doc")
    >>> find_uncommitted("memory://cleanup-doc", older_than=timedelta(0))
    []
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from taskflow_exclusive.atomic import _client_error_code
from taskflow_exclusive.errors import IntegrityError
from taskflow_exclusive.layout import CLAIMS_SUFFIX, MANIFEST_SUFFIX, ObjectPaths
from taskflow_exclusive.storage import Store

__all__ = ["DEFAULT_GRACE", "Leftover", "find_uncommitted", "remove_uncommitted"]

log = logging.getLogger("taskflow_exclusive.cleanup")

DEFAULT_GRACE = timedelta(hours=1)

DATA = "data without manifest"
CLAIMS = "claims without value"
TEMPORARY = "temporary file"
PROBE = "probe"
MULTIPART = "multipart upload"

_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")
_SLOT = re.compile(r"^slot-[0-9]+\.json$")
_PROBE_FOLDER = ".taskflow-exclusive-probe"


@dataclass(frozen=True)
class Leftover:
    """One thing an interrupted write left behind.

    ``path`` is in the filesystem's own form, ``uri`` the full URL (with the
    connection id, no secrets); ``upload_id`` is set for multipart uploads.
    """

    kind: str
    uri: str
    path: str
    modified: datetime
    size: int | None = None
    upload_id: str | None = None

    def describe(self) -> str:
        size = "" if self.size is None else f", {self.size} bytes"
        upload = f", upload {self.upload_id}" if self.upload_id else ""
        when = self.modified.isoformat(timespec="seconds")
        return f"{self.kind}: {self.uri} (last modified {when}{size}{upload})"


def find_uncommitted(
    storage: str | Store,
    older_than: timedelta = DEFAULT_GRACE,
    *,
    now: datetime | None = None,
) -> list[Leftover]:
    """Everything under ``storage`` that interrupted writes left, older than ``older_than``.

    ``storage`` is a storage base URL (``s3://conn@bucket/prefix``,
    ``gs://...``, ``file:///...``) or a :class:`~taskflow_exclusive.storage.Store`.
    Reads only; see :func:`remove_uncommitted` to delete.
    """
    store = _store(storage)
    cutoff = _cutoff(older_than, now)
    files = _listing(store)
    manifests = {path[: -len(MANIFEST_SUFFIX)] for path in files if path.endswith(MANIFEST_SUFFIX)}
    found: list[Leftover] = []
    for path, info in sorted(files.items()):
        kind = _classify(path, manifests)
        if kind is None:
            continue
        modified = _modified(info)
        if modified is None or modified > cutoff:
            continue  # too recent (a write in progress), or of unknown age: left alone
        found.append(Leftover(kind, store.uri(path), path, modified, _size(info)))
    found.extend(_multipart_uploads(store, cutoff))
    return found


def remove_uncommitted(
    storage: str | Store,
    older_than: timedelta = DEFAULT_GRACE,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> list[Leftover]:
    """Delete what :func:`find_uncommitted` reports; return what was (or, dry, would be) removed.

    Just before deleting data or claims, the manifest is looked for once more:
    a value committed in the meantime is kept. Each removal is logged.
    """
    store = _store(storage)
    removed: list[Leftover] = []
    for leftover in find_uncommitted(store, older_than, now=now):
        if leftover.kind in (DATA, CLAIMS) and _committed_since(store, leftover):
            continue  # committed after the listing: a value, not a leftover
        if not dry_run and not _remove(store, leftover):
            continue
        log.info("%s %s", "Would remove" if dry_run else "Removed", leftover.describe())
        removed.append(leftover)
    return removed


# --- classifying entries -----------------------------------------------------------------------


def _classify(path: str, manifests: set[str]) -> str | None:
    folder, _, name = path.rpartition("/")
    parent = folder.rpartition("/")[2]
    if _TEMPORARY.match(name):
        return TEMPORARY
    if parent == _PROBE_FOLDER:
        return PROBE
    if parent.endswith(CLAIMS_SUFFIX) and _SLOT.match(name):
        stem_path = folder[: -len(CLAIMS_SUFFIX)]
        if _is_stem(stem_path.rpartition("/")[2]) and stem_path not in manifests:
            return CLAIMS
        return None
    if name.endswith(MANIFEST_SUFFIX) or not _is_data_path(path):
        return None
    return DATA if _stem_of(path) not in manifests else None


def _committed_since(store: Store, leftover: Leftover) -> bool:
    manifest = _stem_of(leftover.path) + MANIFEST_SUFFIX
    store.fs.invalidate_cache(manifest)  # ask the store, not a listing cached by find()
    return store.exists(manifest)


def _is_data_path(path: str) -> bool:
    try:
        ObjectPaths.from_data_path(path, uri=path)
    except IntegrityError:
        return False
    return True


def _is_stem(name: str) -> bool:
    return _is_data_path(f"folder/{name}.bin")


def _stem_of(path: str) -> str:
    """``folder/stem`` of a data path or of a claim slot path."""
    folder, _, name = path.rpartition("/")
    if folder.endswith(CLAIMS_SUFFIX):
        return folder[: -len(CLAIMS_SUFFIX)]
    return f"{folder}/{name.partition('.')[0]}"


# --- listing -----------------------------------------------------------------------------------


def _store(storage: str | Store) -> Store:
    return storage if isinstance(storage, Store) else Store.from_url(storage)


def _cutoff(older_than: timedelta, now: datetime | None) -> datetime:
    if older_than < timedelta(0):
        raise ValueError(f"older_than must not be negative, got {older_than}")
    return (now or datetime.now(timezone.utc)) - older_than


def _listing(store: Store) -> dict[str, dict[str, Any]]:
    """Every file below the store's base path, with its details."""
    base = store.location.path
    store.fs.invalidate_cache(base)
    try:
        found = store.fs.find(base, withdirs=False, detail=True)
    except FileNotFoundError:
        return {}
    return {str(path).rstrip("/"): info for path, info in found.items() if info.get("type") != "directory"}


def _modified(info: dict[str, Any]) -> datetime | None:
    """When an entry was last written, from whichever field its filesystem reports."""
    for key in ("LastModified", "mtime", "updated", "created"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value, timezone.utc)
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


def _size(info: dict[str, Any]) -> int | None:
    size = info.get("size", info.get("Size"))
    return int(size) if size is not None else None


def _is_s3(store: Store) -> bool:
    protocol = store.fs.protocol
    return "s3" in ((protocol,) if isinstance(protocol, str) else protocol)


def _multipart_uploads(store: Store, cutoff: datetime) -> list[Leftover]:
    """Unfinished multipart uploads of value data under the store's prefix (S3 only)."""
    if not _is_s3(store):
        return []
    bucket, _, prefix = store.location.path.strip("/").partition("/")
    prefix = f"{prefix}/" if prefix else ""
    found: list[Leftover] = []
    markers: dict[str, str] = {}
    while True:
        page = store.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix, **markers)
        for upload in page.get("Uploads", []):
            key, initiated = upload["Key"], upload["Initiated"]
            path = f"{bucket}/{key}"
            # The prefix is checked again: a server that ignored Prefix must not widen the sweep.
            if not key.startswith(prefix) or not _is_data_path(path):
                continue
            if initiated.tzinfo is None:
                initiated = initiated.replace(tzinfo=timezone.utc)
            if initiated <= cutoff:
                found.append(Leftover(MULTIPART, store.uri(path), path, initiated, None, upload["UploadId"]))
        if not page.get("IsTruncated"):
            return found
        markers = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}


def _remove(store: Store, leftover: Leftover) -> bool:
    if leftover.kind == MULTIPART:
        bucket, _, key = leftover.path.partition("/")
        try:
            store.fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=leftover.upload_id)
        except OSError as exc:  # completed or aborted since it was listed
            if isinstance(exc, FileNotFoundError) or _client_error_code(exc) == "NoSuchUpload":
                return False
            raise
        return True
    return store.remove([leftover.path]) > 0
