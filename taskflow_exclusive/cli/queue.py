"""``taskflow-exclusive queue``: look into work queues, requeue or drop dead letters, purge.

Every command takes ``--url`` (a ``redis://`` URL or a redis Airflow
connection id; default: the Airflow Variable ``taskflow_exclusive_queue_url``).
Destructive commands (``drop-dead``, ``purge``) ask for the queue's name to be
typed back, or take ``--yes``.

Example::

    taskflow-exclusive queue list --url redis://127.0.0.1:6379/0
    taskflow-exclusive queue show orders --url redis://127.0.0.1:6379/0
    taskflow-exclusive queue dead orders
    taskflow-exclusive queue requeue orders --all
    taskflow-exclusive queue purge orders --yes

    >>> parser = __import__("argparse").ArgumentParser()
    >>> add_queue_commands(parser.add_subparsers()) is None
    True
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

__all__ = ["add_queue_commands"]


def _open(args: argparse.Namespace, name: str) -> Any:
    from taskflow_exclusive.queues import ExclusiveQueue

    return ExclusiveQueue(args.url, name=name)


def _spec(args: argparse.Namespace) -> str:
    from taskflow_exclusive.queues.queue import resolve_queue_spec

    return resolve_queue_spec(args.url)


def _list(args: argparse.Namespace) -> int:
    from taskflow_exclusive.queues.redis import list_queues

    rows = []
    for name in list_queues(_spec(args)):
        queue = _open(args, name)
        rows.append(
            {
                "queue": name,
                "waiting": len(queue),
                "in_flight": len(queue.in_flight()),
                "dead": len(queue.dead_letters()),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no queues")
    for row in rows:
        print(f"{row['queue']}: {row['waiting']} waiting, {row['in_flight']} in flight, {row['dead']} dead")
    return 0


def _show(args: argparse.Namespace) -> int:
    queue = _open(args, args.name)
    now = datetime.now(timezone.utc)
    leases = queue.in_flight()
    facts = {
        "queue": queue.backend.describe(),
        "waiting": len(queue),
        "stats": queue.stats(),
        "in_flight": [
            {
                "item": info.item_id,
                "holder": info.consumer_id,
                "token": info.token,
                "deadline": info.deadline.isoformat(timespec="milliseconds"),
                "expired": info.deadline < now,
                "delivery": info.delivery,
            }
            for info in leases
        ],
        "dead": len(queue.dead_letters()),
        "next": [_describe_item(item) for item in queue.peek(args.peek)],
    }
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    print(f"{facts['queue']}: {facts['waiting']} waiting, {len(leases)} in flight, {facts['dead']} dead")
    print("  counters: " + (", ".join(f"{k} {v}" for k, v in sorted(facts["stats"].items())) or "none"))
    for lease in facts["in_flight"]:
        state = "EXPIRED" if lease["expired"] else "until"
        print(
            f"  lease {lease['item']}: {lease['holder']!r} token {lease['token']} {state} "
            f"{lease['deadline']} (delivery {lease['delivery']})"
        )
    for item in facts["next"]:
        print(f"  next {item['item']}: {item['value']} from {item['producer']}")
    return 0


def _describe_item(item: Any) -> dict[str, Any]:
    if item.handle is not None:
        value = f"stored {item.handle.uri} ({item.handle.size} bytes, {item.handle.serializer})"
    else:
        value = f"inline {item.size} bytes ({item.serializer})"
    return {"item": item.id, "value": value, "producer": item.producer, "created_at": item.created_at}


def _dead(args: argparse.Namespace) -> int:
    letters = _open(args, args.name).dead_letters()
    rows = [
        {
            "item": d.item_id,
            "reason": d.reason,
            "deliveries": d.deliveries,
            "at": d.at.isoformat(timespec="seconds"),
        }
        for d in letters
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no dead letters in queue {args.name!r}")
    for row in rows:
        print(f"{row['item']}: {row['reason']} after {row['deliveries']} deliveries, at {row['at']}")
    return 0


def _chosen(args: argparse.Namespace) -> list[str] | None:
    if args.all == bool(args.items):
        raise SystemExit(
            f"taskflow-exclusive queue {args.command_name}: name ITEM_IDs or --all, not both or neither"
        )
    return None if args.all else list(args.items)


def _requeue(args: argparse.Namespace) -> int:
    moved = _open(args, args.name).requeue_dead(_chosen(args))
    print(f"Requeued {moved} dead letter(s) of queue {args.name!r} at its tail, deliveries reset.")
    return 0


def _confirmed(args: argparse.Namespace, what: str) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        print(f"error: {what}: refused without --yes (no terminal to confirm on).", file=sys.stderr)
        return False
    answer = input(f"{what}. Type the queue name ({args.name}) to confirm: ")
    if answer.strip() != args.name:
        print("Not confirmed; nothing was changed.", file=sys.stderr)
        return False
    return True


def _drop_dead(args: argparse.Namespace) -> int:
    chosen = _chosen(args)
    queue = _open(args, args.name)
    count = len(queue.dead_letters()) if chosen is None else len(chosen)
    if not _confirmed(
        args, f"This drops up to {count} dead letter(s) of queue {args.name!r} and their stored values"
    ):
        return 1
    with _progress("removing stored values") as progress:
        dropped = queue.drop_dead(chosen, progress=progress)
    print(f"Dropped {dropped} dead letter(s) of queue {args.name!r}.")
    return 0


def _purge(args: argparse.Namespace) -> int:
    queue = _open(args, args.name)
    waiting, leased, dead = len(queue), len(queue.in_flight()), len(queue.dead_letters())
    what = (
        f"This removes queue {args.name!r} ({waiting} waiting, {leased} in flight, {dead} dead) and the "
        "stored values of its items"
    )
    if not _confirmed(args, what):
        return 1
    with _progress("removing stored values") as progress:
        removed = queue.purge(progress=progress)
    print(f"Purged queue {args.name!r}: {removed} item(s) removed.")
    return 0


@contextlib.contextmanager
def _progress(what: str) -> Iterator[Any]:
    """``progress(done, total)`` drawing a status line on a terminal's standard error (nothing when piped)."""
    from taskflow_exclusive.cli.main import _Progress

    line = _Progress(sys.stderr)

    def progress(done: int, total: int) -> None:
        line.show(f"{what}: {done} of {total}", force=done == total)

    try:
        yield progress
    finally:
        line.clear()


