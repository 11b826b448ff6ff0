"""Claim ledgers: which consumer holds which value.

``open_ledger(spec, store)`` turns what a handle records (``None`` for the
object store holding the value, or a URL such as ``redis://host:6379/0``)
into a :class:`ClaimLedger`. Ledgers for other schemes register a factory
with :func:`register_ledger`.

Example::

    >>> from taskflow_exclusive.storage import Store
    >>> open_ledger(None, Store.from_url("memory://docs")).describe()
    'object store memory:///docs'
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from taskflow_exclusive.claims.base import ClaimLedger, ClaimRecord
from taskflow_exclusive.errors import StorageConfigError

if TYPE_CHECKING:
    from taskflow_exclusive.storage import Store

__all__ = ["ClaimLedger", "ClaimRecord", "open_ledger", "register_ledger"]

LedgerFactory = Callable[[str], ClaimLedger]

_factories: dict[str, LedgerFactory] = {}
_lock = threading.Lock()


def register_ledger(scheme: str, factory: LedgerFactory) -> None:
    """Make ``claims='<scheme>://...'`` open a ledger through ``factory(spec)``."""
    with _lock:
        _factories[scheme.lower()] = factory


def open_ledger(spec: str | None, store: Store, source: str = "handle") -> ClaimLedger:
    """The ledger named by ``spec``; ``None`` or ``"store"`` is the object store itself."""
    if spec in (None, "", "store"):
        from taskflow_exclusive.claims.objectstore import ObjectStoreLedger

        return ObjectStoreLedger(store)
    scheme = spec.split("://", 1)[0].split("+", 1)[0].lower() if "://" in spec else ""
    with _lock:
        factory = _factories.get(scheme)
    if factory is None:
        known = ", ".join(sorted(["store", *(f"{s}://" for s in _factories)]))
        raise StorageConfigError(
            f"Unknown claim ledger {spec!r} (from {source}). Known: {known}.",
            url=spec,
            source=source,
        )
    return factory(spec)
