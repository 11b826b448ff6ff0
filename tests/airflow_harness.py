"""Run real DAG files with ``dag.test()`` and report what happened.

Airflow 3 wants module-level DAGs in files under ``[core] dags_folder`` and a
migrated metadata database; :func:`migrate_once` prepares the session's
SQLite database (in the isolated AIRFLOW_HOME set by ``tests/conftest.py``).

Two ways to run a DAG:

- :func:`run_dag` in the test process: fast (~0.3 s after the first run);
- :func:`run_dag_in_subprocess`: a fresh interpreter with extra environment,
  for settings Airflow fixes at import time (``[core] xcom_backend``) or to
  isolate a run completely.

Either way the result lists every task instance's final state and try
number. DAG files report what their tasks saw by calling :func:`record`,
which appends a JSON line to the folder named by ``TFX_TEST_RESULTS``.

Example::

    result = run_dag(DAGS / "claim_basics.py", conf={"results": str(tmp_path)})
    assert result.state("consume") == "success"
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DAGS = Path(__file__).parent / "dags"
REPO = Path(__file__).resolve().parent.parent
RESULTS_ENV = "TFX_TEST_RESULTS"

_migrated = threading.Lock()
_migrated_homes: set[str] = set()


def migrate_once() -> None:
    """``airflow db migrate`` for this session's AIRFLOW_HOME (once per home)."""
    home = os.environ["AIRFLOW_HOME"]
    with _migrated:
        if home in _migrated_homes:
            return
        done = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            capture_output=True,
            text=True,
            env=os.environ.copy(),
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        _migrated_homes.add(home)


@dataclass
class DagResult:
    """Final states of one DAG run: ``states[(task_id, map_index)] = (state, try_number)``."""

    dag_id: str
    run_id: str
    state: str
    states: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    output: str = ""

    def task_state(self, task_id: str, map_index: int = -1) -> str:
        return self.states[(task_id, map_index)][0]

    def try_number(self, task_id: str, map_index: int = -1) -> int:
        return self.states[(task_id, map_index)][1]

    def mapped_states(self, task_id: str) -> dict[int, str]:
        return {m: s for (t, m), (s, _) in self.states.items() if t == task_id}

    def to_json(self) -> str:
        return json.dumps(
            {
                "dag_id": self.dag_id,
                "run_id": self.run_id,
                "state": self.state,
                "states": [[t, m, s, n] for (t, m), (s, n) in self.states.items()],
            }
        )

    @classmethod
    def from_json(cls, text: str, output: str = "") -> DagResult:
        data = json.loads(text)
        states = {(t, m): (s, n) for t, m, s, n in data["states"]}
        return cls(data["dag_id"], data["run_id"], data["state"], states, output)


_modules: dict[Path, Any] = {}


def load_dag(path: Path, dag_id: str | None = None) -> Any:
    """The module-level DAG defined in ``path`` (the only one, or the one named ``dag_id``)."""
    from airflow.sdk import DAG

    path = Path(path).resolve()
    module = _modules.get(path)
    if module is None:
        spec = importlib.util.spec_from_file_location(f"tfx_test_dag_{path.stem}", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _modules[path] = module
    dags = [value for value in vars(module).values() if isinstance(value, DAG)]
    if dag_id is not None:
        dags = [d for d in dags if d.dag_id == dag_id]
    if len(dags) != 1:
        raise LookupError(f"{path} defines {len(dags)} DAGs matching {dag_id!r}; expected exactly one")
    return dags[0]


def _result_of(dag_run: Any) -> DagResult:
    states = {}
    for ti in dag_run.get_task_instances():
        states[(ti.task_id, ti.map_index)] = (str(ti.state), int(ti.try_number or 0))
    return DagResult(str(dag_run.dag_id), str(dag_run.run_id), str(dag_run.state), states)


def run_dag(path: Path, dag_id: str | None = None, conf: dict | None = None) -> DagResult:
    """Run the DAG in ``path`` with ``dag.test()`` in this process."""
    migrate_once()
    dag = load_dag(path, dag_id)
    dag_run = dag.test(run_conf=conf) if conf is not None else dag.test()
    return _result_of(dag_run)


def run_dag_in_subprocess(
    path: Path,
    dag_id: str | None = None,
    conf: dict | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> DagResult:
    """Run the DAG in a fresh interpreter (with extra ``env``); its log is in ``result.output``."""
    migrate_once()
    command = [sys.executable, "-m", "tests.airflow_harness", str(path), dag_id or "", json.dumps(conf)]
    done = subprocess.run(
        command,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = done.stdout + done.stderr
    marker = "TFX-DAG-RESULT "
    lines = [line for line in done.stdout.splitlines() if line.startswith(marker)]
    if not lines:
        raise RuntimeError(
            f"dag.test() subprocess produced no result (rc={done.returncode}):\n{output[-6000:]}"
        )
    return DagResult.from_json(lines[-1][len(marker) :], output)


def record(**facts: Any) -> None:
    """From inside a task: append ``facts`` as one JSON line to the results folder."""
    folder = os.environ.get(RESULTS_ENV)
    if not folder:
        from airflow.sdk import get_current_context

        folder = (get_current_context()["dag_run"].conf or {}).get("results")
    if not folder:
        raise RuntimeError(f"no results folder: set {RESULTS_ENV} or pass conf={{'results': ...}}")
    Path(folder).mkdir(parents=True, exist_ok=True)
    line = json.dumps(facts, default=repr) + "\n"
    with open(Path(folder) / f"{os.getpid()}.jsonl", "a", encoding="utf-8") as out:
        out.write(line)


def recorded(folder: Path) -> list[dict[str, Any]]:
    """Everything tasks recorded into ``folder``, in no particular order."""
    rows = []
    for file in sorted(Path(folder).glob("*.jsonl")):
        rows.extend(json.loads(line) for line in file.read_text().splitlines() if line.strip())
    return rows


if __name__ == "__main__":
    # python -m tests.airflow_harness <dag file> <dag_id or ""> <conf json>
    dag_file, wanted, conf_json = sys.argv[1], sys.argv[2] or None, sys.argv[3]
    conf = json.loads(conf_json)
    dag = load_dag(Path(dag_file), wanted)
    dag_run = dag.test(run_conf=conf) if conf is not None else dag.test()
    print("TFX-DAG-RESULT " + _result_of(dag_run).to_json(), flush=True)
