"""``taskflow-exclusive demo``: run the example DAG end to end and show every hand-over.

Nothing to set up: the demo makes a throw-away Airflow home (SQLite
metadata database, ``airflow db migrate``, values on local disk), runs
``dags/orders_pipeline.py`` with ``dag.test()`` in a child process whose
environment holds no other Airflow settings, and prints what each task
produced and claimed, read back from storage (manifests and claim records),
including the claim the ``audit`` task was refused. Airflow's own log goes
to a file in that home. The home (values, metadata database, log) is
removed at the end, and the demo says so; ``--keep`` keeps it and prints
where it is (it is always kept when the run fails). Exit status 0 means the
run went as designed.

Example::

    $ taskflow-exclusive demo
    $ taskflow-exclusive demo --keep     # keep Airflow's home and log afterwards
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

__all__ = ["DAG_FILE", "main"]

DAG_FOLDER = Path(__file__).resolve().parents[1] / "examples" / "dags"
DAG_FILE = DAG_FOLDER / "orders_pipeline.py"
DAG_ID = "orders_pipeline"


def main(echo: Callable[[str], Any] = print, keep: bool = False) -> int:
    """Run the demo; return the exit status (0: the DAG run went as designed)."""
    home = Path(tempfile.mkdtemp(prefix="taskflow-exclusive-demo-"))
    log = home / "airflow.log"
    env = _demo_environment(home)
    started = time.monotonic()
    try:
        with log.open("w") as airflow_log:
            migrated = subprocess.run(
                [sys.executable, "-m", "airflow", "db", "migrate"],
                stdout=airflow_log,
                stderr=subprocess.STDOUT,
                env=env,
                check=False,
            )
        if migrated.returncode != 0:
            echo(f"demo: `airflow db migrate` failed; its output is in {log}")
            echo(_tail(log))
            keep = True
            return 1
        child = subprocess.run(
            [sys.executable, "-m", __name__, str(home), *(["--keep"] if keep else [])], env=env, check=False
        )
        if child.returncode != 0:
            echo(f"demo: the run did not go as designed; the end of Airflow's log ({log}):")
            echo(_tail(log))
            keep = True
        echo(f"\n(demo took {time.monotonic() - started:.0f} s)")
        return child.returncode
    finally:
        if keep:
            echo(f"Kept the demo's Airflow home: {home} (Airflow's log: {log}; values: {home / 'values'})")
        else:
            shutil.rmtree(home, ignore_errors=True)
            echo(
                f"Removed the demo's Airflow home {home} and its log "
                "(`taskflow-exclusive demo --keep` keeps them)"
            )


def _demo_environment(home: Path) -> dict[str, str]:
    """This process's environment without any Airflow setting, plus the demo's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAG_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_STORAGE_URL": (home / "values").as_uri(),
        }
    )
    return env


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# -- the child process: run the DAG, then read back what happened ---------------------------------


def _run_in_child(home: Path, keep: bool = False) -> int:
    report = _quiet_airflow(home / "airflow.log")
    out = lambda line="": print(line, file=report, flush=True)  # noqa: E731

    import airflow

    from taskflow_exclusive.config import resolve_storage_url

    out(f"taskflow-exclusive demo: DAG '{DAG_ID}' run with dag.test() on Airflow {airflow.__version__}")
    out(f"  DAG file  {DAG_FILE}")
    out(f"  values    {resolve_storage_url().value}")
    fate = "kept afterwards (--keep)" if keep else "removed afterwards unless the run fails; --keep keeps it"
    out(f"  Airflow's log: {home / 'airflow.log'} ({fate})")
    out()

    dag_run = _load_dag().test()
    instances = sorted(dag_run.get_task_instances(), key=lambda ti: (ti.start_date is None, ti.start_date))
    returned = _returned_values(dag_run)
    handles = _handles_by_task(returned)
    claims = _claims_by_consumer(handles)

    width = max(len(_label(ti.task_id, ti.map_index)) for ti in instances) + 2
    for ti in instances:
        label = _label(ti.task_id, ti.map_index)
        lines = [f"claimed   {what}" for what in claims.get(label, [])]
        produced = handles.get(label, [])
        if len(produced) == 1:
            lines.append(f"produced  {_short(produced[0])}")
        elif produced:
            lines.append(f"produced  {len(produced)} values, one per item (split=True)")
            lines.extend(f"            {_short(handle)}" for handle in produced)
        value = returned.get((ti.task_id, ti.map_index))
        if isinstance(value, dict) and "refused" in value:
            lines.append(f"refused   {_refusal(value, handles)}")
        elif not produced and value is not None:
            lines.append(f"returned  {value!r}")
        if str(ti.state) != "success":
            lines.append(f"state     {ti.state}")
        for number, line in enumerate(lines):
            out(f"  {label if number == 0 else '':<{width}}{line}")

    return _verdict(out, dag_run, instances, handles, returned)


