"""Importing Airflow for the library's own use without taking over the process's logging.

The library logs through :mod:`logging` (loggers ``taskflow_exclusive.*``)
and leaves where those lines go to the host: Airflow's task log inside a
task, whatever the script or notebook configured outside it.

Outside Airflow the library still imports Airflow on first use, to read a
Variable or a Connection. Importing ``airflow`` configures logging for the
whole process as an Airflow component: the root logger writes structlog
lines to standard output (coloured on a terminal), and Python warnings are
sent there too. In a script or notebook that mixes log lines into the
user's own output. :func:`import_airflow` imports it and then puts back the
root logger (handlers, level, filters) and :func:`warnings.showwarning` as
the process had them, but only when it is the first import of Airflow in
the process: where Airflow was imported first (a task, a DAG file, the
scheduler, ``dag.test()`` in a user's script), Airflow is the host and its
logging is left alone.

Example::

    >>> import_airflow()  # idempotent; the process's logging stays as it was
    >>> import airflow
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import warnings

__all__ = ["import_airflow"]

_lock = threading.Lock()


def import_airflow() -> None:
    """Import ``airflow``; if this is its first import here, keep the process's logging as it was."""
    if "airflow" in sys.modules:
        return
    with _lock:
        if "airflow" in sys.modules:
            return
        root = logging.getLogger()
        handlers, level, filters = list(root.handlers), root.level, list(root.filters)
        showwarning = warnings.showwarning
        # Airflow 3.1 imports alembic while importing itself, after pointing logging at standard
        # output: alembic's INFO lines ("setup plugin ...") would land among the user's output.
        alembic = logging.getLogger("alembic")
        alembic_level = alembic.level
        alembic.setLevel(max(alembic_level, logging.WARNING))
        try:
            importlib.import_module("airflow")
        finally:
            alembic.setLevel(alembic_level)
            for handler in root.handlers[:]:
                if handler not in handlers:
                    root.removeHandler(handler)
            for handler in handlers:
                if handler not in root.handlers:
                    root.addHandler(handler)
            root.setLevel(level)
            root.filters[:] = filters
            warnings.showwarning = showwarning
