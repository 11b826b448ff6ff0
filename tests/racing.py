"""Races between real processes: many consumers claim the same handles at the same moment.

Spawned workers (fresh interpreters, no shared state but the storage or
ledger) wait on a barrier before every round, then all claim that round's
handles at once. The parent counts the outcome of every claim, per handle.

Two shapes, one implementation (:func:`race_batches`):

- ``race_handles(handles, expected)``: one handle per round, the sharpest
  collision (every process fires at the same handle right after the barrier),
  but one barrier per handle: about 0.85 s a round on SeaweedFS.
- ``race_batches(handles, expected, batch=K, threads=T)``: each round
  contests K handles; every process claims every handle of the batch, in its
  own random order, from T threads. Each handle is still claimed by all
  processes (by distinct consumer ids), so the counts mean the same; the
  barrier cost is paid once per K handles. :attr:`RaceReport.overlapping`
  says how many handles really had two or more claims in flight at once
  (from each claim's start and end on the system-wide monotonic clock).

Any handle works, whatever ledger guards it (``handle.claims``): the workers
only call ``handle.claim(consumer_id=...)``.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tests.broken_ledgers  # noqa: F401  (workers open the negative controls' ledgers too)


@dataclass
class RaceReport:
    """Outcomes per contested handle (``rounds`` is the number of handles)."""

    rounds: int
    processes: int
    batch: int = 1
    threads: int = 1
    winners: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    losers: dict[int, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    wrong_values: list[tuple[int, str, object]] = field(default_factory=list)
    errors: list[tuple[int, str, str]] = field(default_factory=list)
    intervals: dict[int, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    seconds: float = 0.0

    @property
    def claims(self) -> int:
        return sum(len(self.winners[r]) + len(self.losers[r]) for r in range(self.rounds))

    @property
    def double_claims(self) -> int:
        return sum(1 for r in range(self.rounds) if len(self.winners[r]) > 1)

    @property
    def lost_claims(self) -> int:
        return sum(1 for r in range(self.rounds) if not self.winners[r])

    @property
    def losers_misinformed(self) -> int:
        """Losers told a holder other than the handle's winner."""
        bad = 0
        for r in range(self.rounds):
            winner = self.winners[r][0] if len(self.winners[r]) == 1 else None
            bad += sum(1 for _, holder in self.losers[r] if holder != winner)
        return bad

    @property
    def overlapping(self) -> int:
        """Handles on which at least two claims were in flight at the same moment."""
        return sum(1 for r in range(self.rounds) if _most_at_once(self.intervals[r]) >= 2)

    def summary(self) -> str:
        outcomes = Counter(len(self.winners[r]) for r in range(self.rounds))
        shape = f" in batches of {self.batch} x {self.threads} thread(s)" if self.batch > 1 else ""
        rate = self.claims / self.seconds if self.seconds else 0.0
        return (
            f"{self.rounds} handles x {self.processes} processes{shape} in {self.seconds:.1f}s "
            f"({rate:.0f} claims/s): winners-per-handle {dict(outcomes)}, double claims "
            f"{self.double_claims}, lost claims {self.lost_claims}, misinformed losers "
            f"{self.losers_misinformed}, wrong values {len(self.wrong_values)}, handles with "
            f"concurrent claims {self.overlapping}, errors {len(self.errors)} {self.errors[:3]}"
        )


def _most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = current = 0
    for _, step in events:
        current += step
        most = max(most, current)
    return most


def _claim_one(handle, index: int, consumer_id: str) -> tuple:
    from taskflow_exclusive import AlreadyClaimedError

    started = time.monotonic()
    try:
        value = handle.claim(consumer_id=consumer_id)
        outcome, payload = "won", value
    except AlreadyClaimedError as exc:
        outcome, payload = "lost", exc.holder
    except Exception as exc:  # counted and reported, never hidden
        outcome, payload = "error", f"{type(exc).__name__}: {exc}"
    return index, outcome, payload, started, time.monotonic()


