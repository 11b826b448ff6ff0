"""The ``taskflow-exclusive`` command.

Example::

    $ taskflow-exclusive demo
    $ taskflow-exclusive holders @handle.json
    $ taskflow-exclusive release @handle.json --consumer 'etl/run1/load/-1' --reason 'worker lost'
    $ taskflow-exclusive cleanup s3://my_conn@bucket/exclusive --older-than 6h --dry-run

``HANDLE`` is a handle's JSON (as XCom shows it), ``@path`` of a file holding
it, or ``-`` to read it from standard input. Exit status: 0 done, 1 refused or
failed (the reason on standard error), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, NoReturn

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
    from taskflow_exclusive.errors import InvalidArgumentError, MalformedRecordError
    from taskflow_exclusive.handle import ExclusiveHandle

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
        raise InvalidArgumentError(
            f"HANDLE: cannot read the handle from {where} ({exc}); pass the JSON, @file or -.",
            argument="HANDLE",
            value=argument[:200],
            expected="a handle's JSON, @file holding it, or -",
        ) from None
    try:
        return ExclusiveHandle.from_json(text, where=where or "the HANDLE argument")
    except MalformedRecordError as exc:
        raise MalformedRecordError(
            f"HANDLE is not a handle's JSON: {exc} Pass the JSON (as XCom shows it), @file or -.",
            kind=exc.kind,
            where=exc.where,
            problem=exc.problem,
        ) from None


def _holders(args: argparse.Namespace) -> int:
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
    from taskflow_exclusive.storage.cleanup import remove_uncommitted

    leftovers = remove_uncommitted(args.storage_url, older_than=args.older_than, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for leftover in leftovers:
        print(f"{verb} {leftover.describe()}")
    total = sum(leftover.size or 0 for leftover in leftovers)
    print(
        f"{len(leftovers)} leftover(s) older than {args.older_than} {verb} under {args.storage_url} "
        f"({total} bytes); committed values, and names or places the library's layout does not define, "
        "are never touched."
    )
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line on standard error (exit status 2), without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="taskflow-exclusive",
        description="Claim-once TaskFlow outputs for Apache Airflow 3.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="run the example DAG with dag.test() (throw-away Airflow home) and show every claim",
    )
    demo.add_argument("--keep", action="store_true", help="keep the demo's Airflow home (values, log)")
    demo.set_defaults(run=_demo)

    handle_help = "the handle's JSON, @FILE holding it, or - for standard input"
    holders = commands.add_parser("holders", help="who holds a value, and since when")
    holders.add_argument("handle", metavar="HANDLE", help=handle_help)
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
    return parser


def _log_to_stderr() -> None:
    """Operator commands log what they change (a release, each removal) on standard error.

    Airflow (imported to read connections) points the root logger at standard
    output when it is first imported; it is imported first here, then logging
    is pointed at standard error, so standard output keeps only the command's
    own output (``holders --json`` stays parseable).
    """
    import airflow  # noqa: F401 - configures logging on import

    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s", force=True
    )
    logging.getLogger("taskflow_exclusive").setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "demo":
        _log_to_stderr()
    from taskflow_exclusive.errors import ExclusiveError

    try:
        return int(args.run(args) or 0)
    except ExclusiveError as exc:
        _print_error(str(exc))
    except OSError as exc:  # the storage or the network refused: the reason, not a traceback
        _print_error(f"{type(exc).__name__}: {exc}")
    return 1


def _print_error(message: str) -> None:
    print("error: " + " ".join(message.split()), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
