"""The local-disk create-if-absent that claim records stand on: complete, once, nothing left behind.

The races themselves (16 processes, one winner) are proved in
tests/test_objectstore_races.py; these pin down what each call leaves on disk,
with unnamed files (``O_TMPFILE``, the default on Linux) and without them.
"""

from __future__ import annotations

import os
from pathlib import Path

import fsspec
import pytest

from taskflow_exclusive.storage import atomic


@pytest.fixture(params=["unnamed file", "named temporary"])
def local_fs(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """The local filesystem, creating through an unnamed file or (as on NFS) a named temporary one."""
    if request.param == "named temporary":
        monkeypatch.setattr(atomic, "_can_link_unnamed_files", lambda: False)
    elif not atomic._can_link_unnamed_files():
        pytest.skip("no O_TMPFILE or /proc/self/fd on this system")
    return fsspec.filesystem("file")


def test_the_first_create_writes_the_whole_record_and_the_second_is_refused(local_fs, tmp_path: Path) -> None:
    target = tmp_path / "value.claims" / "slot-0.json"  # the folder does not exist yet

    assert atomic.create_if_absent(local_fs, str(target), b'{"consumer_id": "first"}') is True
    first_inode = target.stat().st_ino
    assert atomic.create_if_absent(local_fs, str(target), b'{"consumer_id": "second"}') is False

    assert target.read_bytes() == b'{"consumer_id": "first"}'
    assert target.stat().st_ino == first_inode  # the loser neither replaced nor rewrote it
    assert os.listdir(target.parent) == ["slot-0.json"]  # no temporary file left by either call


def test_a_loser_that_finds_the_name_taken_leaves_the_folder_as_it_was(local_fs, tmp_path: Path) -> None:
    target = tmp_path / "slot-0.json"
    target.write_bytes(b"held")
    before = sorted(os.listdir(tmp_path))

    for _ in range(3):
        assert atomic.create_if_absent(local_fs, str(target), b"mine") is False

    assert sorted(os.listdir(tmp_path)) == before
    assert target.read_bytes() == b"held"


def test_a_created_record_is_an_ordinary_file_readable_by_others(local_fs, tmp_path: Path) -> None:
    target = tmp_path / "slot-0.json"

    assert atomic.create_if_absent(local_fs, str(target), b"x" * 100_000)

    assert target.stat().st_nlink == 1  # the unnamed or temporary file is not kept as a second name
    assert target.stat().st_mode & 0o444 == 0o444 & ~_umask()
    assert target.read_bytes() == b"x" * 100_000


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_creates_racing_into_a_folder_that_does_not_exist_yet_all_succeed(local_fs, tmp_path: Path) -> None:
    """Every racer finds the folder missing; whoever makes it, the others must not fail."""
    import threading

    racers, rounds = 8, 20
    barrier = threading.Barrier(racers)
    failures: list[BaseException] = []

    def race(index: int) -> None:
        for round_number in range(rounds):
            barrier.wait()
            try:
                path = tmp_path / f"round-{round_number}" / "value.claims" / f"slot-{index}.json"
                assert atomic.create_if_absent(local_fs, str(path), b"{}")
            except BaseException as error:  # collected and reported below
                failures.append(error)

    threads = [threading.Thread(target=race, args=(index,)) for index in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert all(len(os.listdir(tmp_path / f"round-{n}" / "value.claims")) == racers for n in range(rounds))
