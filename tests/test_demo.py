"""`taskflow-exclusive demo`: the README's first command, run as a console script in a clean environment."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


def test_demo_runs_the_example_dag_and_prints_every_claim(tmp_path):
    script = Path(sys.executable).parent / "taskflow-exclusive"
    # As on a fresh clone: no AIRFLOW_HOME, no Airflow settings, run from an unrelated folder.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    done = subprocess.run(
        [str(script), "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False
    )
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
    # The throw-away Airflow home is removed afterwards.
    home = re.search(r"Airflow's log: (\S+)/airflow\.log", output).group(1)
    assert not Path(home).exists()
