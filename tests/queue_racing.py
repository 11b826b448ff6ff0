"""Races on a work queue between real consumer processes, some SIGKILLed mid-item.

:func:`drain_race` puts ``items`` small values (their index) on a fresh queue,
then keeps ``processes`` forked consumers draining it while the parent kills
``kills`` of them with SIGKILL (each replaced at once by a fresh one). Every
consumer appends one line per event to its own file, flushed at once:

    got <index> <item id>        a value was taken (get) or leased (lease)
    done <index> <item id>       get: the work finished; lease: ack() returned
    refused <index> <item id>    lease: ack() raised LeaseExpiredError
    retry <what>                 the queue's Redis did not answer; tried again

A killed consumer's file ends wherever the kill landed, so the parent learns
which items were mid-flight when their consumer died. The report counts, per
item, how many consumers took it and how many finished it.

``mode`` is ``"at-most-once"`` (``get``) or ``"at-least-once"`` (``lease`` +
``ack``). ``backend`` names a deliberately broken queue backend from
:mod:`tests.queue_broken` (the negative control) or ``None`` for the real one.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

AT_MOST_ONCE = "at-most-once"
AT_LEAST_ONCE = "at-least-once"


@dataclass
class DrainReport:
    items: int
    mode: str
    taken: Counter = field(default_factory=Counter)  # index -> consumers that took it
    done: Counter = field(default_factory=Counter)  # index -> consumers that finished it
    refused: int = 0
    retries: int = 0
    kills: int = 0
    killed_mid_item: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def taken_twice(self) -> int:
        return sum(1 for count in self.taken.values() if count > 1)

    @property
    def redeliveries(self) -> int:
        """Takes beyond the first, over all items."""
        return sum(count - 1 for count in self.taken.values() if count > 1)

    @property
    def done_twice(self) -> int:
        return sum(1 for count in self.done.values() if count > 1)

    @property
    def never_done(self) -> list[int]:
        return [i for i in range(self.items) if not self.done[i]]

    def summary(self) -> str:
        return (
            f"{self.mode}: {self.items} items in {self.seconds:.1f}s; taken twice {self.taken_twice}, "
            f"done twice {self.done_twice}, never done {len(self.never_done)}, refused acks "
            f"{self.refused}, kills {self.kills} ({self.killed_mid_item} mid-item), Redis retries "
            f"{self.retries}, errors {len(self.errors)} {self.errors[:3]}"
        )


def _consumer(  # noqa: PLR0917 (a process target takes positional arguments)
    spec: str, name: str, mode: str, backend: str | None, log_path: str, work: float, idle: float
):
    import random as _random

    from taskflow_exclusive import LeaseExpiredError, QueueEmptyError, QueueUnavailableError
    from taskflow_exclusive.queues import ExclusiveQueue

    queue = ExclusiveQueue(spec, name=name, lease_seconds=1.0, max_deliveries=1000)
    if backend is not None:
        from tests.queue_broken import broken_backend

        queue.backend = broken_backend(backend, spec, name)
    me = f"consumer-{os.getpid()}"
    pace = _random.Random(os.getpid())
    with open(log_path, "a", buffering=1) as log:

        def note(line: str) -> None:
            log.write(line + "\n")
            log.flush()

        def retried(call):
            while True:
                try:
                    return call()
                except QueueUnavailableError:
                    note("retry redis")
                    time.sleep(0.1)

        while True:
            try:
                if mode == AT_MOST_ONCE:
                    index = retried(lambda: queue.get(idle, consumer_id=me))
                    note(f"got {index} -")
                    time.sleep(pace.uniform(0, 2 * work))
                    note(f"done {index} -")
                    continue
                lease = retried(lambda: queue.lease(idle, consumer_id=me))
            except QueueEmptyError:
                return
            note(f"got {lease.value} {lease.item_id}")
            time.sleep(pace.uniform(0, 2 * work))
            try:
                retried(lease.ack)
            except LeaseExpiredError:
                note(f"refused {lease.value} {lease.item_id}")
                continue
            note(f"done {lease.value} {lease.item_id}")


def drain_race(
    spec: str,
    name: str,
    *,
    items: int,
    mode: str,
    processes: int = 16,
    kills: int = 0,
    work: float = 0.01,
    idle: float = 2.5,
    backend: str | None = None,
    folder: Path,
    during: object = None,
    timeout: float = 300,
) -> DrainReport:
    """Drain ``items`` values with ``processes`` consumers, SIGKILLing ``kills`` of them on the way.

    ``during(report)``, if given, is called once in the parent when about a
    third of the items are done (the Redis restart test kills the server there).
    """
    from taskflow_exclusive.queues import ExclusiveQueue

    queue = ExclusiveQueue(spec, name=name)
    for start in range(0, items, 500):
        queue.put_many(range(start, min(start + 500, items)))
    context = multiprocessing.get_context("fork")
    report = DrainReport(items=items, mode=mode)
    logs: list[Path] = []
    killed: list[Path] = []
    running: dict[int, tuple[multiprocessing.Process, Path]] = {}

    def spawn() -> None:
        path = folder / f"consumer-{len(logs):04d}.log"
        logs.append(path)
        process = context.Process(
            target=_consumer, args=(spec, name, mode, backend, str(path), work, idle), daemon=True
        )
        process.start()
        running[process.pid] = (process, path)

    started = time.monotonic()
    for _ in range(processes):
        spawn()
    chooser = random.Random(0)
    called = during is None
    deadline = started + timeout
    while running and time.monotonic() < deadline:
        for pid, (process, _) in list(running.items()):
            if not process.is_alive():
                process.join()
                del running[pid]
        if report.kills < kills and running:
            pid = chooser.choice(list(running))
            process, path = running.pop(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            process.join()
            report.kills += 1
            killed.append(path)
            spawn()
        if not called and _count_done(logs) >= items // 3:
            called = True
            during(report)
        time.sleep(0.03 if report.kills < kills else 0.1)
    for process, _ in running.values():
        process.kill()
        report.errors.append(f"consumer {process.pid} still running at the timeout")
    report.seconds = time.monotonic() - started
    _read_logs(report, logs, killed)
    return report


def _read_logs(report: DrainReport, logs: list[Path], killed: list[Path]) -> None:
    for path in logs:
        last = None
        for line in path.read_text().splitlines() if path.exists() else []:
            what, _, rest = line.partition(" ")
            if what == "retry":
                report.retries += 1
                continue
            index = int(rest.split(" ", 1)[0])
            if what == "got":
                report.taken[index] += 1
            elif what == "done":
                report.done[index] += 1
            elif what == "refused":
                report.refused += 1
            last = what
        if path in killed and last == "got":
            report.killed_mid_item += 1


def _count_done(logs: list[Path]) -> int:
    total = 0
    for path in logs:
        with contextlib.suppress(FileNotFoundError):
            total += path.read_text().count("\ndone ") + path.read_text().startswith("done ")
    return total
