"""``multiple_outputs``: one stored value and one handle per key, each key claimed by its own consumer.

``produce`` says ``-> dict`` (Airflow infers ``multiple_outputs``); its keys hold a
list (json), bytes and a str, so each key is stored with its own serializer.
"""

from uuid import uuid4

from airflow.sdk import dag, task
from tfx_system_records import dag_arguments, record

from taskflow_exclusive import Claimed, ExclusiveHandle, exclusive_task


@dag(**dag_arguments())
def sys_multiple_outputs():
    @exclusive_task
    def produce() -> dict:
        nonce = uuid4().hex
        record(nonce=nonce)
        return {
            "orders": [{"id": 1, "total": 9.5}, {"id": 2, "total": 3.25}, nonce],
            "raw": b"\x00\x01\xff" + nonce.encode(),
            "note": f"note {nonce}",
        }

    @exclusive_task
    def take_orders(orders: Claimed[list]) -> None:
        record(value=orders)

    @task
    def take_raw(handle: ExclusiveHandle) -> None:
        value = handle.claim()
        record(type=type(value).__name__, value=value.hex())

    @exclusive_task
    def take_note(note: Claimed[str]) -> None:
        record(type=type(note).__name__, value=note)

    out = produce()
    take_orders(out["orders"])
    take_raw(out["raw"])
    take_note(out["note"])


sys_multiple_outputs()
