"""Lineage, opt-in: the values an ``@exclusive_task`` stored, on the events of its Asset outlets.

Give the task Airflow's own ``outlets=`` (``@exclusive_task(outlets=[Asset("orders")])``)
and, on each successful run, the asset event Airflow records for each
:class:`~airflow.sdk.Asset` outlet carries the stored values in its
``extra``: ``{"taskflow_exclusive": {"count": n, "values": [{"uri", "digest", "size",
"serializer", "max_claims"}, ...]}}`` (``digest`` is ``"blake3:<hex>"``) (at most :data:`MAX_VALUES_LISTED`
values; URIs name a connection id, never a credential). The UI's asset graph
then shows which task produced the asset, and each asset event which stored
values that run produced. Without ``outlets`` nothing is added: lineage is
the user's choice, per task.

Example, in a DAG::

    from airflow.sdk import Asset
    from taskflow_exclusive import exclusive_task

    @exclusive_task(outlets=[Asset("taskflow-exclusive://orders/extract")])
    def extract() -> list:
        return load_orders()
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["EXTRA_KEY", "MAX_VALUES_LISTED", "describe_on_outlets", "lineage_extra"]

EXTRA_KEY = "taskflow_exclusive"
MAX_VALUES_LISTED = 100  # a split task may store thousands: the event lists the first ones and the count


def lineage_extra(published: Any) -> dict[str, Any]:
    """The asset event ``extra`` describing the handles in ``published`` (a handle, list or dict)."""
    handles = list(_handles_in(published))
    values = [
        {
            "uri": handle.uri,
            "digest": handle.digest,
            "size": handle.size,
            "serializer": handle.serializer,
            "max_claims": handle.max_claims,
        }
        for handle in handles[:MAX_VALUES_LISTED]
    ]
    return {EXTRA_KEY: {"count": len(handles), "values": values}}


def describe_on_outlets(outlets: Iterable[Any] | None, published: Any) -> None:
    """Inside the running task: add :func:`lineage_extra` to the event of each Asset outlet."""
    from airflow.sdk import Asset, get_current_context

    assets = [outlet for outlet in outlets or () if isinstance(outlet, Asset)]
    if not assets or published is None:
        return
    extra = lineage_extra(published)
    events = get_current_context()["outlet_events"]
    for asset in assets:
        events[asset].extra.update(extra)


def _handles_in(published: Any) -> Iterable[Any]:
    from taskflow_exclusive.handle import ExclusiveHandle

    if isinstance(published, ExclusiveHandle):
        yield published
    elif isinstance(published, dict):
        yield from (v for v in published.values() if isinstance(v, ExclusiveHandle))
    elif isinstance(published, (list, tuple)):
        yield from (v for v in published if isinstance(v, ExclusiveHandle))
