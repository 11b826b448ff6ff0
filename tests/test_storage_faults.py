"""A store that refuses a write gives a clear StorageWriteError and keeps nothing half-done.

Real faults on real mounts (we run as root): a 5 MB tmpfs filled by a 10 MB
value, a read-only tmpfs, a name longer than the filesystem allows, a path
component that is a regular file. Each must raise
:class:`~taskflow_exclusive.StorageWriteError` saying what to fix, and leave
no partial object, temporary file, manifest or claim record behind.

Values that fill the disk are published in a subprocess, so a crash of the
interpreter (the SIGSEGV of issue item 7: the hashing thread read a buffer
released under it) shows up as a negative return code instead of killing pytest.
Without root, or where tmpfs cannot be mounted, these tests skip loudly
(under CI=true they fail).
"""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskflow_exclusive import ExclusiveOutput, StorageWriteError, publish
from taskflow_exclusive.identity import TaskInstanceId
from taskflow_exclusive.storage.store import Store, _Hasher, _HashingWriter
from tests.conftest import service_unavailable
from tests.servers import S3Server, ServerUnavailable, start_seaweedfs

REPO = Path(__file__).resolve().parent.parent
MiB = 1 << 20


# --- mounts ----------------------------------------------------------------------------------


def _mount_tmpfs(options: str) -> Path:
    if os.geteuid() != 0:
        service_unavailable("tmpfs mounts", "these tests mount tmpfs and need root")
    folder = Path(tempfile.mkdtemp(prefix="tfx-faults-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        folder.rmdir()
        service_unavailable("tmpfs mounts", f"mount -o {options} failed: {done.stderr.strip()}")
    return folder


def _unmount(folder: Path) -> None:
    subprocess.run(["umount", str(folder)], check=True)
    folder.rmdir()


@pytest.fixture
def tiny_disk() -> Iterator[Path]:
    """A 5 MB tmpfs."""
    folder = _mount_tmpfs("size=5m")
    try:
        yield folder
    finally:
        _unmount(folder)


@pytest.fixture
def read_only_disk() -> Iterator[Path]:
    """A tmpfs remounted read-only after ``values/_local/values`` was created in it."""
    folder = _mount_tmpfs("size=5m")
    try:
        (folder / "values" / "_local" / "values").mkdir(parents=True)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        yield folder
    finally:
        _unmount(folder)


def _files(folder: Path) -> list[str]:
    """Every file (not folder) under ``folder``, hidden temporary files included."""
    return sorted(
        str(Path(root, name).relative_to(folder)) for root, _, names in os.walk(folder) for name in names
    )


def _fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte with the file ``filler``."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


# --- a full disk -----------------------------------------------------------------------------

# Each builds a value of about 10 MB that does not compress (so it never fits in 5 MB).
_VALUES = {
    "bytes": "os.urandom(10 << 20)",
    "text": "os.urandom(5 << 20).hex()",
    "pickle": "{'blob': os.urandom(10 << 20)}",
    "json": "[os.urandom(512).hex() for _ in range(10240)]",
    "numpy": "__import__('numpy').frombuffer(os.urandom(10 << 20), dtype='uint8')",
}

_PUBLISH_ON_FULL_DISK = """
import json, os, sys
from taskflow_exclusive import StorageWriteError, publish
value = {value}
try:
    handle = publish(value, storage=sys.argv[1], serializer={serializer!r}, compression={compression!r})
except Exception as exc:
    facts = {{"type": type(exc).__name__, "message": str(exc), "uri": getattr(exc, "uri", None),
              "storage_write_error": isinstance(exc, StorageWriteError),
              "reason": getattr(exc, "reason", None), "cause": type(exc.__cause__).__name__}}
    print(json.dumps(facts))
else:
    print(json.dumps({{"published": handle.uri}}))
"""


@pytest.mark.parametrize("compression", [None, "gzip"])
@pytest.mark.parametrize("serializer", sorted(_VALUES))
def test_a_full_disk_raises_storage_write_error_and_leaves_no_file(
    tiny_disk: Path, serializer: str, compression: str | None
) -> None:
    storage = f"file://{tiny_disk}/store"
    script = _PUBLISH_ON_FULL_DISK.format(
        value=_VALUES[serializer], serializer=serializer, compression=compression
    )
    done = subprocess.run(
        [sys.executable, "-c", script, storage],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )

    assert done.returncode == 0, (
        f"publish of a 10 MB {serializer} value (compression={compression}) on a full disk ended the "
        f"interpreter with code {done.returncode} "
        f"({signal.Signals(-done.returncode).name if done.returncode < 0 else 'an error'}):\n"
        f"{done.stderr[-3000:]}"
    )
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts.get("storage_write_error"), facts
    assert facts["cause"] == "OSError", facts
    assert f"the store at {storage} is full" in facts["message"], facts["message"]
    assert "taskflow_exclusive_storage_url" in facts["message"], facts["message"]
    assert facts["uri"].startswith(f"{storage}/_local/values/"), facts
    assert facts["reason"] == os.strerror(errno.ENOSPC), facts
    assert _files(tiny_disk) == []


def test_a_manifest_that_does_not_fit_removes_the_value_written_before_it(tiny_disk: Path) -> None:
    folder = tiny_disk / "store" / "_local" / "values"
    folder.mkdir(parents=True)
    stats = os.statvfs(tiny_disk)
    free = stats.f_bavail * stats.f_frsize
    value = b"v" * (16 * stats.f_frsize)
    (tiny_disk / "filler").write_bytes(b"\0" * (free - len(value)))  # room for the value, not for more
    assert os.statvfs(tiny_disk).f_bavail * stats.f_frsize == len(value)

    with pytest.raises(StorageWriteError) as raised:
        publish(value, storage=f"file://{tiny_disk}/store")

    assert raised.value.uri.endswith(".manifest.json")
    assert "is full" in str(raised.value)
    assert _files(tiny_disk) == ["filler"]


def test_a_claim_on_a_full_disk_raises_storage_write_error_records_nothing_and_works_later(
    tiny_disk: Path,
) -> None:
    handle = publish(b"value", storage=f"file://{tiny_disk}/store")
    before = _files(tiny_disk)
    filler = _fill(tiny_disk)

    with pytest.raises(StorageWriteError) as raised:
        handle.claim(consumer_id="loader")

    assert f"the store at file://{tiny_disk} is full" in str(raised.value), str(raised.value)  # its disk
    assert _files(tiny_disk) == sorted([*before, "filler"])  # no claim record, no temporary file
    filler.unlink()
    assert handle.claim(consumer_id="loader") == b"value"


def test_create_if_absent_on_a_full_disk_raises_and_leaves_no_temporary_file(tiny_disk: Path) -> None:
    store = Store.from_url(f"file://{tiny_disk}")
    _fill(tiny_disk)

    with pytest.raises(StorageWriteError, match="is full"):
        store.create_if_absent(f"{tiny_disk}/claims/slot-0.json", b"x" * 8192)

    assert _files(tiny_disk) == ["filler"]


# --- a read-only store -----------------------------------------------------------------------


def test_a_read_only_store_raises_storage_write_error_saying_so(read_only_disk: Path) -> None:
    storage = f"file://{read_only_disk}/values"
    with pytest.raises(StorageWriteError) as raised:
        publish(b"value", storage=storage)

    message = str(raised.value)
    assert f"the store at {storage} is read-only" in message, message
    assert "taskflow_exclusive_storage_url" in message
    assert raised.value.reason == os.strerror(errno.EROFS)
    assert _files(read_only_disk) == []


def test_a_read_only_store_refuses_a_new_folder_too(read_only_disk: Path) -> None:
    with pytest.raises(StorageWriteError, match="is read-only"):
        publish(b"value", storage=f"file://{read_only_disk}/elsewhere")


# --- names the filesystem cannot hold --------------------------------------------------------


def test_a_label_too_long_for_the_filesystem_names_the_label_and_its_length(tmp_path: Path) -> None:
    with pytest.raises(StorageWriteError) as raised:
        publish(b"value", storage=f"file://{tmp_path}", label="L" * 300)

    message = str(raised.value)
    assert "label" in message and "300" in message and "at most 255" in message, message
    assert "shorter label" in message, message
    assert _files(tmp_path) == []


def test_a_run_id_too_long_for_the_filesystem_names_the_run_id(tmp_path: Path) -> None:
    task = TaskInstanceId(
        dag_id="etl", run_id="manual__" + "r" * 292, task_id="load", map_index=-1, try_number=1
    )
    with pytest.raises(StorageWriteError) as raised:
        ExclusiveOutput(storage=f"file://{tmp_path}").publish(b"value", task=task)

    message = str(raised.value)
    assert "run_id" in message and "300 characters" in message and "shorter run_id" in message, message
    assert "manual__rrr" in message
    assert _files(tmp_path) == []


# --- a file where a folder should be ---------------------------------------------------------


def test_a_file_inside_the_storage_path_is_named_as_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "data").write_bytes(b"not a folder")  # ENOTDIR: a file in the middle of the path
    with pytest.raises(StorageWriteError) as raised:
        publish(b"value", storage=f"file://{tmp_path}/data/store")

    assert f"{tmp_path}/data is a file, not a folder" in str(raised.value), str(raised.value)
    assert _files(tmp_path) == ["data"]


def test_a_file_where_the_value_folder_goes_is_named_as_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "_local").mkdir()
    (tmp_path / "_local" / "values").write_bytes(b"not a folder")  # EEXIST: the last folder is a file
    with pytest.raises(StorageWriteError) as raised:
        publish(b"value", storage=f"file://{tmp_path}")

    assert f"{tmp_path}/_local/values is a file, not a folder" in str(raised.value), str(raised.value)
    assert _files(tmp_path) == ["_local/values"]


