"""Producer retries write new objects; what a failed try wrote is removed.

- ``publish_then_fail``: a plain @task publishes, then fails on try 1 (the
  value stays in storage until try 2 publishes and removes it);
- ``split_fails_midway``: a split generator fails on try 1 after two items
  (those two are removed when the try fails);
- ``split_fails_after_publish``: every item of try 1 is stored, then the task
  fails in ``post_execute`` (try 2's first publish removes them).
"""

import pendulum
from airflow.sdk import dag, get_current_context, task

from taskflow_exclusive import ExclusiveHandle, exclusive_task, publish
from tests.airflow_harness import record
from tests.taskflow_helpers import committed_in_running_task


def _try_number() -> int:
    return get_current_context()["ti"].try_number


def _fail_on_first_try(context, result=None) -> None:
    if context["ti"].try_number == 1:
        record(task="split_fails_after_publish", try_number=1, uris=[handle.uri for handle in result])
        raise RuntimeError("post_execute fails try 1 on purpose (after the items were stored)")


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 1, "retry_delay": 0},
)
def exclusive_producer_retry():
    @task
    def publish_then_fail() -> ExclusiveHandle:
        handle = publish({"try": _try_number()})
        record(task="publish_then_fail", try_number=_try_number(), uri=handle.uri)
        if _try_number() == 1:
            raise RuntimeError("failing try 1 after publishing, on purpose")
        return handle

    @exclusive_task(split=True)
    def split_fails_midway():
        for item in range(3):
            if _try_number() == 1 and item == 2:
                record(task="split_fails_midway", try_number=1, committed=committed_in_running_task())
                raise RuntimeError("failing try 1 after two items, on purpose")
            yield {"try": _try_number(), "item": item}

    @exclusive_task(split=True, post_execute=_fail_on_first_try)
    def split_fails_after_publish() -> list:
        return [{"try": _try_number(), "item": item} for item in range(3)]

    @task
    def consume(name: str, value) -> None:
        handles = value if isinstance(value, list) else [value]
        record(task="consume", name=name, values=[h.claim() for h in handles], uris=[h.uri for h in handles])

    consume.override(task_id="consume_publish_then_fail")("publish_then_fail", publish_then_fail())
    consume.override(task_id="consume_split_fails_midway")("split_fails_midway", split_fails_midway())
    consume.override(task_id="consume_split_fails_after_publish")(
        "split_fails_after_publish", split_fails_after_publish()
    )


the_dag = exclusive_producer_retry()
