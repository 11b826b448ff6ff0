"""Work queues in Redis: a put is one RPUSH, an at-most-once get one LPOP; leases are Lua scripts.

A queue named ``orders`` under the prefix ``taskflow_exclusive`` (``?prefix=``
in the URL, or the connection extra ``claims_prefix``, as for claim ledgers)
is these keys, all with the hash tag ``{orders}`` so that a Redis Cluster
keeps them on one slot::

    <prefix>:queue:{orders}:ready        list of waiting items, "<id> <item JSON>" (RPUSH, LPOP)
    <prefix>:queue:{orders}:leases       sorted set id -> lease deadline (ms, server clock)
    <prefix>:queue:{orders}:holders      hash id -> {consumer, token, deadline, delivery}
    <prefix>:queue:{orders}:held         hash id -> item, while it is leased or dead
    <prefix>:queue:{orders}:deliveries   hash id -> how many times it was leased
    <prefix>:queue:{orders}:dead         list of dead-letter ids; ``:deadinfo`` why
    <prefix>:queue:{orders}:fence        the fencing-token counter (INCR)
    <prefix>:queue:{orders}:stats        counters; ``:acked:<id>`` marks an ack for an hour
    <prefix>:queues                      set of queue names (for ``taskflow-exclusive queue list``)

*At most once*: ``put`` is ``RPUSH`` and ``get`` is ``LPOP``, the seed's
primitives: Redis removes each element for one caller. *At least once*: a Lua script pops the item, counts the
delivery, draws a fencing token and records the lease, atomically; ack, fail,
extend and the reaping of expired leases are scripts too. Deadlines use the
server's clock (``TIME`` inside the scripts), never the consumers'. An ack
marks ``:acked:<id>`` with its token for an hour, so a consumer whose ack
reply was lost (a dropped connection) and who sends it again hears "already
acked" rather than "expired".

Durability: as for the Redis claim ledger, run the queue's Redis with
``appendonly yes`` and ``appendfsync always``; without AOF a restart loses
every waiting and in-flight item (the tests count it).

Example::

    >>> backend = open_redis_queue("redis://127.0.0.1:6379/15?prefix=docs", "orders")
    >>> backend.describe()
    "queue 'orders' on redis://127.0.0.1:6379/15?prefix=docs"
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from datetime import datetime

from taskflow_exclusive.claims.redis import DEFAULT_PREFIX, _client, _redis_misconfigured
from taskflow_exclusive.claims.specs import query_options, resolve_spec
from taskflow_exclusive.errors import InvalidArgumentError, MalformedRecordError, QueueUnavailableError
from taskflow_exclusive.queues.base import AckOutcome, DeadLetter, Leased, LeaseInfo, QueueBackend, from_ms

__all__ = ["RedisQueueBackend", "list_queues", "open_redis_queue"]

ACK_MARK_MS = 3_600_000
ID_LENGTH = 32  # an element of the ready list is "<32 hex digits> <item JSON>"

_KEYS = ("ready", "leases", "holders", "held", "deliveries", "dead", "deadinfo", "fence", "stats")

# KEYS: ready leases holders held deliveries dead deadinfo fence stats [acked:<id>]
_COMMON = """
local ready, leases, holders, held, deliveries, dead, deadinfo, fence, stats =
    KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local function now_ms()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function give_back(id, max, reason, now)
    redis.call('ZREM', leases, id)
    redis.call('HDEL', holders, id)
    local d = tonumber(redis.call('HGET', deliveries, id) or '0')
    if d >= max then
        redis.call('RPUSH', dead, id)
        redis.call('HSET', deadinfo, id, cjson.encode({reason = reason, deliveries = d, at = now}))
        redis.call('HINCRBY', stats, 'dead', 1)
        return 'dead'
    end
    local element = redis.call('HGET', held, id)
    redis.call('HDEL', held, id)
    if element then redis.call('RPUSH', ready, element) end
    redis.call('HINCRBY', stats, 'requeued', 1)
    return 'requeued'
