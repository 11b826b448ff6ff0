"""Bad input and damaged storage: clear errors, nothing wrong ever returned."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest

from taskflow_exclusive import (
    ExclusiveHandle,
    IntegrityError,
    LocalStorageWarning,
    MalformedRecordError,
    ObjectMissingError,
    SerializationError,
    StorageConfigError,
    publish,
)
from taskflow_exclusive.config import reset_for_tests, resolve_storage_url
from taskflow_exclusive.storage.filesystems import filesystem_for, parse_storage_url
from taskflow_exclusive.storage.layout import ObjectPaths


def _fs_path(uri: str):
    location = parse_storage_url(uri)
    return filesystem_for(location), location.path


class _Boom:
    """Unpickling this runs code: it must never happen for unverified bytes."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).touch, ())


# --- damaged or missing objects ------------------------------------------------------------------


def test_a_flipped_byte_raises_integrity_error_and_the_pickle_is_never_loaded(storage_url, tmp_path):
    marker = tmp_path / "unpickled"
    handle = publish({"safe": True}, storage=storage_url, serializer="pickle")
    fs, path = _fs_path(handle.uri)
    # Replace the stored bytes with a same-sized pickle whose loading would touch the marker.
    evil = pickle.dumps(_Boom(str(marker)))
    flipped = bytearray(fs.cat_file(path))
    flipped[len(flipped) // 2] ^= 0x01
    fs.pipe_file(path, bytes(flipped))
    with pytest.raises(IntegrityError, match="blake3 digest") as raised:
        handle.claim(consumer_id="c")
    assert raised.value.uri == handle.uri
    # Same size as promised, so only the checksum stands between this pickle and pickle.loads.
    fs.pipe_file(path, evil.ljust(handle.size, b"."))
    with pytest.raises(IntegrityError):
        handle.claim(consumer_id="c")
    assert not marker.exists()


def test_a_truncated_object_is_refused_with_both_sizes(storage_url):
    handle = publish(b"0123456789" * 100, storage=storage_url)
    fs, path = _fs_path(handle.uri)
    fs.pipe_file(path, fs.cat_file(path)[:500])
    with pytest.raises(IntegrityError, match="500 bytes but its handle promises 1000"):
        handle.claim(consumer_id="c")


def test_a_deleted_object_raises_object_missing_naming_the_uri(storage_url):
    handle = publish("soon gone", storage=storage_url)
    fs, path = _fs_path(handle.uri)
    fs.rm_file(path)
    with pytest.raises(ObjectMissingError) as raised:
        handle.claim(consumer_id="c")
    assert raised.value.uri == handle.uri
    assert handle.uri in str(raised.value)
    assert isinstance(raised.value, FileNotFoundError)


def test_a_purged_value_is_missing_with_its_manifest_and_claims(storage_url):
    handle = publish("purge me", storage=storage_url)
    handle.claim(consumer_id="c")
    assert handle.purge() >= 3  # data, manifest, claim record
    with pytest.raises(ObjectMissingError):
        handle.claim(consumer_id="c")
    assert handle.holders() == []


@pytest.mark.skipif(not shutil.which("unshare") or os.geteuid() != 0, reason="needs root and unshare(1)")
def test_a_local_value_written_on_another_host_names_that_host(tmp_path):
    """The producer runs in its own UTS and mount namespace: another hostname, a private disk."""
    storage = tmp_path / "shared-path"
    storage.mkdir()
    script = (
        "import sys; from taskflow_exclusive import publish; "
        f"print(publish('from elsewhere', storage={storage.as_uri()!r}).to_json())"
    )
    produced = subprocess.run(
        [
            "unshare",
            "--uts",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            f'hostname worker-b && mount -t tmpfs tmpfs {storage} && {sys.executable} -c "{script}"',
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if produced.returncode != 0:
        pytest.skip(f"namespaces unavailable here: {produced.stderr[-300:]}")
    handle = ExclusiveHandle.from_json(produced.stdout.strip().splitlines()[-1])
    assert handle.host == "worker-b"
    with pytest.raises(ObjectMissingError) as raised:
        handle.claim(consumer_id="c")
    assert raised.value.written_on == "worker-b"
    assert "written on host 'worker-b'" in str(raised.value)
    assert "taskflow_exclusive_storage_url" in str(raised.value)


# --- forged handles --------------------------------------------------------------------------


def test_a_handle_pointing_at_a_file_the_library_did_not_write_is_refused(tmp_path, file_url):
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    legit = publish("legit", storage=file_url)
    forged = ExclusiveHandle.from_dict({**legit.to_dict(), "uri": secret.as_uri()})
    with pytest.raises(IntegrityError, match="not a value written by taskflow-exclusive"):
        forged.claim(consumer_id="attacker")


def test_a_handle_altered_to_match_other_bytes_is_refused_before_any_claim(storage_url):
    handle = publish({"amount": 10}, storage=storage_url)
    fs, path = _fs_path(handle.uri)
    evil = json.dumps({"amount": 10_000}).encode()
    fs.pipe_file(path, evil)
    from taskflow_exclusive.storage.digests import digest_of

    forged = ExclusiveHandle.from_dict({**handle.to_dict(), "size": len(evil), "digest": digest_of(evil)})
    with pytest.raises(IntegrityError, match="does not match the manifest") as raised:
        forged.claim(consumer_id="attacker")
    assert "digest" in str(raised.value) and "size" in str(raised.value)
    assert forged.holders() == []  # the refused claim recorded nothing


def test_malformed_handles_are_refused_with_what_is_wrong():
    with pytest.raises(MalformedRecordError, match="Not a taskflow-exclusive handle"):
        ExclusiveHandle.from_dict({"uri": "file:///x"})
    with pytest.raises(MalformedRecordError, match="sha256 is not 64"):  # a handle of before #13
        ExclusiveHandle.from_dict(
            {
                "format": ExclusiveHandle.FORMAT,
                "uri": "file:///x/" + "a" * 32 + ".bin",
                "serializer": "bytes",
                "size": 1,
                "sha256": "zz",
                "producer": "p",
                "created_at": "now",
                "host": "h",
            }
        )


def test_object_names_the_library_would_not_write_are_refused():
    for name in ("../../etc/passwd", "x.bin", "try1-" + "a" * 31 + ".pkl", "a" * 32 + ".PKL"):
        with pytest.raises(IntegrityError):
            ObjectPaths.from_data_path(f"/store/{name}", uri=f"file:///store/{name}")


# --- bad storage configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nosuch://bucket/x", "unknown scheme 'nosuch'"),
        ("relative/path", "has no scheme"),
        ("s3://", "has no bucket"),
        ("file://otherhost/data", "must be local"),
        ("memory://conn@x", "takes no credentials"),
    ],
)
def test_a_bad_storage_url_raises_storage_config_error_naming_url_and_source(url, message):
    with pytest.raises(StorageConfigError, match=message) as raised:
        publish("x", storage=url)
    assert raised.value.source == "argument"
    assert url in str(raised.value)


def test_a_storage_url_with_a_password_is_refused_without_echoing_it():
    with pytest.raises(StorageConfigError, match="carries credentials") as raised:
        publish("x", storage="s3://AKIAKEY:supersecret@bucket/prefix")
    assert "supersecret" not in str(raised.value)
    assert "supersecret" not in str(raised.value.url)


def test_a_missing_driver_names_the_package_to_install():
    pytest.importorskip("fsspec")
    try:
        import adlfs  # noqa: F401

        pytest.skip("adlfs is installed here")
    except ImportError:
        pass
    with pytest.raises(StorageConfigError, match="driver for abfs://") as raised:
        publish("x", storage="abfs://container/prefix")
    assert "adlfs" in str(raised.value)


def test_a_filesystem_without_atomic_create_is_refused_before_anything_is_written():
    """A writable fsspec filesystem the library cannot create on atomically (a plain in-memory one
    under another name) holds no claims; nothing is written to it."""
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    class PlainFileSystem(MemoryFileSystem):
        protocol = ("tfxplain",)
        store: dict = {}  # noqa: RUF012 - fsspec keeps the files in a class attribute
        pseudo_dirs = [""]  # noqa: RUF012

    fsspec.register_implementation("tfxplain", PlainFileSystem, clobber=True)
    with pytest.raises(StorageConfigError, match="cannot create objects atomically"):
        publish("x", storage="tfxplain://values")
    assert PlainFileSystem.store == {}


def test_a_read_only_filesystem_is_refused_up_front():
    with pytest.raises(StorageConfigError, match="read-only"):
        publish("x", storage="http://127.0.0.1:9/values")


def test_a_bad_url_in_the_variable_names_the_variable(monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_STORAGE_URL", "s4://bucket/typo")
    with pytest.raises(StorageConfigError) as raised:
        publish("x")
    assert "taskflow_exclusive_storage_url" in str(raised.value)
    assert raised.value.source == "Airflow Variable 'taskflow_exclusive_storage_url'"


def test_an_unknown_connection_id_names_the_connection():
    with pytest.raises(StorageConfigError, match="connection 'no_such_conn'") as raised:
        publish("x", storage="s3://no_such_conn@bucket/prefix")
    assert "AIRFLOW_CONN_NO_SUCH_CONN" in str(raised.value)


# --- settings precedence ---------------------------------------------------------------------


def test_storage_url_comes_from_argument_then_variable_then_local_default(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    reset_for_tests()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        default = resolve_storage_url()
        again = resolve_storage_url()
    assert default.value == (tmp_path / "home" / "taskflow_exclusive").as_uri()
    assert default == again
    assert [w.category for w in caught] == [LocalStorageWarning]  # once, not twice
    assert "single machine" in str(caught[0].message) or "only serves this machine" in str(caught[0].message)

    monkeypatch.setenv("AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_STORAGE_URL", "memory://from-variable")
    assert resolve_storage_url().value == "memory://from-variable"
    assert resolve_storage_url("memory://explicit").value == "memory://explicit"
    assert resolve_storage_url("memory://explicit").source == "argument"


def test_values_go_to_the_local_default_under_airflow_home(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LocalStorageWarning)
        handle = publish("where am I")
    assert handle.uri.startswith((tmp_path / "home" / "taskflow_exclusive").as_uri())
    assert handle.claim(consumer_id="c") == "where am I"


# --- serialization errors --------------------------------------------------------------------


def test_a_value_no_serializer_takes_names_its_type_and_the_serializers(file_url, tmp_path):
    with pytest.raises(SerializationError) as raised:
        publish(threading.Lock(), storage=file_url)
    error = raised.value
    assert "_thread.lock" in error.value_type
    assert "pickle" in error.available and "json" in error.available
    assert "json" in str(error) and "parquet" in str(error)
    leftovers = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert leftovers == []  # the partial object was discarded


def test_an_explicit_serializer_that_cannot_take_the_value_says_so(memory_url):
    with pytest.raises(
        SerializationError, match=r"Serializer 'json' cannot write a value of type builtins\.set"
    ):
        publish({1, 2}, storage=memory_url, serializer="json")
    with pytest.raises(SerializationError, match="Unknown serializer 'yaml'") as raised:
        publish("x", storage=memory_url, serializer="yaml")
    assert "pickle" in raised.value.available


def test_a_custom_serializer_is_used_by_name_and_by_type(memory_url):
    from taskflow_exclusive import Serializer, register_serializer

    class Celsius(float):
        pass

    class CelsiusSerializer(Serializer):
        name = "celsius-test"
        extension = "degc"

        def accepts(self, value):
            return isinstance(value, Celsius)

        def dump(self, value, file):
            file.write(f"{float(value)}C".encode())

        def load(self, data):
            return Celsius(data.decode().rstrip("C"))

    register_serializer(CelsiusSerializer(), replace=True)
    handle = publish(Celsius(21.5), storage=memory_url)
    assert handle.serializer == "celsius-test"
    back = handle.claim(consumer_id="c")
    assert isinstance(back, Celsius) and back == 21.5
    with pytest.raises(ValueError, match="already registered"):
        register_serializer(CelsiusSerializer())


def test_large_values_read_in_place_are_checked_as_strictly(storage_url):
    import numpy as np

    handle = publish(np.zeros((2000, 2000)), storage=storage_url)  # 32 MB, read into a memory map
    fs, path = _fs_path(handle.uri)
    data = bytearray(fs.cat_file(path))
    data[-1] ^= 0xFF
    fs.pipe_file(path, bytes(data))
    with pytest.raises(IntegrityError, match="blake3 digest"):
        handle.claim(consumer_id="c")
    fs.pipe_file(path, bytes(data) + b"extra")
    with pytest.raises(IntegrityError, match=f"more than {handle.size} bytes"):
        handle.claim(consumer_id="c")
    fs.pipe_file(path, bytes(data[: handle.size // 2]))
    with pytest.raises(IntegrityError, match=f"{handle.size // 2} bytes but"):
        handle.claim(consumer_id="c")
