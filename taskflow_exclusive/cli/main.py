"""The ``taskflow-exclusive`` command.

Example::

    $ taskflow-exclusive demo
    $ taskflow-exclusive holders @handle.json
    $ taskflow-exclusive holders --dag orders_pipeline --run 'manual__2026-11-24T09:00:00+00:00'
    $ taskflow-exclusive release @handle.json --consumer 'etl/run1/load/-1' --reason 'worker lost'
    $ taskflow-exclusive cleanup s3://my_conn@bucket/exclusive --older-than 6h --dry-run

``HANDLE`` is a handle as you can copy it from anywhere it is shown, given
as the text itself, ``@path`` of a file holding it, or ``-`` to read it from
standard input: the handle's JSON (``ExclusiveHandle.to_json()``), the XCom
serde envelope the REST API returns (``{"__classname__": ..., "__data__": ...}``),
the ``ExclusiveXCom`` reference row, the Airflow UI's text
(``taskflow_exclusive.handle.ExclusiveHandle@version=1(...)``) or the REST
API's whole XCom entry (see :mod:`taskflow_exclusive.handle_forms`).

Exit status: 0 done; 1 refused or failed (the reason in one line on standard
error: a claim held by someone else, storage without credentials, a prefix
that does not exist, a handle that is not one); 2 bad usage (a missing option,
an unreadable ``@file``, a duration that is not one). ``--traceback`` shows
the full traceback of a failure instead. Progress of long operations goes to
standard error, only when it is a terminal.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
import warnings
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from taskflow_exclusive.handle import ExclusiveHandle

log = logging.getLogger("taskflow_exclusive.cli")


def _demo(args: argparse.Namespace) -> int:
    from taskflow_exclusive.cli import demo

    return demo.main(keep=args.keep)


# --- operator commands -------------------------------------------------------------------------

_DURATION = re.compile(r"([0-9]+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``1h30m``, ``2d`` (or plain seconds) as a timedelta."""
    text = text.strip().lower()
    if re.fullmatch(r"[0-9]+", text):
        text += "s"  # plain seconds
    parts = _DURATION.findall(text)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 90s, 15m, 1h30m or 2d")
    try:
        return sum((timedelta(**{_UNITS[unit]: int(n)}) for n, unit in parts), timedelta())
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text!r} is longer than any grace period can be") from None


def _read_handle(argument: str) -> ExclusiveHandle:
    from taskflow_exclusive.errors import InvalidArgumentError
    from taskflow_exclusive.handle_forms import parse_handle

    where = {"-": "standard input"}.get(argument, f"file {argument[1:]!r}" if argument[:1] == "@" else "")
    try:
        if argument == "-":
            text = sys.stdin.read()
        elif argument.startswith("@"):
            with open(argument[1:], encoding="utf-8") as file:
                text = file.read()
        else:
            text = argument
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise InvalidArgumentError(
            f"HANDLE: cannot read the handle from {where} ({reason}); pass the handle itself, "
            "@FILE holding it, or - to read standard input.",
            argument="HANDLE",
            value=argument[:200],
            expected="a handle (as copied from XCom, the REST API or the UI), @FILE holding it, or -",
        ) from None
    return parse_handle(text, where=where or "the HANDLE argument")


def _holders(args: argparse.Namespace) -> int:
    if (args.handle is None) == (args.dag is None):
        raise _usage("holders takes a HANDLE, or --dag and --run to list a DAG run's values (not both)")
    if args.dag is not None:
        return _run_holders(args)
    handle = _read_handle(args.handle)
    records = handle.holders()
    if args.json:
        print(json.dumps([json.loads(record.to_json()) for record in records], indent=2))
        return 0
    ledger = handle.claims or "the object store beside the value"
    print(f"{handle.uri} (max_claims={handle.max_claims}, ledger: {ledger})")
    if not records:
        print("  not claimed")
    for record in records:
        print(
            f"  slot {record.slot}: {record.consumer_id!r} since {record.claimed_at.isoformat()} "
            f"(host {record.host}, pid {record.pid})"
        )
    _print_handed_off(handle, records)
    return 0


def _print_handed_off(handle: ExclusiveHandle, records: list[Any]) -> None:
    """For a value handed to a triggered DAG: who holds it there (the child's side of the hand-off)."""
    from taskflow_exclusive.consuming import value_holders
    from taskflow_exclusive.grants import handoff_uris

    for uri in handoff_uris(handle.uri, records):
        dag = uri.rpartition("/")[2]
        children = value_holders(handle, uri)
        if not children:
            print(f"  handed off to DAG {dag}: not claimed there yet")
        for child in children:
            print(
                f"  handed off to DAG {dag}: held by {child.consumer_id!r} since "
                f"{child.claimed_at.isoformat()} (host {child.host}, pid {child.pid})"
            )


