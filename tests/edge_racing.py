"""Races of mixed operations between real processes: claims against releases, claims against purges.

Each process is given one action (``("claim", "B")``, ``("claim-until", "B")``
for a consumer that retries refused claims for 20 ms, ``("release", "A")``,
``("purge", "")``) and performs it on every round's handle, right after a
barrier that all processes pass together, so the actions of one round
collide. The parent collects every outcome by round; the tests count what
must never happen (two consumers getting one value, two releases freeing
two slots, a raw error escaping).

Workers come from the fork server of :mod:`tests.crashing` (the heavy
imports done once) and share nothing with the parent but the storage and
the ledger. :mod:`tests.broken_ledgers` is imported so that the negative
controls' ledgers open in the workers too.
"""

from __future__ import annotations

import os
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import tests.broken_ledgers  # noqa: F401  (registers the negative controls' schemes)
from tests import crashing
from tests.racing import run_workers

Outcome = tuple[str, Any]

JITTER_SECONDS = 0.001
POLL_SECONDS = 0.02


def _claim_until(handle: Any, consumer: str) -> Any:
    """A consumer that polls: a refused claim is retried for POLL_SECONDS."""
    from taskflow_exclusive import AlreadyClaimedError

    deadline = time.monotonic() + POLL_SECONDS
    while True:
        try:
            return handle.claim(consumer_id=consumer)
        except AlreadyClaimedError:
            if time.monotonic() > deadline:
                raise


def _released(handle: Any, consumer: str) -> str | None:
    record = handle.release(consumer, reason="race test")
    return None if record is None else record.consumer_id


ACTIONS = {
    "claim": ("value", lambda handle, consumer: handle.claim(consumer_id=consumer)),
    "claim-until": ("value", _claim_until),
    "release": ("released", _released),
    "purge": ("purged", lambda handle, consumer: handle.purge()),
}


def perform(handle: Any, action: str, consumer: str) -> Outcome:
    """Do one action; every result, including errors, becomes a counted outcome."""
    from taskflow_exclusive import AlreadyClaimedError, ExclusiveError

    kind, run = ACTIONS[action]
    try:
        return kind, run(handle, consumer)
    except AlreadyClaimedError as exc:
        return "refused", tuple(h.consumer_id for h in exc.holders)
    except ExclusiveError as exc:
        return "exclusive_error", type(exc).__name__
    except Exception as exc:  # a raw error escaping the library: counted, never hidden
        return "raw_error", f"{type(exc).__name__}: {exc}"


def _worker(index, job, barrier, results):
    action, consumer, handles_json, env = job
    os.environ.update(env)
    from taskflow_exclusive import ExclusiveHandle

    handles = [ExclusiveHandle.from_json(text) for text in handles_json]
    jitter = random.Random(f"{index}/{consumer}")
    for number, handle in enumerate(handles):
        barrier.wait(timeout=120)
        # Up to 1 ms of random delay after the barrier: the actions start in every order and
        # overlap at every depth, not only in the order the scheduler happens to favour.
        time.sleep(jitter.uniform(0, JITTER_SECONDS))
        results.put((number, index, perform(handle, action, consumer)))


@dataclass
class ActionRace:
    actions: list[tuple[str, str]]
    outcomes: dict[int, dict[int, Outcome]] = field(default_factory=lambda: defaultdict(dict))
    seconds: float = 0.0

    def of(self, number: int, action: str, consumer: str | None = None) -> list[Outcome]:
        """Outcomes of round ``number`` from the processes doing ``action`` (for ``consumer``)."""
        return [
            outcome
            for index, outcome in sorted(self.outcomes[number].items())
            if self.actions[index][0].startswith(action) and consumer in (None, self.actions[index][1])
        ]

    def count(self, predicate) -> int:
        return sum(1 for number in self.outcomes if predicate(number))

    def raw_errors(self) -> list[tuple[int, str]]:
        return [
            (number, outcome[1])
            for number, by_index in self.outcomes.items()
            for outcome in by_index.values()
            if outcome[0] == "raw_error"
        ]


def race_actions(
    handles_json: list[str], actions: list[tuple[str, str]], env: dict[str, str] | None = None
) -> ActionRace:
    """Run ``actions`` (one process each) against every handle, one barrier-started round each."""
    context = crashing.context()
    barrier = context.Barrier(len(actions))
    results = context.Queue()
    workers = [
        context.Process(
            target=_worker, args=(i, (action, consumer, handles_json, env or {}), barrier, results)
        )
        for i, (action, consumer) in enumerate(actions)
    ]
    race = ActionRace(actions=list(actions))

    def collect() -> None:
        for _ in range(len(handles_json) * len(actions)):
            number, index, outcome = results.get(timeout=300)
            race.outcomes[number][index] = outcome

    race.seconds = run_workers(workers, collect)
    return race
