"""Claim ledgers: which consumer holds which value.

``open_ledger(spec, store)`` turns what a handle records (``None`` for the
object store holding the value, a URL such as ``redis://host:6379/0`` or
``postgresql://host/db``, or an Airflow connection id) into a
:class:`ClaimLedger`. Built in: Redis (``redis://``, ``rediss://``) and SQL
(``postgresql://``, ``mysql://``, ``mariadb://``, ``sqlite://``, with any
``+driver``); a connection id's ``conn_type`` picks one of them (see
:mod:`taskflow_exclusive.claims.specs`). Ledgers for other schemes register
a factory with :func:`register_ledger`.

Example::

    >>> from taskflow_exclusive.storage.store import Store
    >>> open_ledger(None, Store.from_url("memory://docs")).describe()
    'object store memory:// (claim records beside the value)'
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from taskflow_exclusive.claims.base import ClaimLedger, ClaimRecord
from taskflow_exclusive.errors import StorageConfigError

if TYPE_CHECKING:
    from taskflow_exclusive.storage.store import Store

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
    from taskflow_exclusive.claims.specs import connection_scheme, scheme_of

    scheme = scheme_of(spec) if "://" in spec else connection_scheme(spec, source)
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


def _builtin(module: str, opener: str) -> LedgerFactory:
    def factory(spec: str) -> ClaimLedger:
        import importlib

        return getattr(importlib.import_module(module), opener)(spec)

    return factory


for _scheme in ("redis", "rediss"):
    register_ledger(_scheme, _builtin("taskflow_exclusive.claims.redis", "open_redis_ledger"))
for _scheme in ("postgresql", "postgres", "mysql", "mariadb", "sqlite"):
    register_ledger(_scheme, _builtin("taskflow_exclusive.claims.sql", "open_sql_ledger"))
