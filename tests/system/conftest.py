"""Real Airflow deployments for the system tests, one at a time, once per session.

``deployed`` is parametrized over two deployments, each on a fresh PostgreSQL
database and with its values on the session's S3 server (SeaweedFS):

- ``local``: LocalExecutor, Airflow's default XCom backend;
- ``celery``: CeleryExecutor with two workers (Redis broker, PostgreSQL result
  backend), each with its own AIRFLOW_HOME and copy of the DAGs, and
  ``ExclusiveXCom`` as the deployment's XCom backend (threshold 1 KiB), so the
  decorators' handles also travel through it.

Each deployment starts, every DAG run is triggered at once, and the fixture waits
until all have finished; the tests then read states and try numbers from the REST
API, claim records from the object store and what tasks recorded. pytest groups the
tests by deployment, so the first is stopped before the second starts (2 cores).
A deployment that cannot start skips its tests loudly, or fails them under CI=true.
"""

from __future__ import annotations

import contextlib
import importlib.util
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

import taskflow_exclusive.examples
from tests.conftest import S3_CONN_ID, service_unavailable
from tests.ledgers import with_query
from tests.queue_fixtures import QUEUE_REDIS_URL
from tests.system.deployment import (
    RECORDS_ENV,
    Deployment,
    DeploymentError,
    FinishedRun,
    Records,
    Worker,
    create_database,
    delete_redis_keys,
    drop_database,
    postgres_admin_url,
    redis_url,
    unused_redis_database,
)
from tests.system.deployment import database_url as postgres_url

SESSION = secrets.token_hex(4)
DAGS = Path(__file__).parent / "dags"
EXAMPLES = Path(taskflow_exclusive.examples.__file__).parent / "dags"
ORDERS_PIPELINE = EXAMPLES / "orders_pipeline.py"

# dag_id -> DAG file, run on every deployment
DAG_FILES = {
    "orders_pipeline": ORDERS_PIPELINE,
    "sys_racing_consumers": DAGS / "racing_consumers.py",
    "sys_consumer_retry": DAGS / "consumer_retry.py",
    "sys_split_mapped": DAGS / "split_mapped.py",
    "sys_multiple_outputs": DAGS / "multiple_outputs.py",
    "orders_handoff": EXAMPLES / "orders_handoff.py",
    "sys_queue_pool": DAGS / "queue_pool.py",
}
# deployed and unpaused but never triggered by the tests: their parents trigger them
TRIGGERED_DAG_FILES = {"orders_report": EXAMPLES / "orders_report.py"}
SIGNING_SECRET = secrets.token_urlsafe(32)
# run only where ExclusiveXCom is the deployment's XCom backend
XCOM_BACKEND_DAG_FILES = {"sys_xcom_backend_claims": DAGS / "xcom_backend_claims.py"}
XCOM_THRESHOLD = 1024
RUNS_TIMEOUT = 300

_summary = pytest.StashKey[list[str]]()


@dataclass
class Deployed:
    """A running deployment whose DAG runs have all finished."""

    deployment: Deployment
    storage_url: str
    runs: dict[str, FinishedRun] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.deployment.name

    @property
    def is_celery(self) -> bool:
        return self.deployment.executor == "CeleryExecutor"

    def __getitem__(self, dag_id: str) -> FinishedRun:
        return self.runs[dag_id]


@pytest.fixture(scope="session")
def system_summary(request: pytest.FixtureRequest) -> list[str]:
    """Lines printed at the end of the session (timings, how work spread over workers)."""
    return request.config.stash.setdefault(_summary, [])


def _celery_settings(redis_db: int, key_prefix: str, database: str) -> dict[str, str]:
    """Broker on the machine's Redis (a free database, keys under a prefix of this session),
    results in the deployment's PostgreSQL database, ExclusiveXCom as the XCom backend."""
    return {
        "AIRFLOW__CELERY__BROKER_URL": redis_url(redis_db),
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{postgres_url(database)}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": key_prefix,
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "3600",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": f"tfx_sys_{SESSION}",
        "AIRFLOW__CORE__XCOM_BACKEND": "taskflow_exclusive.xcom.ExclusiveXCom",
        "AIRFLOW__TASKFLOW_EXCLUSIVE__XCOM_THRESHOLD": str(XCOM_THRESHOLD),
    }


def queue_prefix(kind: str) -> str:
    """The key prefix of a deployment's work queues (on the shared Redis at ``TFX_QUEUE_REDIS_URL``)."""
    return f"tfx_sys_{SESSION}_{kind}_queues"


def _db_of(url: str) -> int:
    return int(urlsplit(url).path.strip("/") or 0)