def add_queue_commands(commands: Any) -> None:
    """Register ``queue`` and its subcommands on the command's subparsers."""
    queue = commands.add_parser("queue", help="work queues: depth, leases, dead letters, requeue, purge")
    verbs = queue.add_subparsers(dest="queue_command", required=True)
    url_help = "redis:// URL or redis Airflow connection id (default: Variable taskflow_exclusive_queue_url)"

    def verb(name: str, run: Any, help_text: str, *, named: bool = True, listing: bool = False) -> Any:
        parser = verbs.add_parser(name, help=help_text)
        if named:
            parser.add_argument("name", metavar="QUEUE", help="the queue's name")
        parser.add_argument("--url", default=None, help=url_help)
        if listing:
            parser.add_argument("--json", action="store_true", help="print JSON")
        parser.set_defaults(run=run, command_name=name)
        return parser

    verb("list", _list, "every queue under the URL's prefix, with its depth", named=False, listing=True)
    show = verb(
        "show", _show, "depth, counters, in-flight leases (holder, token, deadline), next items", listing=True
    )
    show.add_argument("--peek", type=int, default=5, help="how many waiting items to describe (default 5)")
    verb("dead", _dead, "the dead letters: why and after how many deliveries", listing=True)
    for name, run, help_text in (
        ("requeue", _requeue, "put dead letters back at the tail (deliveries reset)"),
        ("drop-dead", _drop_dead, "remove dead letters and their stored values (asks to confirm)"),
    ):
        parser = verb(name, run, help_text)
        parser.add_argument("items", nargs="*", metavar="ITEM_ID", help="dead letters to act on")
        parser.add_argument("--all", action="store_true", help="every dead letter")
        if name == "drop-dead":
            parser.add_argument("--yes", action="store_true", help="do not ask to confirm")
    purge = verb("purge", _purge, "remove the whole queue and its stored values (asks to confirm)")
    purge.add_argument("--yes", action="store_true", help="do not ask to confirm")
