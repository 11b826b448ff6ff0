"""Finding and removing what interrupted writes leave behind, never a committed value.

A producer killed while it writes (SIGKILL, a lost node, an out-of-memory
kill) never commits: the manifest that makes a value claimable is published
only after its data is complete (see :mod:`taskflow_exclusive.publishing`).

The storage prefix may also hold files that are not ours, so an entry is a
leftover only if its whole path, relative to the storage base, is one this
library writes, at the right depth (see :mod:`taskflow_exclusive.storage.layout`).
Values are written to one of three folders::

    <dag_id>/<run_id>/<task_id>/<map_index>              stem try<N>-<uuid4 hex>
    <dag_id>/<run_id>/<task_id>/<map_index>/xcom/<key>   stem [try<N>-]<uuid4 hex>  (ExclusiveXCom)
    _local/<label>                                       stem <uuid4 hex>  (outside Airflow)

where each segment is exactly as :func:`~taskflow_exclusive.storage.layout.encode_segment`
writes it, ``<map_index>`` is ``-1`` or an integer without a leading zero,
and the stem's hex is a version-4 UUID as :func:`~taskflow_exclusive.storage.layout.new_stem`
makes it. In such a folder ``F``, what :func:`find_uncommitted` reports:

``data without manifest``
    ``F/<stem>.<ext>`` with no ``F/<stem>.manifest.json`` beside it, where
    ``<ext>`` is a registered serializer's extension, optionally followed by
    the suffix of an available compression codec: a write that never
    committed (on local disk, possibly a partial file).
``claims without value``
    ``F/<stem>.claims/<name>`` with ``<name>`` as
    :func:`~taskflow_exclusive.storage.layout.claim_name` makes it, when neither the
    manifest nor any ``F/<stem>.*`` data is left (an interrupted purge). Never
    in an ``xcom/<key>`` folder: an inline XCom's claims have no data object
    by design, so nothing proves they are orphans (Airflow's purge of the
    XCom removes them).
``temporary file``
    ``F/.<stem>.manifest.json.<uuid4 hex>.tmp`` or
    ``F/<stem>.claims/.<claim name>.<uuid4 hex>.tmp`` from an atomic local
    write (local disk only, where :mod:`taskflow_exclusive.storage.atomic` makes them).
``probe``
    ``F/.taskflow-exclusive-probe/<uuid4 hex>`` from an interrupted check that
    the server honours conditional creates (S3 and GCS only, where it runs).
``multipart upload``
    an S3 multipart upload of a ``data`` name, under the storage prefix, that
    was never completed or aborted (s3fs streams large values in parts).
    Uploads are listed with the prefix: never the whole bucket.

Everything else is never touched: manifests, committed values and their
claims, and any name or position the layout does not define, however much it
looks like one (32 hex digits one level down, a ``.tmp`` in a user's folder).
A value of a custom serializer is only recognised where that serializer is
registered (:func:`~taskflow_exclusive.register_serializer`).

Only entries older than the grace period ``older_than`` (by the store's
modification time, or an upload's initiation time) are reported, so a write
still in progress is left alone: make the grace period longer than your
longest write. Each :class:`Leftover` says which rule it matched.

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
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from taskflow_exclusive.storage.atomic import _client_error_code
from taskflow_exclusive.storage.layout import (
    CLAIMS_SUFFIX,
    LOCAL_FOLDER,
    MANIFEST_SUFFIX,
    claim_name,
    decode_segment,
    encode_segment,
    parse_claim_name,
)
from taskflow_exclusive.storage.store import Store

__all__ = ["DEFAULT_GRACE", "Leftover", "Sweep", "find_uncommitted", "remove_uncommitted"]

log = logging.getLogger("taskflow_exclusive.cleanup")

DEFAULT_GRACE = timedelta(hours=1)

DATA = "data without manifest"
CLAIMS = "claims without value"
TEMPORARY = "temporary file"
PROBE = "probe"
MULTIPART = "multipart upload"

_UUID4_HEX = r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}"  # uuid.uuid4().hex, as new_stem() writes it
_TRY = r"try[1-9][0-9]{0,5}-"
_MAP_INDEX = re.compile(r"-1|0|[1-9][0-9]{0,9}")
_PROBE_FOLDER = ".taskflow-exclusive-probe"  # atomic.ensure_create_is_atomic() probes in <folder>/<this>/
_XCOM_FOLDER = "xcom"  # xcom.XCOM_FOLDER (not imported: that module imports Airflow)
_UUID4 = re.compile(_UUID4_HEX)
_TEMPORARY = re.compile(rf"\.(?P<name>.+)\.{_UUID4_HEX}\.tmp")  # atomic._write_temporary()


@dataclass(frozen=True)
class Leftover:
    """One thing an interrupted write left behind.

    ``path`` is in the filesystem's own form, ``uri`` the full URL (with the
    connection id, no secrets); ``upload_id`` is set for multipart uploads.
    ``rule`` says which name of the layout the path matched and why it is not
    part of a committed value; ``older_than`` is the grace period it exceeded.
    """

    kind: str
    uri: str
    path: str
    modified: datetime
    size: int | None = None
    upload_id: str | None = None
    rule: str = ""
    older_than: timedelta | None = None

    def describe(self) -> str:
        size = "" if self.size is None else f", {self.size} bytes"
        upload = f", upload {self.upload_id}" if self.upload_id else ""
        when = self.modified.isoformat(timespec="seconds")
        rule = f" matches {self.rule}" if self.rule else ""
        age = f", older than {self.older_than}" if self.older_than is not None else ""
        return f"{self.kind}: {self.uri}{rule} (last modified {when}{age}{size}{upload})"


@dataclass
class Sweep:
    """What one cleanup looked at, for a summary (pass one in; it is filled in as the sweep goes).

    ``listed``: files under the prefix; ``leftovers``: those matching a
    leftover rule, of any age; ``recent``: leftovers younger than the grace
    period (kept); ``changed``: leftovers committed, or whose value came back,
    between the listing and their removal (kept).
    """

    listed: int = 0
    leftovers: int = 0
    recent: int = 0
    changed: int = 0


def find_uncommitted(
    storage: str | Store,
    older_than: timedelta = DEFAULT_GRACE,
    *,
    now: datetime | None = None,
    sweep: Sweep | None = None,
) -> list[Leftover]:
    """Everything under ``storage`` that interrupted writes left, older than ``older_than``.

    ``storage`` is a storage base URL (``s3://conn@bucket/prefix``,
    ``gs://...``, ``file:///...``) or a :class:`~taskflow_exclusive.storage.store.Store`.
    Reads only; see :func:`remove_uncommitted` to delete. ``sweep``, if given,
    counts what was listed and what was left alone.
    """
    store = _store(storage)
    sweep = sweep if sweep is not None else Sweep()
    cutoff = _cutoff(older_than, now)
    files = _listing(store)
    sweep.listed += len(files)
    base = store.location.path.rstrip("/")
    relative = {path: path[len(base) + 1 :] for path in files if path.startswith(base + "/")}
    layout = _Layout(store, relative.values())
    found: list[Leftover] = []
    for path, info in sorted(files.items()):
        match = layout.classify(relative[path]) if path in relative else None
        if match is None:
            continue
        sweep.leftovers += 1
        modified = _modified(info)
        if modified is None or modified > cutoff:
            sweep.recent += 1
            continue  # too recent (a write in progress), or of unknown age: left alone
        kind, rule = match
        found.append(Leftover(kind, store.uri(path), path, modified, _size(info), None, rule, older_than))
    found.extend(_multipart_uploads(store, layout, cutoff, older_than))
    return found


def remove_uncommitted(
    storage: str | Store,
    older_than: timedelta = DEFAULT_GRACE,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    sweep: Sweep | None = None,
    on_entry: Callable[[Leftover], object] | None = None,
    progress: Callable[[int, int], object] | None = None,
) -> list[Leftover]:
    """Delete what :func:`find_uncommitted` reports; return what was (or, dry, would be) removed.

    Just before deleting data, its manifest is looked for once more, and
    before deleting claims, the value's manifest and data: a value committed
    (or a purge not yet past the data) since the listing is kept. Each removal
    is logged with the rule it matched (a dry run changes nothing and logs
    only at DEBUG). For long sweeps, ``on_entry(leftover)`` is called as each
    one is (or would be) removed and ``progress(done, total)`` after each
    leftover considered; ``sweep`` counts what was kept and why.
    """
    store = _store(storage)
    sweep = sweep if sweep is not None else Sweep()
    removed: list[Leftover] = []
    found = find_uncommitted(store, older_than, now=now, sweep=sweep)
    for done, leftover in enumerate(found, start=1):
        if progress is not None:
            progress(done, len(found))
        if (leftover.kind == DATA and _manifest_exists(store, leftover.path)) or (
            leftover.kind == CLAIMS and _value_exists(store, leftover.path)
        ):
            sweep.changed += 1  # committed since the listing, or its value is back: not a leftover
            continue
        if not dry_run and not _remove(store, leftover):
            sweep.changed += 1  # an upload completed or aborted since it was listed
            continue
        log.log(
            logging.DEBUG if dry_run else logging.INFO,
            "%s %s",
            "Would remove" if dry_run else "Removed",
            leftover.describe(),
        )
        removed.append(leftover)
        if on_entry is not None:
            on_entry(leftover)
    return removed


# --- the layout, exactly -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Folder:
    """A folder values are written to: its rule for messages, and which stems it holds."""

    rule: str
    stem: re.Pattern[str]
    orphan_claims_provable: bool


_TASK = _Folder("<dag_id>/<run_id>/<task_id>/<map_index>", re.compile(f"{_TRY}{_UUID4_HEX}"), True)
_XCOM = _Folder(
    f"<dag_id>/<run_id>/<task_id>/<map_index>/{_XCOM_FOLDER}/<key>",
    re.compile(f"(?:{_TRY})?{_UUID4_HEX}"),
    False,  # inline XComs keep claims without any data object
)
_LOCAL = _Folder(f"{LOCAL_FOLDER}/<label>", re.compile(_UUID4_HEX), True)
_STEM_TEXT = {_TASK: "try<N>-<uuid4 hex>", _XCOM: "[try<N>-]<uuid4 hex>", _LOCAL: "<uuid4 hex>"}


def _is_segment(segment: str) -> bool:
    """Whether ``segment`` is exactly what encode_segment() writes for some text."""
    return encode_segment(decode_segment(segment)) == segment


def _value_folder(parts: list[str]) -> _Folder | None:
    if len(parts) == 2 and parts[0] == LOCAL_FOLDER and _is_segment(parts[1]):
        return _LOCAL
    if (
        len(parts) not in (4, 6)
        or not all(_is_segment(p) for p in parts[:3])
        or not _MAP_INDEX.fullmatch(parts[3])
    ):
        return None
    if len(parts) == 4:
        return _TASK
    return _XCOM if parts[4] == _XCOM_FOLDER and _is_segment(parts[5]) else None


def _is_claim_name(name: str) -> bool:
    """Whether ``name`` is exactly what claim_name() writes (a claim record or release marker)."""
    parsed = parse_claim_name(name)
    return parsed is not None and claim_name(parsed[0], parsed[1], released=parsed[2]) == name


def _data_extensions() -> dict[str, str]:
    """Every extension a value's data may have, with what writes it (from the registries)."""
    from taskflow_exclusive.formats import compression as codecs
    from taskflow_exclusive.formats.serializers import available_serializers, get_serializer

    extensions: dict[str, str] = {}
    compressions = {codec: codecs.extension_for(codec) for codec in codecs.available_compressions()}
    for name in available_serializers():
        extension = get_serializer(name).extension
        extensions.setdefault(extension, f"serializer {name!r}")
        for codec, suffix in compressions.items():
            extensions.setdefault(f"{extension}.{suffix}", f"serializer {name!r} with {codec} compression")
    return extensions


class _Layout:
    """Classifies paths relative to the storage base; knows every file listed beside them."""

    def __init__(self, store: Store, relative_paths: Any) -> None:
        self.local = store.is_local
        self.probed = _atomic_kind(store) in ("s3", "gs")
        self.extensions = _data_extensions()
        self.files_in: dict[str, set[str]] = defaultdict(set)
        for relative in relative_paths:
            folder, _, name = relative.rpartition("/")
            self.files_in[folder].add(name)

    def classify(self, relative: str) -> tuple[str, str] | None:
        """``(kind, rule)`` when ``relative`` is a leftover by the exact layout, else ``None``."""
        parts = relative.split("/")
        if len(parts) >= 2:
            found = _value_folder(parts[:-1])
            if found is not None:
                return self._in_value_folder(found, "/".join(parts[:-1]), parts[-1])
        if len(parts) >= 3:
            found = _value_folder(parts[:-2])
            if found is not None:
                return self._in_subfolder(found, "/".join(parts[:-2]), parts[-2], parts[-1])
        return None

    def data_name(self, relative: str) -> tuple[str, str] | None:
        """``(rule, stem)`` when ``relative`` is a data name of the layout."""
        parts = relative.split("/")
        found = _value_folder(parts[:-1]) if len(parts) >= 2 else None
        if found is None:
            return None
        stem, _, extension = parts[-1].partition(".")
        if not found.stem.fullmatch(stem) or extension not in self.extensions:
            return None
        return f"{found.rule}/{_STEM_TEXT[found]}.<ext> (.{extension}: {self.extensions[extension]})", stem

    def _in_value_folder(self, found: _Folder, folder: str, name: str) -> tuple[str, str] | None:
        data = self.data_name(f"{folder}/{name}")
        if data is not None:
            rule, stem = data
            if f"{stem}{MANIFEST_SUFFIX}" in self.files_in[folder]:
                return None  # committed
            return DATA, f"{rule}, with no {stem}{MANIFEST_SUFFIX} beside it"
        temporary = _TEMPORARY.fullmatch(name)
        target = temporary["name"] if temporary and self.local else ""
        if target.endswith(MANIFEST_SUFFIX) and found.stem.fullmatch(target[: -len(MANIFEST_SUFFIX)]):
            rule = f"{found.rule}/.{_STEM_TEXT[found]}{MANIFEST_SUFFIX}.<uuid4 hex>.tmp"
            return TEMPORARY, f"{rule} (an atomic local write of a manifest)"
        return None

    def _in_subfolder(self, found: _Folder, folder: str, middle: str, name: str) -> tuple[str, str] | None:
        if middle == _PROBE_FOLDER:
            if self.probed and _UUID4.fullmatch(name):
                return PROBE, f"{found.rule}/{_PROBE_FOLDER}/<uuid4 hex> (a conditional-create probe)"
            return None
        stem = middle[: -len(CLAIMS_SUFFIX)] if middle.endswith(CLAIMS_SUFFIX) else ""
        return self._in_claims_folder(found, folder, stem, name) if found.stem.fullmatch(stem) else None

    def _in_claims_folder(self, found: _Folder, folder: str, stem: str, name: str) -> tuple[str, str] | None:
        claims_folder = f"{found.rule}/{_STEM_TEXT[found]}{CLAIMS_SUFFIX}"
        temporary = _TEMPORARY.fullmatch(name)
        if temporary is not None:
            if self.local and _is_claim_name(temporary["name"]):
                return TEMPORARY, f"{claims_folder}/.<claim name>.<uuid4 hex>.tmp (an atomic local write)"
            return None
        if not _is_claim_name(name) or not found.orphan_claims_provable:
            return None
        if any(sibling.startswith(f"{stem}.") for sibling in self.files_in[folder]):
            return None  # the manifest or data is still there: claims of a value, or of one being purged
        rule = f"{claims_folder}/slot-<i>[.g<k>][.released].json"
        return CLAIMS, f"{rule}, and neither {stem}{MANIFEST_SUFFIX} nor {stem}.<ext> is left"


def _manifest_exists(store: Store, data_path: str) -> bool:
    folder, _, name = data_path.rpartition("/")
    manifest = f"{folder}/{name.partition('.')[0]}{MANIFEST_SUFFIX}"
    store.fs.invalidate_cache(manifest)  # ask the store, not a listing cached by find()
    return store.exists(manifest)


def _value_exists(store: Store, claim_path: str) -> bool:
    """Whether the manifest or any data of the value owning ``claim_path`` exists now."""
    claims_folder = claim_path.rpartition("/")[0]
    folder, _, middle = claims_folder.rpartition("/")
    stem = middle[: -len(CLAIMS_SUFFIX)]
    store.fs.invalidate_cache(folder)
    return any(
        entry.rpartition("/")[2].startswith(f"{stem}.") and entry.rstrip("/") != claims_folder
        for entry in store.list_folder(folder)
    )


def _atomic_kind(store: Store) -> str | None:
    from taskflow_exclusive.storage.atomic import _kind

    return _kind(store.fs)


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


def _multipart_uploads(
    store: Store, layout: _Layout, cutoff: datetime, older_than: timedelta
) -> list[Leftover]:
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
            # The prefix is checked again: a server that ignored Prefix must not widen the sweep.
            data = layout.data_name(key[len(prefix) :]) if key.startswith(prefix) else None
            if data is None:
                continue
            if initiated.tzinfo is None:
                initiated = initiated.replace(tzinfo=timezone.utc)
            if initiated <= cutoff:
                path = f"{bucket}/{key}"
                rule = f"{data[0]}, never completed"
                found.append(
                    Leftover(
                        MULTIPART,
                        store.uri(path),
                        path,
                        initiated,
                        None,
                        upload["UploadId"],
                        rule,
                        older_than,
                    )
                )
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
