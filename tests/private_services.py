"""Private Redis and PostgreSQL servers that a test may kill, freeze and restart.

The shared services on the standard ports serve every test session on the
machine and are never stopped. Fault tests start their own: a
``redis-server`` and a PostgreSQL cluster (``initdb`` + ``postgres``) in a
temporary folder, on free loopback ports, with a password, so that tests can
check that no password leaks into handles or errors.

Each ``start_private_*`` returns a running :class:`PrivateServer` or raises
:class:`ServerUnavailable` (the caller skips, or fails under CI=true).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import ServerUnavailable, free_ports, port_open

PASSWORD = "tfx-Secret-pw-0451"  # distinctive, so tests can search for it in text


@dataclass
class PrivateServer:
    """A server process this test session owns: where it listens, how to start it again."""

    name: str
    port: int
    workdir: Path
    argv: list[str]
    url: str  # holds the password
    user: str | None = None
    ready: Callable[[PrivateServer], bool] | None = None
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    paused: bool = field(default=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the server's lifetime
        self.process = subprocess.Popen(
            self.argv,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **_as_user(self.user),
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if port_open("127.0.0.1", self.port) and (self.ready is None or self.ready(self)):
                return
            time.sleep(0.1)
        tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path else ""
        self.kill()
        raise ServerUnavailable(f"private {self.name} did not start on {self.address}; log tail:\n{tail}")

    def pids(self) -> list[int]:
        """The server's processes (PostgreSQL serves each connection from a child)."""
        import psutil

        if self.process is None or self.process.poll() is not None:
            return []
        try:
            root = psutil.Process(self.process.pid)
            return [root.pid, *(child.pid for child in root.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def _signal(self, signum: int) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def kill(self) -> None:
        """SIGKILL every process of the server: a crash, nothing flushed or closed politely."""
        self.resume()
        self._signal(signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while port_open("127.0.0.1", self.port, timeout=0.2) and time.monotonic() < deadline:
            time.sleep(0.05)

    def pause(self) -> None:
        """SIGSTOP every process: the kernel still accepts connections, nobody answers."""
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.paused:
            self._signal(signal.SIGCONT)
            self.paused = False

    def restart(self) -> None:
        self.kill()
        self.start()

    def ensure_running(self) -> None:
        self.resume()
        if self.process is None or self.process.poll() is not None:
            self.start()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _as_user(user: str | None) -> dict:
    return {"user": user, "group": user, "extra_groups": []} if user else {}


def start_private_redis(*, password: str | None = PASSWORD, appendonly: bool = True) -> PrivateServer:
    """A ``redis-server`` on a free port; with ``appendonly``, every write is fsynced to its AOF."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServerUnavailable("redis-server is not installed (apt-get install redis-server)")
    port = free_ports(1)[0]
    workdir = Path(tempfile.mkdtemp(prefix="tfx-redis-"))
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(workdir),
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        "always",
        "--daemonize",
        "no",
    ]
    if password:
        argv += ["--requirepass", password]
    auth = f":{password}@" if password else ""
    server = PrivateServer(
        name="redis",
        port=port,
        workdir=workdir,
        argv=argv,
        url=f"redis://{auth}127.0.0.1:{port}/0",
        ready=_redis_ready,
        log_path=workdir / "redis.log",
    )
    server.start()
    return server


def _redis_ready(server: PrivateServer) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(server.url, socket_timeout=1).ping())
    except Exception:
        return False


def _pg_binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)
    if candidates:
        return str(candidates[0])
    raise ServerUnavailable(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")


def start_private_postgres(*, password: str = PASSWORD) -> PrivateServer:
    """A PostgreSQL cluster made with ``initdb`` in a temporary folder, password auth over TCP.

    PostgreSQL refuses to run as root: as root, the cluster belongs to the
    ``postgres`` user and runs as it.
    """
    initdb, postgres = _pg_binary("initdb"), _pg_binary("postgres")
    user = "postgres" if os.geteuid() == 0 else None
    port = free_ports(1)[0]
    workdir = Path(tempfile.mkdtemp(prefix="tfx-postgres-"))
    data = workdir / "data"
    secret = workdir / "pwfile"
    secret.write_text(password + "\n")
    if user:
        shutil.chown(workdir, user, user)
        shutil.chown(secret, user, user)
    made = subprocess.run(
        [
            initdb,
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={secret}",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **_as_user(user),
    )
    if made.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        raise ServerUnavailable(f"initdb failed: {made.stderr[-1500:]}")
    argv = [
        postgres,
        "-D",
        str(data),
        "-p",
        str(port),
        "-k",
        str(workdir),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "fsync=off",  # a SIGKILLed server's writes are in the page cache; the machine stays up
        "-c",
        "shared_buffers=16MB",
        "-c",
        "max_connections=60",
    ]
    server = PrivateServer(
        name="postgresql",
        port=port,
        workdir=workdir,
        argv=argv,
        url=f"postgresql+psycopg://postgres:{password}@127.0.0.1:{port}/postgres",
        user=user,
        ready=_postgres_ready,
        log_path=workdir / "postgres.log",
    )
    if user:
        server.log_path.touch()
        shutil.chown(server.log_path, user, user)
    server.start()
    return server


def _postgres_ready(server: PrivateServer) -> bool:
    import psycopg

    dsn = server.url.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except Exception:
        return False
