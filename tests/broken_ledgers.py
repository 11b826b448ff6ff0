"""Deliberately broken ledgers: the negative controls of the race harnesses.

A race test that passes means something only if the same harness catches a
ledger that is wrong. Two such ledgers, on local disk, registered as claim
ledger schemes so that handles can name them (``claims=...``) and spawned
workers open them like any other:

- ``broken-check-then-write://<folder>``: claims by "if the record does not
  exist, write it" (two steps, the race every real ledger avoids);
- ``broken-blind-release://<folder>``: claims correctly, but releases by
  deleting whatever the slot holds, without comparing it to the record the
  release read (what the ledgers did before compare-and-delete);
- ``broken-no-repair://<folder>``: a consumer whose concurrent tries landed
  in two slots keeps both (the ledger skips freeing all but the lowest);
- ``slow-release://<folder>``: the real ledger, correct, with the same delay
  before each release as the broken one, for comparison.

A release reads, then deletes: on local disk the two are microseconds apart,
on S3 or a database a round trip. The release ledgers here wait
``RELEASE_LATENCY`` (5 ms, a remote store's round trip) between the two, so
that a race harness sees the window a remote store has; the slowed correct
ledger shows the same window is harmless with compare-and-delete.

Importing this module registers both (tests/racing.py and
tests/edge_racing.py import it, so their workers know the schemes).
"""

from __future__ import annotations

import time

from taskflow_exclusive.claims import register_ledger
from taskflow_exclusive.claims.base import ClaimLedger, ClaimRecord
from taskflow_exclusive.claims.objectstore import ObjectStoreLedger
from taskflow_exclusive.storage.store import Store

CHECK_THEN_WRITE = "broken-check-then-write"
BLIND_RELEASE = "broken-blind-release"
SLOW_RELEASE = "slow-release"
NO_REPAIR = "broken-no-repair"
RELEASE_LATENCY = 0.005


class _OnLocalDisk(ClaimLedger):
    """The real object-store ledger, with one primitive to be broken by a subclass.

    Not an ObjectStoreLedger itself, so that handles record this ledger's spec.
    """

    def __init__(self, spec: str, store: Store) -> None:
        self.spec, self.real = spec, ObjectStoreLedger(store)

    def describe(self) -> str:
        return f"deliberately broken ledger {self.spec}"

    def _create_or_get(self, uri: str, slot: int, record: ClaimRecord) -> ClaimRecord | None:
        return self.real._create_or_get(uri, slot, record)

    def _list(self, uri: str) -> list[ClaimRecord]:
        return self.real._list(uri)

    def _delete_if_held(self, uri: str, record: ClaimRecord) -> bool:
        return self.real._delete_if_held(uri, record)

    def _forget(self, uri: str) -> int:
        return self.real._forget(uri)


class CheckThenWriteLedger(_OnLocalDisk):
    """Looks, then writes: two consumers that both look before either writes both win."""

    def _create_or_get(self, uri: str, slot: int, record: ClaimRecord) -> ClaimRecord | None:
        path = self.real._paths(uri).claim_record(slot)
        store = self.real.store
        if store.exists(path):
            return self.real._record_at(path)
        store.fs.makedirs(path.rpartition("/")[0], exist_ok=True)
        with store.fs.open(path, "wb") as target:
            target.write(record.to_json())
        return record


class BlindReleaseLedger(_OnLocalDisk):
    """Releases by deleting slot 0's record file, whoever it belongs to by then; claims reuse it."""

    def _create_or_get(self, uri: str, slot: int, record: ClaimRecord) -> ClaimRecord | None:
        path = self.real._paths(uri).claim_record(slot)
        if self.real.store.create_if_absent(path, record.to_json()):
            return record
        return self.real._record_at(path)

    def _list(self, uri: str) -> list[ClaimRecord]:
        found = self.real._record_at(self.real._paths(uri).claim_record(0))
        return [found] if found is not None else []

    def _delete_if_held(self, uri: str, record: ClaimRecord) -> bool:
        time.sleep(RELEASE_LATENCY)
        return self.real.store.remove([self.real._paths(uri).claim_record(record.slot)]) > 0


class NoRepairLedger(_OnLocalDisk):
    """Keeps every slot a consumer's racing tries took."""

    def _keep_lowest(self, uri: str, mine: list[ClaimRecord]) -> ClaimRecord:
        return mine[0]


class SlowReleaseLedger(_OnLocalDisk):
    """The real ledger with the broken one's delay before each compare-and-delete."""

    def _delete_if_held(self, uri: str, record: ClaimRecord) -> bool:
        time.sleep(RELEASE_LATENCY)
        return self.real._delete_if_held(uri, record)


def _opener(cls: type[_OnLocalDisk], scheme: str):
    def open_broken(spec: str) -> ClaimLedger:
        return cls(spec, Store.from_url("file://" + spec[len(scheme) + 3 :]))

    return open_broken


register_ledger(CHECK_THEN_WRITE, _opener(CheckThenWriteLedger, CHECK_THEN_WRITE))
register_ledger(BLIND_RELEASE, _opener(BlindReleaseLedger, BLIND_RELEASE))
register_ledger(SLOW_RELEASE, _opener(SlowReleaseLedger, SLOW_RELEASE))
register_ledger(NO_REPAIR, _opener(NoRepairLedger, NO_REPAIR))


def spec(scheme: str, storage_url: str) -> str:
    """The claims spec of a broken ledger over the local storage at ``storage_url``."""
    return f"{scheme}://{storage_url[len('file://') :]}"
