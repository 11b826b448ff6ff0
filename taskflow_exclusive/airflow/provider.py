"""Airflow provider metadata: ``@task.exclusive`` and the ``[taskflow_exclusive]`` config section.

Airflow discovers this through the ``apache_airflow_provider`` entry point
(``pyproject.toml``), so once the package is installed:

- ``airflow providers list`` shows ``taskflow-exclusive``;
- ``@task.exclusive`` is :func:`taskflow_exclusive.airflow.decorators.exclusive_task`;
- ``airflow config list`` knows the ``[taskflow_exclusive]`` options below,
  with their defaults (set them in ``airflow.cfg`` or as
  ``AIRFLOW__TASKFLOW_EXCLUSIVE__<OPTION>`` environment variables). Airflow
  hides every value, of every section, unless asked: ``airflow config list
  --section taskflow_exclusive --show-values`` shows the values in force,
  ``--defaults`` the descriptions (each says its default), and
  ``airflow config get-value taskflow_exclusive xcom_threshold`` one value.

Where values are stored and where claims are kept are Airflow Variables,
not config options (``taskflow_exclusive_storage_url``,
``taskflow_exclusive_claims_url``): they can change without a redeploy.

Example::

    >>> get_provider_info()["task-decorators"]
    [{'name': 'exclusive', 'class-name': 'taskflow_exclusive.airflow.decorators.exclusive_task'}]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from taskflow_exclusive.errors import StorageConfigError

__all__ = ["CONFIG_SECTION", "XComSettings", "get_provider_info", "xcom_settings"]

CONFIG_SECTION = "taskflow_exclusive"
DEFAULT_XCOM_THRESHOLD = 65536

_VERSION_ADDED = "0.1.0"


def _options() -> dict[str, dict[str, Any]]:
    return {
        "xcom_threshold": {
            "description": (
                "Used by the taskflow-exclusive XCom backend: XCom values whose serialized size "
                "reaches this many bytes are stored through taskflow-exclusive storage (the "
                "Airflow Variable taskflow_exclusive_storage_url) and the metadata database keeps "
                "only a small reference. 0 offloads every value; -1 offloads none.\n"
                f"Default: {DEFAULT_XCOM_THRESHOLD} (64 KiB).\n"
            ),
            "version_added": _VERSION_ADDED,
            "type": "integer",
            "example": "1048576",
            "default": str(DEFAULT_XCOM_THRESHOLD),
            "sensitive": False,
        },
        "xcom_compression": {
            "description": (
                "Used by the taskflow-exclusive XCom backend: the codec for offloaded XCom values "
                "(an fsspec codec name such as gzip, bz2, lzma, or zstd with the 'zstd' extra). "
                "Empty: not compressed.\n"
                "Default: empty (not compressed).\n"
            ),
            "version_added": _VERSION_ADDED,
            "type": "string",
            "example": "gzip",
            "default": "",
            "sensitive": False,
        },
        "exclusive_mode": {
            "description": (
                "Used by the taskflow-exclusive XCom backend: when True, a task may pull an XCom of "
                "another DAG run (another DAG, or another run of its own) only through a grant in "
                "its own run's conf (grant(...) in the parent's TriggerDagRunOperator). Within one "
                "DAG run XComs behave as usual.\n"
                "Default: False.\n"
            ),
            "version_added": _VERSION_ADDED,
            "type": "boolean",
            "example": "True",
            "default": "False",
            "sensitive": False,
        },
        "require_signed_handles": {
            "description": (
                "When True, consumers refuse every handle that is not signed with a key of the "
                "deployment's keyring (the Variable taskflow_exclusive_signing_secret or the "
                "Connection taskflow_exclusive_signing), before reading anything from storage. "
                "With a keyring configured, every handle is signed whatever this says.\n"
                "Default: False.\n"
            ),
            "version_added": _VERSION_ADDED,
            "type": "boolean",
            "example": "True",
            "default": "False",
            "sensitive": False,
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
            {"name": "exclusive", "class-name": "taskflow_exclusive.airflow.decorators.exclusive_task"},
        ],
        # MessageQueueTrigger(scheme="exclusive+redis", ...) of apache-airflow-providers-common-messaging
        "queues": ["taskflow_exclusive.airflow.queues_triggers.ExclusiveQueueMessageProvider"],
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


@dataclass(frozen=True)
class XComSettings:
    """``[taskflow_exclusive]`` options read by :class:`~taskflow_exclusive.xcom.ExclusiveXCom`.

    - ``threshold``: XComs whose serialized size reaches this many bytes go to
      storage; ``0`` offloads every XCom, a negative value none (values Airflow's serde
      cannot encode, such as ``bytes`` or numpy arrays, are offloaded regardless).
    - ``compression``: fsspec codec for offloaded values, or ``None``.
    - ``exclusive_mode``: XComs of other DAG runs only through a grant in this run's conf.

    Each has an environment variable: ``AIRFLOW__TASKFLOW_EXCLUSIVE__XCOM_THRESHOLD``,
    ``AIRFLOW__TASKFLOW_EXCLUSIVE__XCOM_COMPRESSION``, ``AIRFLOW__TASKFLOW_EXCLUSIVE__EXCLUSIVE_MODE``.
    """

    threshold: int = DEFAULT_XCOM_THRESHOLD
    compression: str | None = None
    exclusive_mode: bool = False


def xcom_settings() -> XComSettings:
    """Read the XCom options now (no caching: tests and operators may change them)."""
    from taskflow_exclusive.airflow._compat import airflow_conf

    conf = airflow_conf()
    try:
        threshold = conf.getint(CONFIG_SECTION, "xcom_threshold", fallback=DEFAULT_XCOM_THRESHOLD)
    except Exception:  # AirflowConfigException: not a whole number
        raw = conf.get(CONFIG_SECTION, "xcom_threshold", fallback="")
        raise StorageConfigError(
            f"[{CONFIG_SECTION}] xcom_threshold is {raw!r}, not a whole number of bytes. "
            f"Fix it in airflow.cfg or AIRFLOW__{CONFIG_SECTION.upper()}__XCOM_THRESHOLD "
            "(0 offloads every XCom, -1 none).",
            url=None,
            source=f"[{CONFIG_SECTION}] xcom_threshold",
        ) from None
    compression = str(conf.get(CONFIG_SECTION, "xcom_compression", fallback="") or "").strip() or None
    raw_mode = str(conf.get(CONFIG_SECTION, "exclusive_mode", fallback="False")).strip().lower()
    if raw_mode not in _BOOLEANS:
        raise StorageConfigError(
            f"[{CONFIG_SECTION}] exclusive_mode is {raw_mode!r}, not True or False. Fix it in "
            f"airflow.cfg or AIRFLOW__{CONFIG_SECTION.upper()}__EXCLUSIVE_MODE.",
            url=None,
            source=f"[{CONFIG_SECTION}] exclusive_mode",
        )
    return XComSettings(threshold=threshold, compression=compression, exclusive_mode=_BOOLEANS[raw_mode])


_BOOLEANS = {"true": True, "t": True, "1": True, "false": False, "f": False, "0": False, "": False}
