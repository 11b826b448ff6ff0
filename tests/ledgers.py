"""Claim ledgers on the shared services, isolated per test; private servers for fault tests.

Shared services (also used by other sessions at the same time) are read
from environment variables, with this machine's defaults::

    TFX_REDIS_URL      redis://127.0.0.1:6379/0
    TFX_POSTGRES_URL   postgresql+psycopg://postgres@127.0.0.1:5432/test
    TFX_MYSQL_URL      mysql+pymysql://root@127.0.0.1:3306/test

Each fixture gives a claims spec of its own (a fresh Redis key prefix, a
fresh table) and removes what it created afterwards; nothing is flushed,
dropped or stopped that the fixture did not create. Import the fixtures into
a test module to use them.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import service_unavailable, serving

REDIS_URL = os.environ.get("TFX_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("TFX_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("TFX_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")

SQL_SERVICES = {"postgres": POSTGRES_URL, "mysql": MYSQL_URL}


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def with_query(url: str, **options: str) -> str:
    joiner = "&" if "?" in url else "?"
    return url + joiner + "&".join(f"{k}={v}" for k, v in options.items())


def redis_client(url: str = REDIS_URL):
    import redis

    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def sql_engine(url: str):
    from sqlalchemy import create_engine

    return create_engine(url, pool_size=1)


@contextlib.contextmanager
def redis_prefix(url: str = REDIS_URL) -> Iterator[tuple[str, str]]:
    """A Redis claims spec with a fresh key prefix; its keys are deleted afterwards."""
    client = redis_client(url)
    try:
        client.ping()
    except Exception as exc:
        service_unavailable(f"Redis at {url}", f"{type(exc).__name__}: {exc}")
    prefix = unique("tfx_test")
    try:
        yield with_query(url, prefix=prefix), prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        client.close()


@contextlib.contextmanager
def sql_table(url: str, what: str) -> Iterator[tuple[str, str]]:
    """A SQL claims spec with a fresh table name; the table is dropped afterwards if it was made."""
    from sqlalchemy import text

    engine = sql_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        engine.dispose()
        service_unavailable(f"{what} at {url}", f"{type(exc).__name__}: {exc}")
    table = unique("tfx_claims")
    try:
        yield with_query(url, table=table), table
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()


def sqlite_spec(folder: Path) -> tuple[str, str]:
    table = unique("tfx_claims")
    return f"sqlite:///{folder / 'claims.db'}?table={table}", table


@pytest.fixture
def redis_claims() -> Iterator[str]:
    """A Redis claims spec on the shared Redis, with a key prefix of its own."""
    with redis_prefix() as (spec, _):
        yield spec


@pytest.fixture
def postgres_claims() -> Iterator[str]:
    with sql_table(POSTGRES_URL, "PostgreSQL") as (spec, _):
        yield spec


@pytest.fixture
def mysql_claims() -> Iterator[str]:
    with sql_table(MYSQL_URL, "MariaDB/MySQL") as (spec, _):
        yield spec


@pytest.fixture
def sqlite_claims(tmp_path: Path) -> str:
    return sqlite_spec(tmp_path)[0]


@pytest.fixture(params=["postgres", "mysql", "sqlite"])
def sql_claims(request: pytest.FixtureRequest) -> str:
    """Each SQL ledger in turn: PostgreSQL, MariaDB, SQLite."""
    return request.getfixturevalue(f"{request.param}_claims")


@pytest.fixture(scope="module")
def private_redis():
    """A private Redis (password, AOF fsynced on every write) that tests may kill and freeze."""
    from tests.private_services import start_private_redis

    yield from serving(start_private_redis, "private redis-server")


@pytest.fixture(scope="module")
def private_postgres():
    """A private PostgreSQL cluster (password auth) that tests may kill and freeze."""
    from tests.private_services import start_private_postgres

    yield from serving(start_private_postgres, "private PostgreSQL (initdb)")


@pytest.fixture
def redis_server(private_redis):
    """The private Redis, running and answering at the start and end of the test."""
    private_redis.ensure_running()
    yield private_redis
    private_redis.ensure_running()


@pytest.fixture
def postgres_server(private_postgres):
    """The private PostgreSQL, running and answering at the start and end of the test."""
    private_postgres.ensure_running()
    yield private_postgres
    private_postgres.ensure_running()