def _quiet_airflow(log_path: Path) -> TextIO:
    """Send everything written to stdout/stderr (Airflow's logging) to ``log_path``; return our stdout."""
    sys.stdout.flush()
    sys.stderr.flush()
    report = os.fdopen(os.dup(1), "w", buffering=1)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    return report


def _load_dag() -> Any:
    import importlib.util

    from airflow.sdk import DAG

    spec = importlib.util.spec_from_file_location("taskflow_exclusive_demo_dag", DAG_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    [dag] = [value for value in vars(module).values() if isinstance(value, DAG)]
    return dag


def _returned_values(dag_run: Any) -> dict[tuple[str, int], Any]:
    """Every task instance's ``return_value`` XCom, rebuilt as a consumer would see it."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from taskflow_exclusive.airflow._compat import serde_deserialize as deserialize
    from taskflow_exclusive.airflow.results import SPLIT_ROW_KEY, SplitHandles

    query = select(XComModel.task_id, XComModel.map_index, XComModel.key, XComModel.value).where(
        XComModel.dag_id == dag_run.dag_id,
        XComModel.run_id == dag_run.run_id,
        XComModel.key.in_(["return_value"]) | XComModel.key.startswith(SPLIT_ROW_KEY),
    )
    with create_session() as session:
        stored = [tuple(row) for row in session.execute(query)]
    returned: dict[tuple[str, int], Any] = {}
    split_rows: dict[tuple[str, int], dict[int, list[Any]]] = {}
    for task_id, map_index, key, value in stored:
        if key == "return_value":
            returned[(task_id, map_index)] = deserialize(value)
        else:  # the rows of a split output that tasks map over, read here outside any task
            number = int(key[len(SPLIT_ROW_KEY) :])
            split_rows.setdefault((task_id, map_index), {})[number] = [deserialize(v) for v in value]
    for where, value in returned.items():
        if isinstance(value, SplitHandles):
            rows = split_rows.get(where, {})
            returned[where] = [handle for number in sorted(rows) for handle in rows[number]]
    return returned


def _handles_by_task(returned: dict[tuple[str, int], Any]) -> dict[str, list[Any]]:
    from taskflow_exclusive import ExclusiveHandle

    found: dict[str, list[Any]] = {}
    for (task_id, map_index), value in returned.items():
        values = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
        handles = [v for v in values if isinstance(v, ExclusiveHandle)]
        if handles:
            found[_label(task_id, map_index)] = handles
    return found


def _claims_by_consumer(handles: dict[str, list[Any]]) -> dict[str, list[str]]:
    """For each consumer task: which values it holds, read from the claim records in storage."""
    claims: dict[str, list[str]] = {}
    for producer, produced in handles.items():
        for number, handle in enumerate(produced, start=1):
            which = (
                f"{producer}'s value"
                if len(produced) == 1
                else f"{producer}'s value {number} of {len(produced)}"
            )
            for record in handle.holders():
                claims.setdefault(_label_of_consumer(record.consumer_id), []).append(which)
    return claims


def _refusal(refused: dict[str, str], handles: dict[str, list[Any]]) -> str:
    for producer, produced in handles.items():
        for handle in produced:
            if handle.uri == refused["refused"]:
                return f"{producer}'s value: already claimed by {_label_of_consumer(refused['holder'])}"
    return f"{refused['refused']}: already claimed by {refused['holder']}"


def _verdict(out: Callable[..., None], dag_run: Any, instances: list, handles: dict, returned: dict) -> int:
    audit = returned.get(("audit", -1))
    unclaimed = [h.uri for produced in handles.values() for h in produced if not h.holders()]
    out()
    if str(dag_run.state) != "success":
        out(f"DAG run {dag_run.state}: see {os.environ['AIRFLOW_HOME']}/airflow.log")
        return 1
    if not (isinstance(audit, dict) and "refused" in audit):
        out(f"Unexpected: the audit task was not refused ({audit!r})")
        return 1
    if unclaimed:
        out(f"Unexpected: values nobody claimed: {unclaimed}")
        return 1
    count = sum(len(produced) for produced in handles.values())
    out(
        f"DAG run success: {len(instances)} task instances; {count} values stored, each claimed by "
        "exactly one consumer; the audit's claim was refused."
    )
    return 0


def _label(task_id: str, map_index: int) -> str:
    return task_id if map_index in (-1, None) else f"{task_id}[{map_index}]"


def _label_of_consumer(consumer_id: str) -> str:
    parts = consumer_id.rsplit("/", 2)  # dag_id/run_id/task_id/map_index (run ids hold no '/')
    if len(parts) == 3 and parts[2].lstrip("-").isdigit():
        return _label(parts[1], int(parts[2]))
    return consumer_id


def _short(handle: Any) -> str:
    name = handle.uri.rsplit("/", 1)[-1]
    return f"{name} ({handle.serializer}, {handle.size} bytes)"


if __name__ == "__main__":
    sys.exit(_run_in_child(Path(sys.argv[1]), keep="--keep" in sys.argv[2:]))
