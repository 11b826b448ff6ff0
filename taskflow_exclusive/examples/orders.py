"""An orders pipeline as plain functions: no Airflow, no storage, easy to test and prototype.

The DAG ``dags/orders_pipeline.py`` and the notebook ``notebooks/orders_prototype.ipynb``
both use these functions; only the decorators around them differ.

Example::

    >>> orders = extract_orders()
    >>> [batch["region"] for batch in batches_by_region(orders)]
    ['east', 'north', 'south']
    >>> summarize({"region": "east", "orders": orders[:1]})
    {'region': 'east', 'orders': 1, 'revenue': 120.0}
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["batches_by_region", "extract_orders", "format_report", "summarize"]

_ORDERS = [
    {"id": 1, "region": "east", "total": 120.0},
    {"id": 2, "region": "north", "total": 35.5},
    {"id": 3, "region": "south", "total": 80.0},
    {"id": 4, "region": "north", "total": 12.25},
    {"id": 5, "region": "east", "total": 64.0},
    {"id": 6, "region": "south", "total": 9.75},
]


def extract_orders() -> list[dict[str, Any]]:
    """Today's orders (a fixed sample; a real pipeline would query a database)."""
    return [dict(order) for order in _ORDERS]


def batches_by_region(orders: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """One batch per region, in region order, yielded one at a time."""
    for region in sorted({order["region"] for order in orders}):
        yield {"region": region, "orders": [o for o in orders if o["region"] == region]}


def summarize(batch: dict[str, Any]):  # no "-> dict": Airflow would unroll a dict into one XCom per key
    """Order count and revenue of one batch."""
    return {
        "region": batch["region"],
        "orders": len(batch["orders"]),
        "revenue": round(sum(order["total"] for order in batch["orders"]), 2),
    }


def format_report(summaries: list[dict[str, Any]]) -> str:
    """One line: revenue per region and in total."""
    parts = [f"{s['region']} {s['revenue']:.2f}" for s in sorted(summaries, key=lambda s: s["region"])]
    total = sum(s["revenue"] for s in summaries)
    return f"{' | '.join(parts)} | total {total:.2f}"
