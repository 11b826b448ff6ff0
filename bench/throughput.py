"""Write+claim throughput and memory of taskflow-exclusive against raw I/O, measured in one run.

    .venv/bin/python bench/throughput.py                  # 256 MiB bytes, 5M-row DataFrame
    .venv/bin/python bench/throughput.py --mib 64 --rows 1000000 --repeat 1 --no-s3

For each value (a bytes object, a pandas DataFrame) and each storage (local
disk, and an S3-compatible SeaweedFS server on loopback started here), it
times a write and a read through

- ``plain open()``: ``open(path, "wb").write`` + ``fsync`` / ``open(path, "rb").read`` (local only);
- ``raw fsspec``:   ``fs.open(path, "wb").write`` (+ ``fsync`` on local disk) / ``fs.cat_file``
  on the same filesystem;
- ``library``:      ``publish(value)`` / ``handle.claim()``, i.e. serialize, hash (BLAKE3),
  ``fsync`` the value (local disk), commit the manifest, record the claim atomically, verify
  the digest, deserialize.

Same durable work on every path: the library ``fsync``s a local value before it commits the
manifest (a committed manifest must never point at data an OS crash can lose), so the local
baselines ``fsync`` before closing too. On S3 an upload is durable once it completes. Every
path writes a new file each run and removes it once measured, as the library's run purges its
value (see "memory" below for why this matters here).

DataFrames are written as Parquet on every path (``df.to_parquet`` / ``pd.read_parquet``
for the baselines), so the ratio shows the library's own overhead, not the format's.

Every case runs in a fresh subprocess. Memory is the peak RSS (VmHWM, reset
after the value is built) above the RSS with the value in memory, expressed
in copies of the value: 1.0 means one extra copy was held at the peak.
Ratios compare the library with raw fsspec on the same storage (and with
plain open() on local disk). The best of ``--repeat`` runs is reported. ``CPU s`` is the
user+system time of the whole process (every thread) over write and read: on a shared machine
it moves far less than wall time, and it is where the cost of integrity shows.

Where the local time went (issue #13, 256 MiB bytes, 2 cores; profiled with cProfile and
timing by phase, other agents loading the machine, so figures are ranges):

- **the checksum**. sha256 ran at ~2 GB/s: 0.13-0.15 s of CPU per pass, once while writing
  (overlapped with the write by one worker thread, but competing for the second core) and
  once, serially, after the read. BLAKE3 (``blake3``, cryptographic) does a pass in
  0.033 s on one core (0.017 s on two, used for a whole buffer on read). Library CPU s fell
  from ~0.50 to ~0.33 against ~0.26 for raw fsspec. New values carry ``blake3:<hex>``; handles
  written before keep ``sha256`` and are verified with it (taskflow_exclusive.storage.digests).
- **not threads, copies or flushes**. One worker thread per write (not per chunk) hashes
  8 MiB chunks while the caller writes them; writing 32 chunks of 8 MiB costs the same as one
  256 MiB ``write()``; the value is never copied (``extra copies`` 1.00: the bytes read back);
  there is no needless flush. Before #13 the value file was *not* fsynced (only the manifest
  was), which made a committed manifest able to point at lost data after an OS crash: the
  library now fsyncs it (~0.09 s here for 256 MiB), and so do the baselines.
- **the old baseline was not like for like**. It rewrote one file per path (``O_TRUNC``
  drops the old file's pages, and the new ones come from memory just freed), while the
  library wrote a new file every run. On this VM, page-cache memory the guest has not used
  recently costs several times more system time to fill (0.5 s instead of 0.07 s of ``sys``
  for 256 MiB): a write's time depended more on which path ran after a delete than on the
  path. Every path now writes a new file and removes it once measured.

What is left on local disk is the BLAKE3 pass on read (serial: the bytes returned must be
the bytes checked, and a ``bytes`` object cannot be filled and hashed piecewise without a
second copy) and the worker's lag on write when the second core is busy. On a quiet machine
that should be about 0.02-0.03 s on a ~0.27 s raw round trip, within the 1.2x aim (an
estimate from the hashing speeds above; every run here shared both cores with other work,
where the digest waits for CPU and the ratio read 1.3x-1.8x in wall time, ~1.25x in CPU s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

# Python puts this script's folder first on sys.path: keep it off, so that no module in bench/ can
# shadow a standard library module (a bench/queue.py once shadowed queue).
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # bench.measuring and tests.*, here and in its children

from bench.measuring import reset_peak, status_kib  # noqa: E402

MiB = 1 << 20


# --- measuring inside one subprocess ---------------------------------------------------------


def _make_value(kind: str, mib: int, rows: int):
    if kind == "bytes":
        block = os.urandom(MiB)
        return block * mib, mib * MiB
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "id": np.arange(rows, dtype=np.int64),
            "x": rng.random(rows),
            "y": rng.normal(size=rows),
            "bucket": rng.integers(0, 1000, rows, dtype=np.int32),
        }
    )
    return frame, int(frame.memory_usage(index=True, deep=True).sum())


def _same(kind: str, a, b) -> bool:
    if kind == "bytes":
        return a == b
    return a.equals(b)


def run_case(case: dict) -> dict:
    """One measurement: build the value, then time write and read on one path."""
    import gc

    kind, path_kind = case["kind"], case["path"]
    if path_kind == "library":
        # A task process has Airflow and the library imported already: measure that steady state.
        from taskflow_exclusive import publish

        publish(b"warm-up", storage=case["storage"], label="warm-up").claim(consumer_id="bench")
    value, value_bytes = _make_value(kind, case["mib"], case["rows"])
    gc.collect()
    baseline_kib = reset_peak()

    cpu_started = time.process_time()  # every thread of this process (the digest worker too)
    if path_kind == "library":
        started = time.perf_counter()
        handle = publish(value, storage=case["storage"], label="bench")
        written = time.perf_counter()
        back = handle.claim(consumer_id="bench")
        finished = time.perf_counter()
        stored = handle.size
        handle.purge()  # see _raw_case: every path frees what it wrote once it is measured
    else:
        started, written, finished, back, stored = _raw_case(case, kind, value)

    cpu_s = time.process_time() - cpu_started
    peak_kib = status_kib("VmHWM")
    ok = _same(kind, value, back)
    return {
        **case,
        "write_s": written - started,
        "read_s": finished - written,
        "total_s": finished - started,
        "cpu_s": cpu_s,
        "stored_bytes": stored,
        "value_bytes": value_bytes,
        "extra_copies": (peak_kib - baseline_kib) * 1024 / value_bytes,
        "correct": ok,
    }


def _fsync(out) -> None:
    """The durable work the library does for a local value before committing it."""
    out.flush()
    os.fsync(out.fileno())


def _raw_case(case: dict, kind: str, value):
    import fsspec

    # A new name every run, as the library writes, removed once measured (as the library's run
    # purges its value): see the module docstring for why page-cache memory must be reused alike.
    target = f"{case['target']}-{uuid.uuid4().hex[:8]}"
    if path_kind_is_plain(case):
        if kind == "bytes":
            started = time.perf_counter()
            with open(target, "wb") as out:
                out.write(value)
                _fsync(out)
            written = time.perf_counter()
            with open(target, "rb") as source:
                back = source.read()
        else:
            import pandas as pd

            started = time.perf_counter()
            with open(target, "wb") as out:
                value.to_parquet(out)
                _fsync(out)
            written = time.perf_counter()
            with open(target, "rb") as source:
                back = pd.read_parquet(source)
        finished = time.perf_counter()
        stored = os.path.getsize(target)
        os.unlink(target)
        return started, written, finished, back, stored

    fs, path = fsspec.core.url_to_fs(target, **case.get("options", {}))
    local = case["storage_name"] == "file"
    if kind == "bytes":
        started = time.perf_counter()
        with fs.open(path, "wb") as out:
            out.write(value)
            if local:
                _fsync(out)
        written = time.perf_counter()
        back = fs.cat_file(path)
    else:
        import pandas as pd

        started = time.perf_counter()
        with fs.open(path, "wb") as out:
            value.to_parquet(out)
            if local:
                _fsync(out)
        written = time.perf_counter()
        with fs.open(path, "rb") as source:
            back = pd.read_parquet(source)
    finished = time.perf_counter()
    stored = fs.size(path)
    fs.rm_file(path)
    return started, written, finished, back, stored


def path_kind_is_plain(case: dict) -> bool:
    return case["path"] == "plain open()"


# --- orchestration ---------------------------------------------------------------------------


def _measure(case: dict, repeat: int, env: dict) -> dict:
    best = None
    for _ in range(repeat):
        done = subprocess.run(
            [sys.executable, __file__, "--case", json.dumps(case)],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            check=False,
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"case {case} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        result = json.loads(lines[-1])
        if best is None or result["total_s"] < best["total_s"]:
            best = result
    assert best is not None
    return best


def _cases(kinds, storages, mib, rows, *, workdir: Path, s3) -> list[dict]:
    cases = []
    for kind in kinds:
        common = {"kind": kind, "mib": mib, "rows": rows}
        if "file" in storages:
            local = workdir / f"local-{kind}"
            local.mkdir(parents=True, exist_ok=True)
            cases += [
                {
                    **common,
                    "storage_name": "file",
                    "path": "plain open()",
                    "target": str(local / "plain.bin"),
                },
                {**common, "storage_name": "file", "path": "raw fsspec", "target": f"file://{local}/raw.bin"},
                {**common, "storage_name": "file", "path": "library", "storage": f"file://{local}/lib"},
            ]
        if "s3" in storages:
            prefix = f"{s3.bucket}/bench-{uuid.uuid4().hex[:8]}"
            options = {
                "key": s3.key,
                "secret": s3.secret,
                "client_kwargs": {"endpoint_url": s3.endpoint, "region_name": "us-east-1"},
            }
            cases += [
                {
                    **common,
                    "storage_name": "s3",
                    "path": "raw fsspec",
                    "target": f"s3://{prefix}/raw-{kind}",
                    "options": options,
                },
                {
                    **common,
                    "storage_name": "s3",
                    "path": "library",
                    "storage": f"s3://tfx_bench_s3@{prefix}/lib",
                },
            ]
    return cases


def _table(results: list[dict]) -> str:
    header = (
        f"{'value':<22} {'storage':<7} {'path':<13} {'write s':>8} {'read s':>8} {'total s':>8} "
        f"{'CPU s':>6} {'MiB/s':>7} {'extra copies':>12} {'vs raw fsspec':>13} {'vs open()':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        raw = next(
            (
                x
                for x in results
                if x["kind"] == r["kind"]
                and x["storage_name"] == r["storage_name"]
                and x["path"] == "raw fsspec"
            ),
            None,
        )
        plain = next((x for x in results if x["kind"] == r["kind"] and x["path"] == "plain open()"), None)
        vs_raw = f"{r['total_s'] / raw['total_s']:.2f}x" if raw and r is not raw else ""
        vs_plain = (
            f"{r['total_s'] / plain['total_s']:.2f}x"
            if plain and r is not plain and r["storage_name"] == "file"
            else ""
        )
        label = f"{r['mib']} MiB bytes" if r["kind"] == "bytes" else f"{r['rows']:,}-row DataFrame"
        rate = r["value_bytes"] / MiB / r["total_s"]
        ok = "" if r["correct"] else "  WRONG VALUE"
        lines.append(
            f"{label:<22} {r['storage_name']:<7} {r['path']:<13} {r['write_s']:>8.2f} {r['read_s']:>8.2f} "
            f"{r['total_s']:>8.2f} {r['cpu_s']:>6.2f} {rate:>7.0f} {r['extra_copies']:>12.2f} "
            f"{vs_raw:>13} {vs_plain:>9}{ok}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=int(os.environ.get("TFX_BENCH_MIB", "256")))
    parser.add_argument("--rows", type=int, default=int(os.environ.get("TFX_BENCH_ROWS", "5000000")))
    parser.add_argument("--repeat", type=int, default=int(os.environ.get("TFX_BENCH_REPEAT", "3")))
    parser.add_argument("--no-s3", action="store_true", help="local disk only")
    parser.add_argument("--kinds", default="bytes,dataframe")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.case:
        print(json.dumps(run_case(json.loads(args.case))), flush=True)
        return 0

    storages = ["file"] if args.no_s3 else ["file", "s3"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    s3 = None
    with tempfile.TemporaryDirectory(prefix="tfx-bench-") as folder:
        env["AIRFLOW_HOME"] = str(Path(folder) / "airflow-home")
        if "s3" in storages:
            from tests.servers import start_seaweedfs

            print("starting SeaweedFS ...", file=sys.stderr)
            s3 = start_seaweedfs(bucket="bench")
            env["AIRFLOW_CONN_TFX_BENCH_S3"] = s3.connection_uri_json()
        try:
            cases = _cases(args.kinds.split(","), storages, args.mib, args.rows, workdir=Path(folder), s3=s3)
            results = []
            for case in cases:
                print(f"measuring {case['kind']} {case['storage_name']} {case['path']} ...", file=sys.stderr)
                results.append(_measure(case, args.repeat, env))
        finally:
            if s3 is not None:
                s3.stop()
    print(_table(results))
    print(
        "\nextra copies: peak RSS above the RSS holding the value, in units of the value's size "
        f"(best of {args.repeat}; each case in a fresh process). CPU s: user+system seconds of the "
        "whole process over write and read.\nOn local disk every path fsyncs the value before "
        "closing it (the library does, before it commits the manifest) and writes a new file each run."
    )
    return 0 if all(r["correct"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