def _run_everything(deployment: Deployment, dag_ids: list[str], records: Records) -> dict[str, FinishedRun]:
    """Trigger one run of every DAG at once, wait for all of them, collect what they did."""
    deployment.wait_for_dags([*dag_ids, *TRIGGERED_DAG_FILES])
    for child in TRIGGERED_DAG_FILES:
        deployment.api("PATCH", f"/api/v2/dags/{child}", json={"is_paused": False})
    started = time.monotonic()
    run_ids = {dag_id: deployment.trigger(dag_id) for dag_id in dag_ids}
    states = deployment.wait_for_runs(run_ids.items(), timeout=RUNS_TIMEOUT)
    deployment.timings["runs"] = time.monotonic() - started
    runs = {}
    for dag_id, run_id in run_ids.items():
        tis = {ti.key: ti for ti in deployment.task_instances(dag_id, run_id)}
        records_of_run = records.of_run(dag_id, run_id)
        runs[dag_id] = FinishedRun(deployment, dag_id, run_id, states[dag_id], tis, records_of_run)
    return runs


@pytest.fixture(scope="session", params=["local", "celery"])
def deployed(request: pytest.FixtureRequest, s3_server, tmp_path_factory, system_summary):
    """A deployment (``local`` or ``celery``) that has run every DAG once; stopped and dropped after."""
    kind = request.param
    storage_url = f"s3://{S3_CONN_ID}@{s3_server.bucket}/sys-{SESSION}/{kind}"
    records = Records(
        f"s3://{S3_CONN_ID}@{s3_server.bucket}/sys-{SESSION}/{kind}-records", s3_server.filesystem()
    )
    dag_files = dict(DAG_FILES)
    env = {
        f"AIRFLOW_CONN_{S3_CONN_ID.upper()}": s3_server.connection_uri_json(),
        "AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_STORAGE_URL": storage_url,
        RECORDS_ENV: records.url,
        "AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_SIGNING_SECRET": SIGNING_SECRET,
        # the work queue of sys_queue_pool: the shared Redis, keys under this deployment's prefix
        "AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_QUEUE_URL": with_query(QUEUE_REDIS_URL, prefix=queue_prefix(kind)),
    }
    workers: list[Worker] = []
    database = f"tfx_sys_{SESSION}_{kind}"
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(delete_redis_keys, _db_of(QUEUE_REDIS_URL), f"{queue_prefix(kind)}:")
        if kind == "celery":
            if importlib.util.find_spec("airflow.providers.celery") is None:
                service_unavailable("CeleryExecutor", "apache-airflow-providers-celery is not installed")
            try:
                redis_db = unused_redis_database()
            except Exception as exc:
                service_unavailable("Redis for the Celery broker", str(exc))
            key_prefix = f"tfx_sys_{SESSION}:"
            cleanup.callback(delete_redis_keys, redis_db, key_prefix)
            env.update(_celery_settings(redis_db, key_prefix, database))
            workers = [Worker("w1"), Worker("w2")]
            dag_files.update(XCOM_BACKEND_DAG_FILES)
        try:
            create_database(database)
        except psycopg.OperationalError as exc:  # the server is not there
            service_unavailable("PostgreSQL for the system tests", f"{postgres_admin_url()}: {exc}")
        cleanup.callback(drop_database, database)
        deployment = Deployment(
            kind,
            tmp_path_factory.mktemp(f"airflow-{kind}"),
            executor="CeleryExecutor" if kind == "celery" else "LocalExecutor",
            database=database,
            dag_files=[*dag_files.values(), *TRIGGERED_DAG_FILES.values()],
            env=env,
            workers=workers,
        )
        cleanup.callback(deployment.stop)
        try:
            deployment.start()
        except DeploymentError as exc:
            service_unavailable(f"Airflow {kind} deployment", f"{exc}\n{deployment.log_tails()}")
        try:
            runs = _run_everything(deployment, list(dag_files), records)
        except DeploymentError as exc:
            pytest.fail(f"{exc}\n{deployment.log_tails()}", pytrace=False)
        timings = ", ".join(f"{k} {v:.0f}s" for k, v in deployment.timings.items())
        system_summary.append(f"{kind}: {len(runs)} DAG runs; {timings}")
        failed_before = request.session.testsfailed
        yield Deployed(deployment, storage_url, runs)
        if request.session.testsfailed > failed_before:
            system_summary.append(f"{kind} failed: process logs\n{deployment.log_tails()}")


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    lines = config.stash.get(_summary, [])
    if lines:
        terminalreporter.section("system deployments")
        for line in lines:
            terminalreporter.write_line(line)
