"""A private Mosquitto broker for tests and benchmarks: Debian's ``mosquitto`` on a free loopback port, with
its own configuration file, password file and log in a directory of its own; stopped and started again on the
same port at will (to test a broker that goes away).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from stack.redis_server import _own_session_dying_with_parent, free_port

SEARCH_PATH = ("/usr/sbin", "/usr/bin", "/usr/local/sbin")
"""Where Debian puts ``mosquitto`` (``/usr/sbin`` is not on every user's PATH)."""


class MosquittoUnavailable(RuntimeError):
    """No Mosquitto here (``apt-get install mosquitto``), or it would not start."""


def find_binary(name: str = "mosquitto") -> str:
    """The path of ``name`` (``mosquitto``, ``mosquitto_passwd``)."""
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(SEARCH_PATH))
    if found is None:
        raise MosquittoUnavailable(
            f"{name} is not installed: apt-get install mosquitto (scripts/bootstrap.sh --dev does)"
        )
    return found


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate and its key (PEM) for a TLS listener."""

    certfile: Path
    keyfile: Path


class LocalMosquitto:
    """A ``mosquitto`` child process on 127.0.0.1; with ``username`` and ``password``, anonymous clients are
    refused; with ``tls``, the listener speaks TLS only."""

    def __init__(
        self,
        port: int | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        if ":" in (username or "") + (password or ""):
            raise ValueError("mosquitto_passwd -U cannot read a ':' in a user name or password")
        self.binary = find_binary()
        self.port = port or free_port()
        self.username = username
        self.password = password
        self.tls = tls
        self.directory = Path(tempfile.mkdtemp(prefix="traffic-mosquitto-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    @property
    def url(self) -> str:
        """``mqtt://[user:password@]127.0.0.1:PORT`` (``mqtts://`` with TLS)."""
        auth = ""
        if self.username is not None and self.password is not None:
            auth = f"{quote(self.username, safe='')}:{quote(self.password, safe='')}@"
        return f"{'mqtts' if self.tls else 'mqtt'}://{auth}127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """The broker's log file."""
        return self.directory / "mosquitto.log"

    @property
    def pid(self) -> int | None:
        """Process id of the broker while it runs."""
        return self._proc.pid if self._proc else None

    def _write_config(self) -> None:
        """``mosquitto.conf`` (and ``passwd``, hashed by ``mosquitto_passwd``), readable by the owner only."""
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence false",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else it switches to the `mosquitto` user, who cannot read this directory
        if self.username is not None and self.password is not None:
            passwd = self.directory / "passwd"
            passwd.touch(mode=0o600)
            passwd.write_text(f"{self.username}:{self.password}\n")
            # -U hashes the file in place: the password never appears on a command line.
            subprocess.run([find_binary("mosquitto_passwd"), "-U", str(passwd)], check=True, timeout=30)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls is not None:
            lines += [f"certfile {self.tls.certfile}", f"keyfile {self.tls.keyfile}"]
        config = self.directory / "mosquitto.conf"
        config.touch(mode=0o600)
        config.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 15.0) -> LocalMosquitto:
        """Start the broker and wait until it accepts TCP connections; after ``stop``, on the same port.

        Start it from a thread that outlives it: its parent-death signal follows that thread.
        """
        if self._proc is not None:
            raise RuntimeError("the broker is already running")
        # Own session (a Ctrl-C meant for the tests does not reach it), and SIGTERM when this process dies.
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(self.directory / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            preexec_fn=_own_session_dying_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code, self._proc = self._proc.returncode, None
                raise MosquittoUnavailable(f"mosquitto exited with {code}; see {self.log_path}")
            if _accepts(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise MosquittoUnavailable(f"mosquitto did not listen on port {self.port} within {timeout:.0f} s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop the broker with ``sig`` (SIGKILL: a crash) and wait until it is gone; the port stays ours."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        """Stop the broker and remove its directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> LocalMosquitto:
        return self.start() if self._proc is None else self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def _accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
