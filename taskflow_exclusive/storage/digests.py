"""Content digests: ``algorithm:hex`` strings, the hashers behind them, and how records carry them.

A digest names its algorithm: ``blake3:<64 hex>`` for every value written now,
``sha256:<64 hex>`` for values written before taskflow-exclusive switched to
BLAKE3 (#13). Both are cryptographic; which one a value was written with is a
fact of that value, and reading it back checks the same algorithm. BLAKE3 runs
about four times faster than sha256 on one core here (and uses more cores for
a large buffer), which is what lets a verified local read and write keep up
with the disk's page cache.

Records (handles, manifests, grants) carry a digest in one of two forms, so
that a record written before the switch reads back, re-serializes and
re-signs byte for byte as it was written::

    {"digest": "blake3:<hex>"}     every value written now
    {"sha256": "<hex>"}            a value written before (never written any more)

Example::

    >>> digest_of(b"hello")
    'blake3:ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f'
    >>> digest_fields("sha256:" + "0" * 64)
    {'sha256': '0000000000000000000000000000000000000000000000000000000000000000'}
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = [
    "ALGORITHM",
    "Hash",
    "algorithm_of",
    "digest_fields",
    "digest_from_fields",
    "digest_of",
    "digest_problem",
    "new_hash",
]

#: The algorithm of every digest written now.
ALGORITHM = "blake3"
_LEGACY = "sha256"  # values written before #13; still read and verified, never written
_DIGEST = re.compile(r"^(blake3|sha256):[0-9a-f]{64}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")
_THREADED_FROM = 4 << 20  # smaller buffers are hashed on one thread: starting more costs more


class Hash(Protocol):
    """What :func:`new_hash` returns (``hashlib`` and ``blake3`` objects both are)."""

    def update(self, data: Any, /) -> Any: ...

    def hexdigest(self) -> str: ...


def new_hash(algorithm: str = ALGORITHM, *, threads: bool = False) -> Hash:
    """A fresh hash object for ``algorithm``; ``threads=True`` lets BLAKE3 use every core."""
    if algorithm == "blake3":
        from blake3 import blake3

        return blake3(max_threads=blake3.AUTO) if threads else blake3()
    if algorithm == _LEGACY:
        return hashlib.sha256()
    raise ValueError(f"unknown digest algorithm {algorithm!r} (known: blake3, sha256)")


def digest_of(data: Any, algorithm: str = ALGORITHM) -> str:
    """The ``algorithm:hex`` digest of a whole buffer (a large one hashed on every core)."""
    hashed = new_hash(algorithm, threads=memoryview(data).nbytes >= _THREADED_FROM)
    hashed.update(data)
    return f"{algorithm}:{hashed.hexdigest()}"


def algorithm_of(digest: str) -> str:
    """``"blake3"`` for ``"blake3:<hex>"`` (the digest must be well formed)."""
    return digest.partition(":")[0]


def digest_problem(digest: Any) -> str | None:
    """What is wrong with ``digest`` as an ``algorithm:hex`` string (``None`` when nothing)."""
    if isinstance(digest, str) and _DIGEST.match(digest):
        return None
    return "is not 'blake3:' or 'sha256:' followed by 64 lowercase hex digits"


def digest_fields(digest: str) -> dict[str, str]:
    """The record fields carrying ``digest``: ``{"sha256": hex}`` for sha256, else ``{"digest": digest}``."""
    algorithm, _, hexdigest = digest.partition(":")
    return {"sha256": hexdigest} if algorithm == _LEGACY else {"digest": digest}


def digest_from_fields(data: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``(digest, None)`` from a record's ``digest`` or ``sha256`` field, or ``(None, problem)``.

    Exactly one of the two must be present: ``digest`` holding ``blake3:<hex>``,
    or ``sha256`` holding the bare hex of a record written before #13.
    """
    if "digest" in data and "sha256" in data:
        return None, "it has both a digest and a sha256 field (a record carries exactly one)"
    if "sha256" in data:
        value = data["sha256"]
        if isinstance(value, str) and _HEX.match(value):
            return f"{_LEGACY}:{value}", None
        return None, f"sha256 is not 64 lowercase hex digits (got {_shown(value)})"
    if "digest" not in data:
        return None, "it has neither a digest nor a sha256 field"
    value = data["digest"]
    problem = None
    if isinstance(value, str) and value.startswith(f"{_LEGACY}:") and _DIGEST.match(value):
        problem = "digest names sha256, which is carried as the field 'sha256' (bare hex digits)"
    elif digest_problem(value) is not None:
        problem = f"digest is not 'blake3:' followed by 64 lowercase hex digits (got {_shown(value)})"
    return (None, problem) if problem else (value, None)


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
