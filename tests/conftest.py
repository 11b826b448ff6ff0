"""Shared fixtures: an isolated AIRFLOW_HOME, real storage servers, service URLs.

Services (S3 server, Redis, PostgreSQL, ...) that cannot be reached make
their tests skip with a loud reason, except under CI=true, where that is a
failure: CI must prove what the tests claim.
"""

from __future__ import annotations

import os
import tempfile
import uuid
import warnings
from pathlib import Path

import pytest

# Airflow reads AIRFLOW_HOME when first imported: isolate it before anything imports airflow.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="tfx-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_SESSION_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(__file__).parent / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.pop("AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_STORAGE_URL", None)
os.environ.pop("AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_CLAIMS_URL", None)
# gcsfs reads this once, when first imported: with its default ("true") it swaps in a class
# that probes each bucket's layout over gRPC, which waits 60 s per call against an emulator.
# It is set here, for the tests and the processes they spawn, and not in the library: it is
# process-wide, it changes gcsfs for every user of it in the process (the Google provider
# too), and on real GCS the probe works and the class is what zonal/HNS buckets need.
# README ("Operations") tells emulator users to set it.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

from tests.servers import (  # noqa: E402
    ServerUnavailable,
    start_fake_gcs,
    start_moto,
    start_seaweedfs,
)

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
S3_CONN_ID = "tfx_test_s3"
GCS_CONN_ID = "tfx_test_gcs"
MOTO_CONN_ID = "tfx_test_moto"


def service_unavailable(what: str, reason: str) -> None:
    """Skip loudly, or fail under CI=true (where every proof must run)."""
    message = f"{what} unavailable: {reason}"
    if IN_CI:
        pytest.fail(f"CI=true and {message}", pytrace=False)
    warnings.warn(f"SKIPPING: {message}", stacklevel=2)
    pytest.skip(f"LOUD SKIP: {message}")


def env_count(name: str, default: int) -> int:
    """A count for a long proof, from the environment (CI sets its own in .ci/run)."""
    return int(os.environ.get(name, default))


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    return _SESSION_HOME


def serving(start, what: str, conn_id: str | None = None):
    """For fixtures: start a server, yield it, stop it after (skip loudly, or fail under CI).

    With ``conn_id`` the server is also published as that Airflow connection (an
    AIRFLOW_CONN_ environment variable, inherited by spawned processes).
    """
    try:
        server = start()
    except ServerUnavailable as exc:
        service_unavailable(what, str(exc))
    variable = f"AIRFLOW_CONN_{conn_id.upper()}" if conn_id else None
    if variable:
        os.environ[variable] = server.connection_uri_json()
    try:
        yield server
    finally:
        if variable:
            os.environ.pop(variable, None)
        server.stop()


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata database in the session's AIRFLOW_HOME."""
    from tests.airflow_harness import migrate_once

    migrate_once()
    return _SESSION_HOME


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (SeaweedFS) on loopback, for the whole session.

    Its credentials live in the Airflow Connection ``tfx_test_s3`` (an
    AIRFLOW_CONN_ environment variable, inherited by spawned processes).
    """
    yield from serving(start_seaweedfs, "S3 server (SeaweedFS)", S3_CONN_ID)


@pytest.fixture
def s3_url(s3_server) -> str:
    """A fresh prefix on the S3 server, reached through the Airflow connection."""
    return f"s3://{S3_CONN_ID}@{s3_server.bucket}/t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def file_url(tmp_path: Path) -> str:
    return (tmp_path / "store").as_uri()


@pytest.fixture
def memory_url() -> str:
    return f"memory://tfx-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["file", "memory", "s3", "gcs"])
def storage_url(request: pytest.FixtureRequest) -> str:
    """Each storage in turn: local disk, in-process memory, the real S3 server, the GCS emulator."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test inherits a storage or claims Variable from another."""
    monkeypatch.delenv("AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_STORAGE_URL", raising=False)
    monkeypatch.delenv("AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_CLAIMS_URL", raising=False)


@pytest.fixture(scope="session")
def gcs_server():
    """A GCS emulator (fake-gcs-server, filesystem backend) on loopback, for the whole session.

    Reached anonymously through the Airflow Connection ``tfx_test_gcs``
    (endpoint_url, project, token "anon").
    """
    yield from serving(start_fake_gcs, "GCS emulator (fake-gcs-server)", GCS_CONN_ID)


@pytest.fixture
def gcs_url(gcs_server) -> str:
    """A fresh prefix on the GCS emulator, reached through the Airflow connection."""
    return f"gs://{GCS_CONN_ID}@{gcs_server.bucket}/t-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def moto_server():
    """moto's S3 server on loopback: a second S3 implementation, for behaviour tests only.

    moto honours If-None-Match but is not atomic under races (FACTS.md): never race on it.
    """
    yield from serving(start_moto, "S3 server (moto)", MOTO_CONN_ID)


@pytest.fixture
def moto_s3_url(moto_server) -> str:
    """A fresh prefix on the moto S3 server, reached through the Airflow connection."""
    return f"s3://{MOTO_CONN_ID}@{moto_server.bucket}/t-{uuid.uuid4().hex[:12]}"
