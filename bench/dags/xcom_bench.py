"""One task that pushes and pulls one XCom through the configured backend, and measures it.

conf: {"kind": "bytes" | "dataframe" | "dicts", "count": MiB | rows | dicts,
       "out": path of the JSON result, "profile": optional path for cProfile stats of set + get_one}
"""

import gc
import json
import os
import time
from pathlib import Path

import pendulum
from airflow.sdk import dag, get_current_context, task

from bench.measuring import reset_peak, status_kib


def _make(kind, count):
    if kind == "bytes":
        return os.urandom(1 << 20) * count, count << 20
    if kind == "dataframe":
        import numpy as np
        import pandas as pd

        rows = count
        ids = np.arange(rows)
        frame = pd.DataFrame({"id": ids, "x": np.random.default_rng(1).random(rows), "bucket": ids % 97})
        return frame, int(frame.memory_usage(index=True).sum())
    rows = [{"id": i, "name": f"name-{i}", "ok": i % 2 == 0} for i in range(count)]
    return rows, len(json.dumps(rows))


def _same(kind, a, b):
    if kind == "dataframe":
        return type(b).__name__ == "DataFrame" and a.equals(b)
    return a == b


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def xcom_bench():
    @task
    def measure():
        from airflow.sdk.execution_time.xcom import XCom

        conf = get_current_context()["dag_run"].conf
        ti = get_current_context()["ti"]
        where = {"dag_id": ti.dag_id, "task_id": ti.task_id, "run_id": ti.run_id, "map_index": ti.map_index}
        # Warm up the backend's imports and connections with a tiny value first.
        XCom.set(key="warm", value={"w": 1}, **where)
        XCom.get_one(key="warm", **where)
        value, value_bytes = _make(conf["kind"], conf["count"])
        gc.collect()
        baseline = reset_peak()
        result = {"backend": XCom.__name__, "kind": conf["kind"], "value_bytes": value_bytes}
        profiler = None
        if conf.get("profile"):
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        try:
            started = time.perf_counter()
            XCom.set(key="bench", value=value, **where)
            written = time.perf_counter()
            back = XCom.get_one(key="bench", **where)
            finished = time.perf_counter()
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(conf["profile"])
            result.update(
                write_s=written - started,
                read_s=finished - written,
                total_s=finished - started,
                correct=_same(conf["kind"], value, back),
                returned_type=type(back).__name__,
            )
        except Exception as exc:
            result.update(error=f"{type(exc).__name__}: {str(exc)[:120]}")
        result["extra_copies"] = (status_kib("VmHWM") - baseline) * 1024 / value_bytes
        result["held_copies"] = (status_kib("VmRSS") - baseline) * 1024 / value_bytes
        Path(conf["out"]).write_text(json.dumps(result))

    measure()


the_dag = xcom_bench()
