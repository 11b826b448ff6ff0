"""multiple_outputs: one stored value (and one handle) per key.

``inferred`` says ``-> dict``; ``explicit`` passes ``multiple_outputs=True``.
Consumers take single keys (``out["orders"]``) or the whole dict of handles.
"""

import pendulum
from airflow.sdk import dag, task

from taskflow_exclusive import Claimed, ExclusiveHandle, exclusive_task
from tests.airflow_harness import record


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def exclusive_multiple_outputs():
    @exclusive_task
    def inferred() -> dict:
        return {"orders": [1, 2], "customers": ["ann", "bob"]}

    @exclusive_task(multiple_outputs=True)
    def explicit():
        return {"raw": b"\x00\x01", "note": "text"}

    @task
    def one_key(handle: ExclusiveHandle, key: str) -> None:
        record(task="one_key", key=key, value=handle.claim(), uri=handle.uri, serializer=handle.serializer)

    @exclusive_task
    def both(handles: Claimed[dict]) -> None:
        record(task="both", value={k: repr(v) for k, v in handles.items()})

    out = inferred()
    one_key.override(task_id="orders")(out["orders"], "orders")
    one_key.override(task_id="customers")(out["customers"], "customers")
    both(explicit())


the_dag = exclusive_multiple_outputs()
