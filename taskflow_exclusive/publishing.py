"""Publishing a value: serialize it to storage, commit it, and return its handle.

:class:`ExclusiveOutput` holds the choices (storage, serializer,
compression, max_claims, claims ledger) and does the work; the decorators
are thin shells over it, and :func:`publish` is the one-line form for
notebooks and scripts.

Steps, in order, so that nothing half-done is ever claimable:

1. choose the serializer and check the storage and ledger can be used
   (errors here have written nothing);
2. stream the serialized value to ``<folder>/<stem>.<ext>``, hashing it (BLAKE3)
   as it goes and, on a local disk, ``fsync``-ing it (a failure discards the
   partial object);
3. publish the manifest ``<stem>.manifest.json`` atomically: the commit point
   (if it cannot be written, the value is removed as well);
4. return the :class:`ExclusiveHandle`.

A store that refuses a write (full, read-only, a name too long, a file where
a folder should be, unreachable) raises :class:`StorageWriteError` saying what
to fix; a name too long is reported as the setting it came from (``run_id``,
``label``).

Inside Airflow, the first publish of a retried task also removes what its
earlier tries wrote.

Example::

    >>> from taskflow_exclusive import ExclusiveOutput
    >>> out = ExclusiveOutput(storage="memory://docs", compression="gzip", max_claims=2)
    >>> handle = out.publish(list(range(1000)))
    >>> handle.serializer, handle.compression, handle.max_claims
    ('json', 'gzip', 2)
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import IO, TYPE_CHECKING, Any, TypedDict

from taskflow_exclusive.claims import open_ledger
from taskflow_exclusive.claims.base import check_max_claims
from taskflow_exclusive.claims.objectstore import ObjectStoreLedger
from taskflow_exclusive.config import resolve_claims_url, resolve_storage_url
from taskflow_exclusive.errors import ExclusiveError, StorageConfigError
from taskflow_exclusive.formats import compression as codecs
from taskflow_exclusive.formats.serializers import (
    Serializer,
    choose_serializer,
    get_serializer,
    no_serializer_error,
)
from taskflow_exclusive.handle import ExclusiveHandle
from taskflow_exclusive.identity import TaskInstanceId, local_producer_id, running_task
from taskflow_exclusive.memo import Memo
from taskflow_exclusive.signing import optional_signing_keys
from taskflow_exclusive.storage.layout import (
    LOCAL_FOLDER,
    ObjectPaths,
    encode_segment,
    new_stem,
    stem_try_number,
)
from taskflow_exclusive.storage.store import Store

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["ExclusiveOutput", "OutputOptions", "publish"]

log = logging.getLogger("taskflow_exclusive")


class OutputOptions(TypedDict, total=False):
    """The options every way of publishing takes (documented on :class:`ExclusiveOutput`)."""

    storage: str | None
    serializer: str | Serializer | None
    compression: str | None
    max_claims: int
    claims: str | None


@dataclass(frozen=True)
class ExclusiveOutput:
    """How values are published: where, in which format, guarded by which ledger.

    - ``storage``: base URL; default: the Airflow Variable
      ``taskflow_exclusive_storage_url``, else a local folder under AIRFLOW_HOME.
    - ``serializer``: a registered name or a :class:`Serializer`; default: by type.
    - ``compression``: an fsspec codec name (``gzip``, ``zstd``, ...), or ``None``.
    - ``max_claims``: how many distinct consumers may claim each value (each once).
    - ``claims``: the claim ledger URL; default: the Airflow Variable
      ``taskflow_exclusive_claims_url``, else the object store holding the value.
    """

    storage: str | None = None
    serializer: str | Serializer | None = None
    compression: str | None = None
    max_claims: int = 1
    claims: str | None = None

    def __post_init__(self) -> None:
        check_max_claims(self.max_claims)
        if self.serializer is not None:
            get_serializer(self.serializer)  # unknown names fail when declared, not when run
        if self.compression is not None:
            codecs.extension_for(self.compression)

    @classmethod
    def taking_options(cls, arguments: dict[str, Any]) -> tuple[ExclusiveOutput, dict[str, Any]]:
        """Build one from the :class:`OutputOptions` among ``arguments``; return it and the rest.

        Example::

            >>> output, rest = ExclusiveOutput.taking_options({"max_claims": 2, "retries": 3})
            >>> output.max_claims, rest
            (2, {'retries': 3})
        """
        names = {option.name for option in fields(cls)}
        options = {name: value for name, value in arguments.items() if name in names}
        rest = {name: value for name, value in arguments.items() if name not in names}
        return cls(**options), rest

    def publish(
        self,
        value: Any,
        *,
        label: str | None = None,
        task: TaskInstanceId | None = None,
        subfolder: Sequence[str] = (),
    ) -> ExclusiveHandle:
        """Store ``value`` and return its handle.

        ``label`` names the folder outside Airflow (``<base>/_local/<label>/``);
        inside a task the folder is the task instance's own (``task`` overrides
        which one), with ``subfolder`` segments below it.
        """
        serializer = choose_serializer(value, self.serializer)  # refuses a lossy choice before writing
        setting = resolve_storage_url(self.storage)
        store = Store.from_url(setting.value, setting.source)
        claims_setting = resolve_claims_url(self.claims)
        ledger = open_ledger(
            claims_setting.value if claims_setting else None,
            store,
            source=claims_setting.source if claims_setting else "default",
        )
        task = task if task is not None else running_task()
        folder = _folder(store, task, label, subfolder)
        names = _segment_names(task, label, subfolder)
        with store.writing(folder, names):  # an unreachable store is a StorageWriteError here too
            if isinstance(ledger, ObjectStoreLedger):
                _require_atomic_claims(store, folder, setting.source)
            if task is not None and task.try_number is not None and task.try_number > 1:
                _remove_earlier_tries(store, folder, task.try_number)

        extension = serializer.extension
        if self.compression:
            extension = f"{extension}.{codecs.extension_for(self.compression)}"
        paths = ObjectPaths(folder, new_stem(task.try_number if task else None), extension)

        size, digest = store.write_stream(paths.data, self._dumper(serializer, value), names=names)
        handle = ExclusiveHandle(
            uri=store.uri(paths.data),
            serializer=serializer.name,
            size=size,
            digest=digest,
            producer=task.producer_id if task else local_producer_id(),
            created_at=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            host=socket.gethostname(),
            compression=self.compression,
            max_claims=self.max_claims,
            claims=None if isinstance(ledger, ObjectStoreLedger) else ledger.spec,
        )
        keys = optional_signing_keys()  # signed whenever the deployment has a signing key
        if keys is not None:
            handle = handle.signed(keys)
        try:
            if isinstance(ledger, ObjectStoreLedger):
                # the claims folder, made now on local disk: the manifest's commit makes it
                # durable, so a first claim pays no folder creation (only its own record)
                store.prepare_local_folder(paths.claims_folder)
            store.put_complete(paths.manifest, handle.to_json().encode(), names=names)
        except BaseException:
            _remove_uncommitted(store, paths.data)
            raise
        log.info(
            "Published %s (%s, %d bytes, max_claims=%d)", handle.uri, serializer.name, size, self.max_claims
        )
        return handle

    def _dumper(self, serializer: Serializer, value: Any) -> Any:
        def dump(file: IO[bytes]) -> None:
            target = codecs.compressing_writer(self.compression, file) if self.compression else file
            try:
                serializer.dump(value, target)
            except (OSError, ExclusiveError):
                raise
            except Exception as exc:
                raise no_serializer_error(value, serializer.name, exc) from exc
            if target is not file:
                target.close()

        return dump


def publish(value: Any, *, label: str | None = None, **options: Unpack[OutputOptions]) -> ExclusiveHandle:
    """Store ``value`` and return a claim-once :class:`ExclusiveHandle`.

    Example::

        >>> handle = publish(b"raw bytes", storage="memory://docs", label="example")
        >>> handle.claim(consumer_id="loader")
        b'raw bytes'
    """
    return ExclusiveOutput(**options).publish(value, label=label)


def task_folder(store: Store, task: TaskInstanceId, *subfolder: str) -> str:
    """The folder of one task instance's values: ``<base>/<dag>/<run>/<task>/<map_index>/...``."""
    segments = [task.dag_id, task.run_id, task.task_id, str(task.map_index), *subfolder]
    return store.location.child(*(encode_segment(s) for s in segments)).path