# --- buffers and the hashing worker ----------------------------------------------------------


class _Full(io.RawIOBase):
    """A target that accepts ``room`` bytes, then fails like a full disk."""

    def __init__(self, room: int) -> None:
        self.room = room

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        size = memoryview(data).nbytes  # type: ignore[arg-type]
        if size > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= size
        return size


def _failed(exc: Exception) -> StorageWriteError:
    return StorageWriteError(str(exc), uri="test://", reason=str(exc))


@pytest.mark.parametrize("room", [0, 8 * MiB, 20 * MiB])
def test_a_failed_write_holds_no_view_of_the_callers_buffer(room: int) -> None:
    data = bytearray(os.urandom(1024)) * (32 * 1024)  # 32 MiB: hashed by the worker, in 8 MiB chunks
    hasher = _Hasher()
    writer = _HashingWriter(_Full(room), hasher, _failed)
    try:
        with pytest.raises(StorageWriteError):
            writer.write(data)
        data.clear()  # BufferError if anything (the hashing worker, a view) still holds the buffer
    finally:
        hasher.close()
    assert data == bytearray()


def test_an_interrupted_write_removes_the_partial_object_and_stops_the_worker(tmp_path: Path) -> None:
    store = Store.from_url(f"file://{tmp_path}")

    def dump(file: io.BufferedIOBase) -> None:
        file.write(os.urandom(24 * MiB))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.write_stream(f"{tmp_path}/x.bin", dump)

    assert _files(tmp_path) == []
    assert not [t for t in threading.enumerate() if t.name == "taskflow-exclusive-digest"]


