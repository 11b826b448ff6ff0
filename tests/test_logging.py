"""Outside Airflow the library logs through ``logging`` and leaves the output to the host.

Each test runs a small script in a fresh process (as a user's script would
run) with standard output and standard error captured apart. Reading a
Variable imports Airflow, which would point the root logger and Python's
warnings at standard output: the user's output must stay the user's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import logging, sys
    if "--host-logging" in sys.argv:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="HOST %(name)s: %(message)s")
    from taskflow_exclusive import publish
    storage = sys.argv[1] if sys.argv[1] != "default" else None
    first = publish({"orders": 3}, storage=storage)
    second = publish([1, 2], storage=storage)
    print("user:", first.claim(consumer_id="me"), second.claim(consumer_id="me"))
    print("user: airflow imported:", "airflow" in sys.modules)
    print("user: root handlers:", [type(h).__name__ for h in logging.getLogger().handlers])
    """
)


def _run_script(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_VAR_")}
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow-home")
    env["FORCE_COLOR"] = "1"  # Airflow's logging would colour its lines even into a pipe
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _user_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if not line.startswith("user:")]


def test_standard_output_holds_only_the_users_prints(tmp_path):
    done = _run_script(tmp_path, (tmp_path / "store").as_uri())
    assert _user_lines(done.stdout) == []
    assert "user: {'orders': 3} [1, 2]" in done.stdout
    assert "user: airflow imported: True" in done.stdout  # the library did import it (Variables)
    assert "user: root handlers: []" in done.stdout  # and Airflow did not take over the process's logging
    assert "\x1b[" not in done.stdout + done.stderr
    assert done.stderr == ""  # nothing configured: INFO lines go nowhere, as for any library


def test_local_storage_warning_goes_to_standard_error_once(tmp_path):
    done = _run_script(tmp_path, "default")
    assert _user_lines(done.stdout) == []
    assert done.stderr.count("LocalStorageWarning") == 1
    assert "Local storage only serves this machine" in done.stderr


def test_the_hosts_logging_configuration_gets_the_librarys_lines_one_per_publish(tmp_path):
    done = _run_script(tmp_path, (tmp_path / "store").as_uri(), "--host-logging")
    assert _user_lines(done.stdout) == []
    assert "user: root handlers: ['StreamHandler']" in done.stdout  # the host's, kept
    published = [line for line in done.stderr.splitlines() if line.startswith("HOST taskflow_exclusive")]
    assert len(published) == 2, done.stderr
    assert all("Published file://" in line for line in published)
