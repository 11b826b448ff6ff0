"""A real Airflow deployment on loopback, driven through its REST API.

:class:`Deployment` starts what an operator starts, each as its own process group:
``airflow db migrate`` on a fresh PostgreSQL database, then ``airflow api-server``,
``airflow scheduler``, ``airflow dag-processor`` and, for the CeleryExecutor, one
``airflow celery worker`` per :class:`Worker`. Every worker has its own AIRFLOW_HOME
and its own copy of the DAG files: the workers share nothing but the broker, the
metadata database (through the API server) and the object store.

Tasks report what they saw with ``tfx_system_records.record()`` (a module copied
into every DAG folder), as JSON objects in the object store; :class:`Records`
reads them back.

Example::

    deployment = Deployment("local", root, executor="LocalExecutor", database=db, ...)
    deployment.start()
    run_id = deployment.trigger("sys_consumer_retry")
    deployment.wait_for_runs([("sys_consumer_retry", run_id)])
    states = {ti.key: ti.state for ti in deployment.task_instances("sys_consumer_retry", run_id)}
    deployment.stop()
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from tests.servers import free_ports, port_open, stop_process

AIRFLOW = [sys.executable, "-m", "airflow"]
RECORDS_MODULE = Path(__file__).parent / "dags" / "tfx_system_records.py"
RECORDS_ENV = "TFX_SYSTEM_RECORDS"
WORKER_ENV = "TFX_WORKER_NAME"
TERMINAL_RUN_STATES = frozenset({"success", "failed"})


class DeploymentError(RuntimeError):
    """A process did not start, a request failed, or a run did not finish in time."""


# --- services the deployment uses: PostgreSQL databases, a Redis database --------------------------


def postgres_admin_url() -> str:
    """The machine's PostgreSQL, as ``TFX_POSTGRES_URL`` names it (the database part is ignored)."""
    return os.environ.get("TFX_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def database_url(name: str, driver: str = "psycopg") -> str:
    """A SQLAlchemy URL of database ``name`` on the machine's PostgreSQL server."""
    parts = urlsplit(postgres_admin_url())
    return f"postgresql+{driver}://{parts.netloc}/{name}"


def _admin_connection():
    import psycopg

    parts = urlsplit(postgres_admin_url())
    return psycopg.connect(
        host=parts.hostname,
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password,
        dbname="postgres",
        autocommit=True,
        connect_timeout=5,
    )


def create_database(name: str) -> None:
    with _admin_connection() as connection:
        connection.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    with _admin_connection() as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redis_base_url() -> str:
    """The machine's Redis, as ``TFX_REDIS_URL`` names it (the database number is ignored)."""
    return os.environ.get("TFX_REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis(db: int):
    import redis

    parts = urlsplit(redis_base_url())
    return redis.Redis(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 6379,
        password=parts.password,
        db=db,
        socket_timeout=5,
        socket_connect_timeout=5,
    )


def unused_redis_database() -> int:
    """The highest-numbered Redis database holding no key (the tests' ledgers use the low ones)."""
    client = _redis(0)
    count = int(client.config_get("databases").get("databases", 16))
    used = {int(name[2:]) for name in client.info("keyspace") if name.startswith("db")}
    free = [db for db in range(count - 1, 0, -1) if db not in used]
    if not free:
        raise DeploymentError(f"every Redis database of {redis_base_url()} holds keys")
    return free[0]


def redis_url(db: int) -> str:
    parts = urlsplit(redis_base_url())
    return f"redis://{parts.netloc}/{db}"


def delete_redis_keys(db: int, prefix: str) -> int:
    """Remove the keys under ``prefix`` (the broker's ``global_keyprefix``) from database ``db``."""
    client = _redis(db)
    keys = list(client.scan_iter(match=f"{prefix}*", count=500))
    if keys:
        client.delete(*keys)
    return len(keys)


# --- what tasks recorded -----------------------------------------------------------------------


@dataclass
class Records:
    """What tasks recorded under ``url`` (``s3://conn_id@bucket/prefix``), read with ``fs``."""

    url: str
    fs: Any  # an s3fs filesystem with the server's credentials

    @property
    def _root(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.hostname}{parts.path}"

    def of_run(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every record of one DAG run, ordered by task, map index and try."""
        folder = f"{self._root}/{quote(dag_id, safe='')}/{quote(run_id, safe='')}"
        self.fs.invalidate_cache()
        paths = sorted(self.fs.find(folder)) if self.fs.exists(folder) else []
        rows = [json.loads(self.fs.cat_file(path)) for path in paths if path.endswith(".json")]
        return sorted(rows, key=lambda r: (r["task_id"], r["map_index"], r["try_number"], r["seq"]))


# --- the deployment ------------------------------------------------------------------------------


@dataclass
class Worker:
    """A Celery worker: its name (also ``TFX_WORKER_NAME`` in its tasks) and log server port."""

    name: str
    log_server_port: int = field(default_factory=lambda: free_ports(1)[0])


@dataclass
class TaskInstance:
    """One task instance as the REST API reports it."""

    task_id: str
    map_index: int
    state: str | None
    try_number: int
    raw: dict[str, Any]

    @property
    def key(self) -> tuple[str, int]:
        return self.task_id, self.map_index


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen
    log_path: Path


class Deployment:
    """One Airflow deployment: a fresh metadata database, its own homes and processes.

    ``env`` is added to every process's environment (``AIRFLOW__...`` settings,
    connections, Variables). ``dag_files`` are copied into every DAG folder together
    with the records module. ``workers`` (CeleryExecutor only) each get their own home.
    """

    def __init__(
        self,
        name: str,
        root: Path,
        *,
        executor: str,
        database: str,
        dag_files: Iterable[Path],
        env: dict[str, str],
        workers: Iterable[Worker] = (),
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.name = name
        self.root = Path(root)
        self.executor = executor
        self.database = database
        self.dag_files = [Path(p) for p in dag_files]
        self.extra_env = dict(env)
        self.workers = list(workers)
        self.home = self.root / "home"
        (self.port,) = free_ports(1)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.processes: list[_Process] = []
        self._client = httpx.Client(base_url=self.base_url, timeout=30)
        self._token: str | None = None
        # (username, password) of an admin when the deployment defines users (no all-admins mode)
        self.credentials = credentials
        self._secrets = {"api": secrets.token_hex(32), "jwt": secrets.token_hex(32)}
        self.timings: dict[str, float] = {}

    # -- configuration ---------------------------------------------------------------------

    def environment(self, home: Path, **extra: str) -> dict[str, str]:
        """The environment of one process whose AIRFLOW_HOME is ``home``."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AIRFLOW__", "AIRFLOW_VAR_", "PYTEST_"))
        }
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
                "AIRFLOW__CORE__EXECUTOR": self.executor,
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__CORE__PARALLELISM": "8",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url(self.database),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": database_url(self.database, "psycopg_async"),
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__SECRET_KEY": self._secrets["api"],
                # the scheduler signs the tokens of task processes, the API server checks them
                "AIRFLOW__API_AUTH__JWT_SECRET": self._secrets["jwt"],
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "2",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
                "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_SEC": "2",
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                WORKER_ENV: "scheduler" if self.executor == "LocalExecutor" else "none",
            }
        )
        env.update(self.extra_env)
        env.update(extra)
        return env

    def _prepare_home(self, home: Path) -> None:
        dags = home / "dags"
        dags.mkdir(parents=True, exist_ok=True)
        for path in [*self.dag_files, RECORDS_MODULE]:
            shutil.copy2(path, dags / path.name)
        # The records module is imported by DAG files, not a DAG file itself.
        (dags / ".airflowignore").write_text(f"{RECORDS_MODULE.stem}\n")

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 240) -> None:
        """Migrate the database, start every process, wait until the API answers and workers are ready."""
        started = time.monotonic()
        self._prepare_home(self.home)
        migrate_log = self.home / "db-migrate.log"
        with open(migrate_log, "wb") as log:
            try:
                done = subprocess.run(
                    [*AIRFLOW, "db", "migrate"],
                    env=self.environment(self.home),
                    cwd=self.home,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise DeploymentError(f"airflow db migrate took more than {timeout:.0f}s") from None
        if done.returncode != 0:
            raise DeploymentError(
                f"airflow db migrate failed (exit {done.returncode}):\n{_tail(migrate_log, 60)}"
            )
        self.timings["migrate"] = time.monotonic() - started
        self._spawn("api-server", ["api-server", "--port", str(self.port)], self.home)
        self._spawn("scheduler", ["scheduler"], self.home)
        self._spawn("dag-processor", ["dag-processor"], self.home)
        for worker in self.workers:
            home = self.root / worker.name
            self._prepare_home(home)
            self._spawn(
                worker.name,
                [
                    "celery",
                    "worker",
                    "--concurrency",
                    "2",
                    "--celery-hostname",
                    f"{worker.name}@%h",
                    "--queues",
                    self.extra_env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"],
                ],
                home,
                **{
                    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(worker.log_server_port),
                    WORKER_ENV: worker.name,
                },
            )
        self._wait(lambda: port_open("127.0.0.1", self.port), "the API server to listen", timeout)
        self._wait(self._api_healthy, "the API server to answer", timeout)
        for worker in self.workers:
            log_path = self.root / f"{worker.name}.log"
            self._wait(
                lambda log_path=log_path: " ready." in log_path.read_text(errors="replace"),
                f"Celery worker {worker.name} to be ready",
                timeout,
            )
        self.timings["processes"] = time.monotonic() - started - self.timings["migrate"]

    def wait_for_dags(self, dag_ids: Iterable[str], timeout: float = 180) -> None:
        """Wait until the DAG processor has serialized every DAG; fail at once on an import error."""
        wanted = set(dag_ids)

        def parsed() -> bool:
            errors = self.api("GET", "/api/v2/importErrors")["import_errors"]
            if errors:
                shown = "\n".join(f"{e['filename']}:\n{e['stack_trace']}" for e in errors)
                raise DeploymentError(f"DAG import errors in {self.name}:\n{shown}")
            dags = self.api("GET", "/api/v2/dags", params={"limit": 100})["dags"]
            return wanted <= {d["dag_id"] for d in dags}

        started = time.monotonic()
        self._wait(parsed, f"the DAGs {sorted(wanted)} to be parsed", timeout)
        self.timings["dags"] = time.monotonic() - started

    def _spawn(self, name: str, args: list[str], home: Path, **extra_env: str) -> None:
        log_path = self.root / f"{name}.log"
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                [*AIRFLOW, *args],
                env=self.environment(home, **extra_env),
                cwd=home,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(_Process(name, popen, log_path))

    def _wait(self, ready, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [p for p in self.processes if p.popen.poll() is not None]
            if dead:
                names = ", ".join(f"{p.name} (exit {p.popen.returncode})" for p in dead)
                raise DeploymentError(f"{self.name}: {names} exited while waiting for {what}")
            try:
                if ready():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise DeploymentError(f"{self.name}: timed out after {timeout:.0f}s waiting for {what}")

    def _api_healthy(self) -> bool:
        return self._client.get("/api/v2/monitor/health").status_code == 200

    def stop(self) -> None:
        """Stop every process group (SIGTERM, then SIGKILL)."""
        for process in reversed(self.processes):
            stop_process(process.popen, timeout=15)
        self._client.close()

    def log_tails(self, lines: int = 40) -> str:
        """The last lines of every process's log, for a failure report."""
        logs = [("db migrate", self.home / "db-migrate.log")]
        logs += [(p.name, p.log_path) for p in self.processes]
        return "\n".join(
            f"----- {self.name} {name} ({path}) -----\n{_tail(path, lines)}" for name, path in logs
        )

    def task_logs(self, dag_id: str, run_id: str, task_id: str, lines: int = 60) -> str:
        """The tails of one task's log files, in whichever home ran it."""
        homes = [self.home, *(self.root / w.name for w in self.workers)]
        pattern = f"dag_id={dag_id}/run_id={run_id}/task_id={task_id}/**/*.log"
        found = [path for home in homes for path in sorted((home / "logs").glob(pattern))]
        return "\n".join(f"----- {path} -----\n{_tail(path, lines)}" for path in found)

    # -- the REST API ----------------------------------------------------------------------

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the REST API as an admin; the decoded JSON answer."""
        if self._token is None:
            if self.credentials is None:
                answer = self._client.get("/auth/token")
                answer.raise_for_status()
                self._token = answer.json()["access_token"]
            else:
                self._token = self.token(*self.credentials)
        response = self._client.request(
            method, path, headers={"Authorization": f"Bearer {self._token}"}, **kwargs
        )
        if response.status_code >= 400:
            raise DeploymentError(f"{method} {path} -> {response.status_code}: {response.text[:2000]}")
        return response.json() if response.content else None

    def token(self, username: str, password: str) -> str:
        """A JWT for a user the auth manager knows (``POST /auth/token``, SimpleAuthManager)."""
        answer = self._client.post("/auth/token", json={"username": username, "password": password})
        if answer.status_code >= 400:
            raise DeploymentError(f"POST /auth/token as {username!r} -> {answer.status_code}: {answer.text}")
        return answer.json()["access_token"]

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Unpause ``dag_id`` and start a run of it now; its run id."""
        self.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        run = self.api(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}}
        )
        return run["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")["state"]

    def wait_for_runs(self, runs: Iterable[tuple[str, str]], timeout: float = 300) -> dict[str, str]:
        """Poll until every ``(dag_id, run_id)`` is finished; their final states by dag_id."""
        pending = dict(runs)
        final: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while pending:
            for dag_id, run_id in list(pending.items()):
                state = self.run_state(dag_id, run_id)
                if state in TERMINAL_RUN_STATES:
                    final[dag_id] = state
                    del pending[dag_id]
            if not pending:
                break
            if time.monotonic() > deadline:
                unfinished = {
                    dag_id: [(ti.key, ti.state, ti.try_number) for ti in self.task_instances(dag_id, run_id)]
                    for dag_id, run_id in pending.items()
                }
                raise DeploymentError(f"{self.name}: runs unfinished after {timeout:.0f}s: {unfinished}")
            dead = [p.name for p in self.processes if p.popen.poll() is not None]
            if dead:
                raise DeploymentError(f"{self.name}: {dead} exited while runs were in progress")
            time.sleep(1)
        return final

    def task_instances(self, dag_id: str, run_id: str) -> list[TaskInstance]:
        """Every task instance of the run (mapped ones one per index)."""
        answer = self.api(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances",
            params={"limit": 1000},
        )
        return [
            TaskInstance(ti["task_id"], ti["map_index"], ti["state"], ti["try_number"], ti)
            for ti in answer["task_instances"]
        ]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1):
        """An XCom's value as stored (``deserialize=false``: the serde envelope of a handle)."""
        answer = self.api(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}"
            f"/xcomEntries/{quote(key, safe='')}",
            params={"map_index": map_index},
        )
        return answer["value"]