def test_an_interrupt_while_draining_waits_for_the_worker_before_it_is_raised() -> None:
    data = bytearray(os.urandom(1024)) * (128 * 1024)  # 128 MiB: about 0.06 s of hashing
    hasher = _Hasher()
    previous = signal.signal(signal.SIGALRM, _raise_keyboard_interrupt)
    try:
        with memoryview(data) as view:
            hasher.submit(view)
            signal.setitimer(signal.ITIMER_REAL, 0.005)
            with pytest.raises(KeyboardInterrupt):
                hasher.drain()
                signal.pause()  # drain() was too quick for the timer: let it fire here
        data.clear()  # the worker no longer holds the buffer
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        hasher.close()


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def test_the_digest_matches_blake3_for_writes_of_every_size(tmp_path: Path) -> None:
    import blake3

    store = Store.from_url(f"file://{tmp_path}")
    pieces = [os.urandom(n) for n in (0, 1, 4095, MiB - 1, MiB, MiB + 1, 8 * MiB, 8 * MiB + 3, 17 * MiB)]
    size, digest = store.write_stream(f"{tmp_path}/x.bin", lambda f: [f.write(p) for p in pieces])

    whole = b"".join(pieces)
    assert (size, digest) == (len(whole), "blake3:" + blake3.blake3(whole).hexdigest())
    assert (tmp_path / "x.bin").read_bytes() == whole


