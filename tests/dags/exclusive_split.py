"""split=True: one stored value per item, a list of handles in XCom, one mapped consumer each.

``produce`` is a generator (items are published as they come) and ``consume``
(plain @task) is expanded over its output; ``numbers`` returns a list and
``double`` (@exclusive_task with a Claimed input) is expanded over it;
``collect`` receives the handles of every mapped ``double`` and claims them
all with ``Claimed[list]``.
"""

import pendulum
from airflow.sdk import dag, task

from taskflow_exclusive import Claimed, ExclusiveHandle, exclusive_task
from tests.airflow_harness import record
from tests.taskflow_helpers import committed_in_running_task


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def exclusive_split():
    @exclusive_task(split=True)
    def produce():
        for number, region in enumerate(("north", "south", "east")):
            # Streamed: every earlier item is already stored when the next one is asked for.
            record(task="produce", stored_before_item=committed_in_running_task(), item=number)
            yield {"region": region, "orders": len(region)}

    @task
    def consume(item: ExclusiveHandle) -> None:
        from airflow.sdk import get_current_context

        map_index = get_current_context()["ti"].map_index
        record(
            task="consume", map_index=map_index, value=item.claim(), uri=item.uri, type=type(item).__name__
        )

    @exclusive_task(split=True)
    def numbers() -> list:
        return [1, 2, 3, 4]

    @exclusive_task
    def double(number: Claimed[int]) -> int:
        return number * 2

    @exclusive_task
    def collect(doubled: Claimed[list]) -> None:
        record(task="collect", value=sorted(doubled))

    @task
    def count(handles: list) -> None:
        record(task="count", n=len(handles), types=sorted({type(h).__name__ for h in handles}))

    items = produce()
    consume.expand(item=items)
    collect(double.expand(number=numbers()))
    count(items)


the_dag = exclusive_split()
