"""Claim ledgers against their raw primitives: latency, and throughput under 16-way contention.

Run::

    .venv/bin/python bench/claims.py                    # every row, default counts
    .venv/bin/python bench/claims.py --rows redis,sqlite --latency 500 --handles 400

For each ledger (one row) it measures, in the same run:

- **latency**: one process claims fresh values one after another, through
  the library's ``ClaimLedger.claim`` and through the bare primitive the
  ledger is built on, the two interleaved call by call (median and p99,
  milliseconds);
- **throughput**: 16 spawned processes all claim the same ``--handles``
  values, each in its own random order, after a barrier; claim attempts per
  second over the wall time (almost all attempts lose: the library then also
  tells the loser who holds the value, the bare primitive does not). The
  median of ``--rounds`` rounds (3), each on fresh values, the bare and the
  library phase in alternating order: one round on two cores varies by 2x.

The ratio columns (library / bare) are the library's overhead. Each bare
primitive does the same durable work as the ledger, on the same server, and
its column in the table names it:

- local disk: an unnamed file (``O_TMPFILE``) with the record, ``fsync``,
  ``link`` into place, ``fsync`` the folder (so the name survives a power
  cut): exactly the durable create the ledger makes. Each value's
  ``.claims`` folder exists before its first claim, as ``publish()`` leaves
  it on local disk (made before the manifest, whose commit fsyncs it into
  place); the benchmark makes them the same way, outside the timing. A
  loser reads the holder's record and the release marker. A loser never writes, though: the
  ledger answers a name that exists with one ``lstat`` before writing
  anything, so under contention it skips the ``fsync`` the bare pays on
  every attempt (the ``link`` alone decides every race either way);
- S3 (SeaweedFS): one conditional PUT through the same fsspec client
  (``pipe_file(mode="create")``, ``If-None-Match: *``);
- Redis: ``SET key record NX`` (the ledger: ``HSETNX`` in a Lua script that
  also returns the holder, one round trip either way);
- PostgreSQL, MariaDB, SQLite: the ledger's row (same columns, same sizes)
  into a table of the ledger's shape, one ``INSERT`` through the DBAPI
  driver on one connection (``ON CONFLICT DO NOTHING``; MariaDB: the
  duplicate-key error caught). The bare loser learns nothing; the ledger's
  loser is told the holder.

What the 16-process SQL rows measure (issue #13): with 16 processes on two
cores, throughput is the CPU spent per attempt, client and server. The
ledger used to pay for a SQLAlchemy ``Connection`` and statement execution
per statement (about 55 us of client CPU each, as much as the driver
itself) and, for a loser, a second statement to read the holder: about 4x
the bare client CPU per attempt, 8-19x slower overall. Now the claim runs on
the pooled driver connection (SQLAlchemy still builds the engine, the pool,
the table and the other statements), and a loser's holder comes back in the
same statement (PostgreSQL: ``WITH inserted AS (INSERT ... ON CONFLICT DO
NOTHING RETURNING ...)`` plus the holder's row when nothing was inserted,
guarded against rows deleted during the statement; MariaDB 10.5+: ``INSERT
... ON DUPLICATE KEY UPDATE value_key = value_key RETURNING ...``, which
measured at half the client CPU of a failed ``INSERT`` plus a ``SELECT``).
What remains is the pool checkout, the claim record (time, host, JSON or
row), and for a loser the ``AlreadyClaimedError`` naming the holder.

Services: Redis, PostgreSQL and MariaDB at ``TFX_REDIS_URL``,
``TFX_POSTGRES_URL``, ``TFX_MYSQL_URL`` (this machine's defaults), with a
fresh key prefix or table per run, removed afterwards; SeaweedFS is started
for the S3 row. Counts also come from ``TFX_BENCH_LATENCY``,
``TFX_BENCH_HANDLES``, ``TFX_BENCH_PROCESSES``, ``TFX_BENCH_ROUNDS``.

Adding a row (e.g. GCS) is a few lines: a function that starts what the row
needs and returns a subject, and one :class:`RowSpec` in ``ROWS``; object
stores reuse :class:`ObjectStoreSubject`.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# The repository root replaces this script's folder on the path, for this process and the spawned
# workers: no module in bench/ can then shadow a standard library module.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

REDIS_URL = os.environ.get("TFX_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("TFX_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("TFX_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
RECORD = b'{"consumer_id": "bench"}'


# -- subjects: what a row claims with (picklable; connections are made in each process) --------


class Subject:
    """A ledger and its bare primitive, rebuilt inside each process that uses them."""

    def bare_label(self) -> str:
        """What the bare column does, for the table."""
        raise NotImplementedError

    def ledger(self):
        raise NotImplementedError

    def value_uri(self, run: str, number: int) -> str:
        raise NotImplementedError

    def bare(self) -> Callable[[str], bool]:
        """A function creating ``key`` if absent with the bare primitive; ``True`` if it did."""
        raise NotImplementedError

    def publish(self, uris: list[str]) -> None:
        """What publishing these values leaves for their claims (nothing, except on local disk)."""


@dataclass(frozen=True)
class ObjectStoreSubject(Subject):
    """The default ledger: claim records beside the value, in the object store at ``url``."""

    url: str

    def ledger(self):
        from taskflow_exclusive.claims.objectstore import ObjectStoreLedger
        from taskflow_exclusive.storage.store import Store

        return ObjectStoreLedger(Store.from_url(self.url))

    def value_uri(self, run: str, number: int) -> str:
        return f"{self.url}/{run}/{number:032x}.bin"

    def publish(self, uris: list[str]) -> None:
        # On local disk publish() makes each value's claims folder (durable with its manifest),
        # so a first claim only links its record: the same here, outside the timing.
        ledger = self.ledger()
        for uri in uris:
            ledger.store.prepare_local_folder(ledger._paths(uri).claims_folder)

    def bare_label(self) -> str:
        if self.url.startswith("file:"):
            return "`O_TMPFILE` + `fsync` + `link` + folder `fsync`"
        return "conditional PUT"

    def bare(self) -> Callable[[str], bool]:
        from taskflow_exclusive.storage.filesystems import filesystem_for, parse_storage_url

        location = parse_storage_url(self.url)
        fs = filesystem_for(location)
        root = location.path
        if location.protocol == "file":
            os.makedirs(root, exist_ok=True)

            def durable_link(key: str) -> bool:
                # The durable create the library makes: an unnamed file, fsync, link.
                fd = os.open(root, os.O_TMPFILE | os.O_WRONLY, 0o644)
                try:
                    os.write(fd, RECORD)
                    os.fsync(fd)
                    os.link(f"/proc/self/fd/{fd}", os.path.join(root, key), src_dir_fd=fd)
                except FileExistsError:
                    return False
                finally:
                    os.close(fd)
                folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY)  # the name survives a power cut
                try:
                    os.fsync(folder)
                finally:
                    os.close(folder)
                return True

            return durable_link

        def conditional_put(key: str) -> bool:
            try:
                fs.pipe_file(f"{root}/bare/{key}", RECORD, mode="create")
            except FileExistsError:
                return False
            except OSError as exc:  # SeaweedFS's 412 arrives as EINVAL; anything else is real
                if "PreconditionFailed" not in repr(exc.__cause__) and "412" not in str(exc):
                    raise
                return False
            return True

        return conditional_put


@dataclass(frozen=True)
class RedisSubject(Subject):
    url: str
    prefix: str

    def ledger(self):
        from taskflow_exclusive.claims.redis import open_redis_ledger

        return open_redis_ledger(f"{self.url}?prefix={self.prefix}")

    def bare_label(self) -> str:
        return "`SET NX`"

    def value_uri(self, run: str, number: int) -> str:
        return f"file:///bench/{run}/{number:032x}.bin"

    def bare(self) -> Callable[[str], bool]:
        import redis

        client = redis.Redis.from_url(self.url)
        return lambda key: bool(client.set(f"{self.prefix}:bare:{key}", RECORD, nx=True))


@dataclass(frozen=True)
class SqlSubject(Subject):
    url: str
    table: str

    def ledger(self):
        from taskflow_exclusive.claims.sql import open_sql_ledger

        return open_sql_ledger(f"{self.url}?table={self.table}")

    def value_uri(self, run: str, number: int) -> str:
        return f"file:///bench/{run}/{number:032x}.bin"

    def bare_label(self) -> str:
        if self.url.startswith("mysql"):
            return "`INSERT`, duplicate key caught"
        return "`INSERT ... ON CONFLICT DO NOTHING`"

    def bare(self) -> Callable[[str], bool]:
        # The ledger's row (same columns, same sizes) into a table of the ledger's shape, through
        # the DBAPI driver on one connection; the loser learns nothing about the holder.
        import hashlib
        import socket

        connection, dialect = _dbapi_connection(self.url)
        cursor = connection.cursor()
        marker = "?" if dialect == "sqlite" else "%s"
        columns = "value_key, slot, uri, consumer_id, claimed_at, host, pid"
        statement = f"INSERT INTO {self.table}_bare ({columns}) VALUES ({', '.join([marker] * 7)})"
        host, pid = socket.gethostname(), os.getpid()

        def row(key: str) -> tuple:
            uri = self.value_uri("bare", 0) + key
            return (
                hashlib.sha256(uri.encode()).hexdigest(),
                0,
                uri,
                "bench",
                "2026-01-01T00:00:00+00:00",
                host,
                pid,
            )

        if dialect == "mysql":
            import pymysql

            def insert(key: str) -> bool:
                try:
                    cursor.execute(statement, row(key))
                except pymysql.err.IntegrityError:
                    return False
                return True

            return insert
        statement += " ON CONFLICT DO NOTHING"

        def insert_or_nothing(key: str) -> bool:
            cursor.execute(statement, row(key))
            return cursor.rowcount == 1

        return insert_or_nothing


def _dbapi_connection(url: str):
    """A bare autocommit DBAPI connection for a SQLAlchemy URL, without SQLAlchemy."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    dialect = parsed.get_backend_name()
    if dialect == "sqlite":
        import sqlite3

        return sqlite3.connect(parsed.database, timeout=30, isolation_level=None), "sqlite"
    if dialect == "postgresql":
        import psycopg

        conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        return psycopg.connect(conninfo, autocommit=True), "postgresql"
    import pymysql

    connection = pymysql.connect(
        host=parsed.host,
        port=parsed.port or 3306,
        user=parsed.username,
        password=parsed.password or "",
        database=parsed.database,
        autocommit=True,
    )
    return connection, "mysql"