# --- an S3 store that cannot be reached ------------------------------------------------------


@pytest.fixture(scope="module")
def stopped_s3() -> Iterator[tuple[str, str, S3Server]]:
    """``(storage URL, connection id, server)`` of a SeaweedFS used once, then killed (SIGKILL)."""
    try:
        server = start_seaweedfs()
    except ServerUnavailable as exc:
        service_unavailable("S3 server (SeaweedFS)", str(exc))
    conn_id = f"tfx_stopped_{uuid.uuid4().hex[:8]}"
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = server.connection_uri_json()
    try:
        storage = f"s3://{conn_id}@{server.bucket}/faults"
        publish(b"warm", storage=storage)  # this process has checked the server and opened its client
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()
        yield storage, conn_id, server
    finally:
        os.environ.pop(f"AIRFLOW_CONN_{conn_id.upper()}", None)
        server.stop()


def _assert_unreachable(error: StorageWriteError, store: str, server: S3Server) -> None:
    message = str(error)
    assert f"the store at {store} could not be reached" in message, message
    assert error.uri.startswith(f"{store}/"), error.uri
    assert server.key not in message and server.secret not in message


@pytest.mark.parametrize("size", [10, 12 * MiB], ids=["one-put", "multipart"])
def test_a_publish_to_a_stopped_s3_server_raises_storage_write_error_naming_it(
    stopped_s3: tuple[str, str, S3Server], size: int
) -> None:
    storage, conn_id, server = stopped_s3
    started = time.monotonic()
    with pytest.raises(StorageWriteError) as raised:
        publish(os.urandom(size), storage=storage)

    assert time.monotonic() - started < 20
    _assert_unreachable(raised.value, f"s3://{conn_id}@{server.bucket}", server)


def test_the_first_publish_to_a_stopped_s3_server_raises_storage_write_error(
    stopped_s3: tuple[str, str, S3Server],
) -> None:
    _, _, server = stopped_s3
    conn_id = f"tfx_fresh_{uuid.uuid4().hex[:8]}"  # a new client: the create-once probe runs first
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = server.connection_uri_json()
    try:
        with pytest.raises(StorageWriteError) as raised:
            publish(b"value", storage=f"s3://{conn_id}@{server.bucket}/faults")
    finally:
        os.environ.pop(f"AIRFLOW_CONN_{conn_id.upper()}", None)

    _assert_unreachable(raised.value, f"s3://{conn_id}@{server.bucket}", server)


@pytest.mark.parametrize("algorithm", ["blake3", "sha256"])
def test_a_verified_read_into_a_map_can_release_it_at_once(tmp_path: Path, algorithm: str) -> None:
    import hashlib

    import blake3

    store = Store.from_url(f"file://{tmp_path}")
    data = os.urandom(20 * MiB)  # read in 8 MiB chunks, hashed by the worker while the next is read
    (tmp_path / "x.bin").write_bytes(data)
    reference = blake3.blake3(data) if algorithm == "blake3" else hashlib.sha256(data)

    buffer = store.read_verified(
        f"{tmp_path}/x.bin",
        size=len(data),
        digest=f"{algorithm}:{reference.hexdigest()}",
        uri="x",
        writable=True,
    )

    assert buffer[:] == data
    buffer.close()  # BufferError if the hashing worker still held a view of the map
    assert not [t for t in threading.enumerate() if t.name == "taskflow-exclusive-digest"]


def test_a_value_over_the_file_size_limit_raises_storage_write_error(tmp_path: Path) -> None:
    script = (
        "import json, os, resource, sys\n"
        "from taskflow_exclusive import StorageWriteError, publish\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))\n"
        "try:\n"
        "    publish(os.urandom(4 << 20), storage=sys.argv[1])\n"
        "except StorageWriteError as exc:\n"
        "    print(json.dumps({'message': str(exc), 'reason': exc.reason}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, f"file://{tmp_path}"],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert "larger than a file on the store" in facts["message"], facts
    assert facts["reason"] == os.strerror(errno.EFBIG)
    assert _files(tmp_path) == []
