"""The default claim ledger: claim records beside the value, in the object store itself.

Slot ``i`` of a value is held by an object in ``<stem>.claims/`` next to the
value, created with the store's atomic create-if-absent (``os.link`` on local
disk, ``If-None-Match: *`` on S3, ``ifGenerationMatch=0`` on GCS; see
:mod:`taskflow_exclusive.storage.atomic`). Before the first claim on an S3 or GCS
bucket, the ledger checks once per process that the server really refuses a
second create, and refuses to work (:class:`StorageConfigError`) if it does not.

Records are never overwritten or deleted while the value lives, because an
object store has no portable compare-and-delete. Instead each slot has
generations: the first holder of slot ``i`` creates ``slot-<i>.json``; a
release creates the marker ``slot-<i>.released.json`` (create-if-absent
again, so two releases of one holder free the slot once); the next holder
creates ``slot-<i>.g1.json``, and so on. The live record of a slot is its
highest generation without a marker. Every step is one atomic create, so a
release can only ever free the very record it read.

Crash semantics: a claim record is complete the moment it exists; a consumer
killed after claiming keeps its claim, and its retry (same consumer id) gets
the value again.

Example::

    >>> from taskflow_exclusive.storage.store import Store
    >>> ledger = ObjectStoreLedger(Store.from_url("memory://docs"))
    >>> ledger.claim("memory:///docs/_local/x/" + "0" * 32 + ".bin", "me").consumer_id
    'me'
"""

from __future__ import annotations

from taskflow_exclusive.claims.base import ClaimLedger, ClaimRecord, reaching
from taskflow_exclusive.errors import ExclusiveError
from taskflow_exclusive.storage import atomic
from taskflow_exclusive.storage.filesystems import parse_storage_url
from taskflow_exclusive.storage.layout import ObjectPaths, parse_claim_name
from taskflow_exclusive.storage.store import Store

__all__ = ["ObjectStoreLedger"]

#: Value URIs whose parsed paths a ledger keeps (parsing is a fifth of a local claim's own work).
_KNOWN_PATHS_LIMIT = 1024


class ObjectStoreLedger(ClaimLedger):
    """Claims as create-if-absent objects beside the value they guard."""

    spec = "store"

    def __init__(self, store: Store) -> None:
        self.store = store
        self._known_paths: dict[str, ObjectPaths] = {}

    def describe(self) -> str:
        location = self.store.location
        where = (
            location.path.strip("/").split("/", 1)[0] if location.protocol not in ("file", "memory") else ""
        )
        conn = f"{location.conn_id}@" if location.conn_id else ""
        return f"object store {location.protocol}://{conn}{where} (claim records beside the value)"

    def _paths(self, uri: str) -> ObjectPaths:
        known = self._known_paths.get(uri)
        if known is None:
            if len(self._known_paths) >= _KNOWN_PATHS_LIMIT:
                self._known_paths.clear()
            known = self._known_paths[uri] = self._parse_paths(uri)
        return known

    def _parse_paths(self, uri: str) -> ObjectPaths:
        # ``<value uri>#<scope>`` names another set of claims on the value (a hand-off's).
        value_uri, _, scope = uri.partition("#")
        location = parse_storage_url(value_uri, source="handle")
        if not location.same_filesystem(self.store.location):
            raise ExclusiveError(f"{uri} is not on the ledger's store {self.store.describe()}")
        paths = ObjectPaths.from_data_path(location.path, uri=value_uri)
        return paths.scoped(scope) if scope else paths

    def _create_or_get(self, uri: str, slot: int, record: ClaimRecord) -> ClaimRecord | None:
        paths = self._paths(uri)
        with reaching(self.describe(), uri):
            atomic.ensure_create_is_atomic(self.store.fs, paths.folder, self.store.describe())
            generation = 0
            while True:
                path = paths.claim_record(slot, generation)
                if self.store.create_if_absent(path, record.to_json()):
                    return record
                existing = self._record_at(path)
                if existing is None:
                    return None  # the value's claims were purged under us
                if not self._is_released(paths, slot, generation):
                    return existing
                generation += 1  # that holder was released: the slot is free one generation on

    def _list(self, uri: str) -> list[ClaimRecord]:
        paths = self._paths(uri)
        with reaching(self.describe(), uri):
            names = [entry.rpartition("/")[2] for entry in self.store.list_folder(paths.claims_folder)]
            newest: dict[int, int] = {}
            released: set[tuple[int, int]] = set()
            for parsed in filter(None, map(parse_claim_name, names)):
                slot, generation, is_marker = parsed
                if is_marker:
                    released.add((slot, generation))
                else:
                    newest[slot] = max(generation, newest.get(slot, 0))
            holders = []
            for slot, generation in sorted(newest.items()):
                if (slot, generation) in released:
                    continue
                record = self._record_at(paths.claim_record(slot, generation))
                if record is not None:
                    holders.append(record)
        return holders

    def _delete_if_held(self, uri: str, record: ClaimRecord) -> bool:
        paths = self._paths(uri)
        with reaching(self.describe(), uri):
            generation = 0
            while True:
                stored = self._record_at(paths.claim_record(record.slot, generation))
                if stored is None:
                    return False  # the slot is free (or purged): nothing of this record to release
                if not self._is_released(paths, record.slot, generation):
                    marker = paths.release_marker(record.slot, generation)
                    return record.same_claim(stored) and self.store.create_if_absent(marker, b"{}")
                generation += 1

    def _forget(self, uri: str) -> int:
        folder = self._paths(uri).claims_folder
        removed = 0
        with reaching(self.describe(), uri):
            # A claim racing the purge may create a record while the folder is being removed
            # (its claimer then finds the value gone); look again, and leave what still
            # appears to `taskflow-exclusive cleanup` rather than fail the purge.
            for _ in range(3):
                # Records, and those of scoped claims (hand-offs) in subfolders; the folders go below.
                removed += self.store.remove(_files_under(self.store, folder))
                try:
                    self.store.remove([folder], recursive=True)
                    break
                except OSError:
                    continue
        return removed

    def _is_released(self, paths: ObjectPaths, slot: int, generation: int) -> bool:
        # A GET, not exists(): on S3/GCS exists() falls back to listing the folder for a missing key.
        return self.store.read_small(paths.release_marker(slot, generation)) is not None

    def _record_at(self, path: str) -> ClaimRecord | None:
        raw = self.store.read_small(path)
        return None if raw is None else ClaimRecord.from_json(raw, where=self.store.uri(path))


def _files_under(store: Store, folder: str) -> list[str]:
    """Every file below ``folder``, at any depth (empty when it does not exist)."""
    store.fs.invalidate_cache(folder)  # s3fs and gcsfs list from a cache otherwise
    try:
        return [str(path) for path in store.fs.find(folder)]
    except FileNotFoundError:
        return []
