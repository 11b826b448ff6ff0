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

Importing this package is cheap and has no side effects: it imports nothing
from Airflow, and names are loaded on first use (Airflow imports an XCom
backend in every component).

The floors, each using only those below it:

- ``taskflow_exclusive.airflow`` (decorators, operator, XCom backend, plugin,
  provider) and ``taskflow_exclusive.cli`` (the command, the demo);
- the core: ``handle``, ``publishing``, ``consuming``, ``config``,
  ``identity``, ``host`` (the seam the Airflow floor plugs into);
- ``claims`` (ledgers), ``storage`` (filesystems, atomic writes, layout,
  cleanup), ``formats`` (serializers, compression), ``errors``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ExclusiveHandle": "taskflow_exclusive.handle",
    "ExclusiveOutput": "taskflow_exclusive.publishing",
    "OutputOptions": "taskflow_exclusive.publishing",
    "publish": "taskflow_exclusive.publishing",
    "exclusive_output": "taskflow_exclusive.airflow.decorators",
    "exclusive_task": "taskflow_exclusive.airflow.decorators",
    "Claimed": "taskflow_exclusive.airflow.inputs",
    "Grant": "taskflow_exclusive.grants",
    "grant": "taskflow_exclusive.airflow.grants",
    "granted": "taskflow_exclusive.airflow.grants",
    "claim_granted": "taskflow_exclusive.airflow.grants",
    "Serializer": "taskflow_exclusive.formats.serializers",
    "register_serializer": "taskflow_exclusive.formats.serializers",
    "available_serializers": "taskflow_exclusive.formats.serializers",
    "ClaimLedger": "taskflow_exclusive.claims.base",
    "ClaimRecord": "taskflow_exclusive.claims.base",
    "register_ledger": "taskflow_exclusive.claims",
    "ExclusiveQueue": "taskflow_exclusive.queues.queue",
    "Lease": "taskflow_exclusive.queues.queue",
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
    "SigningKeyError": "taskflow_exclusive.errors",
    "GrantError": "taskflow_exclusive.errors",
    "GrantSignatureError": "taskflow_exclusive.errors",
    "GrantAddressError": "taskflow_exclusive.errors",
    "GrantExpiredError": "taskflow_exclusive.errors",
    "GrantNotInConfError": "taskflow_exclusive.errors",
    "GrantRevokedError": "taskflow_exclusive.errors",
    "QueueError": "taskflow_exclusive.errors",
    "QueueEmptyError": "taskflow_exclusive.errors",
    "LeaseExpiredError": "taskflow_exclusive.errors",
    "QueueUnavailableError": "taskflow_exclusive.errors",
}

# The one list of public names: ``__all__``, ``dir()`` and lazy loading all derive from it.
__all__ = [*_EXPORTS, "__version__"]  # noqa: PLE0604 (derived, not a literal: one list)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'taskflow_exclusive' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
