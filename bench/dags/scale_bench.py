"""split=True + .expand over N items, against Airflow's own mapping over a list of N ints.

``TFX_BENCH_ITEMS`` (N) and ``TFX_BENCH_MAX_CLAIMS`` are read when the file is
parsed. ``scale_warm`` (2 items) warms the interpreter up. ``measure`` runs
after every mapped task and writes, to ``conf["out"]``, how many bytes the XCom
rows of the producer hold as stored (what a mapped task pulls).
"""

import json
import os
from pathlib import Path

import pendulum
from airflow.sdk import dag, get_current_context, task

from taskflow_exclusive import Claimed, exclusive_task

ITEMS = int(os.environ.get("TFX_BENCH_ITEMS", "100"))
MAX_CLAIMS = int(os.environ.get("TFX_BENCH_MAX_CLAIMS", "1"))
START = pendulum.datetime(2026, 1, 1, tz="UTC")


def _stored_bytes(key):
    from taskflow_exclusive.airflow._compat import stored_xcom_value

    ti = get_current_context()["ti"]
    stored = stored_xcom_value(key=key, dag_id=ti.dag_id, task_id="produce", run_id=ti.run_id)
    return None if stored is None else len(json.dumps(stored))


@task(trigger_rule="all_done")
def measure():
    from taskflow_exclusive.airflow.results import HANDLES_PER_ROW, SPLIT_ROW_KEY

    rows = []
    for number in range(-(-ITEMS // HANDLES_PER_ROW)):
        size = _stored_bytes(f"{SPLIT_ROW_KEY}{number}")
        if size is None:
            break
        rows.append(size)
    result = {"return_value_bytes": _stored_bytes("return_value"), "row_bytes": rows}
    out = (get_current_context()["dag_run"].conf or {}).get("out")
    if out:
        Path(out).write_text(json.dumps(result))


def _exclusive(items):
    @exclusive_task(split=True, max_claims=MAX_CLAIMS)
    def produce():
        for number in range(items):
            yield {"n": number, "name": f"item-{number}"}

    @exclusive_task
    def consume(item: Claimed[dict]) -> None:
        assert "name" in item

    consume.expand(item=produce()) >> measure()


def _plain(items):
    @task
    def produce() -> list:
        return [{"n": number, "name": f"item-{number}"} for number in range(items)]

    @task
    def consume(item: dict) -> None:
        assert "name" in item

    consume.expand(item=produce()) >> measure()


@dag(schedule=None, start_date=START, catchup=False)
def scale_warm():
    _exclusive(2)


@dag(schedule=None, start_date=START, catchup=False)
def scale_exclusive():
    _exclusive(ITEMS)


@dag(schedule=None, start_date=START, catchup=False)
def scale_plain():
    _plain(ITEMS)


warm_dag = scale_warm()
exclusive_dag = scale_exclusive()
plain_dag = scale_plain()
