"""``split=True`` with ``.expand``: one stored value per item, each claimed by its mapped task.

Each mapped consumer takes a few seconds, so that with the CeleryExecutor both
workers get some of the eight.
"""

import time
from uuid import uuid4

from airflow.sdk import dag
from tfx_system_records import dag_arguments, record

from taskflow_exclusive import Claimed, exclusive_task

ITEMS = 8


@dag(**dag_arguments())
def sys_split_mapped():
    @exclusive_task(split=True)
    def produce():
        nonce = uuid4().hex
        record(nonce=nonce, items=ITEMS)
        for i in range(ITEMS):
            yield {"item": i, "nonce": nonce, "payload": f"{i}" * 1000}

    @exclusive_task
    def consume(item: Claimed[dict]) -> None:
        time.sleep(2)
        record(
            value={"item": item["item"], "nonce": item["nonce"]},
            intact=item["payload"] == f"{item['item']}" * 1000,
        )

    consume.expand(item=produce())


sys_split_mapped()
