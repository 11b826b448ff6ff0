"""XCom backends compared in one run: Airflow's default, common-io's object storage, ExclusiveXCom.

    .venv/bin/python bench/xcom.py            # prints the table (about 2 minutes)

Each (backend, value) pair runs in a fresh interpreter: a real ``dag.test()``
of ``bench/dags/xcom_bench.py`` whose one task pushes the value with
``XCom.set`` and pulls it with ``XCom.get_one`` through the task SDK, into a
SQLite metadata database, on embedded defaults. Values:

- 100 MiB of ``bytes``;
- a pandas DataFrame of 1 million rows (3 numeric columns);
- a list of 100,000 small dicts.

Both object-storage backends use the same threshold (64 KiB) and local
storage. Memory is the peak RSS (VmHWM, reset once the value exists) above
the RSS holding the value, in copies of the value. Ratios compare with the
anchor, common-io's ``XComObjectStorageBackend``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
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
KINDS = {"bytes": "100 MiB bytes", "dataframe": "1M-row DataFrame", "dicts": "100k small dicts"}


def _run(backend_env: dict[str, str], kind: str, home: Path, store: Path) -> dict:
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
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.airflow_harness",
            str(DAG_FILE),
            "",
            json.dumps({"kind": kind, "out": str(out)}),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if not out.exists():
        return {"error": f"no result (rc={done.returncode}): {done.stderr[-300:]}"}
    return json.loads(out.read_text())


def _cell_ratio(value: float | None, anchor: float | None) -> str:
    if value is None or anchor is None or anchor == 0:
        return "-"
    return f"{value / anchor:.2f}x"


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory(prefix="tfx-xcom-bench-") as folder:
        home, store = Path(folder) / "home", Path(folder) / "store"
        home.mkdir()
        migrate = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            env={**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"},
            capture_output=True,
            text=True,
            check=False,
        )
        if migrate.returncode != 0:
            print(migrate.stderr[-3000:], file=sys.stderr)
            return 1
        for kind, label in KINDS.items():
            for name, backend_env in BACKENDS.items():
                print(f"measuring {name} with {label} ...", file=sys.stderr)
                rows.append({"name": name, **_run(backend_env, kind, home, store), "kind": kind})

    header = (
        f"{'value':<18} {'backend':<36} {'write s':>8} {'read s':>8} {'total s':>8} "
        f"{'extra copies':>12} {'time vs anchor':>14} {'memory vs anchor':>16}  result"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        anchor = next(r for r in rows if r["kind"] == row["kind"] and r["name"] == ANCHOR)
        if "error" in row:
            blank = " " * 75
            lines.append(f"{KINDS[row['kind']]:<18} {row['name']:<36} {blank}  FAILS: {row['error']}")
            continue
        verdict = "ok" if row["correct"] else f"WRONG VALUE (got {row['returned_type']})"
        lines.append(
            f"{KINDS[row['kind']]:<18} {row['name']:<36} {row['write_s']:>8.2f} {row['read_s']:>8.2f} "
            f"{row['total_s']:>8.2f} {row['extra_copies']:>12.2f} "
            f"{_cell_ratio(row['total_s'], anchor.get('total_s')):>14} "
            f"{_cell_ratio(row['extra_copies'], anchor.get('extra_copies')):>16}  {verdict}"
        )
    print("\n".join(lines))
    print(
        f"\nthreshold {THRESHOLD} bytes for both object-storage backends; local storage; SQLite metadata DB."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
