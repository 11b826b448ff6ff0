"""ExclusiveHandle through Airflow's XCom serde, in every process that deserializes.

Airflow only rebuilds allowed classes; the package allows its handle through
an Airflow plugin (loaded by each task process at start-up) and whenever a
DAG file uses its decorators.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from taskflow_exclusive import ExclusiveHandle, MalformedRecordError, publish
from taskflow_exclusive.airflow.serde import allow_handle_deserialization
from tests.airflow_harness import DAGS, REPO, recorded, run_dag_in_subprocess
from tests.taskflow_helpers import STORAGE_ENV, by_task


def _through_xcom(value):
    """What BaseXCom does: serde-serialize, store as JSON, load, serde-deserialize."""
    from airflow.sdk.bases.xcom import BaseXCom

    stored = json.loads(json.dumps(BaseXCom.serialize_value(value)))
    return BaseXCom.deserialize_value(type("XComResult", (), {"value": stored})())


def test_handles_round_trip_through_xcom_serde_alone_and_nested(memory_url):
    allow_handle_deserialization()
    handle = publish([1, 2], storage=memory_url)
    rebuilt = _through_xcom({"one": handle, "many": [handle, handle]})
    assert rebuilt == {"one": handle, "many": [handle, handle]}
    assert type(rebuilt["one"]) is ExclusiveHandle
    assert rebuilt["one"].claim(consumer_id="serde-test") == [1, 2]


def test_a_tampered_handle_in_xcom_is_refused_when_rebuilt(memory_url):
    allow_handle_deserialization()
    from taskflow_exclusive.airflow._compat import serde_deserialize as deserialize
    from taskflow_exclusive.airflow._compat import serde_serialize as serialize

    stored = serialize(publish("x", storage=memory_url))
    stored["__data__"]["digest"] = "not a checksum"
    with pytest.raises(MalformedRecordError, match="digest is not 'blake3:' followed by 64 lowercase hex"):
        deserialize(stored)
    stored["__version__"] = 99
    with pytest.raises(MalformedRecordError, match="upgrade taskflow-exclusive"):
        deserialize(stored)


def test_a_fresh_worker_process_allows_handles_when_airflow_loads_plugins(memory_url):
    """A process that never imported this package: refused before start-up, rebuilt after."""
    stored = json.dumps(_serialized_handle(memory_url))
    script = textwrap.dedent(
        f"""
        import json, sys
        from taskflow_exclusive.airflow._compat import serde_deserialize as deserialize
        stored = json.loads({stored!r})
        report = {{}}
        try:
            deserialize(stored)
        except ImportError as refused:
            report["before"] = str(refused)
        # What the task runner does at start-up (RuntimeTaskInstance.get_template_context).
        from taskflow_exclusive.airflow._compat import integrate_task_plugins

        integrate_task_plugins()
        handle = deserialize(stored)
        report["after"] = type(handle).__module__ + "." + type(handle).__qualname__
        report["imported"] = sorted(m for m in sys.modules if m.startswith("taskflow_exclusive"))
        print("REPORT " + json.dumps(report))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, done.stdout[-2000:] + done.stderr[-4000:]
    report = json.loads(lines[-1][len("REPORT ") :])
    assert "ExclusiveHandle was not found in allow list" in report["before"]
    assert report["after"] == "taskflow_exclusive.handle.ExclusiveHandle"
    # The plugin did it: no decorator or operator module was involved.
    assert "taskflow_exclusive.airflow.plugin" in report["imported"]
    assert "taskflow_exclusive.airflow.decorators" not in report["imported"]
    assert "taskflow_exclusive.airflow.operator" not in report["imported"]


def _serialized_handle(storage_url: str) -> dict:
    from taskflow_exclusive.airflow._compat import serde_serialize as serialize

    return serialize(publish({"k": 1}, storage=storage_url))


def test_plain_tasks_pass_handle_objects_in_a_fresh_process(airflow_db, tmp_path):
    result = run_dag_in_subprocess(
        DAGS / "handles_from_plain_tasks.py",
        conf={"results": str(tmp_path / "r")},
        env={STORAGE_ENV: (tmp_path / "store").as_uri()},
    )
    assert result.state == "success", (result.states, result.output[-4000:])
    [row] = by_task(recorded(tmp_path / "r"))["consume"]
    assert row["type"] == "taskflow_exclusive.handle.ExclusiveHandle"
    assert row["value"] == {"rows": [1, 2, 3]}
    assert row["plugin_loaded"] is True


def test_airflow_lists_the_plugin(airflow_db):
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "plugins", "-o", "json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=os.environ.copy(),
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    names = [plugin["name"] for plugin in json.loads(done.stdout)]
    assert "taskflow_exclusive" in names
