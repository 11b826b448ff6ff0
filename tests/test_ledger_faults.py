"""The claims store fails: killed (SIGKILL) or frozen (SIGSTOP), before or during claims.

Against private servers this test session owns (a redis-server with AOF
fsynced on every write, a PostgreSQL cluster made with initdb), never the
shared ones. What must hold, whatever the moment of the fault:

- the claim fails promptly with ClaimStoreUnavailableError naming the store,
  and no password anywhere in it;
- nothing is handed out by a failed claim, and after the store is back the
  rightful consumer's retry gets the value (a claim recorded just before the
  fault is that consumer's own), and every other consumer is told who holds it;
- claims made before the fault survive it.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import pytest

from taskflow_exclusive import AlreadyClaimedError, ClaimStoreUnavailableError, publish
from taskflow_exclusive.claims import open_ledger
from taskflow_exclusive.storage.store import Store
from tests import ledgers
from tests.ledgers import unique
from tests.private_services import PASSWORD
from tests.servers import free_ports

redis_server, private_redis = ledgers.redis_server, ledgers.private_redis
postgres_server, private_postgres = ledgers.postgres_server, ledgers.private_postgres

# Short timeouts keep the tests quick; the defaults are checked separately.
FAST = {"redis": "socket_timeout=1&socket_connect_timeout=1", "postgres": "timeout=1"}
PROMPT = 5.0  # seconds: a timeout of 1 s, a reconnect of at most 2 s (libpq's minimum), slack
STORES = ["redis", "postgres"]


@pytest.fixture(params=STORES)
def store_server(request):
    """Each private store in turn, with a fresh claims spec (short timeouts) on it."""
    server = request.getfixturevalue(f"{request.param}_server")
    option = "prefix" if request.param == "redis" else "table"
    spec = f"{server.url}?{option}={unique('faults')}&{FAST[request.param]}"
    return request.param, server, spec


def _ledger(spec: str):
    return open_ledger(spec, Store.from_url("memory://unused"))


def _timed_failure(call) -> tuple[ClaimStoreUnavailableError, float]:
    started = time.monotonic()
    with pytest.raises(ClaimStoreUnavailableError) as failed:
        call()
    return failed.value, time.monotonic() - started


def _assert_names_store_without_secret(error: ClaimStoreUnavailableError, server) -> None:
    text = f"{error} {error.ledger}"
    assert server.address in text
    assert PASSWORD not in text
    assert "***" in error.ledger


def test_a_store_killed_before_the_claim_fails_promptly_and_a_retry_after_restart_gets_the_value(
    store_server, file_url, monkeypatch
):
    _, server, spec = store_server
    monkeypatch.setenv("AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_CLAIMS_URL", spec)  # the consumer's own config
    earlier = publish("earlier", storage=file_url)
    assert earlier.claim(consumer_id="early") == "earlier"
    handle = publish({"payload": 1}, storage=file_url)
    assert PASSWORD not in handle.to_json()

    server.kill()
    error, seconds = _timed_failure(lambda: handle.claim(consumer_id="rightful"))
    assert seconds < PROMPT
    _assert_names_store_without_secret(error, server)
    assert "No value was handed out" in str(error)
    _timed_failure(handle.holders)

    server.start()
    assert handle.claim(consumer_id="rightful") == {"payload": 1}
    with pytest.raises(AlreadyClaimedError) as refused:
        handle.claim(consumer_id="intruder")
    assert refused.value.holder == "rightful"
    with pytest.raises(AlreadyClaimedError) as survived:  # a claim made before the crash survived it
        earlier.claim(consumer_id="intruder")
    assert survived.value.holder == "early"


def test_a_store_frozen_before_the_claim_fails_within_its_timeout_and_recovers_when_thawed(
    store_server, file_url, monkeypatch
):
    _, server, spec = store_server
    monkeypatch.setenv("AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_CLAIMS_URL", spec)
    handle = publish("value", storage=file_url)
    _ledger(spec).holders(handle.uri)  # a pooled connection exists before the freeze

    server.pause()
    try:
        error, seconds = _timed_failure(lambda: handle.claim(consumer_id="rightful"))
        assert 0.8 < seconds < PROMPT
        _assert_names_store_without_secret(error, server)
        error, seconds = _timed_failure(lambda: handle.claim(consumer_id="rightful"))  # a new connection
        assert seconds < PROMPT
    finally:
        server.resume()
    assert handle.claim(consumer_id="rightful") == "value"
    with pytest.raises(AlreadyClaimedError) as refused:
        handle.claim(consumer_id="intruder")
    assert refused.value.holder == "rightful"


@dataclass
class _Stream:
    """Consumer A claiming value after value until the store has failed it twice."""

    ledger: object
    uris: list[str]
    won: list[str] = field(default_factory=list)
    failed: list[tuple[str, BaseException, float]] = field(default_factory=list)

    def run(self) -> None:
        for uri in self.uris:
            started = time.monotonic()
            try:
                self.ledger.claim(uri, "A")
                self.won.append(uri)
            except BaseException as exc:
                self.failed.append((uri, exc, time.monotonic() - started))
                if len(self.failed) == 2:
                    return


@pytest.mark.parametrize("fault", ["kill", "freeze"])
def test_a_store_failing_during_claims_never_hands_a_value_to_two_and_blocks_nobody(store_server, fault):
    _, server, spec = store_server
    seed = random.randrange(1 << 30)
    chance = random.Random(seed)
    ledger = _ledger(spec)
    uris = [f"file:///faults/{unique('v')}/{n:05d}.bin" for n in range(20000)]
    stream = _Stream(ledger, uris)
    consumer_a = threading.Thread(target=stream.run, daemon=True)
    consumer_a.start()
    time.sleep(chance.uniform(0.2, 0.6))  # the fault lands while A is claiming
    (server.kill if fault == "kill" else server.pause)()
    consumer_a.join(timeout=30)
    assert not consumer_a.is_alive()
    (server.start if fault == "kill" else server.resume)()

    touched = len(stream.won) + len(stream.failed)
    print(f"seed {seed}: A won {len(stream.won)}, failed {len(stream.failed)} ({fault})")
    assert stream.won, "the fault came before any claim; nothing was proven"
    assert len(stream.failed) == 2
    for _, error, seconds in stream.failed:
        assert isinstance(error, ClaimStoreUnavailableError), repr(error)
        assert seconds < PROMPT
        _assert_names_store_without_secret(error, server)

    handed = {}  # uri -> the consumers that were given it
    # A's claims from before the fault survive it: anyone else is told A holds them.
    sample = stream.won[-100:] + chance.sample(stream.won, min(100, len(stream.won)))
    for uri in sample:
        with pytest.raises(AlreadyClaimedError) as refused:
            ledger.claim(uri, "B")
        assert refused.value.holder == "A"
    # A's failed claims: whether or not the store recorded them, A's retry gets the value...
    recorded_before = 0
    for uri, _, _ in stream.failed:
        retried_at = time.time()
        record = ledger.claim(uri, "A")
        recorded_before += record.claimed_at.timestamp() < retried_at  # the failed try had landed
        handed.setdefault(uri, set()).add("A")
        # ...and nobody else does.
        with pytest.raises(AlreadyClaimedError) as refused:
            ledger.claim(uri, "B")
        assert refused.value.holder == "A"
    # Values nobody touched yet are claimed normally after the recovery.
    for uri in uris[touched : touched + 20]:
        assert ledger.claim(uri, "B").consumer_id == "B"
        handed.setdefault(uri, set()).add("B")
        with pytest.raises(AlreadyClaimedError) as refused:
            ledger.claim(uri, "A")
        assert refused.value.holder == "B"
    assert all(len(consumers) == 1 for consumers in handed.values())
    print(f"failed claims that the store had recorded for A before the fault: {recorded_before}")


@pytest.mark.parametrize("store", STORES)
def test_the_default_timeouts_bound_a_frozen_store(store, request):
    server = request.getfixturevalue(f"{store}_server")
    option = "prefix" if store == "redis" else "table"
    ledger = _ledger(f"{server.url}?{option}={unique('defaults')}")
    ledger.holders("file:///x.bin")
    default = 5.0 if store == "redis" else 10.0
    server.pause()
    try:
        error, seconds = _timed_failure(lambda: ledger.claim("file:///x.bin", "A"))
    finally:
        server.resume()
    assert default - 0.5 < seconds < default + 2
    _assert_names_store_without_secret(error, server)
    assert ledger.claim("file:///x.bin", "A").consumer_id == "A"


@pytest.mark.parametrize("store", ["redis", "postgres", "mysql"])
def test_a_store_nobody_listens_for_fails_at_once_naming_it(store):
    port = free_ports(1)[0]
    spec = {
        "redis": f"redis://127.0.0.1:{port}/0?socket_connect_timeout=1",
        "postgres": f"postgresql+psycopg://postgres@127.0.0.1:{port}/test?timeout=1",
        "mysql": f"mysql+pymysql://root@127.0.0.1:{port}/test?timeout=1",
    }[store]
    error, seconds = _timed_failure(lambda: _ledger(spec).claim("file:///x.bin", "A"))
    assert seconds < 2
    assert f"127.0.0.1:{port}" in str(error)


def test_a_locked_sqlite_database_fails_after_its_busy_timeout_and_recovers(tmp_path):
    spec, _ = ledgers.sqlite_spec(tmp_path)
    ledger = _ledger(spec + "&timeout=1")
    ledger.claim("file:///before.bin", "A")
    database = spec.split("sqlite:///", 1)[1].split("?", 1)[0]
    holder = subprocess.Popen(  # another process holds the write lock
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            f"db = sqlite3.connect({database!r}, isolation_level=None)\n"
            "db.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.readline()\n"
            "db.execute('COMMIT')\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        error, seconds = _timed_failure(lambda: ledger.claim("file:///during.bin", "A"))
        assert 0.8 < seconds < 3
        assert "locked" in str(error) and "sqlite" in error.ledger.lower()
    finally:
        holder.communicate("\n", timeout=10)
    assert ledger.claim("file:///during.bin", "A").consumer_id == "A"
    assert [h.consumer_id for h in ledger.holders("file:///before.bin")] == ["A"]