def _batch_worker(consumer_id, plan, barrier, results):
    """One consumer: ``plan`` is ``(handles_json, batch, threads, seed)``."""
    from concurrent.futures import ThreadPoolExecutor

    from taskflow_exclusive import ExclusiveHandle

    handles_json, batch, threads, seed, env = plan
    os.environ.update(env)  # a fork server keeps the environment of its first use: hand over the rest
    handles = [ExclusiveHandle.from_json(text) for text in handles_json]
    order = random.Random(f"{seed}/{consumer_id}")
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    try:
        for start in range(0, len(handles), batch):
            indices = list(range(start, min(start + batch, len(handles))))
            order.shuffle(indices)
            barrier.wait(timeout=300)
            if pool is None:
                outcomes = [_claim_one(handles[i], i, consumer_id) for i in indices]
            else:
                outcomes = list(pool.map(lambda i: _claim_one(handles[i], i, consumer_id), indices))
            results.put((consumer_id, outcomes))
    except Exception as exc:
        results.put((consumer_id, [(-1, "error", f"worker stopped: {type(exc).__name__}: {exc}", 0, 0)]))
    finally:
        if pool is not None:
            pool.shutdown()


def _connections() -> dict[str, str]:
    """The Airflow connections and Variables of this process, which workers need to reach stores."""
    return {k: v for k, v in os.environ.items() if k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))}


def race_batches(
    handles_json: list[str],
    expected: Callable[[int], object],
    *,
    processes: int = 16,
    batch: int = 1,
    threads: int = 1,
    seed: int | str = 0,
    timeout: float = 1800,
    context: Any = None,
) -> RaceReport:
    """Make ``processes`` spawned consumers claim every handle; count the outcomes per handle.

    Handles are contested ``batch`` at a time: all processes wait on a barrier,
    then each claims every handle of the batch in its own random order
    (seeded by ``seed`` and its consumer id), from ``threads`` threads.
    ``expected(i)`` is the value handle ``i`` must give its winner. Consumer
    ids are ``consumer-00`` ... ``consumer-<processes-1>``. ``context``: a
    multiprocessing context (default: spawn, fresh interpreters); a fork server
    with the heavy imports preloaded (``tests.crashing.context()``) starts 16
    workers in a fraction of the time, sharing nothing but those imports.
    """
    if batch < 1 or threads < 1:
        raise ValueError("batch and threads must be at least 1")
    context = context or multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    plan = (handles_json, batch, threads, seed, _connections())
    workers = [
        context.Process(
            target=_batch_worker,
            args=(f"consumer-{i:02d}", plan, barrier, results),
        )
        for i in range(processes)
    ]
    report = RaceReport(rounds=len(handles_json), processes=processes, batch=batch, threads=threads)
    rounds = -(-len(handles_json) // batch)
    deadline = time.monotonic() + timeout
    report.seconds = run_workers(
        workers, lambda: _collect(report, (results, workers), rounds * processes, expected, deadline)
    )
    return report


def run_workers(workers: list[Any], collect: Callable[[], None]) -> float:
    """Start ``workers``, ``collect()`` their results, then join them (killing stragglers).

    Returns the seconds from the first start to the last join.
    """
    started = time.monotonic()
    for worker in workers:
        worker.start()
    try:
        collect()
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    return time.monotonic() - started


def _collect(report, channel, messages, expected, deadline) -> None:
    results, workers = channel
    received = 0
    while received < messages:
        try:
            consumer, outcomes = results.get(timeout=1)
        except queue_module.Empty:
            if time.monotonic() > deadline:
                report.errors.append((-1, "parent", "timed out waiting for workers"))
                return
            if not any(worker.is_alive() for worker in workers) and results.empty():
                report.errors.append((-1, "parent", f"workers exited after {received}/{messages} rounds"))
                return
            continue
        received += 1
        for index, outcome, payload, began, ended in outcomes:
            if outcome == "won":
                report.winners[index].append(consumer)
                if payload != expected(index):
                    report.wrong_values.append((index, consumer, payload))
            elif outcome == "lost":
                report.losers[index].append((consumer, payload))
            else:
                report.errors.append((index, consumer, payload))
            if index >= 0:
                report.intervals[index].append((began, ended))


def race_handles(
    handles_json: list[str], expected: Callable[[int], object], processes: int = 16
) -> RaceReport:
    """Make ``processes`` spawned consumers claim each handle at once, one handle per round."""
    return race_batches(handles_json, expected, processes=processes, batch=1, threads=1)
