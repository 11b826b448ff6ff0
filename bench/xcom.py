"""XCom backends compared in one run: Airflow's default, common-io's object storage, ExclusiveXCom.

    .venv/bin/python bench/xcom.py                       # the table (about 2 minutes)
    .venv/bin/python bench/xcom.py --kinds dataframe,dicts --rows 200000 --dicts 20000
    .venv/bin/python bench/xcom.py --repeat 3                # the median of 3 runs per case
    .venv/bin/python bench/xcom.py --kinds dicts --profile /tmp/prof   # cProfile stats per case

Each (backend, value) pair runs in a fresh interpreter: a real ``dag.test()``
of ``bench/dags/xcom_bench.py`` whose one task pushes the value with
``XCom.set`` and pulls it with ``XCom.get_one`` through the task SDK, into a
SQLite metadata database, on embedded defaults. Values (sizes from the flags):

- ``--mib`` MiB of ``bytes`` (default 100);
- a pandas DataFrame of ``--rows`` rows, 3 numeric columns (default 1,000,000);
- a list of ``--dicts`` small dicts (default 100,000).

Both object-storage backends use the same threshold (64 KiB) and local
storage. "extra copies" is the peak RSS (VmHWM, reset once the value exists)
above the RSS holding the value, in copies of the value; "held" is what is
still resident after the pull, mostly the pulled value itself, which every
backend has to build (for the dicts it is about 6 times the JSON size the
copies are counted in). Ratios compare total time and extra copies with the
anchor, common-io's ``XComObjectStorageBackend``, measured in the same run.

What the profiles of ExclusiveXCom showed (issue #13), and what changed:

- DataFrame, write: 70% of the push was ``pq.write_table`` dictionary-encoding
  the numeric columns. The writer keeps a dictionary and every index in memory
  until the dictionary outgrows its 1 MiB page, then encodes the column again,
  plainly: wasted time, and 3.5 frame-sized copies of memory. Parquet now
  dictionary-encodes only string, binary and dictionary columns (same file
  size here, snappy): the write took 0.24 s and 3.5 copies, now 0.06 s and 0.7.
  ``pa.Table.from_pandas`` shares the numeric columns' memory (no copy); the
  file streams through a 1 MiB buffer while it is hashed (no ``BytesIO`` of
  the whole file).
- DataFrame, read: the verified bytes (one copy, read once and hashed in
  place), then Arrow, then pandas with ``split_blocks``/``self_destruct``.
  Reading the file through a memory map would save the bytes copy, but what is
  hashed would then not be what is parsed: integrity first.
- Small dicts: most of the push was checking, item by item in Python, that
  JSON brings the value back exactly, and doing it twice (once to decide "plain
  JSON", once more when the JSON serializer was named). The check now runs once
  (a large list or dict goes straight to storage, where the serializer chosen
  by type checks it), level by level with C-level iteration (about half the
  time), and notes on the way whether every float is finite. Airflow's serde
  never walks a value that is offloaded, nor a plain JSON one.
- Small dicts, encoding and decoding: ``json``'s C encoder took about 85 ms for
  the 100k dicts, msgspec's 20 ms; ``json.loads`` 85 ms, msgspec 45 ms.
  msgspec (a dependency of Airflow's task SDK, optional here) now encodes a
  value whose check found only finite floats (it would write ``NaN`` as
  ``null``) and decodes every JSON value; ``json`` takes over for ``NaN``,
  infinities and lone surrogates, so the files and round trips are unchanged.
  What remains is the check, the digest, and the fixed cost of the Execution
  API round trips (Variables for storage, claims and signing keys; about
  10 ms each under ``dag.test()``).
- Memory of the dicts: the peak is the pulled list itself plus its JSON bytes
  while they are decoded. No backend returns the value in less; "held" shows it.
- Airflow 3.1 (the floor): the serde module is ``airflow.serialization.serde``
  instead of ``airflow.sdk.serde`` (see ``taskflow_exclusive.airflow._compat``);
  ExclusiveXCom only calls ``BaseXCom.serialize_value``/``deserialize_value``,
  which exist in both, and skips serde for offloaded and plain JSON values on
  both. Nothing in these paths differs between 3.1 and 3.3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # bench.measuring and tests.*, here and in its children

from bench.measuring import migrate_airflow_db, run_child  # noqa: E402

DAG_FILE = REPO / "bench" / "dags" / "xcom_bench.py"
THRESHOLD = 65536
BACKENDS = {
    "default (BaseXCom)": {},
    "common-io XComObjectStorageBackend": {
        "AIRFLOW__CORE__XCOM_BACKEND": "airflow.providers.common.io.xcom.backend.XComObjectStorageBackend",
        "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_THRESHOLD": str(THRESHOLD),
    },
    "ExclusiveXCom": {
        "AIRFLOW__CORE__XCOM_BACKEND": "taskflow_exclusive.xcom.ExclusiveXCom",
        "AIRFLOW__TASKFLOW_EXCLUSIVE__XCOM_THRESHOLD": str(THRESHOLD),
    },
}
ANCHOR = "common-io XComObjectStorageBackend"
KINDS = ("bytes", "dataframe", "dicts")


def _labels(counts: dict[str, int]) -> dict[str, str]:
    return {
        "bytes": f"{counts['bytes']} MiB bytes",
        "dataframe": f"{counts['dataframe']:,}-row DataFrame",
        "dicts": f"{counts['dicts']:,} small dicts",
    }


def _run(
    backend_env: dict[str, str], kind: str, count: int, home: Path, store: Path, *, profile: str
) -> dict:
    out = home / f"result-{os.getpid()}-{kind}-{len(backend_env)}.json"
    out.unlink(missing_ok=True)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAG_FILE.parent),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH": (store / "common-io").as_uri(),
        "AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_STORAGE_URL": (store / "exclusive").as_uri(),
        "PYTHONPATH": str(REPO),
        **backend_env,
    }
    conf = {"kind": kind, "count": count, "out": str(out), "profile": profile}
    command = [sys.executable, "-m", "tests.airflow_harness", str(DAG_FILE), "", json.dumps(conf)]
    return run_child(command, env, out, REPO)


def _median(runs: list[dict]) -> dict:
    """The run with the median total time (its own figures, so they add up), or the first failure."""
    failed = [run for run in runs if "error" in run]
    if failed:
        return failed[0]
    ordered = sorted(runs, key=lambda run: run["total_s"])
    return ordered[len(ordered) // 2]


def _cell_ratio(value: float | None, anchor: dict, field: str) -> str:
    base = anchor.get(field)
    if value is None or "error" in anchor or not base:
        return "-"
    return f"{value / base:.2f}x"


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated: bytes,dataframe,dicts")
    parser.add_argument("--mib", type=int, default=100, help="size of the bytes value in MiB")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the DataFrame")
    parser.add_argument("--dicts", type=int, default=100_000, help="number of small dicts")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the median run is shown")
    parser.add_argument("--profile", default="", help="folder for cProfile stats of each case")
    arguments = parser.parse_args(argv)
    unknown = set(arguments.kinds.split(",")) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}; choose among {', '.join(KINDS)}")
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = _arguments(argv)
    counts = {"bytes": arguments.mib, "dataframe": arguments.rows, "dicts": arguments.dicts}
    labels = _labels(counts)
    kinds = [kind for kind in KINDS if kind in arguments.kinds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="tfx-xcom-bench-") as folder:
        home, store = Path(folder) / "home", Path(folder) / "store"
        home.mkdir()
        if not migrate_airflow_db(home):
            return 1
        for kind in kinds:
            for name, backend_env in BACKENDS.items():
                print(f"measuring {name} with {labels[kind]} ...", file=sys.stderr)
                profile = ""
                if arguments.profile:
                    Path(arguments.profile).mkdir(parents=True, exist_ok=True)
                    profile = str(Path(arguments.profile) / f"{kind}-{name.split()[0]}.prof")
                runs = [
                    _run(backend_env, kind, counts[kind], home, store, profile=profile)
                    for _ in range(arguments.repeat)
                ]
                rows.append({"name": name, **_median(runs), "kind": kind})

    width = max(len(label) for label in labels.values())
    header = (
        f"{'value':<{width}} {'backend':<36} {'write s':>8} {'read s':>8} {'total s':>8} "
        f"{'extra copies':>12} {'held':>6} {'time vs anchor':>14} {'memory vs anchor':>16}  result"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        anchor = next(r for r in rows if r["kind"] == row["kind"] and r["name"] == ANCHOR)
        if "error" in row:
            blank = " " * 82
            lines.append(f"{labels[row['kind']]:<{width}} {row['name']:<36} {blank}  FAILS: {row['error']}")
            continue
        verdict = "ok" if row["correct"] else f"WRONG VALUE (got {row['returned_type']})"
        lines.append(
            f"{labels[row['kind']]:<{width}} {row['name']:<36} {row['write_s']:>8.2f} {row['read_s']:>8.2f} "
            f"{row['total_s']:>8.2f} {row['extra_copies']:>12.2f} {row['held_copies']:>6.2f} "
            f"{_cell_ratio(row['total_s'], anchor, 'total_s'):>14} "
            f"{_cell_ratio(row['extra_copies'], anchor, 'extra_copies'):>16}  {verdict}"
        )
    print("\n".join(lines))
    print(
        f"\nthreshold {THRESHOLD} bytes for both object-storage backends; local storage; SQLite metadata DB."
    )
    if arguments.profile:
        print(f"cProfile stats of each case in {arguments.profile}/ (python -m pstats FILE)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
