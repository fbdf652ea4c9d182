"""``traffic run`` as a person starts it, for tests: a child process in a home directory of its own, with
no setting of the project in its environment, until its run file says it is up; Ctrl-C after."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stack.redis_server import free_port
from stack.run_file import LocalStack, read_run_file, running_stack

PROJECT_PREFIXES = ("TRAFFIC_", "ALGO_", "REDIS_", "DASHSCOPE_", "CELERY_")
"""Environment variables that configure the project: none reaches a ``traffic`` command run here."""
START_S = 120.0


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any setting of the project (so nothing names a Redis), plus ``extra``."""
    return {k: v for k, v in os.environ.items() if not k.startswith(PROJECT_PREFIXES)} | extra


def traffic(cwd: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """One ``traffic`` command, as a person types it in a second terminal in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "stack.cli", *args], cwd=cwd, env=clean_env(), capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


@dataclass
class RunningTraffic:
    """A ``traffic run`` in ``home`` (run directory ``home/var``) and its console."""

    home: Path
    process: subprocess.Popen[bytes]
    console: Path
    stack: LocalStack

    @property
    def var(self) -> Path:
        return self.home / "var"

    def said(self) -> str:
        """Everything it printed so far."""
        return self.console.read_text(errors="replace")

    def stop(self, timeout: float = 60.0) -> int:
        """Ctrl-C, as a person stops it; its exit status."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()


@contextlib.contextmanager
def traffic_run(home: Path, *args: str, start_s: float = START_S) -> Iterator[RunningTraffic]:
    """``traffic run *args`` in ``home`` on a free port, yielded once its run file is written."""
    console = home / "console.txt"
    env = clean_env(TRAFFIC_SERVER_PORT=str(free_port()), PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    with console.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "stack.cli", "run", *args], cwd=home, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + start_s
        found = None
        while found is None and process.poll() is None and time.monotonic() < deadline:
            found = running_stack(home / "var")
            time.sleep(0.2)
        if found is None:
            raise AssertionError(f"traffic run did not come up:\n{console.read_text(errors='replace')}")
        running = RunningTraffic(home, process, console, read_run_file(home / "var"))
        yield running
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
