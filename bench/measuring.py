"""What the benchmarks share: memory read from /proc, an Airflow metadata DB, child processes.

Each benchmark runs what it measures in a fresh child process that writes its
figures as JSON to a file; the parent reads them back (or the child's error).

Example::

    >>> status_kib("VmRSS") > 0
    True
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["migrate_airflow_db", "reset_peak", "run_child", "status_kib"]


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` figure in KiB (``VmRSS``, ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak() -> int:
    """Reset the peak RSS (``VmHWM``) to the current RSS; return that RSS in KiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return status_kib("VmRSS")


def migrate_airflow_db(home: Path) -> bool:
    """``airflow db migrate`` into the SQLite DB of ``home``; on failure print why, ``False``."""
    migrate = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env={**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"},
        capture_output=True,
        text=True,
        check=False,
    )
    if migrate.returncode != 0:
        print(migrate.stderr[-3000:], file=sys.stderr)
    return migrate.returncode == 0


def run_child(command: list[str], env: dict[str, str], out: Path, cwd: Path) -> dict:
    """Run ``command``; the JSON it wrote to ``out``, else ``{"error": ...}`` with its stderr."""
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if not out.exists():
        return {"error": f"rc={done.returncode}: {done.stderr[-400:]}"}
    return json.loads(out.read_text())
