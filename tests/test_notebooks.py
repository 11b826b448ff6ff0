"""Every notebook in notebooks/ runs top to bottom in a real kernel, without a cell error."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

LOG_LINE = re.compile(r"\[(info|warning|debug|error) *\]|taskflow_exclusive[.:]|Published ", re.I)
NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def _text_outputs(notebook) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_without_errors(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    # Committed without outputs, so a diff shows only code.
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    text = _text_outputs(notebook)
    # The library's logs never land among the notebook's own output: no log line on stdout
    # (structlog lines, coloured or not), and on stderr at most one line per value published.
    streams = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "stream"]
    stdout = "".join(o["text"] for o in streams if o["name"] == "stdout")
    stderr = "".join(o["text"] for o in streams if o["name"] == "stderr")
    assert not [line for line in stdout.splitlines() if LOG_LINE.search(line)], stdout
    assert "\x1b[" not in stdout + stderr
    if path.name == "orders_prototype.ipynb":
        assert "6 orders -> 3 batches" in text
        assert "east 184.00 | north 47.75 | south 89.75 | total 321.50" in text
        assert "refused: held by 'split_by_region'" in text
        assert "ExclusiveHandle('file://" in text
        assert len(stderr.splitlines()) <= 7, stderr  # 7 values published
        # It cleans up after itself: the throw-away store is gone.
        [folder] = re.findall(r"removed (/\S+) - exists now: False", stdout)
        assert "orders-prototype-" in folder and not Path(folder).exists()
