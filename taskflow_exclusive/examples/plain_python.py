"""Produce and claim outside Airflow: the same functions a DAG would use.

Run it with ``python -m taskflow_exclusive.examples.plain_python``.
"""

from __future__ import annotations

import tempfile

from taskflow_exclusive import AlreadyClaimedError, exclusive_output


def run(storage: str, echo=print) -> int:
    @exclusive_output(storage=storage)
    def extract() -> dict:
        return {"orders": [{"id": 1, "total": 9.5}, {"id": 2, "total": 20.0}]}

    handle = extract()
    echo(f"produced  {handle.uri} ({handle.serializer}, {handle.size} bytes, sha256 {handle.sha256[:12]}...)")
    orders = handle.claim(consumer_id="transform")
    echo(f"claimed   by 'transform': {len(orders['orders'])} orders")
    echo(f"re-claim  by 'transform' (a retry): {handle.claim(consumer_id='transform') == orders}")
    try:
        handle.claim(consumer_id="audit")
    except AlreadyClaimedError as refused:
        echo(f"refused   'audit': held by {refused.holder!r} since {refused.claimed_at:%H:%M:%S}")
        return 0
    echo("ERROR: a second consumer was given the value")
    return 1


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        raise SystemExit(run(f"file://{folder}"))
