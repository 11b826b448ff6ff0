"""Queues on the shared Redis (own db, fresh key prefix) and on a private, killable Redis.

The shared Redis is read from ``TFX_QUEUE_REDIS_URL`` (default
``redis://127.0.0.1:6379/14``: its own db number); each fixture gives a spec
with a fresh ``?prefix=`` and deletes that prefix's keys afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.ledgers import redis_prefix, unique

QUEUE_REDIS_URL = os.environ.get("TFX_QUEUE_REDIS_URL", "redis://127.0.0.1:6379/14")


@pytest.fixture
def queue_spec() -> Iterator[str]:
    """A queue spec on the shared Redis with a key prefix of its own."""
    with redis_prefix(QUEUE_REDIS_URL) as (spec, _):
        yield spec


@pytest.fixture
def queue_name() -> str:
    return unique("q")
