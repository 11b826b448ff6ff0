"""Run under ``strace`` by tests/test_durability.py: publish, claim and lose on local disk.

Each phase starts with a marker: an ``open`` of a path that does not exist, which the
trace shows as ``/nonexistent-tfx-mark-<phase>``. ``TFX_BREAK`` removes one durability
step (the negative controls): ``folder-fsync`` (no folder is fsynced) or ``content-fsync``
(no file's content is fsynced before its name appears).
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys


def mark(phase: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.open(f"/nonexistent-tfx-mark-{phase}", os.O_RDONLY)


def main(root: str) -> None:
    from taskflow_exclusive import AlreadyClaimedError, publish
    from taskflow_exclusive.storage import atomic

    broken = os.environ.get("TFX_BREAK", "")
    if broken == "folder-fsync":
        atomic._fsync_folder = lambda folder: None
    elif broken == "content-fsync":
        real_fsync = os.fsync
        os.fsync = lambda fd: real_fsync(fd) if stat.S_ISDIR(os.fstat(fd).st_mode) else None

    mark("publish")
    handle = publish({"rows": list(range(100))}, storage=f"file://{root}", label="nightly/orders")
    mark("claim")
    assert handle.claim("winner") == {"rows": list(range(100))}
    mark("lose")
    try:
        handle.claim("loser")
    except AlreadyClaimedError:
        pass
    else:
        raise SystemExit("the loser was handed the value")
    mark("end")


if __name__ == "__main__":
    main(sys.argv[1])
