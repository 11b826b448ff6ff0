"""Cost per item as the count grows: split=True + .expand, max_claims, and a large claim ledger.

    .venv/bin/python bench/scale.py                       # dag.test() at 100 and 1,000 items; library
                                                          # at 1,000, 10,000 and a 100,000-handle ledger
    .venv/bin/python bench/scale.py --items 50,200 --library-items 1000 --ledger 5000   # quick

Two parts, one table; every row runs in a fresh interpreter (peak memory is its own):

- ``dag.test``: a real run of ``bench/dags/scale_bench.py`` into a SQLite
  metadata database: ``@exclusive_task(split=True, max_claims=M)`` producing N
  small dicts, ``.expand`` over them into an ``@exclusive_task`` consumer with
  a ``Claimed[dict]`` input; the baseline is a plain ``@task`` returning the
  list of N dicts, expanded the same way. "pulled per mapped task" is what each
  mapped task instance reads from XCom (the ``return_value`` row, plus for
  split outputs its one row of handles); "whole list" is what it pulled before
  this change (every handle of the output, in every mapped task: O(N^2) bytes
  in all). ``dag.test()`` runs the mapped task instances one by one in one
  process, so 10,000 items take hours there: the library's own share at that
  size is measured directly, in the second part.
- ``library``: no Airflow scheduler: publish N items with ``split=True``,
  rebuild one handle from its row as a mapped consumer does, and claim every
  handle through the local object-store ledger with ``max_claims`` M; the
  largest row (``--ledger``) is a ledger holding that many handles, and
  "first/last 10%" compares the claim time per item at the start and at the end.

Counts: ``--items``, ``--library-items``, ``--ledger``, ``--max-claims`` (comma lists).
Local storage; figures are per item. Ratios compare with the first row of the same part and N.
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

from bench.measuring import migrate_airflow_db, reset_peak, run_child, status_kib  # noqa: E402

DAG_FILE = REPO / "bench" / "dags" / "scale_bench.py"


def _child_dag(dag_id: str, out: Path) -> None:
    from tests.airflow_harness import load_dag

    warm = load_dag(DAG_FILE, "scale_warm").test(run_conf={})
    if str(warm.state) != "success":
        raise SystemExit(f"warm-up ended {warm.state}")
    dag = load_dag(DAG_FILE, dag_id)
    measured = out.with_suffix(".xcom.json")
    before = reset_peak()
    started = time.perf_counter()
    run = dag.test(run_conf={"out": str(measured)})
    seconds = time.perf_counter() - started
    if str(run.state) != "success":
        raise SystemExit(f"{dag_id} ended {run.state}")
    result = {
        "seconds": seconds,
        "peak_kib": status_kib("VmHWM") - before,
        **json.loads(measured.read_text()),
    }
    out.write_text(json.dumps(result))


def _child_library(items: int, max_claims: int, store: Path, out: Path) -> None:
    from taskflow_exclusive import ExclusiveOutput
    from taskflow_exclusive.airflow import _compat
    from taskflow_exclusive.airflow.results import HANDLES_PER_ROW, SplitHandles, publish_result
    from taskflow_exclusive.airflow.serde import allow_handle_deserialization

    allow_handle_deserialization()
    output = ExclusiveOutput(storage=store.as_uri(), max_claims=max_claims)
    publish_result(output, iter([{"warm": True}]), split=True)[0].claim(consumer_id="warm")
    before = reset_peak()
    started = time.perf_counter()
    handles = publish_result(output, ({"n": n, "name": f"item-{n}"} for n in range(items)), split=True)
    published = time.perf_counter()
    items_view = SplitHandles(
        dag_id="d", run_id="r", task_id="t", map_index=-1, length=items, handles=handles
    )
    rows = [_compat.serde_serialize(row) for row in items_view.rows()]
    rows_done = time.perf_counter()
    for position in range(items):  # what one mapped consumer does: its row, its handle
        _compat.serde_deserialize(rows[position // HANDLES_PER_ROW][position % HANDLES_PER_ROW])
    rebuilt = time.perf_counter()
    claim_seconds = []
    for position, handle in enumerate(handles):
        tick = time.perf_counter()
        handle.claim(consumer_id=f"consumer-{position}")
        claim_seconds.append(time.perf_counter() - tick)
    tenth = max(1, items // 10)
    out.write_text(
        json.dumps(
            {
                "publish_s": published - started,
                "rows_s": rows_done - published,
                "rebuild_s": rebuilt - rows_done,
                "claim_s": sum(claim_seconds),
                "claim_first_s": statistics.fmean(claim_seconds[:tenth]),
                "claim_last_s": statistics.fmean(claim_seconds[-tenth:]),
                "peak_kib": status_kib("VmHWM") - before,
                "row_bytes": max(len(json.dumps(row)) for row in rows),
                "whole_list_bytes": len(json.dumps(_compat.serde_serialize(handles))),
                "return_value_bytes": len(json.dumps(_compat.serde_serialize(items_view))),
            }
        )
    )


def _spawn(arguments: list[str], env: dict[str, str], out: Path) -> dict:
    # -P: bench/ is not put on sys.path, so no module in it can shadow a standard library module.
    return run_child([sys.executable, "-P", __file__, *arguments, "--out", str(out)], env, out, REPO)


def _numbers(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def _table(dag_rows: list[dict], library_rows: list[dict]) -> list[str]:
    header = (
        f"{'part':<8} {'items':>7} {'variant':<28} {'ms/item':>8} {'vs base':>8} {'KiB/item':>8} "
        f"{'pulled/mapped task':>18} {'whole list (before)':>19}  notes"
    )
    lines = [header, "-" * len(header)]
    for row in dag_rows:
        if "error" in row:
            lines.append(f"{'dag.test':<8} {row['items']:>7} {row['name']:<28} FAILS: {row['error']}")
            continue
        base = next((r for r in dag_rows if r["items"] == row["items"] and "seconds" in r), row)
        per_item = row["seconds"] * 1000 / row["items"]
        ratio = row["seconds"] / base["seconds"]
        rows_bytes = row.get("row_bytes") or []
        pulled = (row["return_value_bytes"] or 0) + (max(rows_bytes) if rows_bytes else 0)
        whole = sum(rows_bytes) if rows_bytes else row["return_value_bytes"]
        lines.append(
            f"{'dag.test':<8} {row['items']:>7} {row['name']:<28} {per_item:>8.1f} {ratio:>7.2f}x "
            f"{row['peak_kib'] / row['items']:>8.1f} {pulled:>18,} {whole:>19,}"
        )
    for row in library_rows:
        if "error" in row:
            lines.append(f"{'library':<8} {row['items']:>7} {row['name']:<28} FAILS: {row['error']}")
            continue
        base = next((r for r in library_rows if r["items"] == row["items"] and "claim_s" in r), row)
        total = row["publish_s"] + row["rebuild_s"] + row["claim_s"]
        base_total = base["publish_s"] + base["rebuild_s"] + base["claim_s"]
        per_item = {key: row[key] * 1000 / row["items"] for key in ("publish_s", "rebuild_s", "claim_s")}
        notes = (
            f"publish {per_item['publish_s']:.2f}, rebuild one {per_item['rebuild_s'] * 1000:.0f} us, "
            f"claim {per_item['claim_s']:.2f} ms/item; claim first/last 10% "
            f"{row['claim_first_s'] * 1000:.2f}/{row['claim_last_s'] * 1000:.2f} ms"
        )
        pulled = row["return_value_bytes"] + row["row_bytes"]
        lines.append(
            f"{'library':<8} {row['items']:>7} {row['name']:<28} {total * 1000 / row['items']:>8.2f} "
            f"{total / base_total:>7.2f}x {row['peak_kib'] / row['items']:>8.2f} {pulled:>18,} "
            f"{row['whole_list_bytes']:>19,}  {notes}"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", default=os.environ.get("TFX_BENCH_ITEMS", "100,1000"))
    parser.add_argument("--library-items", default=os.environ.get("TFX_BENCH_LIBRARY_ITEMS", "1000,10000"))
    parser.add_argument("--ledger", type=int, default=int(os.environ.get("TFX_BENCH_LEDGER", "100000")))
    parser.add_argument("--max-claims", default=os.environ.get("TFX_BENCH_MAX_CLAIMS", "1,3"))
    parser.add_argument("--child-dag", help=argparse.SUPPRESS)
    parser.add_argument("--child-library", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-max-claims", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_dag:
        _child_dag(args.child_dag, Path(args.out))
        return 0
    if args.child_library:
        _child_library(args.child_library, args.child_max_claims, Path(args.store), Path(args.out))
        return 0

    max_claims = _numbers(args.max_claims)
    dag_rows, library_rows = [], []
    with tempfile.TemporaryDirectory(prefix="tfx-scale-bench-") as temporary:
        folder = Path(temporary)
        home = folder / "home"
        home.mkdir()
        base_env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
        items_list = _numbers(args.items)
        if items_list and not migrate_airflow_db(home):
            return 1
        for items in items_list:
            variants = [("plain @task list (baseline)", "scale_plain", 1)]
            variants += [(f"split=True, max_claims={m}", "scale_exclusive", m) for m in max_claims]
            for name, dag_id, claims in variants:
                print(f"dag.test: {name}, {items} items ...", file=sys.stderr)
                env = {
                    **base_env,
                    "AIRFLOW__CORE__DAGS_FOLDER": str(DAG_FILE.parent),
                    "AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_STORAGE_URL": (folder / "store").as_uri(),
                    "TFX_BENCH_ITEMS": str(items),
                    "TFX_BENCH_MAX_CLAIMS": str(claims),
                    "PYTHONPATH": str(REPO),
                }
                out = folder / f"dag-{dag_id}-{items}-{claims}.json"
                dag_rows.append({"name": name, "items": items, **_spawn(["--child-dag", dag_id], env, out)})
        library_sizes = [(n, m) for n in _numbers(args.library_items) for m in max_claims]
        if args.ledger:
            library_sizes.append((args.ledger, max_claims[0]))
        for items, claims in library_sizes:
            print(f"library: {items} items, max_claims={claims} ...", file=sys.stderr)
            out = folder / f"library-{items}-{claims}.json"
            store = folder / f"library-store-{items}-{claims}"
            arguments = [
                "--child-library",
                str(items),
                "--child-max-claims",
                str(claims),
                "--store",
                str(store),
            ]
            row = _spawn(arguments, {**os.environ, "PYTHONPATH": str(REPO)}, out)
            library_rows.append({"name": f"max_claims={claims}", "items": items, **row})

    print("\n".join(_table(dag_rows, library_rows)))
    print(
        "\nms/item: dag.test() wall time / items (dag.test part), or publish + rebuild one handle + claim "
        "(library part). KiB/item: peak RSS growth / items. Bytes are XCom rows as stored (JSON)."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