# -- rows: how each one starts and cleans up ------------------------------------------------------


@dataclass(frozen=True)
class RowSpec:
    """One table row: its name, its --rows key, and how to start it (``None``: not available)."""

    name: str
    key: str
    start: Callable[[contextlib.ExitStack], Subject]


def _file_row(stack: contextlib.ExitStack) -> Subject:
    import shutil

    folder = tempfile.mkdtemp(prefix="tfx-bench-")
    stack.callback(shutil.rmtree, folder, ignore_errors=True)
    return ObjectStoreSubject(Path(folder).as_uri())


def _s3_row(stack: contextlib.ExitStack) -> Subject:
    from tests.servers import start_seaweedfs

    server = start_seaweedfs()
    stack.callback(server.stop)
    os.environ["AIRFLOW_CONN_TFX_BENCH_S3"] = server.connection_uri_json()  # inherited by workers
    return ObjectStoreSubject(f"s3://tfx_bench_s3@{server.bucket}/bench-{uuid.uuid4().hex[:8]}")


def _redis_row(stack: contextlib.ExitStack) -> Subject:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    prefix = f"tfx_bench_{uuid.uuid4().hex[:8]}"

    def remove_keys() -> None:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])

    stack.callback(remove_keys)
    return RedisSubject(REDIS_URL, prefix)


