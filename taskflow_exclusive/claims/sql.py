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

A claim is an ``INSERT`` that the primary key decides, committed on its own,
sent through the pooled driver connection (SQLAlchemy builds the engine, the
pool and the table; running the claim's one statement through it would double
the client's work per claim). A winner and almost every loser cost one round
trip:

- PostgreSQL: one statement, ``WITH inserted AS (INSERT ... ON CONFLICT DO
  NOTHING RETURNING ...)`` and, only if nothing was inserted, the holder's
  row. That row is read with the statement's snapshot, so it is trusted only
  if no one has deleted it (``xmax = 0``): then it was live from before the
  statement until after the insert met it, so it is the row the insert
  conflicted with. A holder that committed during the statement is not in
  the snapshot, and one released during it has ``xmax`` set; either way the
  statement returns no holder and a second ``SELECT`` (a fresh snapshot)
  reads it.
- MariaDB 10.5 and later: ``INSERT ... ON DUPLICATE KEY UPDATE value_key =
  value_key RETURNING ...``, which returns the row now in the slot, ours or
  the holder's (the duplicate is read with a lock, so it is current); ours
  is recognised by its consumer, time, host and pid.
- MySQL (no ``RETURNING``): a plain ``INSERT`` whose duplicate-key error
  (1062, and only that) means "taken", then a ``SELECT`` of the holder.
- SQLite: ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, then a ``SELECT``
  of the holder when nothing was inserted (in process, no round trip).

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
from collections.abc import Callable
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
        self._statements = _statements(self.table)
        self._table_ready = threading.Event()
        self._table_lock = threading.Lock()
        self._claim: _ClaimStatement | None = None

    def describe(self) -> str:
        return f"SQL ledger {self._shown} (table {self.table_name})"

    @staticmethod
    def value_key(uri: str) -> str:
        return hashlib.sha256(uri.encode()).hexdigest()

    # -- the four primitives -------------------------------------------------------------------

    def _create_or_get(self, uri: str, slot: int, record: ClaimRecord) -> ClaimRecord | None:
        row = {
            "value_key": self.value_key(uri),
            "slot": int(slot),
            "uri": uri,
            "consumer_id": record.consumer_id,
            "claimed_at": record.claimed_at.isoformat(),
            "host": record.host[:255],
            "pid": int(record.pid),
        }
        with self._reaching(uri):
            self._ensure_table()
            claim = self._claim_statement()
            try:
                created, holder = self._call(lambda cursor: claim.run(cursor, row), raw=True)
            except Exception as error:
                if not claim.taken(error):
                    raise
                created, holder = False, None
            if created:
                return record
            if holder is None:  # not known from the claim's own statement: read it
                holder = self._call(lambda cursor: claim.holder(cursor, row), raw=True)
        if holder is None:
            return None
        return ClaimRecord.from_mapping(
            {"slot": row["slot"], **holder, "host": holder["host"] or ""},
            where=f"{self.describe()}, row slot={slot} of {uri}",
        )

    def _list(self, uri: str) -> list[ClaimRecord]:
        with self._reaching(uri):
            self._ensure_table()
            rows = self._call(
                lambda conn: conn.execute(self._statements["list"], {"value_key": self.value_key(uri)}).all()
            )
        return [self._record(row, uri) for row in rows]

    def _delete_if_held(self, uri: str, record: ClaimRecord) -> bool:
        parameters = {
            "value_key": self.value_key(uri),
            "slot": int(record.slot),
            "consumer_id": record.consumer_id,
            "claimed_at": record.claimed_at.isoformat(),
        }
        with self._reaching(uri):
            self._ensure_table()
            deleted = self._call(lambda conn: conn.execute(self._statements["release"], parameters).rowcount)
        return deleted == 1

    def _forget(self, uri: str) -> int:
        with self._reaching(uri):
            self._ensure_table()
            return int(
                self._call(
                    lambda conn: (
                        conn.execute(self._statements["forget"], {"value_key": self.value_key(uri)}).rowcount
                    )
                )
            )

    def _record(self, row: Any, uri: str) -> ClaimRecord:
        return ClaimRecord.from_mapping(
            {**row._asdict(), "host": row.host or ""},
            where=f"{self.describe()}, row slot={row.slot} of {uri}",
        )

    def _reaching(self, uri: str) -> Any:
        """Failures told as outages (retry) or misconfigurations (fix), briefly and without SQL."""
        return reaching(self.describe(), uri, misconfigured=_misconfigured, unreachable=_unreachable)

    # -- statements ----------------------------------------------------------------------------

    def _claim_statement(self) -> _ClaimStatement:
        """The claim's statements for this database (after the first connection: MariaDB or MySQL)."""
        if self._claim is None:
            dialect = self._engine.dialect
            returning = self.dialect != "mysql" or (
                dialect.is_mariadb and (dialect.server_version_info or (0,)) >= (10, 5)
            )
            table = dialect.identifier_preparer.quote(self.table_name)
            self._claim = _ClaimStatement(self.dialect, table, returning=returning)
        return self._claim

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

    def _call(self, work: Callable[[Any], T], *, raw: bool = False) -> T:
        """Run ``work(conn)`` in one committed transaction, within ``timeout``.

        ``raw``: ``work`` gets a cursor of the pooled driver connection instead
        of a SQLAlchemy connection, and driver errors are raised as
        SQLAlchemy's (:meth:`_attempt_raw`). A pooled connection the server
        dropped is replaced once at once; a MySQL deadlock victim is retried.
        Both are safe: a claim's insert either committed (and the retry finds
        the same consumer's row) or did not.
        """
        from sqlalchemy import exc as sa_exc

        attempt = 0
        while True:
            attempt += 1
            try:
                return self._attempt_raw(work) if raw else self._attempt(work)
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
            if self.dialect != "postgresql":
                # sqlite: no server to freeze, its busy timeout bounds the wait;
                # MySQL/MariaDB: PyMySQL's read_timeout/write_timeout bound it (see _engine).
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

    def _attempt_raw(self, work: Callable[[Any], T]) -> T:
        """``work(cursor)`` on a pooled driver connection, failing as :meth:`_attempt` would.

        Driver errors are raised as SQLAlchemy's (``DBAPIError.instance``, as
        SQLAlchemy itself does), a connection found dropped is invalidated, and
        PostgreSQL statements are bounded by the watchdog.
        """
        dialect = self._engine.dialect
        driver_error = dialect.loaded_dbapi.Error
        try:
            connection = self._engine.raw_connection()
        except driver_error as error:
            raise _as_sqlalchemy(error, dialect, dialect.is_disconnect(error, None, None)) from error
        cursor = None
        token = (
            _watchdog.arm(self.timeout, connection.dbapi_connection) if self.dialect == "postgresql" else None
        )
        try:
            cursor = connection.cursor()
            result = work(cursor)
        except driver_error as error:
            overran = token is not None and _watchdog.disarm(token)
            dropped = overran or dialect.is_disconnect(error, connection.dbapi_connection, cursor)
            if dropped:
                connection.invalidate(error)
            wrapped = _as_sqlalchemy(error, dialect, dropped)
            if overran:
                raise TimeoutError(
                    f"the database did not answer within {self.timeout:g} s (timeout=)"
                ) from wrapped
            raise wrapped from error
        except BaseException:
            if token is not None:
                _watchdog.disarm(token)
            raise
        else:
            if token is not None and _watchdog.disarm(token):
                connection.invalidate()  # done just in time, but its socket is shut down now
            return result
        finally:
            if cursor is not None and connection.is_valid:
                cursor.close()
            connection.close()


def _as_sqlalchemy(error: Exception, dialect: Any, dropped: bool) -> Exception:
    """A driver's error as the SQLAlchemy error it would have raised (``IntegrityError``, ...)."""
    from sqlalchemy import exc as sa_exc

    return sa_exc.DBAPIError.instance(
        None, None, error, dialect.loaded_dbapi.Error, connection_invalidated=dropped, dialect=dialect
    )


class _ClaimStatement:
    """A claim as SQL for one database: one statement that inserts and, on PostgreSQL and
    MariaDB, returns the holder too; written for the driver (parameters by name), run on a cursor.
    """

    _COLUMNS = "value_key, slot, uri, consumer_id, claimed_at, host, pid"
    _FIELDS = ("consumer_id", "claimed_at", "host", "pid")

    def __init__(self, dialect: str, table: str, *, returning: bool) -> None:
        self.dialect, self.returning = dialect, returning
        mark = (lambda name: f":{name}") if dialect == "sqlite" else (lambda name: f"%({name})s")
        values = ", ".join(mark(name.strip()) for name in self._COLUMNS.split(","))
        fields = ", ".join(self._FIELDS)
        this_slot = f"value_key = {mark('value_key')} AND slot = {mark('slot')}"
        insert = f"INSERT INTO {table} ({self._COLUMNS}) VALUES ({values})"
        self.select = f"SELECT {fields} FROM {table} WHERE {this_slot}"
        if dialect == "postgresql":
            # The holder's row only when nothing was inserted (the one-time NOT EXISTS also makes
            # the insert run first), and only if no one has deleted it (see the module docstring).
            self.insert = (
                f"WITH inserted AS ({insert} ON CONFLICT DO NOTHING RETURNING slot) "
                "SELECT true, NULL, NULL, NULL, NULL FROM inserted UNION ALL "
                f"SELECT false, {fields} FROM {table} WHERE {this_slot} AND xmax = 0 "
                "AND NOT EXISTS (SELECT FROM inserted)"
            )
        elif dialect == "mysql" and returning:
            # MariaDB: the row in the slot afterwards, ours or the holder's, in one statement.
            self.insert = f"{insert} ON DUPLICATE KEY UPDATE value_key = value_key RETURNING {fields}"
        elif dialect == "mysql":
            self.insert = insert  # a duplicate key raises: see taken()
        else:
            self.insert = f"{insert} ON CONFLICT DO NOTHING RETURNING slot"

    def run(self, cursor: Any, row: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
        """``(created, holder)``: whether this inserted ``row``, else the holder if already known."""
        cursor.execute(self.insert, row)
        if self.dialect == "mysql" and not self.returning:
            return True, None  # no duplicate-key error: inserted
        found = cursor.fetchone()
        if self.dialect == "postgresql":
            if found is None:
                return False, None  # the holder committed or left during the statement: read it
            return (True, None) if found[0] else (False, dict(zip(self._FIELDS, found[1:], strict=True)))
        if self.dialect == "mysql":
            stored = dict(zip(self._FIELDS, found, strict=True))
            mine = all(stored[name] == row[name] for name in self._FIELDS)
            return (True, None) if mine else (False, stored)
        return found is not None, None

    def holder(self, cursor: Any, row: dict[str, Any]) -> dict[str, Any] | None:
        """The record in ``row``'s slot now, or ``None`` when it is empty."""
        cursor.execute(self.select, {"value_key": row["value_key"], "slot": row["slot"]})
        found = cursor.fetchone()
        return None if found is None else dict(zip(self._FIELDS, found, strict=True))

    def taken(self, error: BaseException) -> bool:
        """Whether ``error`` only says the slot is taken (MySQL's duplicate key, 1062, and only it)."""
        from sqlalchemy import exc as sa_exc

        return (
            self.dialect == "mysql"
            and isinstance(error, sa_exc.IntegrityError)
            and _driver_code(error) == _MYSQL_DUPLICATE_KEY
        )


def _statements(table: Any) -> dict[str, Any]:
    """The ledger's other statements, built once (values are bound at execution; claims: _ClaimStatement)."""
    from sqlalchemy import bindparam, delete, select

    c = table.c
    this_value = c.value_key == bindparam("value_key")
    this_slot = (this_value, c.slot == bindparam("slot"))
    fields = (c.slot, c.consumer_id, c.claimed_at, c.host, c.pid)
    return {
        "list": select(*fields).where(this_value).order_by(c.slot),
        # Compare-and-delete: only the very claim that was read (consumer and time) is freed.
        "release": delete(table).where(
            *this_slot,
            c.consumer_id == bindparam("consumer_id"),
            c.claimed_at == bindparam("claimed_at"),
        ),
        "forget": delete(table).where(this_value),
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
        # PyMySQL bounds every read and write itself: a frozen server fails the statement
        # with OperationalError 2013 (an outage), so no watchdog is needed here.
        connect_args["read_timeout"] = connect_args["write_timeout"] = timeout
    elif dialect == "sqlite":
        connect_args["timeout"] = timeout  # the busy wait while another process writes
    connect_args = {k: v for k, v in connect_args.items() if k not in url.query}
    try:
        # Every statement commits on its own (a claim is one INSERT), and no BEGIN, COMMIT or
        # ROLLBACK is sent around it: a claim costs one round trip (a loser on MySQL, or one
        # racing a release on PostgreSQL, a second to read the holder).
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
    """Shuts down the socket of a PostgreSQL connection whose statement overran its deadline.

    libpq has no read timeout of its own (PyMySQL has: see ``_engine``).

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
    try:
        fd = dbapi_connection.fileno()  # psycopg and psycopg2: the libpq socket
        if fd < 0:
            return
        with socket.socket(fileno=os.dup(fd)) as duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed: the blocked call is failing anyway
    log.warning("A claims database statement overran its deadline; its connection was shut down.")


_watchdog = _Watchdog()


os.register_at_fork(after_in_child=_watchdog.forget)


# SQLSTATE classes and MySQL error codes that a retry will not cure, with what to fix.
_PERMANENT_SQLSTATE = {
    "28": "Check the user and password in the claims URL or the Airflow connection.",
    "3D": "The database named in the claims URL does not exist: create it or fix the name.",
    "42": (
        "The claims table has another shape or the user lacks privileges on it: give the ledger a "
        "table of its own (?table=...) and grant the user CREATE, SELECT, INSERT and DELETE."
    ),
    "22": "The database cannot store a value of this claim (consumer id, host): check its encoding.",
    "23": "The claims table has a constraint the ledger does not expect: give it a table of its own.",
}
_PERMANENT_MYSQL = {
    1044: _PERMANENT_SQLSTATE["28"],
    1045: _PERMANENT_SQLSTATE["28"],
    1049: _PERMANENT_SQLSTATE["3D"],
    1054: _PERMANENT_SQLSTATE["42"],
    1142: _PERMANENT_SQLSTATE["42"],
    1146: _PERMANENT_SQLSTATE["42"],
    1366: _PERMANENT_SQLSTATE["22"],
    1406: _PERMANENT_SQLSTATE["22"],
}
_PERMANENT_SQLITE = {
    "unable to open database file": (
        "The SQLite file cannot be opened: its folder must exist and be writable by every worker."
    ),
    "readonly database": "The SQLite file is read-only for this user: make it writable.",
    "no such table": _PERMANENT_SQLSTATE["42"],
    "no such column": _PERMANENT_SQLSTATE["42"],
    "has no column": _PERMANENT_SQLSTATE["42"],
    "file is not a database": "The SQLite path names a file that is not a database: point it elsewhere.",
}
_PERMANENT_CONNECT_TEXT = {
    "password authentication failed": _PERMANENT_SQLSTATE["28"],
    "no password supplied": _PERMANENT_SQLSTATE["28"],
    "role": _PERMANENT_SQLSTATE["28"],
    "database": _PERMANENT_SQLSTATE["3D"],
}


def _misconfigured(exc: BaseException) -> str | None:
    """What to fix when the database refused for a reason a retry will not cure, else ``None``."""
    from sqlalchemy import exc as sa_exc

    if not isinstance(exc, sa_exc.DBAPIError) or exc.connection_invalidated:
        return None
    original = exc.orig
    sqlstate = getattr(original, "sqlstate", None)
    text = str(original).lower()
    candidates = [
        _PERMANENT_SQLSTATE.get(sqlstate[:2]) if isinstance(sqlstate, str) else None,
        _PERMANENT_MYSQL.get(_driver_code(exc)),  # type: ignore[arg-type]
        *(
            fix
            for phrase, fix in _PERMANENT_SQLITE.items()
            if type(original).__module__ == "sqlite3" and phrase in text
        ),
        # psycopg reports a refused login before any SQLSTATE exists: read its words.
        *(
            fix
            for phrase, fix in _PERMANENT_CONNECT_TEXT.items()
            if phrase in text and ("does not exist" in text or "password" in text)
        ),
    ]
    if isinstance(exc, (sa_exc.IntegrityError, sa_exc.DataError, sa_exc.ProgrammingError)):
        candidates.append(_PERMANENT_SQLSTATE["42"])
    return next((fix for fix in candidates if fix), None)


def _unreachable(exc: BaseException) -> bool:
    """Operational and interface errors (not refused logins: see ``_misconfigured``) are outages."""
    from sqlalchemy import exc as sa_exc

    return isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)) or (
        isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
    )


def open_sql_ledger(spec: str) -> SqlLedger:
    """The SQL ledger for a SQLAlchemy URL or an Airflow connection id (postgres, mysql, sqlite)."""
    return opened_once("sql", spec, lambda: SqlLedger(resolve_spec(spec)))
