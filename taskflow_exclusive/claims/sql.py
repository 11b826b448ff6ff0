"""Claims in a SQL database through SQLAlchemy: PostgreSQL, MySQL/MariaDB, SQLite.

Choose it with a SQLAlchemy URL (``postgresql://user@host/db``,
``mysql+pymysql://user@host/db``, ``mariadb+pymysql://...``,
``sqlite:////absolute/path/claims.db``) or with an Airflow connection id whose
``conn_type`` is ``postgres``, ``mysql``, ``mariadb`` or ``sqlite`` (see
:mod:`taskflow_exclusive.claims.specs` for what a handle records: never a
password). Drivers: ``taskflow-exclusive[postgres]`` (psycopg 3),
``taskflow-exclusive[mysql]`` (PyMySQL); SQLite needs none.

Our own URL options (removed before the URL reaches the driver; from a
connection: extras ``claims_table`` and ``timeout``):

- ``table``: the claims table (default ``taskflow_exclusive_claims``);
- ``timeout``: seconds for connecting, for each claim's statements together,
  and for SQLite's busy wait (default 10).

The table is created on first use in each process (``CREATE`` if absent; a
concurrent creator winning the race is fine) with the primary key
``(value_key, slot)``, ``value_key`` being the sha256 of the value's URI.
Columns ``uri``, ``consumer_id``, ``claimed_at`` (ISO 8601, UTC), ``host``
and ``pid`` are there for operators.

A claim is an ``INSERT`` that the primary key decides, committed on its own:
``INSERT ... ON CONFLICT DO NOTHING`` on PostgreSQL and SQLite, a plain
``INSERT`` whose duplicate-key error (1062, and only that) means "taken" on
MySQL/MariaDB. When no row was inserted, a separate ``SELECT`` reads the
holder (a single statement that tries both misses the holder under races on
PostgreSQL).

Faults: a statement that gets no answer within ``timeout`` has its socket
shut down, so a stopped or frozen server costs at most that long; a
connection the server dropped (a restart) is replaced once at once. The
caller gets :class:`ClaimStoreUnavailableError` naming the database
(password withheld). A claim whose commit was sent but not acknowledged may
have been recorded: the same consumer's retry finds its own row and gets the
value; anyone else is told who holds it.

Example::

    >>> ledger = open_sql_ledger("sqlite:////tmp/claims.db?table=docs_claims")
    >>> ledger.claim("file:///data/x.json", "loader").consumer_id
    'loader'
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

from taskflow_exclusive.claims.base import ClaimLedger, ClaimRecord, reaching
from taskflow_exclusive.claims.specs import LedgerTarget, opened_once, resolve_spec
from taskflow_exclusive.errors import StorageConfigError

__all__ = ["DEFAULT_TABLE", "DEFAULT_TIMEOUT", "SqlLedger", "open_sql_ledger"]

log = logging.getLogger("taskflow_exclusive.claims")

DEFAULT_TABLE = "taskflow_exclusive_claims"
DEFAULT_TIMEOUT = 10.0

_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_DRIVER_EXTRAS = {"postgresql": "taskflow-exclusive[postgres]", "mysql": "taskflow-exclusive[mysql]"}
_SUPPORTED = frozenset({"postgresql", "mysql", "sqlite"})
_MYSQL_DUPLICATE_KEY = 1062
_MYSQL_DEADLOCK = 1213
_TRANSIENT_RETRIES = 3

T = TypeVar("T")


class SqlLedger(ClaimLedger):
    """Claim records as rows under a primary key on ``(value_key, slot)``."""

    def __init__(self, target: LedgerTarget) -> None:
        from sqlalchemy.engine import make_url

        self.spec = target.recorded
        self._shown = target.shown
        try:
            url = make_url(target.url)
        except Exception as exc:
            raise StorageConfigError(
                f"Claims ledger {self._shown} is not a valid SQLAlchemy URL: {exc}.",
                url=self._shown,
                source="claims",
            ) from exc
        options = {**{k: url.query[k] for k in ("table", "timeout") if k in url.query}, **target.options}
        url = url.difference_update_query(["table", "timeout"])
        if url.drivername.split("+")[0] == "postgres":  # an alias SQLAlchemy dropped; Heroku-style URLs
            url = url.set(drivername="postgresql" + url.drivername[len("postgres") :])
        self.table_name = str(options.get("table") or DEFAULT_TABLE)
        if not _TABLE_NAME.match(self.table_name):
            raise StorageConfigError(
                f"Claims table name {self.table_name!r} (ledger {self._shown}) must be a plain SQL "
                "identifier: letters, digits and underscores, at most 63 characters.",
                url=self._shown,
                source="claims",
            )
        try:
            self.timeout = float(options.get("timeout") or DEFAULT_TIMEOUT)
        except ValueError:
            raise StorageConfigError(
                f"Claims ledger {self._shown}: timeout={options.get('timeout')!r} is not a number "
                "of seconds.",
                url=self._shown,
                source="claims",
            ) from None
        backend = url.get_backend_name()
        self.dialect = "mysql" if backend == "mariadb" else backend
        if self.dialect not in _SUPPORTED:
            raise StorageConfigError(
                f"Claims ledger {self._shown} uses {backend}, which the SQL ledger does not support: "
                "use PostgreSQL (postgresql+psycopg://), MySQL/MariaDB (mysql+pymysql://) or SQLite "
                "(sqlite:////absolute/path.db).",
                url=self._shown,
                source="claims",
            )
        if self.dialect == "sqlite":
            _require_absolute_sqlite(url.database, self._shown)
        self._engine = _engine(url, self.dialect, self.timeout, self._shown)
        self.table = _claims_table(self.table_name)
        self._statements = _statements(self.table, self.dialect)
        self._table_ready = threading.Event()
        self._table_lock = threading.Lock()

    def describe(self) -> str:
        return f"SQL ledger {self._shown} (table {self.table_name})"

    @staticmethod
    def value_key(uri: str) -> str:
        return hashlib.sha256(uri.encode()).hexdigest()

    # -- the three primitives ------------------------------------------------------------------

    def _create_or_get(self, uri: str, slot: int, record: ClaimRecord) -> ClaimRecord | None:
        key = self.value_key(uri)
        row = {
            "value_key": key,
            "slot": int(slot),
            "uri": uri,
            "consumer_id": record.consumer_id,
            "claimed_at": record.claimed_at.isoformat(),
            "host": record.host[:255],
            "pid": int(record.pid),
        }
        with self._reaching(uri):
            self._ensure_table()
            if self._try_insert(row):
                return record
            return self._call(lambda conn: self._select(conn, key, slot))

    def _read(self, uri: str, slot: int) -> ClaimRecord | None:
        with self._reaching(uri):
            self._ensure_table()
            return self._call(lambda conn: self._select(conn, self.value_key(uri), slot))

    def _delete(self, uri: str, slot: int) -> bool:
        parameters = {"key": self.value_key(uri), "slot": int(slot)}
        with self._reaching(uri):
            self._ensure_table()
            return self._call(lambda conn: conn.execute(self._statements["delete"], parameters).rowcount) > 0

    @contextmanager
    def _reaching(self, uri: str) -> Iterator[None]:
        """Failures to reach the database, told briefly (the driver's message, no SQL)."""
        from sqlalchemy import exc as sa_exc

        with reaching(self.describe(), uri):
            try:
                yield
            except sa_exc.DBAPIError as error:
                raise DatabaseError(_brief(error)) from error

    # -- statements ----------------------------------------------------------------------------

    def _try_insert(self, row: dict[str, Any]) -> bool:
        """Insert ``row`` unless its slot is taken; ``True`` if this call inserted it."""
        from sqlalchemy import exc as sa_exc

        try:
            return self._call(lambda conn: self._insert(conn, row))
        except sa_exc.IntegrityError as error:
            if self.dialect == "mysql" and _driver_code(error) == _MYSQL_DUPLICATE_KEY:
                return False  # only a duplicate key means "taken"; any other violation is raised
            raise

    def _insert(self, conn: Any, row: dict[str, Any]) -> bool:
        # PostgreSQL and SQLite: ON CONFLICT DO NOTHING; MySQL: a duplicate raises (_try_insert).
        result = conn.execute(self._statements["insert"], row)
        return self.dialect == "mysql" or result.rowcount == 1

    def _select(self, conn: Any, key: str, slot: int) -> ClaimRecord | None:
        found = conn.execute(self._statements["select"], {"key": key, "slot": int(slot)}).first()
        if found is None:
            return None
        return ClaimRecord(
            consumer_id=found.consumer_id,
            claimed_at=datetime.fromisoformat(found.claimed_at),
            slot=int(slot),
            host=found.host or "",
            pid=int(found.pid or 0),
        )

    def _ensure_table(self) -> None:
        """Create the claims table once per process, safely when many processes do it at once.

        ``CREATE TABLE IF NOT EXISTS`` settles it on SQLite and MySQL/MariaDB;
        PostgreSQL may still report a concurrent creator as a unique or
        duplicate-table violation, after which the table is there. Failures to
        reach the database are raised as they are.
        """
        if self._table_ready.is_set():
            return
        from sqlalchemy import exc as sa_exc
        from sqlalchemy import inspect
        from sqlalchemy.schema import CreateTable

        with self._table_lock:
            if self._table_ready.is_set():
                return
            try:
                self._call(lambda conn: conn.execute(CreateTable(self.table, if_not_exists=True)))
            except (sa_exc.IntegrityError, sa_exc.ProgrammingError):
                if not self._call(lambda conn: inspect(conn).has_table(self.table_name)):
                    raise
            self._table_ready.set()

    # -- running statements within the deadline ------------------------------------------------

    def _call(self, work: Callable[[Any], T]) -> T:
        """Run ``work(conn)`` in one committed transaction, within ``timeout``.

        A pooled connection the server dropped is replaced once at once; a
        MySQL deadlock victim is retried. Both are safe: a claim's insert
        either committed (and the retry finds the same consumer's row) or did not.
        """
        from sqlalchemy import exc as sa_exc

        attempt = 0
        while True:
            attempt += 1
            try:
                return self._attempt(work)
            except sa_exc.DBAPIError as error:
                stale = error.connection_invalidated and attempt == 1
                deadlock = self.dialect == "mysql" and _driver_code(error) == _MYSQL_DEADLOCK
                if (stale or deadlock) and attempt < _TRANSIENT_RETRIES:
                    continue
                raise

    def _attempt(self, work: Callable[[Any], T]) -> T:
        # The engine autocommits every statement and skips the rollbacks SQLAlchemy would
        # otherwise send at the end of each use: no transaction is ever left open.
        with self._engine.connect() as conn:
            if self.dialect == "sqlite":  # no server to freeze; sqlite's busy timeout bounds the wait
                return work(conn)
            token = _watchdog.arm(self.timeout, conn.connection.dbapi_connection)
            try:
                result = work(conn)
            except Exception as error:
                if _watchdog.disarm(token):
                    raise TimeoutError(
                        f"the database did not answer within {self.timeout:g} s (timeout=)"
                    ) from error
                raise
            if _watchdog.disarm(token):
                conn.invalidate()  # done just in time, but its socket is shut down now
            return result


class DatabaseError(Exception):
    """What the database driver reported, briefly (becomes ClaimStoreUnavailableError's cause)."""


def _statements(table: Any, dialect: str) -> dict[str, Any]:
    """The ledger's statements, built once (values are bound at execution)."""
    from sqlalchemy import bindparam, delete, insert, select

    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as insert_unless_taken
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as insert_unless_taken
    else:
        insert_unless_taken = None
    this_slot = (table.c.value_key == bindparam("key"), table.c.slot == bindparam("slot"))
    return {
        "insert": (
            insert_unless_taken(table).on_conflict_do_nothing()
            if insert_unless_taken is not None
            else insert(table)
        ),
        "select": select(table.c.consumer_id, table.c.claimed_at, table.c.host, table.c.pid).where(
            *this_slot
        ),
        "delete": delete(table).where(*this_slot),
    }


def _claims_table(name: str) -> Any:
    from sqlalchemy import Column, Integer, MetaData, String, Table, Text

    return Table(
        name,
        MetaData(),
        Column("value_key", String(64), primary_key=True),
        Column("slot", Integer, primary_key=True, autoincrement=False),
        Column("uri", Text, nullable=False),
        Column("consumer_id", Text, nullable=False),
        Column("claimed_at", String(40), nullable=False),
        Column("host", String(255), nullable=False),
        Column("pid", Integer, nullable=False),
        mysql_charset="utf8mb4",
    )


def _engine(url: Any, dialect: str, timeout: float, shown: str) -> Any:
    from sqlalchemy import create_engine

    connect_args: dict[str, Any] = {}
    if dialect == "postgresql":
        # libpq counts whole seconds and treats less than 2 as 2.
        connect_args["connect_timeout"] = max(2, round(timeout))
    elif dialect in ("mysql", "mariadb"):
        connect_args["connect_timeout"] = max(1, round(timeout))
    elif dialect == "sqlite":
        connect_args["timeout"] = timeout  # the busy wait while another process writes
    connect_args = {k: v for k, v in connect_args.items() if k not in url.query}
    try:
        # Every statement commits on its own (a claim is one INSERT), and no BEGIN, COMMIT or
        # ROLLBACK is sent around it: a winner costs one round trip, a loser two (INSERT, SELECT).
        return create_engine(
            url,
            connect_args=connect_args,
            pool_recycle=3600,
            isolation_level="AUTOCOMMIT",
            skip_autocommit_rollback=True,
        )
    except ImportError as exc:
        extra = _DRIVER_EXTRAS.get(dialect, "the SQLAlchemy driver named in the URL")
        raise StorageConfigError(
            f"The claim ledger {shown} needs a database driver that is not installed ({exc.name}): "
            f"pip install '{extra}' and name its driver in the URL if SQLAlchemy defaults to another "
            "(postgresql+psycopg://, mysql+pymysql://).",
            url=shown,
            source="claims",
            extra=extra,
        ) from exc
    except Exception as exc:
        raise StorageConfigError(
            f"Claims ledger {shown} cannot be used: {type(exc).__name__}: {exc}",
            url=shown,
            source="claims",
        ) from exc


def _require_absolute_sqlite(database: str | None, shown: str) -> None:
    if not database or database == ":memory:" or not os.path.isabs(database):
        raise StorageConfigError(
            f"SQLite claims ledger {shown} must name a database file by absolute path "
            "(sqlite:////srv/claims.db, four slashes): an in-memory or relative database is a "
            "different ledger in every process.",
            url=shown,
            source="claims",
        )


def _driver_code(error: Any) -> int | None:
    """The numeric error code a MySQL driver put first in its exception's args."""
    args = getattr(getattr(error, "orig", None), "args", ())
    return args[0] if args and isinstance(args[0], int) else None


class _Watchdog:
    """Shuts down the socket of a database connection whose statement overran its deadline.

    Drivers wait for a frozen server forever (the kernel still acknowledges
    TCP, so keepalives do not help); shutting the socket down makes the
    blocked call fail at once with a disconnect, which SQLAlchemy handles by
    discarding the connection. One daemon thread serves every ledger.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._armed: dict[int, Any] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._expired: set[int] = set()
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    def forget(self) -> None:
        """Start afresh (in a forked child: the parent's thread and lock state do not carry over)."""
        self.__init__()  # type: ignore[misc]

    def arm(self, seconds: float, dbapi_connection: Any) -> int:
        token = next(self._tokens)
        with self._lock:
            self._armed[token] = dbapi_connection
            deadline = time.monotonic() + seconds
            earliest = not self._deadlines or deadline < self._deadlines[0][0]
            heapq.heappush(self._deadlines, (deadline, token))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="tfx-sql-watchdog", daemon=True)
                self._thread.start()
            if earliest:  # otherwise the thread already wakes up in time
                self._lock.notify()
        return token

    def disarm(self, token: int) -> bool:
        """Stop watching; ``True`` if the deadline had passed and the socket was shut down."""
        with self._lock:
            self._armed.pop(token, None)
            if token in self._expired:
                self._expired.discard(token)
                return True
            return False

    def _run(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                while self._deadlines and (self._deadlines[0][1] not in self._armed):
                    heapq.heappop(self._deadlines)  # disarmed in time
                if self._deadlines and self._deadlines[0][0] <= now:
                    _, token = heapq.heappop(self._deadlines)
                    connection = self._armed.pop(token)
                    self._expired.add(token)
                    _shut_down(connection)
                    continue
                wait = self._deadlines[0][0] - now if self._deadlines else None
                self._lock.wait(timeout=wait)


def _shut_down(dbapi_connection: Any) -> None:
    fileno = getattr(dbapi_connection, "fileno", None)  # psycopg2, psycopg
    sock = getattr(dbapi_connection, "_sock", None)  # PyMySQL
    try:
        fd = fileno() if callable(fileno) else sock.fileno() if sock is not None else -1
        if fd < 0:
            return
        with socket.socket(fileno=os.dup(fd)) as duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed: the blocked call is failing anyway
    log.warning("A claims database statement overran its deadline; its connection was shut down.")


_watchdog = _Watchdog()


os.register_at_fork(after_in_child=_watchdog.forget)


def _brief(error: Any) -> str:
    """The driver's own error, first line only (SQLAlchemy's text adds the SQL and a link)."""
    original = getattr(error, "orig", None) or error
    lines = str(original).strip().splitlines() or [""]
    return f"{type(original).__name__}: {lines[0]}"


def open_sql_ledger(spec: str) -> SqlLedger:
    """The SQL ledger for a SQLAlchemy URL or an Airflow connection id (postgres, mysql, sqlite)."""
    return opened_once("sql", spec, lambda: SqlLedger(resolve_spec(spec)))