def _usage(message: str) -> Exception:
    """A usage error (exit status 2), said in one line."""
    from taskflow_exclusive.errors import InvalidArgumentError

    return InvalidArgumentError(f"{message}.", argument="holders", value="", expected=message)


def _run_holders(args: argparse.Namespace) -> int:
    """Every value a DAG run stored and who holds it, found in Airflow's metadata database."""
    if args.run_id is None:
        raise _usage("--dag needs --run RUN_ID (as the UI or `airflow dags list-runs` shows it)")
    from taskflow_exclusive.airflow.logs import import_airflow

    import_airflow()
    from taskflow_exclusive.airflow.inventory import run_inventory

    inventory = run_inventory(args.dag, args.run_id, task_id=args.task, map_index=args.map_index)
    if args.json:
        print(json.dumps(inventory.to_dict(), indent=2))
        return 0
    where = (
        f" task {args.task}" + ("" if args.map_index is None else f"[{args.map_index}]") if args.task else ""
    )
    if not inventory.values:
        print(f"No taskflow-exclusive values in run {args.run_id!r} of DAG {args.dag!r}{where}.")
        return 0
    print(
        f"Run {args.run_id!r} of DAG {args.dag!r}{where}: {len(inventory.values)} value(s), "
        f"{len(inventory.unclaimed)} unclaimed, {len(inventory.stale)} held by a task that failed for good"
    )
    for value in inventory.values:
        index = "" if value.map_index == -1 else f"[{value.map_index}]"
        flags = "".join(f" [{flag}]" for flag in ("unclaimed", "stale") if getattr(value, flag))
        print(f"{value.task_id}{index} {value.uri} ({value.serializer}, {value.size} bytes){flags}")
        if value.problem:
            print(f"  holders unknown: {value.problem}")
        for holder in value.holders:
            state = f", {holder.task_state}" if holder.task_state else ""
            print(
                f"  slot {holder.slot}: {holder.consumer_id!r} since {holder.claimed_at.isoformat()} "
                f"(host {holder.host}, pid {holder.pid}{state})"
            )
    return 0


def _release(args: argparse.Namespace) -> int:
    from taskflow_exclusive.claims.base import check_consumer_id

    check_consumer_id(args.consumer)
    handle = _read_handle(args.handle)
    released = handle.release(args.consumer, reason=args.reason)
    if released is None:
        holders = ", ".join(repr(r.consumer_id) for r in handle.holders()) or "nobody"
        print(
            f"error: {args.consumer!r} holds no claim on {handle.uri} (holders: {holders}); "
            "nothing was released.",
            file=sys.stderr,
        )
        return 1
    print(
        f"Released the claim of {released.consumer_id!r} on {handle.uri} (held since "
        f"{released.claimed_at.isoformat()}, slot {released.slot}). Another consumer may claim it now."
    )
    return 0


def _cleanup(args: argparse.Namespace) -> int:
    from taskflow_exclusive.storage.cleanup import Sweep, remove_uncommitted

    store = _existing_store(args.storage_url)
    verb = "would remove" if args.dry_run else "removed"
    progress = _Progress(sys.stderr)
    sweep = Sweep()

    def show(leftover: Any) -> None:
        progress.clear()
        print(f"{verb} {leftover.describe()}", flush=True)

    def advance(done: int, total: int) -> None:
        action = "checking" if args.dry_run else "removing"
        progress.show(f"{action} leftovers: {done} of {total}", force=done == total)

    progress.show(f"listing {args.storage_url} ...", force=True)
    try:
        leftovers = remove_uncommitted(
            store,
            older_than=args.older_than,
            dry_run=args.dry_run,
            sweep=sweep,
            on_entry=show,
            progress=advance,
        )
    finally:
        progress.clear()
    print(_cleanup_summary(args, leftovers, sweep, verb))
    return 0


