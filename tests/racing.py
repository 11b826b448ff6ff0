"""Races between real processes: many consumers claim the same handle at the same moment.

Spawned workers (fresh interpreters, no shared state but the storage or
ledger) wait on a barrier before every round, then all claim that round's
handle at once. The parent counts outcomes per handle.

With ``batch=B``, each round contests B handles: after the barrier every
worker claims all B in its own random order, so each handle is still
contested by every worker, with B times fewer barriers. Outcomes are counted
per handle either way (``RaceReport.rounds`` is the number of handles).
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class RaceReport:
    rounds: int
    processes: int
    winners: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    losers: dict[int, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    wrong_values: list[tuple[int, str, object]] = field(default_factory=list)
    errors: list[tuple[int, str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def double_claims(self) -> int:
        return sum(1 for r in range(self.rounds) if len(self.winners[r]) > 1)

    @property
    def lost_claims(self) -> int:
        return sum(1 for r in range(self.rounds) if not self.winners[r])

    @property
    def losers_misinformed(self) -> int:
        """Losers told a holder other than the round's winner."""
        bad = 0
        for r in range(self.rounds):
            winner = self.winners[r][0] if len(self.winners[r]) == 1 else None
            bad += sum(1 for _, holder in self.losers[r] if holder != winner)
        return bad

    def summary(self) -> str:
        outcomes = Counter(len(self.winners[r]) for r in range(self.rounds))
        return (
            f"{self.rounds} handles x {self.processes} processes in {self.seconds:.1f}s: "
            f"winners-per-round {dict(outcomes)}, double claims {self.double_claims}, "
            f"lost claims {self.lost_claims}, misinformed losers {self.losers_misinformed}, "
            f"wrong values {len(self.wrong_values)}, errors {len(self.errors)} {self.errors[:3]}"
        )


def _claim_worker(consumer_id, handles_json, barrier, results, batch=1):
    import random

    from taskflow_exclusive import AlreadyClaimedError, ExclusiveHandle

    handles = [ExclusiveHandle.from_json(text) for text in handles_json]
    shuffle = random.Random(consumer_id).shuffle
    for first in range(0, len(handles), batch):
        numbers = list(range(first, min(first + batch, len(handles))))
        shuffle(numbers)
        barrier.wait(timeout=300)
        outcomes = []
        for number in numbers:
            try:
                value = handles[number].claim(consumer_id=consumer_id)
                outcomes.append((number, consumer_id, "won", value))
            except AlreadyClaimedError as exc:
                outcomes.append((number, consumer_id, "lost", exc.holder))
            except Exception as exc:  # counted and reported, never hidden
                outcomes.append((number, consumer_id, "error", f"{type(exc).__name__}: {exc}"))
        for outcome in outcomes:  # reported after the round, so queue traffic does not pace it
            results.put(outcome)


def race_handles(
    handles_json: list[str], expected: Callable[[int], object], processes: int = 16, batch: int = 1
) -> RaceReport:
    """Make ``processes`` spawned consumers claim each handle at once; count the outcomes.

    ``batch``: how many handles each round contests (see the module docstring).
    """
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    workers = [
        context.Process(
            target=_claim_worker, args=(f"consumer-{i:02d}", handles_json, barrier, results, batch)
        )
        for i in range(processes)
    ]
    report = RaceReport(rounds=len(handles_json), processes=processes)
    started = time.monotonic()
    for worker in workers:
        worker.start()
    try:
        for _ in range(len(handles_json) * processes):
            round_number, consumer, outcome, payload = results.get(timeout=600)
            if outcome == "won":
                report.winners[round_number].append(consumer)
                if payload != expected(round_number):
                    report.wrong_values.append((round_number, consumer, payload))
            elif outcome == "lost":
                report.losers[round_number].append((consumer, payload))
            else:
                report.errors.append((round_number, consumer, payload))
    except queue_module.Empty:
        report.errors.append((-1, "parent", "timed out waiting for workers"))
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    report.seconds = time.monotonic() - started
    return report
