"""Claims in Redis: one key per slot, created by one atomic Lua script.

Choose it with ``claims="redis://host:6379/0"`` (``rediss://`` for TLS), or
with an Airflow connection id whose ``conn_type`` is ``redis`` (see
:mod:`taskflow_exclusive.claims.specs` for what a handle records: never a
password).

Slot ``i`` of the value at ``uri`` is the key
``<prefix>:claim:<sha256 of uri>:<i>`` holding the :class:`ClaimRecord`
JSON (consumer id, time, host, pid). The prefix defaults to
``taskflow_exclusive``; set it with ``?prefix=...`` in the URL or the
connection extra ``claims_prefix``. Keys never expire: a claim must not
vanish under its holder.

A claim is one round trip running::

    if redis.call('SET', key, record, 'NX') then return {1, record} end
    return {0, redis.call('GET', key)}

so the winner is decided by ``SET NX`` and a loser learns the holder in the
same atomic step.

Faults: connecting and every command time out after 5 s
(``socket_connect_timeout`` / ``socket_timeout`` in the URL change that); a
dropped connection is re-made once at once, a timeout is not retried. Either
way the caller gets :class:`ClaimStoreUnavailableError` naming the server
(password withheld). A claim whose answer was lost may still have been
recorded: the same consumer's retry finds its own record and gets the value.

Durability: a Redis that keeps nothing on disk forgets every claim when it
restarts, and a value may then be claimed a second time. Run the claims
Redis with ``appendonly yes`` (``appendfsync always`` to lose nothing on a
power cut). The ledger logs a warning once per process when the server
reports AOF off.

Example::

    >>> ledger = open_redis_ledger("redis://127.0.0.1:6379/0?prefix=docs")
    >>> ledger.claim("file:///data/x.json", "loader").consumer_id
    'loader'
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

from taskflow_exclusive.claims.base import ClaimLedger, ClaimRecord, reaching
from taskflow_exclusive.claims.specs import LedgerTarget, opened_once, query_options, resolve_spec
from taskflow_exclusive.errors import StorageConfigError

__all__ = ["DEFAULT_PREFIX", "RedisLedger", "open_redis_ledger"]

log = logging.getLogger("taskflow_exclusive.claims")

DEFAULT_PREFIX = "taskflow_exclusive"
DEFAULT_TIMEOUT = 5.0

_CLAIM_SCRIPT = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
    return {1, ARGV[1]}
end
return {0, redis.call('GET', KEYS[1])}
"""


class RedisLedger(ClaimLedger):
    """Claim records as Redis keys, created with ``SET NX`` inside a Lua script."""

    def __init__(self, target: LedgerTarget) -> None:
        url, ours = query_options(target.url, ("prefix",))
        options = {**ours, **target.options}
        self.spec = target.recorded
        self.prefix = str(options.get("prefix") or DEFAULT_PREFIX)
        self._shown = target.shown
        self._client = _client(url, options, self._shown)
        self._claim = self._client.register_script(_CLAIM_SCRIPT)
        self._durability_checked = threading.Event()

    def describe(self) -> str:
        return f"Redis ledger {self._shown}"

    def key(self, uri: str, slot: int) -> str:
        """The Redis key of ``slot`` for the value at ``uri``."""
        return f"{self.prefix}:claim:{hashlib.sha256(uri.encode()).hexdigest()}:{int(slot)}"

    def _create_or_get(self, uri: str, slot: int, record: ClaimRecord) -> ClaimRecord | None:
        with reaching(self.describe(), uri):
            self._warn_if_volatile()
            _, stored = self._claim(keys=[self.key(uri, slot)], args=[record.to_json()])
        return None if stored is None else ClaimRecord.from_json(stored)

    def _read(self, uri: str, slot: int) -> ClaimRecord | None:
        with reaching(self.describe(), uri):
            stored = self._client.get(self.key(uri, slot))
        return None if stored is None else ClaimRecord.from_json(stored)

    def _delete(self, uri: str, slot: int) -> bool:
        with reaching(self.describe(), uri):
            return bool(self._client.delete(self.key(uri, slot)))

    def _warn_if_volatile(self) -> None:
        """Warn once when the server would forget claims on restart (AOF off)."""
        if self._durability_checked.is_set():
            return
        import redis

        try:
            persistence = self._client.info("persistence")
        except redis.ResponseError:  # INFO disabled (some managed Redis): nothing to tell
            persistence = {}
        self._durability_checked.set()
        if str(persistence.get("aof_enabled", "1")) == "0":
            log.warning(
                "%s keeps claims in memory only (appendonly no): if it restarts, every claim "
                "is forgotten and a value may be claimed a second time. Enable appendonly "
                "(appendfsync always) on the Redis that holds claims.",
                self.describe(),
            )


def _client(url: str, options: dict[str, Any], shown: str) -> Any:
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError as exc:
        raise StorageConfigError(
            f"The claim ledger {shown} needs the redis client: pip install 'taskflow-exclusive[redis]'.",
            url=shown,
            source="claims",
            extra="taskflow-exclusive[redis]",
        ) from exc
    settings: dict[str, Any] = {
        "socket_connect_timeout": DEFAULT_TIMEOUT,
        "socket_timeout": DEFAULT_TIMEOUT,
        # One immediate reconnect for a connection the server dropped (a restart); a timeout
        # is not retried: the caller hears about an unresponsive server within one timeout.
        "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
    }
    settings.update({k: v for k, v in options.items() if k in ("socket_timeout", "socket_connect_timeout")})
    try:
        return redis.Redis.from_url(url, **settings)
    except ValueError as exc:
        raise StorageConfigError(
            f"Claims ledger {shown} is not a valid Redis URL: {exc}. Write "
            "redis://[user[:password]@]host[:port][/db][?prefix=...].",
            url=shown,
            source="claims",
        ) from exc


def open_redis_ledger(spec: str) -> RedisLedger:
    """The Redis ledger for a ``redis://``/``rediss://`` URL or a redis Airflow connection id."""
    return opened_once("redis", spec, lambda: RedisLedger(resolve_spec(spec)))