def _tail(path: Path, lines: int) -> str:
    if not path.exists():
        return "(no log)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


# --- one finished DAG run, as the tests look at it ------------------------------------------------


HANDLE_CLASS = "taskflow_exclusive.handle.ExclusiveHandle"


def handles_in(stored: Any) -> Any:
    """``stored`` (an XCom as the REST API returns it) with every handle envelope rebuilt.

    Airflow's serde stores a handle as ``{"__classname__": ..., "__version__": 1,
    "__data__": {...}}``; lists and dicts of handles keep their shape.
    """
    from taskflow_exclusive.handle import ExclusiveHandle

    if isinstance(stored, dict) and stored.get("__classname__") == HANDLE_CLASS:
        return ExclusiveHandle.from_dict(stored["__data__"], where="the REST API")
    if isinstance(stored, dict) and "__classname__" not in stored:
        return {key: handles_in(value) for key, value in stored.items()}
    if isinstance(stored, dict) and stored.get("__classname__") in ("builtins.tuple", "builtins.list"):
        return [handles_in(item) for item in stored["__data__"]]
    if isinstance(stored, list):
        return [handles_in(item) for item in stored]
    return stored


@dataclass
class FinishedRun:
    """A DAG run that has finished: its task instances (from the API) and its records."""

    deployment: Deployment
    dag_id: str
    run_id: str
    state: str
    task_instances: dict[tuple[str, int], TaskInstance]
    records: list[dict[str, Any]]

    def ti(self, task_id: str, map_index: int = -1) -> TaskInstance:
        return self.task_instances[(task_id, map_index)]

    def mapped(self, task_id: str) -> list[TaskInstance]:
        return sorted(
            (ti for (t, _), ti in self.task_instances.items() if t == task_id), key=lambda ti: ti.map_index
        )

    def records_of(self, task_id: str, map_index: int = -1) -> list[dict[str, Any]]:
        """The records one task instance wrote, try by try."""
        return [r for r in self.records if (r["task_id"], r["map_index"]) == (task_id, map_index)]

    def consumer_id(self, task_id: str, map_index: int = -1) -> str:
        """The library's consumer id of a task instance of this run."""
        return f"{self.dag_id}/{self.run_id}/{task_id}/{map_index}"

    def xcom(self, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        return self.deployment.xcom(self.dag_id, self.run_id, task_id, key, map_index)

    def handles(self, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        """The handle(s) a task pushed, rebuilt from the XCom the REST API returns (a split
        output that tasks map over is a SplitHandles reference: its rows are read here)."""
        from taskflow_exclusive.airflow.results import SPLIT_ROW_KEY

        stored = self.xcom(task_id, key, map_index)
        if isinstance(stored, dict) and str(stored.get("__classname__", "")).endswith(".SplitHandles"):
            where = stored["__data__"]
            rows = -(-where["length"] // where["per_row"])
            return [
                handle
                for row in range(rows)
                for handle in handles_in(self.xcom(task_id, f"{SPLIT_ROW_KEY}{row}", map_index))
            ]
        return handles_in(stored)

    def explain(self) -> str:
        """States and the logs of tasks that failed: the message of a failed assertion."""
        lines = [f"{self.deployment.name}: {self.dag_id} {self.run_id} ended {self.state}"]
        for (task_id, map_index), ti in sorted(self.task_instances.items()):
            lines.append(f"  {task_id}[{map_index}]: {ti.state} try {ti.try_number}")
        failed = sorted({t for (t, _), ti in self.task_instances.items() if ti.state != "success"})
        lines += [self.deployment.task_logs(self.dag_id, self.run_id, task_id) for task_id in failed]
        return "\n".join(lines)
