"""A private PostgreSQL cluster for tests and benchmarks: Debian's server binaries (``postgresql``), a data
directory of its own, loopback TCP only, stopped and started at will (to test a database that goes away).

``initdb`` and ``postgres`` refuse to run as root: as root the cluster runs as the ``postgres`` user.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from stack.redis_server import free_port

DEBIAN_ROOT = Path("/usr/lib/postgresql")


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here (``apt-get install postgresql``)."""


def server_bin() -> Path:
    """The newest Debian PostgreSQL ``bin`` directory."""
    versions = sorted(
        (p for p in DEBIAN_ROOT.glob("*/bin") if (p / "initdb").is_file()), key=lambda p: int(p.parent.name)
    )
    if not versions:
        raise PostgresUnavailable(f"no PostgreSQL server under {DEBIAN_ROOT}: apt-get install postgresql")
    return versions[-1]


class LocalPostgres:
    """A PostgreSQL server child on 127.0.0.1 with a fresh cluster, one database and a password."""

    def __init__(self, port: int | None = None) -> None:
        self.bin = server_bin()
        self._user = "postgres" if os.geteuid() == 0 else None
        # A directory of its own in /tmp: the owner must reach it, and a caller's temporary directory is
        # private to the caller (root's pytest directories are 0700).
        self.directory = Path(tempfile.mkdtemp(prefix="traffic-postgres-"))
        self.data = self.directory / "data"
        self.port = port or free_port()
        self.password = secrets.token_hex(12)

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``traffic`` database (with its password)."""
        return f"postgresql+psycopg://traffic:{self.password}@127.0.0.1:{self.port}/traffic"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A server binary, as the cluster's owner."""
        command = [str(self.bin / args[0]), *args[1:]]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=check)

    def init(self) -> LocalPostgres:
        """Create the cluster, start it, and create the ``traffic`` role and database."""
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        secret = self.directory / "pwfile"
        secret.write_text(self.password)
        if self._user is not None:
            shutil.chown(secret, self._user)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "scram-sha-256", f"--pwfile={secret}")
        self.start()
        try:
            # Two commands: CREATE DATABASE cannot run inside the transaction psql makes of one -c.
            env = {**os.environ, "PGPASSWORD": self.password}
            subprocess.run(
                [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-v",
                 "ON_ERROR_STOP=1", "-c", f"CREATE ROLE traffic LOGIN PASSWORD '{self.password}'",
                 "-c", "CREATE DATABASE traffic OWNER traffic"],
                env=env, capture_output=True, text=True, timeout=60, check=True,
            )  # fmt: skip
        except BaseException:
            self.stop()
            raise
        return self

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.directory / "log"), "-w", "start")

    def stop(self) -> None:
        """Stop the server now (connections are cut)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)

    def running(self) -> bool:
        """Whether the server answers."""
        probe = self._run("pg_isready", "-h", "127.0.0.1", "-p", str(self.port), check=False)
        return probe.returncode == 0

    def wait_until_stopped(self, timeout: float = 30.0) -> None:
        """Block until the server no longer answers."""
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.1)

    def __enter__(self) -> LocalPostgres:
        return self.init()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
