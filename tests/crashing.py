"""Processes that are killed (SIGKILL) mid-work: producers during a write, consumers after a claim.

Children come from a fork server that has already imported the library,
fsspec's S3 and GCS drivers and the Airflow task SDK (for connections), so
each one starts in milliseconds instead of seconds; they share nothing with
the test process but the storage. They report over a pipe (a ``send`` is
written before it returns, so whatever the parent received was said before
the kill).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import time
from dataclasses import dataclass
from typing import Any

PRELOAD = [
    "tests.crashing",
    "airflow.sdk",
    "s3fs",
    "gcsfs",
    "taskflow_exclusive.publishing",
    "taskflow_exclusive.consuming",
    "taskflow_exclusive.claims.objectstore",
]

_context: Any = None


def context() -> Any:
    """The fork-server multiprocessing context, with the heavy imports preloaded once."""
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _environment_for(env: dict[str, str]) -> None:
    # The fork server started with the environment of its first use: connections created by
    # fixtures since then are handed over explicitly.
    os.environ.update(env)


# --- producers ---------------------------------------------------------------------------------


def produce(storage: str, payload_path: str, label: str, env: dict[str, str], pipe) -> None:
    """Publish the payload file's bytes; say "writing" before and send the handle after."""
    _environment_for(env)
    from taskflow_exclusive import publish
    from taskflow_exclusive.storage.store import Store

    with open(payload_path, "rb") as file:
        payload = file.read()
    # Reach the store once first (the Airflow connection, the client session: about a second),
    # so that the kill points fall on the write itself.
    store = Store.from_url(storage)
    store.exists(store.location.path)
    pipe.send(("writing", time.monotonic()))
    handle = publish(payload, storage=storage, serializer="bytes", label=label)
    pipe.send(("published", handle.to_json(), time.monotonic()))


@dataclass
class ProducerRun:
    killed_after: float  # seconds after "writing"
    handle_json: str | None  # the handle the producer emitted before it died, if any
    write_seconds: float | None  # for a producer that finished


def run_producer(
    storage: str, payload_path: str, label: str, env: dict[str, str], *, kill_after: float | None
) -> ProducerRun:
    """Run one producer; SIGKILL it ``kill_after`` seconds after it starts writing (None: never)."""
    ctx = context()
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=produce, args=(storage, payload_path, label, env, sender))
    process.start()
    sender.close()
    try:
        if not receiver.poll(120):
            raise RuntimeError(f"producer for {storage} never started writing (exit code {process.exitcode})")
        _, writing_at = receiver.recv()
        handle_json = write_seconds = None
        if kill_after is None:
            if not receiver.poll(600):
                raise RuntimeError(f"producer for {storage} did not finish (exit code {process.exitcode})")
        else:
            deadline = writing_at + kill_after
            while (wait := deadline - time.monotonic()) > 0 and not receiver.poll(wait):
                pass
            process.kill()  # SIGKILL, unless it already ended (no stray pid is signalled)
        process.join(timeout=60)
        while receiver.poll():
            try:
                message = receiver.recv()
            except EOFError:
                break
            if message[0] == "published":
                handle_json, write_seconds = message[1], message[2] - writing_at
        return ProducerRun(kill_after or 0.0, handle_json, write_seconds)
    finally:
        receiver.close()
        if process.is_alive():
            process.kill()
            process.join()


# --- consumers ---------------------------------------------------------------------------------


def consume(handle_json: str, consumer_id: str, hold_before_reading: bool, env: dict[str, str], pipe) -> None:
    """Claim the value; say "claimed" the moment the claim is recorded, then read it.

    With ``hold_before_reading`` the consumer stops right there (the parent
    kills it before it reads a byte of the value).
    """
    _environment_for(env)
    import hashlib

    from taskflow_exclusive import ExclusiveHandle
    from taskflow_exclusive import consuming as claiming

    read_value = claiming.load_verified

    def announce_then_read(*args: Any, **kwargs: Any) -> Any:
        # Instrumentation only: the real claim has been recorded; the real read follows.
        pipe.send(("claimed", time.monotonic()))
        if hold_before_reading:
            time.sleep(600)
        return read_value(*args, **kwargs)

    claiming.load_verified = announce_then_read
    value = ExclusiveHandle.from_json(handle_json).claim(consumer_id=consumer_id)
    pipe.send(("value", hashlib.sha256(value).hexdigest(), time.monotonic()))


@dataclass
class ConsumerRun:
    claimed: bool  # the claim was recorded before the kill
    finished_reading: bool  # the value arrived before the kill landed
    sha256: str | None


def run_consumer(
    handle_json: str,
    consumer_id: str,
    env: dict[str, str],
    *,
    kill: str,
    rng: random.Random,
    read_seconds: float = 0.0,
) -> ConsumerRun:
    """Run one consumer and SIGKILL it after its claim is recorded.

    ``kill``: ``"before-reading"`` (killed while held just after the claim),
    ``"while-reading"`` (killed a random moment within ``read_seconds`` after
    the claim), or ``"never"`` (a retry that must get the value).
    """
    ctx = context()
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=consume, args=(handle_json, consumer_id, kill == "before-reading", env, sender)
    )
    process.start()
    sender.close()
    claimed = finished = False
    sha256 = None
    try:
        if not receiver.poll(120):
            raise RuntimeError(f"consumer {consumer_id} never claimed (exit code {process.exitcode})")
        try:
            claimed = receiver.recv()[0] == "claimed"
        except EOFError:  # the claim was refused or failed: the process ended without claiming
            return ConsumerRun(False, False, None)
        if kill == "before-reading":
            process.kill()  # SIGKILL
        elif kill == "while-reading":
            time.sleep(rng.uniform(0, read_seconds))
            process.kill()  # SIGKILL, unless it already finished
        else:
            receiver.poll(300)
        process.join(timeout=60)
        while receiver.poll():
            try:
                message = receiver.recv()
            except EOFError:
                break
            if message[0] == "value":
                finished, sha256 = True, message[1]
        return ConsumerRun(claimed, finished, sha256)
    finally:
        receiver.close()
        if process.is_alive():
            process.kill()
            process.join()
