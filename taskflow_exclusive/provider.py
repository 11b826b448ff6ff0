"""Airflow provider metadata: ``@task.exclusive`` and the ``[taskflow_exclusive]`` config section.

Airflow discovers this through the ``apache_airflow_provider`` entry point
(``pyproject.toml``), so once the package is installed:

- ``airflow providers list`` shows ``taskflow-exclusive``;
- ``@task.exclusive`` is :func:`taskflow_exclusive.decorators.exclusive_task`;
- ``airflow config list`` knows the ``[taskflow_exclusive]`` options below,
  with their defaults (set them in ``airflow.cfg`` or as
  ``AIRFLOW__TASKFLOW_EXCLUSIVE__<OPTION>`` environment variables).

Where values are stored and where claims are kept are Airflow Variables,
not config options (``taskflow_exclusive_storage_url``,
``taskflow_exclusive_claims_url``): they can change without a redeploy.

Example::

    >>> get_provider_info()["task-decorators"]
    [{'name': 'exclusive', 'class-name': 'taskflow_exclusive.decorators.exclusive_task'}]
"""

from __future__ import annotations

from typing import Any

__all__ = ["CONFIG_SECTION", "get_provider_info"]

CONFIG_SECTION = "taskflow_exclusive"

_VERSION_ADDED = "0.1.0"


def _options() -> dict[str, dict[str, Any]]:
    return {
        "xcom_threshold": {
            "description": (
                "Used by the taskflow-exclusive XCom backend: XCom values whose serialized size "
                "reaches this many bytes are stored through taskflow-exclusive storage (the "
                "Airflow Variable taskflow_exclusive_storage_url) and the metadata database keeps "
                "only a small reference. 0 offloads every value; -1 offloads none.\n"
            ),
            "version_added": _VERSION_ADDED,
            "type": "integer",
            "example": "1048576",
            "default": "65536",
        },
        "xcom_compression": {
            "description": (
                "Used by the taskflow-exclusive XCom backend: the codec for offloaded XCom values "
                "(an fsspec codec name such as gzip, bz2, lzma, or zstd with the 'zstd' extra). "
                "Empty: not compressed.\n"
            ),
            "version_added": _VERSION_ADDED,
            "type": "string",
            "example": "gzip",
            "default": "",
        },
    }


def get_provider_info() -> dict[str, Any]:
    """What Airflow's providers manager reads from the ``apache_airflow_provider`` entry point."""
    return {
        "package-name": "taskflow-exclusive",
        "name": "taskflow-exclusive",
        "description": (
            "Claim-once TaskFlow outputs: values in fsspec storage, small verified handles in "
            "XCom, each value to exactly one consumer (``@task.exclusive``).\n"
        ),
        "task-decorators": [
            {"name": "exclusive", "class-name": "taskflow_exclusive.decorators.exclusive_task"},
        ],
        "config": {
            CONFIG_SECTION: {
                "description": (
                    "taskflow-exclusive. Storage and claim ledger locations are the Airflow "
                    "Variables taskflow_exclusive_storage_url and taskflow_exclusive_claims_url.\n"
                ),
                "options": _options(),
            }
        },
    }