def _folder(store: Store, task: TaskInstanceId | None, label: str | None, subfolder: Sequence[str]) -> str:
    if task is None:
        segments = [LOCAL_FOLDER, label or "values", *subfolder]
        return store.location.child(*(encode_segment(s) for s in segments)).path
    return task_folder(store, task, *subfolder)


def _segment_names(
    task: TaskInstanceId | None, label: str | None, subfolder: Sequence[str]
) -> dict[str, str]:
    """What each folder segment of a value's path came from, for errors about names too long."""
    named = [("subfolder", s) for s in subfolder]
    if task is None:
        named.append(("label", label or "values"))
    else:
        named += [("task_id", task.task_id), ("run_id", task.run_id), ("dag_id", task.dag_id)]
    return {encode_segment(text): setting for setting, text in named}


def _remove_uncommitted(store: Store, path: str) -> None:
    """Remove a value whose manifest could not be written (the cause is what gets raised)."""
    try:
        store.remove([path])
    except Exception:
        log.warning("Could not remove the uncommitted object %s", store.uri(path), exc_info=True)


def _require_atomic_claims(store: Store, folder: str, source: str) -> None:
    from taskflow_exclusive.storage import atomic

    if not atomic.supports_atomic_create(store.fs):
        raise StorageConfigError(
            f"Storage {store.describe()} (from {source}) cannot create objects atomically, so it "
            "cannot guard claims and nothing was written. Use file://, s3:// or gs:// storage, or "
            "keep claims in Redis or SQL (claims=... or the Airflow Variable "
            "'taskflow_exclusive_claims_url').",
            url=store.describe(),
            source=source,
        )
    atomic.ensure_create_is_atomic(store.fs, folder, store.describe())


_cleaned: Memo[int] = Memo()


def _remove_earlier_tries(store: Store, folder: str, try_number: int) -> None:
    """Delete what earlier tries of this task instance wrote (once per folder, try and process)."""
    key = (store.describe(), folder, try_number)
    _cleaned.get(key, lambda: _remove_tries_before(store, folder, try_number))


def _remove_tries_before(store: Store, folder: str, try_number: int) -> int:
    removed = 0
    for entry in store.list_folder(folder):
        earlier = stem_try_number(entry.rpartition("/")[2])  # None for any name we did not write
        if earlier is not None and earlier < try_number:
            removed += store.remove([entry], recursive=True)
    if removed:
        log.info("Removed %d object(s) left by earlier tries in %s", removed, store.uri(folder))
    return removed
