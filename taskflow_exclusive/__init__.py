"""taskflow-exclusive: claim-once TaskFlow outputs for Apache Airflow 3.

Values go to fsspec storage (S3, GCS, local disk); XCom carries a small
:class:`ExclusiveHandle`; ``handle.claim()`` gives the value to exactly one
consumer (a retry of that consumer gets it again).

In a DAG, ``@exclusive_task`` (also ``@task.exclusive``) makes a TaskFlow
task store its return value and push handles; ``Claimed[T]`` parameters
receive claimed values::

    @exclusive_task(split=True)
    def batches(orders: Claimed[list]):
        yield from split(orders)

Example, outside Airflow::

    >>> from taskflow_exclusive import exclusive_output
    >>> @exclusive_output(storage="memory://demo")
    ... def extract():
    ...     return [1, 2, 3]
    >>> extract().claim()
    [1, 2, 3]

Importing this package is cheap and has no side effects: names are loaded
on first use (Airflow imports an XCom backend in every component).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ExclusiveHandle": "taskflow_exclusive.handle",
    "ExclusiveOutput": "taskflow_exclusive.publishing",
    "publish": "taskflow_exclusive.publishing",
    "exclusive_output": "taskflow_exclusive.decorators",
    "exclusive_task": "taskflow_exclusive.decorators",
    "Claimed": "taskflow_exclusive.inputs",
    "Serializer": "taskflow_exclusive.serializers",
    "register_serializer": "taskflow_exclusive.serializers",
    "available_serializers": "taskflow_exclusive.serializers",
    "ClaimLedger": "taskflow_exclusive.claims.base",
    "ClaimRecord": "taskflow_exclusive.claims.base",
    "register_ledger": "taskflow_exclusive.claims",
    "LocalStorageWarning": "taskflow_exclusive.config",
    "STORAGE_URL_VARIABLE": "taskflow_exclusive.config",
    "CLAIMS_URL_VARIABLE": "taskflow_exclusive.config",
    "ExclusiveError": "taskflow_exclusive.errors",
    "StorageConfigError": "taskflow_exclusive.errors",
    "SerializationError": "taskflow_exclusive.errors",
    "IntegrityError": "taskflow_exclusive.errors",
    "ObjectMissingError": "taskflow_exclusive.errors",
    "ClaimError": "taskflow_exclusive.errors",
    "AlreadyClaimedError": "taskflow_exclusive.errors",
    "ClaimStoreUnavailableError": "taskflow_exclusive.errors",
    "ClaimStoreConfigError": "taskflow_exclusive.errors",
    "InvalidArgumentError": "taskflow_exclusive.errors",
    "MalformedRecordError": "taskflow_exclusive.errors",
    "StorageWriteError": "taskflow_exclusive.errors",
}

__all__ = [
    "CLAIMS_URL_VARIABLE",
    "STORAGE_URL_VARIABLE",
    "AlreadyClaimedError",
    "ClaimError",
    "ClaimLedger",
    "ClaimRecord",
    "ClaimStoreConfigError",
    "ClaimStoreUnavailableError",
    "Claimed",
    "ExclusiveError",
    "ExclusiveHandle",
    "ExclusiveOutput",
    "IntegrityError",
    "InvalidArgumentError",
    "LocalStorageWarning",
    "MalformedRecordError",
    "ObjectMissingError",
    "SerializationError",
    "Serializer",
    "StorageConfigError",
    "StorageWriteError",
    "__version__",
    "available_serializers",
    "exclusive_output",
    "exclusive_task",
    "publish",
    "register_ledger",
    "register_serializer",
]

if TYPE_CHECKING:
    from taskflow_exclusive.claims import register_ledger
    from taskflow_exclusive.claims.base import ClaimLedger, ClaimRecord
    from taskflow_exclusive.config import CLAIMS_URL_VARIABLE, STORAGE_URL_VARIABLE, LocalStorageWarning
    from taskflow_exclusive.decorators import exclusive_output, exclusive_task
    from taskflow_exclusive.errors import (
        AlreadyClaimedError,
        ClaimError,
        ClaimStoreConfigError,
        ClaimStoreUnavailableError,
        ExclusiveError,
        IntegrityError,
        InvalidArgumentError,
        MalformedRecordError,
        ObjectMissingError,
        SerializationError,
        StorageConfigError,
        StorageWriteError,
    )
    from taskflow_exclusive.handle import ExclusiveHandle
    from taskflow_exclusive.inputs import Claimed
    from taskflow_exclusive.publishing import ExclusiveOutput, publish
    from taskflow_exclusive.serializers import Serializer, available_serializers, register_serializer


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'taskflow_exclusive' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
