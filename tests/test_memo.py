"""The process-wide cache behind filesystems, ledgers and the signing keyring."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from taskflow_exclusive.memo import Memo


def test_a_value_is_built_once_per_key() -> None:
    memo: Memo[list[str]] = Memo()
    builds: list[str] = []

    def build(name: str) -> list[str]:
        builds.append(name)
        return [name]

    first = memo.get("a", lambda: build("a"))
    assert memo.get("a", lambda: build("a again")) is first
    assert memo.get("b", lambda: build("b")) == ["b"]
    assert builds == ["a", "b"]


def test_max_age_builds_again_once_the_value_is_older() -> None:
    memo: Memo[int] = Memo()
    counter = iter(range(100))
    assert memo.get("k", lambda: next(counter), max_age=60) == 0
    assert memo.get("k", lambda: next(counter), max_age=60) == 0  # still fresh
    time.sleep(0.1)
    assert memo.get("k", lambda: next(counter), max_age=0.05) == 1
    # Without max_age the value never ages.
    time.sleep(0.05)
    assert memo.get("k", lambda: next(counter)) == 1


def test_a_failed_build_is_not_remembered() -> None:
    memo: Memo[str] = Memo()

    def broken() -> str:
        raise OSError("unreachable")

    with pytest.raises(OSError, match="unreachable"):
        memo.get("k", broken)
    assert memo.get("k", lambda: "built") == "built"


def test_racing_threads_all_get_the_first_value_stored() -> None:
    memo: Memo[object] = Memo()
    start = threading.Barrier(8)
    seen: list[object] = []

    def worker() -> None:
        start.wait()
        seen.append(memo.get("k", object))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8
    assert len({id(value) for value in seen}) == 1


def test_clear_forgets_every_value() -> None:
    memo: Memo[int] = Memo()
    memo.get("k", lambda: 1)
    memo.clear()
    assert memo.get("k", lambda: 2) == 2


def _child_value(memo: Memo[str], queue: multiprocessing.Queue) -> None:
    queue.put(memo.get("k", lambda: "built in the child"))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_a_forked_child_starts_empty() -> None:
    memo: Memo[str] = Memo()
    memo.get("k", lambda: "built in the parent")
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_value, args=(memo, queue))
    child.start()
    value = queue.get(timeout=30)
    child.join(timeout=30)
    assert value == "built in the child"
    assert memo.get("k", lambda: "not used") == "built in the parent"
