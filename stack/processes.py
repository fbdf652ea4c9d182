"""Child processes of the local stack: started in their own sessions, logged to files, stopped cleanly."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessSpec:
    """How to start one process of the stack."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)


def python_module(name: str, module: str, *args: str, env: Mapping[str, str] | None = None) -> ProcessSpec:
    """``python -m module args`` with this interpreter."""
    return ProcessSpec(name, (sys.executable, "-m", module, *args), dict(env or {}))


def celery_worker(name: str, queue: str, pool: str, concurrency: int, *extra: str) -> ProcessSpec:
    """``celery -A workers worker`` serving one queue."""
    argv = (
        sys.executable, "-m", "celery", "-A", "workers", "worker",
        "-Q", queue, "-P", pool, "-c", str(concurrency), "-n", f"{name}@%h",
        "--without-gossip", "--without-mingle", "-E", *extra,
    )  # fmt: skip
    return ProcessSpec(name, argv)


def celery_beat(name: str, schedule: str | Path) -> ProcessSpec:
    """``celery -A workers beat`` keeping its schedule state in ``schedule``."""
    argv = (sys.executable, "-m", "celery", "-A", "workers", "beat", "--loglevel", "INFO", "-s", str(schedule))
    return ProcessSpec(name, argv)


def celery_flower(name: str, port: int, basic_auth: str) -> ProcessSpec:
    """``celery -A workers flower`` on loopback ``port`` behind HTTP basic auth (``user:password``)."""
    argv = (
        sys.executable, "-m", "celery", "-A", "workers", "flower",
        "--address=127.0.0.1", f"--port={port}", f"--basic-auth={basic_auth}",
    )  # fmt: skip
    return ProcessSpec(name, argv)


class ProcessGroup:
    """Starts processes with a shared environment and stops every one of them, whatever happens."""

    def __init__(self, log_dir: str | Path, env: Mapping[str, str]) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, spec: ProcessSpec) -> subprocess.Popen[bytes]:
        """Start ``spec`` in its own session, output appended to ``<log_dir>/<name>.log``."""
        log_path = self.log_dir / f"{spec.name}.log"
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                list(spec.argv),
                env={**self._env, **spec.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._procs[spec.name] = proc
        log.info("started %s (pid %d), log %s", spec.name, proc.pid, log_path)
        return proc

    def pid(self, name: str) -> int:
        """Process id of a started process."""
        return self._procs[name].pid

    def dead(self) -> list[str]:
        """Names of processes that have exited."""
        return [name for name, proc in self._procs.items() if proc.poll() is not None]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one process's whole session (a crash drill)."""
        proc = self._procs[name]
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            if sig == signal.SIGKILL:
                proc.wait()

    def stop(self, name: str, timeout: float = 15.0) -> None:
        """SIGTERM one process's session, SIGKILL it after ``timeout``."""
        proc = self._procs.pop(name, None)
        if proc is not None:
            _terminate([proc], timeout)

    def stop_all(self, timeout: float = 15.0) -> None:
        """SIGTERM every session, SIGKILL what is left after ``timeout``; leaves nothing running."""
        procs = list(self._procs.values())
        self._procs.clear()
        _terminate(procs, timeout)

    def tail(self, name: str, lines: int = 40) -> str:
        """The last lines of a process's log."""
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def names(self) -> Sequence[str]:
        """Names of the processes started and not stopped."""
        return list(self._procs)


def _terminate(procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    """SIGTERM each process group, wait, then SIGKILL the stragglers and their groups."""
    for proc in procs:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("pid %d did not stop in %.0f s; killing it", proc.pid, timeout)
    for proc in procs:
        _signal_group(proc, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the process's session (its children too); ignore ones already gone."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
