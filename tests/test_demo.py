"""`taskflow-exclusive demo`: the README's first command, run as a console script in a clean environment."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path


def _demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "taskflow-exclusive"
    # As on a fresh clone: no AIRFLOW_HOME, no Airflow settings, run from an unrelated folder.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    return subprocess.run(
        [str(script), "demo", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_demo_runs_the_example_dag_and_prints_every_claim(tmp_path):
    done = _demo(tmp_path)
    output = done.stdout
    assert done.returncode == 0, output + done.stderr[-4000:]
    assert done.stderr == ""

    lines = output.splitlines()
    assert re.search(r"^  extract +produced  try1-[0-9a-f]{32}\.json \(json, \d+ bytes\)$", output, re.M)
    assert re.search(r"^  split_by_region +claimed   extract's value$", output, re.M)
    assert "produced  3 values, one per item (split=True)" in output
    for index in range(3):
        assert re.search(
            rf"^  summarize\[{index}\] +claimed   split_by_region's value {index + 1} of 3$", output, re.M
        )
    assert re.search(
        r"^  audit +refused   extract's value: already claimed by split_by_region$", output, re.M
    )
    assert "returned  'east 184.00 | north 47.75 | south 89.75 | total 321.50'" in output
    assert (
        "DAG run success: 7 task instances; 7 values stored, each claimed by exactly one consumer" in output
    )
    # Quiet: Airflow's own log went to a file, not the terminal.
    assert not [line for line in lines if "[info" in line or "[warning" in line or "Traceback" in line]
    assert len(lines) < 40
    # The throw-away Airflow home is removed afterwards, and the demo says so up front and at the end.
    home = re.search(r"Airflow's log: (\S+)/airflow\.log \(removed afterwards unless the run fails", output)[
        1
    ]
    assert not Path(home).exists()
    assert f"Removed the demo's Airflow home {home} and its log (`taskflow-exclusive demo --keep`" in output


def test_demo_keep_keeps_airflows_home_and_log_and_says_where(tmp_path):
    done = _demo(tmp_path, "--keep")
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    log = Path(re.search(r"Airflow's log: (\S+) \(kept afterwards \(--keep\)\)", done.stdout)[1])
    home = log.parent
    try:
        assert f"Kept the demo's Airflow home: {home} (Airflow's log: {log}; values: {home / 'values'})" in (
            done.stdout
        )
        assert "Removed" not in done.stdout
        assert "orders_pipeline" in log.read_text()  # Airflow's own log of the run
        assert (home / "airflow.db").is_file()
        assert any((home / "values").rglob("*.manifest.json"))
    finally:
        shutil.rmtree(home, ignore_errors=True)
