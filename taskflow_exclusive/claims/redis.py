"""Claims in Redis: one key per slot, created by one atomic Lua script.

Choose it with ``claims="redis://host:6379/0"`` (``rediss://`` for TLS), or
with an Airflow connection id whose ``conn_type`` is ``redis`` (see
:mod:`taskflow_exclusive.claims.specs` for what a handle records: never a
password).

The claims on the value at ``uri`` are one Redis hash,
``<prefix>:claims:<sha256 of uri>``, whose field ``<i>`` holds slot ``i``'s
:class:`ClaimRecord` JSON (consumer id, time, host, pid). The prefix
defaults to ``taskflow_exclusive``; set it with ``?prefix=...`` in the URL or
the connection extra ``claims_prefix``. Keys never expire: a claim must not
vanish under its holder.

Each operation is one round trip, atomic on the server:

- claim: ``HSETNX`` in a Lua script that returns the holder when the slot
  is taken (``{1, record}`` or ``{0, holder}``), so a loser learns the
  holder in the same step;
- holders: ``HGETALL`` (cost grows with holders, not with ``max_claims``);
- release: a Lua compare-and-delete that removes the field only if it still
  holds the same consumer and claim time, so two releases free one slot;
- purge: ``DEL`` of the hash.

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
from taskflow_exclusive.errors import MalformedRecordError, StorageConfigError

__all__ = ["DEFAULT_PREFIX", "RedisLedger", "open_redis_ledger"]

log = logging.getLogger("taskflow_exclusive.claims")

DEFAULT_PREFIX = "taskflow_exclusive"
DEFAULT_TIMEOUT = 5.0

_CLAIM_SCRIPT = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
    return {1, ARGV[2]}
end
return {0, redis.call('HGET', KEYS[1], ARGV[1])}
"""

# Returns 1 if the field held the claim (consumer ARGV[2], time ARGV[3]) and was deleted,
# 0 if it holds something else or nothing, -1 if it holds something that is not a record.
_RELEASE_SCRIPT = """
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if not stored then return 0 end
local ok, record = pcall(cjson.decode, stored)
if not ok or type(record) ~= 'table' then return -1 end
if record['consumer_id'] == ARGV[2] and record['claimed_at'] == ARGV[3] then
    return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""

_FORGET_SCRIPT = """
local count = redis.call('HLEN', KEYS[1])
redis.call('DEL', KEYS[1])
return count
"""


class RedisLedger(ClaimLedger):
    """Claim records as Redis keys, created with ``SET NX`` inside a Lua script."""

    def __init__(self, target: LedgerTarget) -> None:
        url, ours = query_options(target.url, ("prefix",))
        options = {**ours, **target.options}
        self.spec = target.recorded
        self.prefix = str(options.get("prefix") or DEFAULT_PREFIX)
        self._shown = target.shown
        self._client = _client(url, options, self._shown, target.client)
        self._claim_script = self._client.register_script(_CLAIM_SCRIPT)
        self._release = self._client.register_script(_RELEASE_SCRIPT)
        self._forget_all = self._client.register_script(_FORGET_SCRIPT)
        self._durability_checked = threading.Event()

    def describe(self) -> str:
        return f"Redis ledger {self._shown}"

    def key(self, uri: str) -> str:
        """The Redis hash holding the claims on the value at ``uri`` (one field per slot)."""
        return f"{self.prefix}:claims:{hashlib.sha256(uri.encode()).hexdigest()}"

    def _create_or_get(self, uri: str, slot: int, record: ClaimRecord) -> ClaimRecord | None:
        with self._reaching(uri):
            self._warn_if_volatile()
            created, stored = self._claim_script(keys=[self.key(uri)], args=[int(slot), record.to_json()])
        if created:
            return record
        return None if stored is None else ClaimRecord.from_json(stored, where=self._where(uri, slot))

    def _list(self, uri: str) -> list[ClaimRecord]:
        with self._reaching(uri):
            fields = self._client.hgetall(self.key(uri))
        records = [
            ClaimRecord.from_json(raw, where=self._where(uri, field.decode(errors="replace")))
            for field, raw in fields.items()
        ]
        return sorted(records, key=lambda record: record.slot)

    def _delete_if_held(self, uri: str, record: ClaimRecord) -> bool:
        with self._reaching(uri):
            outcome = self._release(
                keys=[self.key(uri)],
                args=[int(record.slot), record.consumer_id, record.claimed_at.isoformat()],
            )
        if outcome == -1:
            raise MalformedRecordError(
                f"Slot {record.slot} of the claims on {uri} in {self.describe()} does not hold a "
                "claim record; nothing was released. Inspect the hash field with HGET.",
                kind="claim record",
                where=self._where(uri, record.slot),
                problem="not a JSON object",
            )
        return outcome == 1

    def _forget(self, uri: str) -> int:
        with self._reaching(uri):
            return int(self._forget_all(keys=[self.key(uri)]))

    def _where(self, uri: str, slot: object) -> str:
        return f"{self.describe()}, hash {self.key(uri)} field {slot} (value {uri})"

    def _reaching(self, uri: str):
        return reaching(
            self.describe(), uri, misconfigured=_redis_misconfigured, unreachable=_redis_unreachable
        )

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


def _redis_misconfigured(exc: BaseException) -> str | None:
    """What to fix when Redis refused for a reason a retry will not cure, else ``None``."""
    name = type(exc).__name__
    text = str(exc)
    if "Authentication" in name or text.startswith(("WRONGPASS", "NOAUTH", "NOPERM")):
        return (
            "Check the password (and ACL user) in the claims URL or the Airflow connection, and that "
            "the user may run EVALSHA, HSETNX, HGET, HGETALL, HDEL and DEL on the prefix's keys."
        )
    if name == "ResponseError" and not _redis_unreachable(exc):
        return (
            "Redis rejected the command: the claims key may hold another type (a prefix shared "
            "with something else: set ?prefix=...), or scripting is disabled on this server."
        )
    return None


# Replies that mean "this server cannot serve you right now" (loading, busy, failing over, full).
_REDIS_TRANSIENT = ("LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY", "OOM")


def _redis_unreachable(exc: BaseException) -> bool:
    return type(exc).__name__ == "ResponseError" and str(exc).startswith(_REDIS_TRANSIENT)


def _client(url: str, options: dict[str, Any], shown: str, arguments: dict[str, Any]) -> Any:
    """A Redis client: from ``arguments`` (an Airflow connection's) when given, else from ``url``."""
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
    if arguments:
        return redis.Redis(**arguments, **settings)
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