def _sql_row(url: str) -> Callable[[contextlib.ExitStack], Subject]:
    def start(stack: contextlib.ExitStack) -> Subject:
        table = f"tfx_bench_{uuid.uuid4().hex[:8]}"
        connection, _ = _dbapi_connection(url)
        cursor = connection.cursor()
        cursor.execute(
            f"CREATE TABLE {table}_bare (value_key VARCHAR(64), slot INTEGER, uri TEXT NOT NULL, "
            "consumer_id TEXT NOT NULL, claimed_at VARCHAR(40) NOT NULL, host VARCHAR(255) NOT NULL, "
            "pid INTEGER NOT NULL, PRIMARY KEY (value_key, slot))"
        )

        def drop() -> None:
            for name in (table, f"{table}_bare"):
                cursor.execute(f"DROP TABLE IF EXISTS {name}")
            connection.close()

        stack.callback(drop)
        return SqlSubject(url, table)

    return start


def _sqlite_row(stack: contextlib.ExitStack) -> Subject:
    import shutil

    folder = tempfile.mkdtemp(prefix="tfx-bench-sqlite-")
    stack.callback(shutil.rmtree, folder, ignore_errors=True)
    return _sql_row(f"sqlite:///{folder}/claims.db")(stack)


ROWS: list[RowSpec] = [
    RowSpec("object store, local disk (file://)", "file", _file_row),
    RowSpec("object store, S3 (SeaweedFS)", "s3", _s3_row),
    RowSpec("Redis", "redis", _redis_row),
    RowSpec("PostgreSQL", "postgres", _sql_row(POSTGRES_URL)),
    RowSpec("MariaDB", "mysql", _sql_row(MYSQL_URL)),
    RowSpec("SQLite", "sqlite", _sqlite_row),
]


