"""Where settings come from: an explicit argument, an Airflow Variable, or a default.

The storage URL is resolved here and nowhere else::

    explicit argument  >  Airflow Variable ``taskflow_exclusive_storage_url``  >  local default

The Variable is read through the host (:mod:`taskflow_exclusive.host`): with
Airflow, ``airflow.sdk.Variable``, so the environment variable
``AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_STORAGE_URL`` works everywhere (in a task,
in a notebook, in a plain script). The default is a folder under
``AIRFLOW_HOME``; using it emits one :class:`LocalStorageWarning`, because a
local folder only serves the machine it is on.

Example::

    >>> from taskflow_exclusive.config import resolve_storage_url
    >>> resolve_storage_url("memory://scratch")
    Setting(value='memory://scratch', source='argument')
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from taskflow_exclusive.errors import StorageConfigError

STORAGE_URL_VARIABLE = "taskflow_exclusive_storage_url"
CLAIMS_URL_VARIABLE = "taskflow_exclusive_claims_url"

__all__ = [
    "CLAIMS_URL_VARIABLE",
    "STORAGE_URL_VARIABLE",
    "LocalStorageWarning",
    "Setting",
    "default_storage_url",
    "read_variable",
    "resolve_claims_url",
    "resolve_storage_url",
]


class LocalStorageWarning(UserWarning):
    """Values are going to the embedded local default, which serves one machine only."""


@dataclass(frozen=True)
class Setting:
    """A resolved setting and where it came from (shown in every error about it)."""

    value: str
    source: str


_warned_local = threading.Event()


def read_variable(key: str) -> str | None:
    """The setting ``key`` (an Airflow Variable, asked of the host), or ``None`` when unset.

    Any other failure (the API server unreachable, a secrets backend error) is
    raised as :class:`StorageConfigError` rather than silently ignored: falling
    back to a default would send values somewhere the user did not choose.
    """
    from taskflow_exclusive.host import current_host

    return current_host().variable(key)


def default_storage_url() -> str:
    """The embedded default: ``file://<AIRFLOW_HOME>/taskflow_exclusive``."""
    home = os.environ.get("AIRFLOW_HOME") or str(Path("~/airflow").expanduser())
    return Path(home, "taskflow_exclusive").resolve().as_uri()


def resolve_storage_url(explicit: str | None = None) -> Setting:
    """Resolve the storage base URL: argument > Variable > local default.

    Example::

        >>> import os
        >>> os.environ["AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_STORAGE_URL"] = "memory://from-variable"
        >>> resolve_storage_url().source
        "Airflow Variable 'taskflow_exclusive_storage_url'"
    """
    if explicit is not None:
        if not str(explicit).strip():
            raise StorageConfigError(
                "The storage argument is empty. Pass a URL such as 's3://bucket/prefix' or "
                f"leave it out to use the Airflow Variable {STORAGE_URL_VARIABLE!r}.",
                url=explicit,
                source="argument",
            )
        return Setting(str(explicit).strip(), "argument")
    from_variable = read_variable(STORAGE_URL_VARIABLE)
    if from_variable is not None:
        return Setting(from_variable, f"Airflow Variable {STORAGE_URL_VARIABLE!r}")
    url = default_storage_url()
    _warn_local_default_once(url)
    return Setting(url, "default (no argument, Airflow Variable not set)")


def resolve_claims_url(explicit: str | None = None) -> Setting | None:
    """Resolve the claim ledger URL: argument > Variable ``taskflow_exclusive_claims_url``.

    ``None`` means the default ledger: the object store that holds the value.
    """
    if explicit is not None:
        return Setting(str(explicit).strip(), "argument")
    from_variable = read_variable(CLAIMS_URL_VARIABLE)
    if from_variable is not None:
        return Setting(from_variable, f"Airflow Variable {CLAIMS_URL_VARIABLE!r}")
    return None


def _warn_local_default_once(url: str) -> None:
    if _warned_local.is_set():
        return
    _warned_local.set()
    warnings.warn(
        f"taskflow-exclusive is storing values under the local default {url}. Local storage "
        "only serves this machine: workers on other machines cannot read these values. Set the "
        f"Airflow Variable {STORAGE_URL_VARIABLE!r} (or AIRFLOW_VAR_"
        f"{STORAGE_URL_VARIABLE.upper()}) to shared storage such as s3://bucket/prefix.",
        LocalStorageWarning,
        stacklevel=3,
    )


def reset_for_tests() -> None:
    """Forget the one-time warning, so a test can observe it again."""
    _warned_local.clear()
