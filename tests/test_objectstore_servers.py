"""The object-store ledger on real S3 and GCS protocols: which servers can guard a claim.

Servers on loopback, started by the tests: SeaweedFS and moto (S3, through
s3fs), fake-gcs-server (GCS, through gcsfs), all reached through Airflow
connections (``s3://conn@bucket``, ``gs://conn@bucket``); and
gcp-storage-emulator, a GCS emulator that ignores preconditions, which must
be refused.
"""

from __future__ import annotations

import errno
import json
import uuid

import pytest

from taskflow_exclusive import AlreadyClaimedError, StorageConfigError, publish
from taskflow_exclusive.storage import atomic
from taskflow_exclusive.storage.filesystems import filesystem_for, parse_storage_url
from tests.conftest import serving
from tests.servers import ConflictProxy, start_gcp_storage_emulator

SERVERS = ["s3_url", "moto_s3_url", "gcs_url"]


def _fs_and_path(url: str, *names: str):
    location = parse_storage_url(url)
    return filesystem_for(location), "/".join([location.path, *names])


def _objects(fs, folder: str) -> list[str]:
    """Objects below ``folder`` (s3fs lists an empty prefix as a directory: not an object)."""
    fs.invalidate_cache()
    return sorted(p for p, info in fs.find(folder, detail=True).items() if info.get("type") != "directory")


@pytest.mark.parametrize("server", SERVERS)
def test_the_server_refuses_a_second_create_of_one_object(request, server):
    fs, path = _fs_and_path(request.getfixturevalue(server), "slot-0.json")
    assert atomic.create_if_absent(fs, path, b"first") is True
    assert atomic.create_if_absent(fs, path, b"second") is False
    assert atomic.create_if_absent(fs, path, b"third") is False
    assert fs.cat_file(path) == b"first"


@pytest.mark.parametrize("server", SERVERS)
def test_the_precondition_probe_accepts_the_server_and_leaves_nothing_behind(request, server):
    url = request.getfixturevalue(server)
    fs, folder = _fs_and_path(url)
    atomic.ensure_create_is_atomic(fs, folder, url)
    assert _objects(fs, folder) == []  # the probe object was removed


@pytest.mark.parametrize("server", SERVERS)
def test_a_value_goes_to_one_consumer_through_the_airflow_connection(request, server):
    url = request.getfixturevalue(server)
    handle = publish({"server": server}, storage=url)
    assert handle.uri.startswith(url)  # the connection id is kept; no credentials
    assert handle.claim(consumer_id="first") == {"server": server}
    assert handle.claim(consumer_id="first") == {"server": server}
    with pytest.raises(AlreadyClaimedError) as refused:
        handle.claim(consumer_id="second")
    assert refused.value.holder == "first"
    assert [h.consumer_id for h in handle.holders()] == ["first"]


def test_seaweedfs_answers_a_lost_create_with_412_that_s3fs_does_not_map_and_we_do(s3_url):
    fs, path = _fs_and_path(s3_url, "slot-0.json")
    fs.pipe_file(path, b"first", mode="create")
    # What s3fs raises on its own for SeaweedFS's 412: not FileExistsError (FACTS.md).
    with pytest.raises(OSError) as raw:
        fs.pipe_file(path, b"second", mode="create")
    assert not isinstance(raw.value, FileExistsError)
    assert raw.value.errno == errno.EINVAL
    assert atomic._client_error_code(raw.value) == "PreconditionFailed"
    # ... which create_if_absent reports as "someone else created it".
    assert atomic.create_if_absent(fs, path, b"second") is False
    assert fs.cat_file(path) == b"first"


# --- 409 ConditionalRequestConflict, as AWS answers while another conditional write is in flight


def _s3fs_through(endpoint: str, server):
    import s3fs

    return s3fs.S3FileSystem(
        key=server.key,
        secret=server.secret,
        client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"},
        skip_instance_cache=True,
    )


def test_a_409_conditional_request_conflict_is_retried_until_the_create_is_decided(s3_server):
    proxy = ConflictProxy(s3_server.endpoint, conflicts=3)
    try:
        fs = _s3fs_through(proxy.endpoint, s3_server)
        path = f"{s3_server.bucket}/conflicts/{uuid.uuid4().hex}/slot-0.json"
        assert atomic.create_if_absent(fs, path, b"mine") is True
        assert proxy.served_conflicts == 3
        assert fs.cat_file(path) == b"mine"
        proxy.remaining = 2
        assert atomic.create_if_absent(fs, path, b"late") is False  # decided after the 409s
        assert proxy.served_conflicts == 5
    finally:
        proxy.stop()


def test_endless_409_conflicts_raise_instead_of_pretending_the_create_was_lost(s3_server):
    proxy = ConflictProxy(s3_server.endpoint, conflicts=1000)
    try:
        fs = _s3fs_through(proxy.endpoint, s3_server)
        path = f"{s3_server.bucket}/conflicts/{uuid.uuid4().hex}/slot-0.json"
        with pytest.raises(OSError) as raised:
            atomic.create_if_absent(fs, path, b"mine")
        assert atomic._client_error_code(raised.value) == "ConditionalRequestConflict"
        assert proxy.served_conflicts >= atomic._CONFLICT_RETRIES
        assert not fs.exists(path)
    finally:
        proxy.stop()


# --- a server that silently ignores preconditions is refused ------------------------------------