# -- measuring ----------------------------------------------------------------------------------


@dataclass
class Figures:
    library_ms: list[float]
    bare_ms: list[float]
    library_per_s: float
    bare_per_s: float
    winners_ok: bool


def _latencies(
    library: Callable[[int], object], bare: Callable[[int], object], count: int
) -> tuple[list[float], list[float]]:
    """Milliseconds per call of each, interleaved (library first on even numbers, bare first on
    odd ones), so that drift in the machine or the server weighs on both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for number in range(count):
        order = ((library, times[0]), (bare, times[1]))
        for call, into in order if number % 2 == 0 else reversed(order):
            started = time.perf_counter()
            call(number)
            into.append((time.perf_counter() - started) * 1000)
    return times


def _quiet() -> None:
    import logging

    logging.getLogger("taskflow_exclusive").setLevel(logging.ERROR)  # no per-claim log lines


def _phases(rounds: int) -> list[tuple[int, str]]:
    """``(round, phase)`` in the order every process runs them: bare first in even rounds,
    the library first in odd ones, so that neither always runs on a warmer (or busier) machine."""
    order = []
    for number in range(rounds):
        pair = ("bare", "library") if number % 2 == 0 else ("library", "bare")
        order += [(number, phase) for phase in pair]
    return order


def _round_values(run: str, number: int) -> str:
    """The prefix of the values claimed in round ``number`` of ``run``."""
    return f"{run}-r{number}"


def _contend(subject: Subject, run: str, handles: int, rounds: int, index: int, barrier, results) -> None:  # noqa: PLR0917
    from taskflow_exclusive import AlreadyClaimedError

    _quiet()
    ledger, bare = subject.ledger(), subject.bare()
    consumer = f"worker-{index:02d}"
    ledger.claim(subject.value_uri(f"{run}-warm", index), consumer)  # connections, probes, tables
    bare(f"{run}-warm-{index}")
    order = list(range(handles))
    random.Random(index).shuffle(order)
    for number, phase in _phases(rounds):
        values = _round_values(run, number)  # fresh values every round
        barrier.wait(timeout=600)
        won = 0
        started = time.time()
        for item in order:
            if phase == "bare":
                won += bare(f"{values}-{item}")
            else:
                try:
                    ledger.claim(subject.value_uri(values, item), consumer)
                    won += 1
                except AlreadyClaimedError:
                    pass
        results.put((number, phase, started, time.time(), won))


def measure(subject: Subject, latency: int, handles: int, processes: int, rounds: int) -> Figures:
    run = uuid.uuid4().hex[:8]
    ledger, bare = subject.ledger(), subject.bare()
    ledger.claim(subject.value_uri(f"{run}-warm", 999), "warm")
    bare(f"{run}-warm")
    subject.publish([subject.value_uri(f"{run}-lat", n) for n in range(latency)])
    for number in range(rounds):
        subject.publish([subject.value_uri(_round_values(f"{run}-c", number), n) for n in range(handles)])
    library_ms, bare_ms = _latencies(
        lambda n: ledger.claim(subject.value_uri(f"{run}-lat", n), "solo"),
        lambda n: bare(f"{run}-lat-{n}"),
        latency,
    )

    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [
        context.Process(target=_contend, args=(subject, f"{run}-c", handles, rounds, i, barrier, results))
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    outcomes: dict[tuple[int, str], list[tuple[float, float, int]]] = {key: [] for key in _phases(rounds)}
    try:
        for _ in range(2 * rounds * processes):
            number, phase, started, ended, won = results.get(timeout=900)
            outcomes[number, phase].append((started, ended, won))
    finally:
        for worker in workers:
            worker.join(timeout=60)
            if worker.is_alive():
                worker.kill()

    def per_second(phase: str) -> float:
        """The median over the rounds of attempts per second of wall time."""
        speeds = []
        for number in range(rounds):
            spans = outcomes[number, phase]
            wall = max(end for _, end, _ in spans) - min(start for start, _, _ in spans)
            speeds.append(processes * handles / wall)
        return statistics.median(speeds)

    winners_ok = all(sum(won for *_, won in spans) == handles for spans in outcomes.values())
    return Figures(library_ms, bare_ms, per_second("library"), per_second("bare"), winners_ok)


def _p(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _slower_or_faster(ratio: float) -> str:
    """``ratio`` = bare / library speed, said the way a reader expects: "2.10x slower", "1.30x faster"."""
    return f"{ratio:.2f}x slower" if ratio >= 1 else f"{1 / ratio:.2f}x faster"


def _table(rows: list[tuple[str, str, Figures | str]], processes: int) -> str:
    header = (
        f"| ledger | bare primitive | claim p50 / p99 ms | bare p50 / p99 ms | p50 ratio "
        f"| claims/s x{processes} | bare/s x{processes} | throughput ratio | one winner each |"
    )
    lines = [header, "|" + "---|" * 9]
    for name, bare, figures in rows:
        if isinstance(figures, str):
            lines.append(f"| {name} | {bare} | {figures} |" + " |" * 6)
            continue
        lib50, bare50 = statistics.median(figures.library_ms), statistics.median(figures.bare_ms)
        lines.append(
            f"| {name} | {bare} | {lib50:.3f} / {_p(figures.library_ms, 0.99):.3f} "
            f"| {bare50:.3f} / {_p(figures.bare_ms, 0.99):.3f} | {lib50 / bare50:.2f}x "
            f"| {figures.library_per_s:,.0f} | {figures.bare_per_s:,.0f} "
            f"| {_slower_or_faster(figures.bare_per_s / figures.library_per_s)} "
            f"| {'yes' if figures.winners_ok else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(row.key for row in ROWS), help="comma-separated keys")
    parser.add_argument("--latency", type=int, default=int(os.environ.get("TFX_BENCH_LATENCY", "300")))
    parser.add_argument("--handles", type=int, default=int(os.environ.get("TFX_BENCH_HANDLES", "200")))
    parser.add_argument("--processes", type=int, default=int(os.environ.get("TFX_BENCH_PROCESSES", "16")))
    parser.add_argument(
        "--rounds",
        type=int,
        default=int(os.environ.get("TFX_BENCH_ROUNDS", "3")),
        help="throughput rounds (each on fresh values, bare and library in alternating order); median shown",
    )
    options = parser.parse_args(argv)
    wanted = [key.strip() for key in options.rows.split(",") if key.strip()]
    unknown = set(wanted) - {row.key for row in ROWS}
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}; known: {[row.key for row in ROWS]}")

    _quiet()
    results: list[tuple[str, str, Figures | str]] = []
    began = time.monotonic()
    for row in (row for row in ROWS if row.key in wanted):
        with contextlib.ExitStack() as stack:
            started = time.monotonic()
            bare = ""
            try:
                subject = row.start(stack)
                bare = subject.bare_label()
                figures: Figures | str = measure(
                    subject, options.latency, options.handles, options.processes, options.rounds
                )
            except Exception as exc:  # one row's service down must not hide the others
                figures = f"not measured: {type(exc).__name__}: {str(exc)[:120]}"
            print(f"  {row.name}: {time.monotonic() - started:.0f} s", file=sys.stderr)
        results.append((row.name, bare, figures))
    print(
        f"\nClaims: latency over {options.latency} uncontended claims; throughput with "
        f"{options.processes} processes claiming the same {options.handles} values, median of "
        f"{options.rounds} rounds "
        f"({time.monotonic() - began:.0f} s in all)\n"
    )
    print(_table(results, options.processes))
    return 0 if all(isinstance(f, Figures) and f.winners_ok for _, _, f in results) else 1


if __name__ == "__main__":
    sys.exit(main())
