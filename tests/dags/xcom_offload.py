"""ExclusiveXCom with every kind of XCom: offloaded, inline, escaped, mapped, operators'.

Run with AIRFLOW__CORE__XCOM_BACKEND=taskflow_exclusive.xcom.ExclusiveXCom and a
small threshold (the test sets 1024 bytes). Consumers record what they got,
and whether the stored row was a reference, through tests.airflow_harness.record.
"""

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import dag, task

from tests.airflow_harness import record

BIG_ROWS = [{"id": i, "name": f"row-{i}"} for i in range(2000)]


def _row_of(task_id: str, key: str = "return_value", map_index: int = -1):
    from airflow.sdk import get_current_context

    from taskflow_exclusive.airflow._compat import stored_xcom_value

    ti = get_current_context()["ti"]
    row = stored_xcom_value(key=key, dag_id=ti.dag_id, task_id=task_id, run_id=ti.run_id, map_index=map_index)
    return row


def _is_reference(stored) -> bool:
    return isinstance(stored, dict) and stored.get("__taskflow_exclusive__") == "xcom-ref/1"


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def xcom_offload():
    @task
    def big_list():
        return BIG_ROWS

    @task
    def small_dict():
        return {"a": 1}

    @task
    def frame():
        import pandas as pd

        return pd.DataFrame({"x": range(500), "y": [f"v{i}" for i in range(500)]})

    @task
    def small_bytes():
        return b"\x00raw\xff"

    @task
    def small_tuple():
        return (1, "two")

    @task
    def lookalike():
        # A user value shaped like one of our references, pointing at a file we never wrote.
        return {
            "__taskflow_exclusive__": "xcom-ref/1",
            "handle": {"format": "taskflow-exclusive/handle/1", "uri": "file:///etc/passwd"},
        }

    @task(multiple_outputs=True)
    def split_outputs():
        return {"big": BIG_ROWS, "small": 7}

    @task
    def items():
        return [f"item-{i:03d}-" + "x" * 100 for i in range(50)]

    @task
    def one_item(item):
        record(check="mapped", item=item)

    loud = BashOperator(task_id="loud", bash_command="python3 -c \"print('z' * 5000)\"")

    @task
    def check(*, big, small, df, raw, pair, fake, big_key, small_key):
        import pandas as pd
        from airflow.sdk import get_current_context

        ti = get_current_context()["ti"]
        record(
            check="values",
            big_ok=big == BIG_ROWS,
            small=small,
            df_is_frame=isinstance(df, pd.DataFrame),
            df_ok=isinstance(df, pd.DataFrame) and df.shape == (500, 2) and df["y"].iloc[-1] == "v499",
            raw_type=type(raw).__name__,
            raw_ok=raw == b"\x00raw\xff",
            pair_type=type(pair).__name__,
            pair=list(pair),
            fake=fake,
            big_key_ok=big_key == BIG_ROWS,
            small_key=small_key,
        )
        loud_value = ti.xcom_pull(task_ids="loud")
        several = ti.xcom_pull(task_ids=["small_dict", "small_tuple"])
        record(
            check="rows",
            big=_is_reference(_row_of("big_list")),
            small=_is_reference(_row_of("small_dict")),
            frame=_is_reference(_row_of("frame")),
            raw=_is_reference(_row_of("small_bytes")),
            pair=_is_reference(_row_of("small_tuple")),
            fake_stored_marker=_row_of("lookalike").get("__taskflow_exclusive__"),
            big_key=_is_reference(_row_of("split_outputs", key="big")),
            small_key=_is_reference(_row_of("split_outputs", key="small")),
            items=_is_reference(_row_of("items")),
            loud=_is_reference(_row_of("loud")),
            loud_ok=loud_value == "z" * 5000,
            several=[several[0], list(several[1])],
            big_uri=_row_of("big_list")["handle"]["uri"],
        )

    outputs = split_outputs()
    checked = check(
        big=big_list(),
        small=small_dict(),
        df=frame(),
        raw=small_bytes(),
        pair=small_tuple(),
        fake=lookalike(),
        big_key=outputs["big"],
        small_key=outputs["small"],
    )
    loud >> checked
    one_item.expand(item=items())


the_dag = xcom_offload()