end
local function reap(now, max, limit)
    local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', '(' .. now, 'LIMIT', 0, limit)
    for _, id in ipairs(expired) do
        give_back(id, max, 'lease expired', now)
    end
    return #expired
end
local function holder_of(id, token, now)
    local raw = redis.call('HGET', holders, id)
    if not raw then return nil, nil end
    local rec = cjson.decode(raw)
    if tostring(rec['token']) ~= token or tonumber(rec['deadline']) < now then return nil, raw end
    return rec, raw
end
local function forget(id)
    redis.call('ZREM', leases, id)
    redis.call('HDEL', holders, id)
    redis.call('HDEL', held, id)
    redis.call('HDEL', deliveries, id)
end
"""

# ARGV: consumer, lease_ms, max_deliveries, count
_LEASE = """
local now = now_ms()
reap(now, tonumber(ARGV[3]), 16)
local out = {}
for i = 1, tonumber(ARGV[4]) do
    local element = redis.call('LPOP', ready)
    if not element then break end
    local id = string.sub(element, 1, 32)
    local d = redis.call('HINCRBY', deliveries, id, 1)
    local token = redis.call('INCR', fence)
    local deadline = now + tonumber(ARGV[2])
    redis.call('ZADD', leases, deadline, id)
    local rec = cjson.encode({consumer = ARGV[1], token = token, deadline = deadline, delivery = d})
    redis.call('HSET', holders, id, rec)
    redis.call('HSET', held, id, element)
    out[#out + 1] = element
    out[#out + 1] = rec
end
if #out > 0 then redis.call('HINCRBY', stats, 'leased', #out / 2) end
return out
"""

# ARGV: consumer, lease_ms
_RESUME = """
local now = now_ms()
local out = {}
local all = redis.call('HGETALL', holders)
for i = 1, #all, 2 do
    local id, rec = all[i], cjson.decode(all[i + 1])
    if rec['consumer'] == ARGV[1] and tonumber(rec['deadline']) >= now then
        rec['token'] = redis.call('INCR', fence)
        rec['deadline'] = now + tonumber(ARGV[2])
        local encoded = cjson.encode(rec)
        redis.call('ZADD', leases, rec['deadline'], id)
        redis.call('HSET', holders, id, encoded)
        local element = redis.call('HGET', held, id)
        if element then
            out[#out + 1] = element
            out[#out + 1] = encoded
        end
    end
end
return out
"""

# ARGV: id, token
_CHECK = """
local rec, raw = holder_of(ARGV[1], ARGV[2], now_ms())
if rec then return raw end
return false
"""

# ARGV: id, token, mark_ms; KEYS[10]: the ack mark of this id
_ACK = """
if redis.call('GET', KEYS[10]) == ARGV[2] then return {2} end
local rec, raw = holder_of(ARGV[1], ARGV[2], now_ms())
if not rec then return {0, raw or ''} end
forget(ARGV[1])
redis.call('SET', KEYS[10], ARGV[2], 'PX', tonumber(ARGV[3]))
redis.call('HINCRBY', stats, 'acked', 1)
return {1}
"""

# ARGV: id. The rare path (a claim ledger says the item was completed): looks through the
# waiting items too, in case an expired lease put it back.
_COMPLETE = """
forget(ARGV[1])
redis.call('LREM', dead, 0, ARGV[1])
redis.call('HDEL', deadinfo, ARGV[1])
local prefix = ARGV[1] .. ' '
for _, element in ipairs(redis.call('LRANGE', ready, 0, -1)) do
    if string.sub(element, 1, 33) == prefix then redis.call('LREM', ready, 1, element) end
end
return 1
"""

# ARGV: id, token, max_deliveries, reason
_FAIL = """
local now = now_ms()
local rec = holder_of(ARGV[1], ARGV[2], now)
if not rec then return false end
return give_back(ARGV[1], tonumber(ARGV[3]), ARGV[4], now)
"""

# ARGV: id, token, lease_ms
_EXTEND = """
local now = now_ms()
local rec = holder_of(ARGV[1], ARGV[2], now)
if not rec then return false end
rec['deadline'] = now + tonumber(ARGV[3])
redis.call('ZADD', leases, rec['deadline'], ARGV[1])
redis.call('HSET', holders, ARGV[1], cjson.encode(rec))
return rec['deadline']
"""

# ARGV: max_deliveries
_REAP = """
local total = 0
local now = now_ms()
while true do
    local n = reap(now, tonumber(ARGV[1]), 1000)
    total = total + n
    if n < 1000 then break end
end
return total
"""

# ARGV: ids (none: all)
_REQUEUE_DEAD = """
local ids = ARGV
if #ids == 0 then ids = redis.call('LRANGE', dead, 0, -1) end
local moved = 0
for _, id in ipairs(ids) do
    if redis.call('LREM', dead, 0, id) > 0 then
        redis.call('HDEL', deadinfo, id)
        redis.call('HDEL', deliveries, id)
        local element = redis.call('HGET', held, id)
        redis.call('HDEL', held, id)
        if element then
            redis.call('RPUSH', ready, element)
            moved = moved + 1
        end
    end
end
return moved
"""

_DROP_DEAD = """
local ids = ARGV
if #ids == 0 then ids = redis.call('LRANGE', dead, 0, -1) end
local elements = {}
for _, id in ipairs(ids) do
    if redis.call('LREM', dead, 0, id) > 0 then
        redis.call('HDEL', deadinfo, id)
        redis.call('HDEL', deliveries, id)
        local element = redis.call('HGET', held, id)
        redis.call('HDEL', held, id)
        if element then elements[#elements + 1] = element end
    end
end
return elements
"""

_PURGE = """
local elements = redis.call('LRANGE', ready, 0, -1)
for _, element in ipairs(redis.call('HVALS', held)) do elements[#elements + 1] = element end
for i = 1, 9 do redis.call('DEL', KEYS[i]) end
redis.call('SREM', KEYS[10], ARGV[1])
return elements
"""


class RedisQueueBackend(QueueBackend):
    """One named queue in Redis (see the module docstring for its keys)."""

    def __init__(self, spec: str, name: str) -> None:
        _check_name(name)
        target = resolve_spec(spec, source="queue")
        url, ours = query_options(target.url, ("prefix",))
        options = {**ours, **target.options}
        self.name = name
        self.spec = target.recorded
        self.prefix = str(options.get("prefix") or DEFAULT_PREFIX)
        self._shown = target.shown
        self._client = _client(url, options, self._shown, target.client)
        base = f"{self.prefix}:queue:{{{name}}}"
        self.keys = [f"{base}:{part}" for part in _KEYS]
        self.key = dict(zip(_KEYS, self.keys, strict=True))
        self._acked_base = f"{base}:acked:"
        self._registry = f"{self.prefix}:queues"
        self._registered = False
        script = self._client.register_script
        self._lease = script(_COMMON + _LEASE)
        self._resume = script(_COMMON + _RESUME)
        self._check = script(_COMMON + _CHECK)
        self._ack = script(_COMMON + _ACK)
        self._complete = script(_COMMON + _COMPLETE)
        self._fail = script(_COMMON + _FAIL)
        self._extend = script(_COMMON + _EXTEND)
        self._reap = script(_COMMON + _REAP)
        self._requeue_dead = script(_COMMON + _REQUEUE_DEAD)
        self._drop_dead = script(_COMMON + _DROP_DEAD)
        self._purge = script(_COMMON + _PURGE)

    def describe(self) -> str:
        return f"queue {self.name!r} on {self._shown}"

    @contextlib.contextmanager
    def _reaching(self) -> Iterator[None]:
        import redis

        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
            fix = _redis_misconfigured(exc) if isinstance(exc, redis.ResponseError) else None
            reason = f"{type(exc).__name__}: {str(exc)[:200]}"
            raise QueueUnavailableError(
                f"The {self.describe()} could not be used ({reason}). "
                + (
                    fix
                    or "Retry once the server answers. A get (at most once) whose reply was lost may "
                    "have taken an item; a lease or ack is safe to retry."
                ),
                queue=self.describe(),
                reason=reason,
            ) from exc

    def push(self, items: Sequence[tuple[str, bytes]]) -> None:
        if not items:
            return
        elements = [_element(item_id, body) for item_id, body in items]
        with self._reaching():
            if not self._registered:  # once per process and queue: the name for `queue list`
                self._client.sadd(self._registry, self.name)
                self._registered = True
            self._client.rpush(self.key["ready"], *elements)

    def pop(self, count: int) -> list[tuple[str, bytes]]:
        with self._reaching():
            if count == 1:
                element = self._client.lpop(self.key["ready"])
                elements = [] if element is None else [element]
            else:
                elements = self._client.lpop(self.key["ready"], int(count)) or []
        return [self._split(element) for element in elements]

    def _split(self, element: bytes) -> tuple[str, bytes]:
        item_id, space, body = bytes(element).partition(b" ")
        if not space or len(item_id) != ID_LENGTH:
            raise MalformedRecordError(
                f"An element of the {self.describe()} is not '<id> <item>': something other than "
                "ExclusiveQueue.put wrote to its keys (check the key prefix). It was not delivered.",
                kind="queue item",
                where=self.describe(),
                problem="no item id",
            )
        return item_id.decode("ascii", errors="replace"), body

    def lease(self, consumer_id: str, seconds: float, max_deliveries: int, count: int) -> list[Leased]:
        with self._reaching():
            flat = self._lease(
                keys=self.keys, args=[consumer_id, _ms(seconds), int(max_deliveries), int(count)]
            )
        return self._leased(flat)

    def resume(self, consumer_id: str, seconds: float) -> list[Leased]:
        with self._reaching():
            flat = self._resume(keys=self.keys, args=[consumer_id, _ms(seconds)])
        return self._leased(flat)

    def _leased(self, flat: list[bytes]) -> list[Leased]:
        leased = []
        for i in range(0, len(flat), 2):
            item_id, body = self._split(flat[i])
            leased.append(Leased(body=body, info=_info(item_id, flat[i + 1])))
        return leased

    def check(self, item_id: str, token: int) -> LeaseInfo | None:
        with self._reaching():
            raw = self._check(keys=self.keys, args=[item_id, str(token)])
        return _info(item_id, raw) if raw else None

    def ack(self, item_id: str, token: int) -> tuple[AckOutcome, LeaseInfo | None]:
        with self._reaching():
            reply = self._ack(
                keys=[*self.keys, self._acked_base + item_id], args=[item_id, str(token), ACK_MARK_MS]
            )
        if reply[0] == 1:
            return AckOutcome.ACKED, None
        if reply[0] == 2:
            return AckOutcome.ALREADY_ACKED, None
        return AckOutcome.EXPIRED, (_info(item_id, reply[1]) if reply[1] else None)

    def complete(self, item_id: str) -> None:
        with self._reaching():
            self._complete(keys=self.keys, args=[item_id])

    def fail(self, item_id: str, token: int, max_deliveries: int, reason: str) -> str | None:
        with self._reaching():
            outcome = self._fail(keys=self.keys, args=[item_id, str(token), int(max_deliveries), reason])
        return outcome.decode() if outcome else None

    def extend(self, item_id: str, token: int, seconds: float) -> datetime | None:
        with self._reaching():
            deadline = self._extend(keys=self.keys, args=[item_id, str(token), _ms(seconds)])
        return from_ms(int(deadline)) if deadline else None

    def reap(self, max_deliveries: int) -> int:
        with self._reaching():
            return int(self._reap(keys=self.keys, args=[int(max_deliveries)]))

    def depth(self) -> int:
        with self._reaching():
            return int(self._client.llen(self.key["ready"]))

    def peek(self, count: int) -> list[tuple[str, bytes]]:
        if count <= 0:
            return []
        with self._reaching():
            elements = self._client.lrange(self.key["ready"], 0, int(count) - 1)
        return [self._split(element) for element in elements]

    def in_flight(self) -> list[LeaseInfo]:
        with self._reaching():
            holders = self._client.hgetall(self.key["holders"])
        infos = [_info(k.decode(), v) for k, v in holders.items()]
        return sorted(infos, key=lambda info: info.deadline)

    def dead_letters(self) -> list[DeadLetter]:
        with self._reaching():
            ids = self._client.lrange(self.key["dead"], 0, -1)
            infos = self._client.hmget(self.key["deadinfo"], ids) if ids else []
            elements = self._client.hmget(self.key["held"], ids) if ids else []
        letters = []
        for raw_id, info, element in zip(ids, infos, elements, strict=True):
            facts = json.loads(info) if info else {}
            letters.append(
                DeadLetter(
                    item_id=raw_id.decode(),
                    body=self._split(element)[1] if element else None,
                    reason=str(facts.get("reason", "")),
                    deliveries=int(facts.get("deliveries", 0)),
                    at=from_ms(int(facts.get("at", 0))),
                )
            )
        return letters

    def requeue_dead(self, item_ids: Sequence[str] | None) -> int:
        with self._reaching():
            return int(self._requeue_dead(keys=self.keys, args=list(item_ids or [])))

    def drop_dead(self, item_ids: Sequence[str] | None) -> list[bytes]:
        with self._reaching():
            elements = self._drop_dead(keys=self.keys, args=list(item_ids or []))
        return [self._split(element)[1] for element in elements]

    def purge(self) -> list[bytes]:
        with self._reaching():
            elements = list(self._purge(keys=[*self.keys, self._registry], args=[self.name]))
            acked = list(self._client.scan_iter(match=f"{self._acked_base}*", count=1000))
            for start in range(0, len(acked), 500):
                self._client.delete(*acked[start : start + 500])
        self._registered = False
        return [self._split(element)[1] for element in elements]

    def stats(self) -> dict[str, int]:
        with self._reaching():
            counters = self._client.hgetall(self.key["stats"])
        return {k.decode(): int(v) for k, v in counters.items()}


def _element(item_id: str, body: bytes) -> bytes:
    if len(item_id) != ID_LENGTH or " " in item_id:
        raise InvalidArgumentError(
            f"A queue item id is {ID_LENGTH} hex digits (got {item_id!r}).",
            argument="item_id",
            value=repr(item_id),
            expected="queues.items.new_item_id()",
        )
    return item_id.encode("ascii") + b" " + body


def _ms(seconds: float) -> int:
    if not seconds > 0:
        raise InvalidArgumentError(
            f"A lease must last more than 0 seconds (got {seconds!r}).",
            argument="seconds",
            value=repr(seconds),
            expected="a positive number of seconds",
        )
    return max(1, round(seconds * 1000))


def _info(item_id: str, raw: bytes) -> LeaseInfo:
    record = json.loads(raw)
    return LeaseInfo(
        item_id=item_id,
        consumer_id=str(record["consumer"]),
        token=int(record["token"]),
        deadline=from_ms(int(record["deadline"])),
        delivery=int(record["delivery"]),
    )


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or not name.isprintable() or any(c in name for c in "{}* "):
        raise InvalidArgumentError(
            f"A queue name must be printable text without spaces, braces or '*' (got {name!r}).",
            argument="name",
            value=repr(name),
            expected="a name such as 'orders'",
        )


def open_redis_queue(spec: str, name: str) -> RedisQueueBackend:
    """The Redis queue ``name`` at ``spec`` (a ``redis://`` URL or a redis Airflow connection id)."""
    return RedisQueueBackend(spec, name)


def list_queues(spec: str) -> list[str]:
    """The names of the queues ever put to under ``spec``'s prefix (and not purged)."""
    probe = RedisQueueBackend(spec, "-")
    with probe._reaching():
        return sorted(name.decode() for name in probe._client.smembers(probe._registry))
