"""Claiming a value: verify the handle, record the claim, read and check the bytes.

The order matters, and each step refuses rather than guesses:

1. The handle's URI must name an object this library would write
   (``<stem>.<ext>``, see :mod:`taskflow_exclusive.storage.layout`), and the manifest
   the producer published beside it must exist and match the handle field
   for field. A forged handle pointing at any other object is refused
   before a claim is recorded.
2. The claim is recorded atomically in the ledger that guards the value.
3. The bytes are read and checked against ``size`` and ``digest`` (BLAKE3, or
   sha256 for a handle written before #13); only then are they decompressed
   and deserialized (pickle included).

Example::

    >>> from taskflow_exclusive import publish
    >>> from taskflow_exclusive.consuming import claim_value
    >>> claim_value(publish("text", storage="memory://docs"), "me")
    'text'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskflow_exclusive.claims import open_ledger
from taskflow_exclusive.errors import (
    AlreadyClaimedError,
    ClaimError,
    ClaimStoreConfigError,
    ClaimStoreUnavailableError,
    IntegrityError,
)
from taskflow_exclusive.formats import compression as codecs
from taskflow_exclusive.formats.serializers import get_serializer
from taskflow_exclusive.handle import ExclusiveHandle
from taskflow_exclusive.identity import default_consumer_id
from taskflow_exclusive.signing import optional_signing_keys, signatures_required, signing_keys
from taskflow_exclusive.storage.filesystems import parse_storage_url
from taskflow_exclusive.storage.layout import ObjectPaths
from taskflow_exclusive.storage.store import Store

if TYPE_CHECKING:
    from taskflow_exclusive.claims.base import ClaimLedger, ClaimRecord

__all__ = [
    "check_signature",
    "claim_value",
    "load_verified",
    "purge_value",
    "read_value",
    "record_claim",
    "release_claim",
    "value_holders",
]


def _locate(handle: ExclusiveHandle) -> tuple[Store, ObjectPaths]:
    if not isinstance(handle, ExclusiveHandle):
        raise TypeError(f"expected an ExclusiveHandle, got {type(handle).__name__}")
    check_signature(handle)  # before the store is touched
    location = parse_storage_url(handle.uri, source="handle")
    paths = ObjectPaths.from_data_path(location.path, uri=handle.uri)
    return Store(location), paths


def check_signature(handle: ExclusiveHandle) -> None:
    """Refuse a handle whose signature does not verify, or an unsigned one when signatures are required.

    A signed handle is checked whenever this process has the keyring; with
    ``[taskflow_exclusive] require_signed_handles`` an unsigned handle, or one
    that cannot be checked (no keyring), is refused too. Raised as
    :class:`IntegrityError` before anything is read or claimed.
    """
    required = signatures_required()
    keys = signing_keys() if required else optional_signing_keys()
    if handle.signature is None or handle.key_id is None:
        if required:
            raise IntegrityError(
                f"The handle for {handle.uri} is not signed, and this deployment requires signed "
                "handles ([taskflow_exclusive] require_signed_handles). It was written before a "
                "signing key was configured, or forged. Nothing was read or claimed.",
                uri=handle.uri,
                expected="a signed handle",
                actual="unsigned",
            )
        return
    if keys is None:
        return  # no keyring here: a signed handle is as trusted as an unsigned one
    if not keys.verify(handle.key_id, handle.signed_bytes(), handle.signature):
        known = "" if keys.knows(handle.key_id) else f" (key {handle.key_id!r} is not in the keyring)"
        raise IntegrityError(
            f"The handle for {handle.uri} does not match its signature{known}: it was altered or "
            "forged after the producer signed it. Nothing was read or claimed.",
            uri=handle.uri,
            expected=f"a valid signature by key {handle.key_id!r}",
            actual="a signature that does not verify",
        )


def _verify_manifest(store: Store, paths: ObjectPaths, handle: ExclusiveHandle) -> None:
    raw = store.read_small(paths.manifest)
    if raw is None:
        raise store.missing(handle.uri, handle.host)
    try:
        committed = ExclusiveHandle.from_json(raw, where=f"the manifest of {handle.uri}")
    except (ValueError, TypeError) as exc:
        raise IntegrityError(
            f"The manifest of {handle.uri} is unreadable ({exc}); the value was not returned.",
            uri=handle.uri,
            expected="a JSON manifest",
            actual=str(exc),
        ) from exc
    if committed != handle:
        promised, written = handle.to_dict(), committed.to_dict()  # either may lack a field (sha256)
        differing = sorted(
            name for name in promised.keys() | written.keys() if promised.get(name) != written.get(name)
        )
        raise IntegrityError(
            f"The handle for {handle.uri} does not match the manifest its producer wrote "
            f"(fields {', '.join(differing)} differ): the handle was altered or forged. "
            "The value was not returned and no claim was recorded.",
            uri=handle.uri,
            expected={name: written.get(name) for name in differing},
            actual={name: promised.get(name) for name in differing},
        )


def _ledger(handle: ExclusiveHandle, store: Store) -> ClaimLedger:
    return open_ledger(handle.claims, store)


def load_verified(
    handle: ExclusiveHandle, store: Store | None = None, paths: ObjectPaths | None = None
) -> Any:
    """Read, check and deserialize the value, without claiming it (internal use)."""
    if store is None or paths is None:
        store, paths = _locate(handle)
    serializer = get_serializer(handle.serializer)
    data = store.read_verified(
        paths.data,
        size=handle.size,
        digest=handle.digest,
        uri=handle.uri,
        written_on=handle.host,
        writable=serializer.loads_in_place and not handle.compression,
    )
    if handle.compression:
        data = codecs.decompress(handle.compression, data)
    return serializer.load(data)


def read_value(handle: ExclusiveHandle) -> Any:
    """The value behind ``handle``, verified like a claim but without claiming it.

    For readers that are not consumers (the XCom backend's ordinary pulls).
    """
    store, paths = _locate(handle)
    _verify_manifest(store, paths, handle)
    return load_verified(handle, store, paths)


def claim_value(handle: ExclusiveHandle, consumer_id: str | None = None) -> Any:
    """Claim the value behind ``handle`` for ``consumer_id`` and return it."""
    store, paths = _locate(handle)
    consumer = consumer_id if consumer_id is not None else default_consumer_id()
    record_claim(handle, consumer, store=store, paths=paths)
    return load_verified(handle, store, paths)


def record_claim(
    handle: ExclusiveHandle,
    consumer_id: str,
    *,
    uri: str | None = None,
    max_claims: int | None = None,
    store: Store | None = None,
    paths: ObjectPaths | None = None,
) -> ClaimRecord:
    """Verify the handle against its manifest, then record ``consumer_id``'s claim; read nothing.

    ``uri`` (default: the value's) and ``max_claims`` (default: the handle's)
    name another claim on the same value in the same ledger, such as the
    child's side of a hand-off (:mod:`taskflow_exclusive.grants`).
    """
    if store is None or paths is None:
        store, paths = _locate(handle)
    _verify_manifest(store, paths, handle)
    try:
        return _ledger(handle, store).claim(
            uri or handle.uri, consumer_id, handle.max_claims if max_claims is None else max_claims
        )
    except (AlreadyClaimedError, ClaimStoreUnavailableError, ClaimStoreConfigError):
        raise
    except ClaimError as exc:
        # The claim records changed under us in a way no live value's do: a purge is removing
        # them. If the manifest is gone, say what happened rather than "unexpected".
        if store.read_small(paths.manifest) is None:
            raise store.missing(handle.uri, handle.host) from exc
        raise


def value_holders(handle: ExclusiveHandle, uri: str | None = None) -> list[ClaimRecord]:
    """Who holds the value (or, with ``uri``, another claim on it such as a hand-off's)."""
    store, _ = _locate(handle)
    return _ledger(handle, store).holders(uri or handle.uri)


def release_claim(handle: ExclusiveHandle, consumer_id: str, *, reason: str) -> ClaimRecord | None:
    store, _ = _locate(handle)
    return _ledger(handle, store).release(handle.uri, consumer_id, reason=reason)


def purge_value(handle: ExclusiveHandle) -> int:
    """Delete the value: its manifest first, then its data, then every claim on it.

    The manifest is the commit marker, so it goes first. A purge killed at any
    point leaves either the whole committed value with its claims (a holder
    still refuses everyone else) or no manifest (every claim, by anyone, ends
    in :class:`ObjectMissingError`): never a committed value without its
    claims. What an interrupted purge leaves is removed by
    ``taskflow-exclusive cleanup``. Returns how many objects and records went.
    """
    from taskflow_exclusive.grants import handoff_uris

    store, paths = _locate(handle)
    ledger = _ledger(handle, store)
    handed_off = handoff_uris(handle.uri, ledger.holders(handle.uri))
    removed = store.remove([paths.manifest])
    removed += store.remove([paths.data])
    # The children's claims of a handed-off value first: the hand-off records name them.
    removed += sum(ledger.forget(uri) for uri in handed_off)
    return removed + ledger.forget(handle.uri)