def _cleanup_summary(args: argparse.Namespace, leftovers: list[Any], sweep: Any, verb: str) -> str:
    kinds: dict[str, int] = {}
    for leftover in leftovers:
        kinds[leftover.kind] = kinds.get(leftover.kind, 0) + 1
    by_kind = "".join(f"\n  {count} {kind}" for kind, count in sorted(kinds.items()))
    size = sum(leftover.size or 0 for leftover in leftovers)
    kept = [
        f"{sweep.listed - sweep.leftovers} file(s) that are committed values or not names this "
        "library writes (never touched)",
        f"{sweep.recent} leftover(s) younger than {args.older_than} (a write may still be running; "
        "see --older-than)",
    ]
    if sweep.changed:
        kept.append(f"{sweep.changed} committed or back in use since the listing")
    return (
        f"Summary for {args.storage_url}: {verb} {len(leftovers)} leftover(s), {_bytes(size)}{by_kind}\n"
        f"Kept: {sweep.listed} file(s) listed; " + "; ".join(kept) + "."
    )


def _bytes(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def _existing_store(url: str) -> Any:
    """The store at ``url``, refusing a prefix under which nothing exists (a typo, a wrong bucket)."""
    from taskflow_exclusive.errors import StorageConfigError
    from taskflow_exclusive.storage.store import Store

    store = Store.from_url(url, source="argument")
    base = store.location.path
    store.fs.invalidate_cache(base)
    if not store.fs.exists(base):
        raise StorageConfigError(
            f"Nothing exists at {url} (no such folder, bucket or prefix): check the URL. Nothing "
            "was removed.",
            url=url,
            source="argument",
        )
    return store


class _Progress:
    """A status line on ``stream`` for long operations: only on a terminal, at most 10 times a second."""

    def __init__(self, stream: Any, interval: float = 0.1) -> None:
        self.stream = stream
        self.enabled = bool(getattr(stream, "isatty", lambda: False)())
        self.interval = interval
        self.shown_at = 0.0
        self.visible = False

    def show(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.shown_at < self.interval):
            return
        self.stream.write(f"\r\x1b[K{text}")
        self.stream.flush()
        self.shown_at, self.visible = now, True

    def clear(self) -> None:
        if self.visible:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.visible = False


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line on standard error (exit status 2), without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="taskflow-exclusive",
        description="Claim-once TaskFlow outputs for Apache Airflow 3.",
    )
    parser.add_argument(
        "--traceback", action="store_true", help="on a failure, show the full traceback, not one line"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="run the example DAG with dag.test() (throw-away Airflow home) and show every claim",
    )
    demo.add_argument(
        "--keep", action="store_true", help="keep the demo's Airflow home afterwards (values, database, log)"
    )
    demo.set_defaults(run=_demo)

    handle_help = (
        "the handle as XCom, the REST API or the UI shows it (JSON, serde envelope, reference row or "
        "the UI's text), @FILE holding it, or - for standard input"
    )
    holders = commands.add_parser(
        "holders",
        help="who holds a value (or every value of a DAG run), and since when",
        description="Who holds the value of HANDLE; or, with --dag and --run (where Airflow's "
        "metadata database is reachable: the scheduler's or API server's host), every value the "
        "run stored, who holds each, and which nobody claimed.",
    )
    holders.add_argument("handle", metavar="HANDLE", nargs="?", help=handle_help)
    holders.add_argument("--dag", help="a DAG id: list the values of one of its runs")
    holders.add_argument("--run", dest="run_id", help="the run id (with --dag)")
    holders.add_argument("--task", help="only what this task produced or claimed (with --dag)")
    holders.add_argument("--map-index", type=int, help="only this mapped index of --task")
    holders.add_argument("--json", action="store_true", help="print the claim records as JSON")
    holders.set_defaults(run=_holders)

    release = commands.add_parser(
        "release",
        help="free a claim whose consumer is gone for good (logged; never automatic)",
        description="Free CONSUMER's claim on the value so another consumer may claim it. Use it "
        "only when the holder will never run again: if it does, both may get the value.",
    )
    release.add_argument("handle", metavar="HANDLE", help=handle_help)
    release.add_argument("--consumer", required=True, help="the consumer id whose claim to free")
    release.add_argument("--reason", required=True, help="why (written to the log for the audit trail)")
    release.set_defaults(run=_release)

    cleanup = commands.add_parser(
        "cleanup",
        help="remove what interrupted writes left under a storage URL",
        description="Remove data without a manifest, temporary files, probe objects, claims of "
        "purged values and orphaned S3 multipart uploads, older than a grace period. Only the "
        "exact names and places this library writes are considered (each line says which rule it "
        "matched); committed values and anything else under the prefix are never touched.",
    )
    cleanup.add_argument("storage_url", metavar="STORAGE_URL", help="e.g. s3://conn_id@bucket/prefix")
    cleanup.add_argument(
        "--older-than",
        type=parse_duration,
        default=timedelta(hours=1),
        help="grace period; longer than your longest write (default: 1h)",
    )
    cleanup.add_argument("--dry-run", action="store_true", help="list what would be removed")
    cleanup.set_defaults(run=_cleanup)
    from taskflow_exclusive.cli.queue import add_queue_commands

    add_queue_commands(commands)
    return parser


