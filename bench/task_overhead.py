"""Time added per task by ``@exclusive_task`` against a plain ``@task``, in one run.

    .venv/bin/python bench/task_overhead.py                 # 50 pairs, 3 timed runs each (~2 minutes)
    .venv/bin/python bench/task_overhead.py --pairs 10 --runs 1
    .venv/bin/python bench/task_overhead.py --profile       # also: where the added time goes

Each variant runs in a fresh interpreter: a real ``dag.test()`` of
``bench/dags/task_overhead_bench.py`` (N producer/consumer pairs, small dict
values) into a SQLite metadata database in a temporary AIRFLOW_HOME, local
storage through the Airflow Variable's environment variable. One untimed run
first (imports, DAG parsing, first-run set-up), then ``--runs`` timed runs;
the table shows the median. Variants:

- plain ``@task`` producer and consumer (the baseline; XCom holds the value);
- ``@exclusive_task`` producer and ``@exclusive_task`` consumer with a
  ``Claimed[dict]`` parameter (publish to storage, claim through the ledger);
- the same with a signing key configured (handles signed and verified).

"added per task" is (variant - baseline) / (2 x pairs): the aim is at most
50 ms. ``--profile`` adds, for the exclusive variant, the library functions
with the most cumulative time per task (cProfile of one timed run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # bench.measuring and tests.*, here and in its children

from bench.measuring import migrate_airflow_db, run_child  # noqa: E402

DAG_FILE = REPO / "bench" / "dags" / "task_overhead_bench.py"
SIGNING_SECRET = "bench-signing-secret-0123456789-abcdefghij"
VARIANTS = {
    "plain @task (baseline)": ("overhead_plain", {}),
    "@exclusive_task + Claimed": ("overhead_exclusive", {}),
    "@exclusive_task + Claimed, signed": (
        "overhead_exclusive",
        {"AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_SIGNING_SECRET": SIGNING_SECRET},
    ),
}
BASELINE = "plain @task (baseline)"
AIM_MS = 50.0


def _child(dag_id: str, runs: int, out: Path, profile: Path | None) -> None:
    """In the fresh interpreter: one untimed dag.test(), then ``runs`` timed ones."""
    from tests.airflow_harness import load_dag

    dag = load_dag(DAG_FILE, dag_id)
    warm = dag.test()
    if str(warm.state) != "success":
        raise SystemExit(f"warm-up run of {dag_id} ended {warm.state}")
    seconds = []
    for number in range(runs):
        profiler = None
        if profile is not None and number == runs - 1:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        started = time.perf_counter()
        run = dag.test()
        seconds.append(time.perf_counter() - started)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(profile))
        if str(run.state) != "success":
            raise SystemExit(f"run {number} of {dag_id} ended {run.state}")
    out.write_text(json.dumps({"seconds": seconds}))


def _run(dag_id: str, extra_env: dict[str, str], args: argparse.Namespace, folder: Path, name: str) -> dict:
    out = folder / f"{len(name)}-{dag_id}.json"
    profile = folder / f"{len(name)}-{dag_id}.pstats"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(folder / "home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAG_FILE.parent),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_STORAGE_URL": (folder / "store").as_uri(),
        "TFX_BENCH_PAIRS": str(args.pairs),
        "PYTHONPATH": str(REPO),
        **extra_env,
    }
    # -P: bench/ is not put on sys.path, so no module in it can shadow a standard library module.
    command = [sys.executable, "-P", __file__, "--child", dag_id, "--runs", str(args.runs), "--out", str(out)]
    if args.profile:
        command += ["--profile-to", str(profile)]
    result = run_child(command, env, out, REPO)
    if args.profile and "error" not in result:
        result["profile"] = str(profile)
    return result


def _print_profile(path: str, tasks: int, top: int = 20) -> None:
    import pstats

    stats = pstats.Stats(path)
    rows = []
    for (filename, line, function), (_, calls, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if "taskflow_exclusive" in filename:
            where = filename[filename.index("taskflow_exclusive") :]
            rows.append((cumulative, calls, f"{where}:{line} {function}"))
    rows.sort(reverse=True)
    print(f"\nwhere the exclusive variant's time goes (cumulative ms per task, {tasks} tasks, cProfile):")
    for cumulative, calls, name in rows[:top]:
        print(f"{cumulative * 1000 / tasks:>9.2f} ms  {calls / tasks:>6.1f} calls/task  {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=int(os.environ.get("TFX_BENCH_PAIRS", "50")))
    parser.add_argument("--runs", type=int, default=int(os.environ.get("TFX_BENCH_RUNS", "3")))
    parser.add_argument("--profile", action="store_true", help="profile the exclusive variant")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.runs, Path(args.out), Path(args.profile_to) if args.profile_to else None)
        return 0
    if args.pairs < 1 or args.runs < 1:
        parser.error("--pairs and --runs must be at least 1")

    rows = {}
    with tempfile.TemporaryDirectory(prefix="tfx-overhead-bench-") as temporary:
        folder = Path(temporary)
        (folder / "home").mkdir()
        if not migrate_airflow_db(folder / "home"):
            return 1
        for name, (dag_id, extra_env) in VARIANTS.items():
            print(f"measuring {name} ({args.pairs} pairs, {args.runs} run(s)) ...", file=sys.stderr)
            rows[name] = _run(dag_id, extra_env, args, folder, name)
        tasks = 2 * args.pairs
        base = rows[BASELINE]
        base_s = statistics.median(base["seconds"]) if "seconds" in base else None
        header = (
            f"{'variant':<36} {'s per run':>9} {'ms per task':>11} {'added ms/task':>13} "
            f"{'vs baseline':>11}  aim <= {AIM_MS:.0f} ms added"
        )
        lines = [header, "-" * len(header)]
        for name, row in rows.items():
            if "seconds" not in row:
                lines.append(f"{name:<36} FAILS: {row['error']}")
                continue
            seconds = statistics.median(row["seconds"])
            added = None if base_s is None else (seconds - base_s) * 1000 / tasks
            ratio = "-" if not base_s else f"{seconds / base_s:.2f}x"
            verdict = "" if name == BASELINE or added is None else ("met" if added <= AIM_MS else "NOT MET")
            added_text = "-" if added is None or name == BASELINE else f"{added:.1f}"
            lines.append(
                f"{name:<36} {seconds:>9.2f} {seconds * 1000 / tasks:>11.1f} {added_text:>13} "
                f"{ratio:>11}  {verdict}"
            )
        print("\n".join(lines))
        print(
            f"\n{args.pairs} producer/consumer pairs ({tasks} tasks) per dag.test(); median of "
            f"{args.runs} timed run(s) after one untimed; SQLite metadata DB; local storage."
        )
        if args.profile:
            for name in VARIANTS:
                if "profile" in rows[name] and name != BASELINE:
                    print(f"\n[{name}]", end="")
                    _print_profile(rows[name]["profile"], tasks)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
