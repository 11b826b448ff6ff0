"""The default claim ledger: claim records beside the value, in the object store itself.

Slot ``i`` of a value is the object ``<stem>.claims/slot-<i>.json`` next to
the value, created with the store's atomic create-if-absent (``os.link`` on
local disk, ``If-None-Match: *`` on S3, ``ifGenerationMatch=0`` on GCS; see
:mod:`taskflow_exclusive.atomic`). Before the first claim on an S3 or GCS
bucket, the ledger checks once per process that the server really refuses a
second create, and refuses to work (:class:`StorageConfigError`) if it does not.

Crash semantics: a claim record is complete the moment it exists; a consumer
killed after claiming keeps its claim, and its retry (same consumer id) gets
the value again.

Example::

    >>> from taskflow_exclusive.storage import Store
    >>> ledger = ObjectStoreLedger(Store.from_url("memory://docs"))
    >>> ledger.claim("memory:///docs/_local/x/" + "0" * 32 + ".bin", "me").consumer_id
    'me'
"""

from __future__ import annotations

from taskflow_exclusive import atomic
from taskflow_exclusive.claims.base import ClaimLedger, ClaimRecord, reaching
from taskflow_exclusive.errors import ExclusiveError
from taskflow_exclusive.filesystems import parse_storage_url
from taskflow_exclusive.layout import ObjectPaths
from taskflow_exclusive.storage import Store

__all__ = ["ObjectStoreLedger"]


class ObjectStoreLedger(ClaimLedger):
    """Claims as create-if-absent objects beside the value they guard."""

    spec = "store"

    def __init__(self, store: Store) -> None:
        self.store = store

    def describe(self) -> str:
        location = self.store.location
        where = (
            location.path.strip("/").split("/", 1)[0] if location.protocol not in ("file", "memory") else ""
        )
        conn = f"{location.conn_id}@" if location.conn_id else ""
        return f"object store {location.protocol}://{conn}{where} (claim records beside the value)"

    def _paths(self, uri: str) -> ObjectPaths:
        location = parse_storage_url(uri, source="handle")
        if not location.same_filesystem(self.store.location):
            raise ExclusiveError(f"{uri} is not on the ledger's store {self.store.describe()}")
        return ObjectPaths.from_data_path(location.path, uri=uri)

    def _create_or_get(self, uri: str, slot: int, record: ClaimRecord) -> ClaimRecord | None:
        paths = self._paths(uri)
        path = paths.claim_slot(slot)
        with reaching(self.describe(), uri):
            atomic.ensure_create_is_atomic(self.store.fs, paths.folder, self.store.describe())
            if self.store.create_if_absent(path, record.to_json()):
                return record
            existing = self.store.read_small(path)
        return None if existing is None else ClaimRecord.from_json(existing)

    def _read(self, uri: str, slot: int) -> ClaimRecord | None:
        with reaching(self.describe(), uri):
            existing = self.store.read_small(self._paths(uri).claim_slot(slot))
        return None if existing is None else ClaimRecord.from_json(existing)

    def _delete(self, uri: str, slot: int) -> bool:
        with reaching(self.describe(), uri):
            return self.store.remove([self._paths(uri).claim_slot(slot)]) > 0
