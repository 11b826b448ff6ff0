"""Values built once per key and process: the one cache the core keeps.

Filesystems, opened claim ledgers, "earlier tries already removed" marks and
the signing keyring (for a few seconds: ``max_age``) are each built on first
use and shared by the threads of a process. A forked child starts empty: a
connection pool or socket must not cross a fork.

``functools.cache`` is not enough for these: the key is only part of the
arguments (a filesystem is per protocol and connection, not per URL), and
it does not reset in a forked child.

Example::

    >>> filesystems = Memo()
    >>> filesystems.get(("s3", None), lambda: object()) is filesystems.get(("s3", None), object)
    True
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["Memo"]

V = TypeVar("V")


class Memo(Generic[V]):
    """A thread-safe, per-process map from keys to values built on first use."""

    def __init__(self) -> None:
        self._values: dict[Hashable, tuple[float, V]] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def get(self, key: Hashable, build: Callable[[], V], *, max_age: float | None = None) -> V:
        """The value for ``key``, built by ``build()`` if this process has none yet
        (or, with ``max_age``, none built within the last ``max_age`` seconds).

        ``build`` runs outside the lock (it may do I/O); if two threads race,
        the first value stored wins and both get it. An exception is not stored.
        """
        with self._lock:
            self._forget_if_forked()
            stored = self._values.get(key)
            if _fresh(stored, max_age):
                return stored[1]
        value = build()
        with self._lock:
            stored = self._values.get(key)
            if not _fresh(stored, max_age):
                stored = self._values[key] = (time.monotonic(), value)
            return stored[1]

    def clear(self) -> None:
        """Forget every value (tests; after a configuration change)."""
        with self._lock:
            self._values.clear()

    def _forget_if_forked(self) -> None:
        if self._pid != os.getpid():
            self._values.clear()
            self._pid = os.getpid()


def _fresh(stored: tuple[float, object] | None, max_age: float | None) -> bool:
    """Whether a stored ``(built_at, value)`` may still be handed out."""
    return stored is not None and (max_age is None or time.monotonic() - stored[0] < max_age)