@pytest.fixture(scope="module")
def careless_gcs_server():
    """gcp-storage-emulator: a real GCS emulator that ignores ifGenerationMatch (FACTS.md)."""
    yield from serving(
        start_gcp_storage_emulator, "GCS emulator (gcp-storage-emulator)", "tfx_test_careless_gcs"
    )


@pytest.fixture
def careless_gcs_url(careless_gcs_server) -> str:
    return f"gs://tfx_test_careless_gcs@{careless_gcs_server.bucket}/t-{uuid.uuid4().hex[:12]}"


def test_the_careless_emulator_really_overwrites_on_a_second_create(careless_gcs_url):
    # The premise of the next test: this server accepts the precondition and ignores it.
    fs, path = _fs_and_path(careless_gcs_url, "x")
    fs.pipe_file(path, b"first", mode="create")
    fs.pipe_file(path, b"second", mode="create")
    assert fs.cat_file(path) == b"second"


def test_a_server_that_ignores_preconditions_is_refused_before_anything_is_written(careless_gcs_url):
    fs, folder = _fs_and_path(careless_gcs_url)
    with pytest.raises(StorageConfigError, match="does not honour conditional creates") as refused:
        publish({"never": "stored"}, storage=careless_gcs_url)
    assert refused.value.url == careless_gcs_url
    assert "tfx_test_careless_gcs" in str(refused.value)
    assert _objects(fs, folder) == []  # no value, no manifest, no probe left behind


def test_the_refusal_holds_for_every_later_attempt_in_the_process(careless_gcs_url):
    for _ in range(2):
        with pytest.raises(StorageConfigError):
            publish(b"x", storage=careless_gcs_url)


# --- gs://conn_id@bucket: what a Google connection may say --------------------------------------


def _gcs_options(monkeypatch, conn_id: str, extra: dict):
    from taskflow_exclusive.storage.filesystems import _options_from_connection

    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps({"conn_type": "google_cloud_platform", "extra": extra}),
    )
    return _options_from_connection(parse_storage_url(f"gs://{conn_id}@bucket/prefix"))


def test_a_keyfile_dict_given_as_json_text_reaches_gcsfs_as_a_dict(monkeypatch):
    key = {"type": "service_account", "project_id": "p", "client_email": "x@p.iam.gserviceaccount.com"}
    options = _gcs_options(monkeypatch, "tfx_keyfile", {"keyfile_dict": json.dumps(key), "project": "p"})
    assert options == {"token": key, "project": "p"}


def test_a_key_path_that_is_not_a_file_is_refused_not_taken_for_a_raw_token(monkeypatch, tmp_path):
    missing = tmp_path / "absent.json"
    with pytest.raises(StorageConfigError, match="key_path") as refused:
        _gcs_options(monkeypatch, "tfx_keypath", {"key_path": str(missing)})
    assert str(missing) in str(refused.value)


def test_anonymous_access_is_refused_for_real_gcs_and_allowed_for_an_emulator(monkeypatch):
    with pytest.raises(StorageConfigError, match="emulators only"):
        _gcs_options(monkeypatch, "tfx_anon_real", {"token": "anon"})
    options = _gcs_options(monkeypatch, "tfx_anon_emulator", {"token": "anon", "endpoint_url": "http://x"})
    assert options == {"token": "anon", "endpoint_url": "http://x"}


def test_old_prefixed_google_extras_are_understood(monkeypatch, tmp_path):
    key_file = tmp_path / "key.json"
    key_file.write_text("{}")
    options = _gcs_options(
        monkeypatch,
        "tfx_prefixed",
        {
            "extra__google_cloud_platform__key_path": str(key_file),
            "extra__google_cloud_platform__project": "old-style",
        },
    )
    assert options == {"token": str(key_file), "project": "old-style"}


# --- s3://conn_id@bucket: timeouts and retries -------------------------------------------------


def test_s3_filesystems_get_bounded_timeouts_that_a_connection_can_override(monkeypatch, s3_server):
    from taskflow_exclusive.storage.filesystems import S3_CLIENT_CONFIG, S3FS_RETRIES

    default_conn = json.loads(s3_server.connection_uri_json())
    monkeypatch.setenv("AIRFLOW_CONN_TFX_DEFAULT_TIMEOUTS", json.dumps(default_conn))
    tuned_conn = json.loads(s3_server.connection_uri_json())
    tuned_conn["extra"]["config_kwargs"] = {"read_timeout": 3}
    monkeypatch.setenv("AIRFLOW_CONN_TFX_TUNED_TIMEOUTS", json.dumps(tuned_conn))

    default = filesystem_for(parse_storage_url(f"s3://tfx_default_timeouts@{s3_server.bucket}/x"))
    tuned = filesystem_for(parse_storage_url(f"s3://tfx_tuned_timeouts@{s3_server.bucket}/x"))
    assert default.config_kwargs == S3_CLIENT_CONFIG
    assert tuned.config_kwargs == {**S3_CLIENT_CONFIG, "read_timeout": 3}
    assert default.retries == tuned.retries == S3FS_RETRIES
    # The settings reach the botocore client that really talks to the server.
    assert tuned.ls(s3_server.bucket) is not None
    assert tuned.s3.meta.config.read_timeout == 3
    assert default.s3.meta.config.retries == {"mode": "standard", "total_max_attempts": 2}
