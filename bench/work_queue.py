"""Work queues against the bare Redis primitives they are built on, in the same run.

Run::

    .venv/bin/python bench/work_queue.py                       # default counts
    .venv/bin/python bench/work_queue.py --items 2000 --large-items 40 --processes 1,16

Rows (each beside its bare primitive on the same server, same values):

- put: ``ExclusiveQueue.put`` vs ``RPUSH``;
- get (at most once): ``ExclusiveQueue.get`` vs ``RPOP``;
- lease + ack (at least once): ``lease()`` then ``ack()`` vs ``BLMOVE`` then ``LREM``;

for small values (a 100-byte string, inline) and 1 MiB values (stored on local
disk through the library, the item carries the handle; bare: the 1 MiB bytes
themselves in the list), with 1 and 16 processes. Latency is the median per
operation of one process; throughput is items per second over the wall time
with all processes at work. The ratio column is library / bare.

Redis: ``TFX_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``), db 13 and a
fresh key prefix per run, removed afterwards.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root instead of this script's folder on sys.path: no module in bench/ can shadow
# a standard library module.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

REDIS_URL = os.environ.get("TFX_BENCH_QUEUE_REDIS_URL", "redis://127.0.0.1:6379/13")
SMALL = "s" * 100
LARGE = b"L" * (1 << 20)


def _client():
    import redis

    return redis.Redis.from_url(REDIS_URL)


def _queue(prefix: str, name: str, storage: str):
    from taskflow_exclusive.queues import ExclusiveQueue

    return ExclusiveQueue(f"{REDIS_URL}?prefix={prefix}", name=name, storage=storage)


def _operations(kind: str, prefix: str, name: str, storage: str, large: bool):
    """The operation to time, and the one that fills the queue for it."""
    value = LARGE if large else SMALL
    bare_key = f"{prefix}:bare:{name}"
    if kind.startswith("bare"):
        client = _client()
        if kind == "bare-put":
            return (lambda: client.rpush(bare_key, value)), None
        if kind == "bare-get":
            return (lambda: client.rpop(bare_key)), (lambda n: _bare_fill(client, bare_key, value, n))

        def blmove_lrem():
            item = client.blmove(bare_key, bare_key + ":inflight", 1, "LEFT", "RIGHT")
            client.lrem(bare_key + ":inflight", 1, item)

        return blmove_lrem, (lambda n: _bare_fill(client, bare_key, value, n))
    queue = _queue(prefix, name, storage)
    me = f"bench-{os.getpid()}"
    if kind == "put":
        return (lambda: queue.put(value)), None
    if kind == "get":
        return (lambda: queue.get(consumer_id=me)), (lambda n: _fill(queue, value, n))

    def lease_ack():
        queue.lease(consumer_id=me).ack()

    return lease_ack, (lambda n: _fill(queue, value, n))


def _bare_fill(client, key, value, count):
    for start in range(0, count, 200):
        client.rpush(key, *[value] * min(200, count - start))


def _fill(queue, value, count):
    for start in range(0, count, 200):
        queue.put_many([value] * min(200, count - start))


def _worker(plan, barrier, results):
    kind, prefix, name, storage, large, count = plan
    operation, _ = _operations(kind, prefix, name, storage, large)
    operation()  # warm: connections, scripts, imports
    barrier.wait()
    times = []
    for _ in range(count):
        started = time.perf_counter()
        operation()
        times.append(time.perf_counter() - started)
    results.put(times)


def measure(kind: str, processes: int, count: int, large: bool, storage: str) -> tuple[float, float]:
    """(median seconds per operation, items per second) for ``processes`` x ``count`` operations."""
    prefix = f"tfxbench_{uuid.uuid4().hex[:8]}"
    name = "q"
    _, fill = _operations(kind, prefix, name, storage, large)
    if fill is not None:
        fill(processes * (count + 1))
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(processes + 1)
    results = context.Queue()
    plan = (kind, prefix, name, storage, large, count)
    workers = [context.Process(target=_worker, args=(plan, barrier, results)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    barrier.wait(timeout=300)
    started = time.perf_counter()
    every = [t for _ in workers for t in results.get(timeout=900)]
    wall = time.perf_counter() - started
    for worker in workers:
        worker.join()
    client = _client()
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(key)
    return statistics.median(every), len(every) / wall


PAIRS = [("put", "bare-put", "RPUSH"), ("get", "bare-get", "RPOP"), ("lease", "bare-lease", "BLMOVE+LREM")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--items", type=int, default=int(os.environ.get("TFX_BENCH_QUEUE_ITEMS", "2000")))
    parser.add_argument("--large-items", type=int, default=int(os.environ.get("TFX_BENCH_QUEUE_LARGE", "32")))
    parser.add_argument("--processes", default="1,16")
    args = parser.parse_args(argv)
    import logging

    logging.getLogger("taskflow_exclusive").setLevel(logging.ERROR)  # the shared Redis has AOF off: known
    storage = Path(tempfile.mkdtemp(prefix="tfx-bench-queue-")).as_uri()
    print(f"Redis {REDIS_URL}; 1 MiB values stored under {storage}\n", flush=True)
    print(
        "| operation | value | processes | library median (µs) | bare median (µs) | latency ratio |"
        " library items/s | bare items/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for large in (False, True):
        for processes in (int(p) for p in args.processes.split(",")):
            total = args.large_items if large else args.items
            count = max(1, total // processes)
            for ours, bare, label in PAIRS:
                lib_median, lib_rate = measure(ours, processes, count, large, storage)
                bare_median, bare_rate = measure(bare, processes, count, large, storage)
                mode = {"put": "put", "get": "get (at most once)", "lease": "lease+ack (at least once)"}[ours]
                print(
                    f"| {mode} vs {label} | {'1 MiB' if large else '100 B'} | {processes} | "
                    f"{lib_median * 1e6:.0f} | {bare_median * 1e6:.0f} | {lib_median / bare_median:.2f}x | "
                    f"{lib_rate:.0f} | {bare_rate:.0f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