def _log_to_stderr(traceback: bool) -> None:
    """Operator commands log what they change (a release, each removal) on standard error.

    Airflow (imported to read connections) is imported the way the library
    imports it (:func:`~taskflow_exclusive.airflow.logs.import_airflow`:
    the process's logging is left as it was), then logging is pointed at
    standard error, one line per record, so standard output keeps only the
    command's own output (``holders --json`` stays parseable).
    """
    from taskflow_exclusive.airflow.logs import import_airflow

    import_airflow()
    if not traceback:
        # Airflow 3.1 and SQLAlchemy warn about their own deprecations whenever a connection is
        # read: nothing the operator can act on, so only --traceback shows them. (After the
        # import: importing Airflow installs warning filters of its own.)
        warnings.filterwarnings("ignore", module=r"(airflow|sqlalchemy)(\.|$)")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter(traceback))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("taskflow_exclusive").setLevel(logging.INFO)
    if not traceback:
        # Airflow's own warnings when the CLI reads a connection outside a task (3.1: "empty
        # cryptography key"): about Airflow's setup, not this command.
        logging.getLogger("airflow").setLevel(logging.ERROR)


class _OneLineFormatter(logging.Formatter):
    """``LEVEL logger: message``; an exception as its one-line summary unless tracebacks were asked for."""

    def __init__(self, traceback: bool) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self.traceback = traceback

    def format(self, record: logging.LogRecord) -> str:
        if self.traceback or not record.exc_info or record.exc_info[1] is None:
            return super().format(record)
        line = _one_line(record.exc_info[1])
        record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return f"{super().format(record)} ({line})"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "demo":
        _log_to_stderr(args.traceback)
    from taskflow_exclusive.errors import ExclusiveError, InvalidArgumentError

    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        _print_error("interrupted")
        return 130
    except Exception as exc:
        if args.traceback:
            raise
        _print_error(_explain(exc))
        if isinstance(exc, InvalidArgumentError):
            return 2
        if not isinstance(exc, (ExclusiveError, OSError)) and _credentials_problem(exc) is None:
            print("(run with --traceback to see where it failed)", file=sys.stderr)
        return 1


# Exceptions (by class name, anywhere in the class's MRO) that mean "no usable credentials".
_CREDENTIAL_ERRORS = {
    "NoCredentialsError": "no credentials were found",
    "PartialCredentialsError": "the credentials are incomplete",
    "DefaultCredentialsError": "no credentials were found",
    "RefreshError": "the credentials could not be refreshed",
}
_REFUSED_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken"}


def _credentials_problem(exc: BaseException) -> str | None:
    """What is wrong with the storage credentials, if that is what ``exc`` (or its cause) says."""
    seen = 0
    while exc is not None and seen < 5:
        for cls in type(exc).__mro__:
            if cls.__name__ in _CREDENTIAL_ERRORS:
                return _CREDENTIAL_ERRORS[cls.__name__]
        response = getattr(exc, "response", None)
        code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
        if code in _REFUSED_CODES:
            return f"the server refused the credentials ({code})"
        exc, seen = exc.__cause__ or exc.__context__, seen + 1  # type: ignore[assignment]
    return None


def _explain(exc: BaseException) -> str:
    """One line: what failed and, where known, how to fix it (never a credential)."""
    from taskflow_exclusive.errors import ExclusiveError

    if isinstance(exc, ExclusiveError):
        return str(exc)
    problem = _credentials_problem(exc)
    if problem is not None:
        return (
            f"cannot reach the storage: {problem}. Name an Airflow connection that holds them in the "
            "URL (s3://CONN_ID@bucket/prefix, gs://CONN_ID@bucket/prefix), or set the provider's own "
            "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or GOOGLE_APPLICATION_CREDENTIALS)."
        )
    if isinstance(exc, PermissionError):
        return (
            f"the storage refused access ({_one_line(exc)}): check that the credentials (of the Airflow "
            "connection named in the URL, or the provider's own) are valid and allowed to read, list "
            "and delete there."
        )
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {_one_line(exc)}"
    return f"unexpected {type(exc).__name__}: {_one_line(exc)}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:300] + "...") if len(text) > 300 else text or type(exc).__name__


def _print_error(message: str) -> None:
    print("error: " + " ".join(message.split()), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
