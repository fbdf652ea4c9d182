"""The ``traffic`` operator commands find the stack ``traffic run`` started (through its run file), with
no REDIS_URL set; and say clearly when no stack runs. A real ``traffic run`` on a free port."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from stack.harness import wait_until
from stack.redis_server import free_port
from stack.run_file import RUN_FILE, SECRET_FILE

pytestmark = pytest.mark.integration

START_S = 120.0


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without any setting of the project (so nothing names a Redis), plus ``extra``."""
    prefixes = ("TRAFFIC_", "ALGO_", "REDIS_", "DASHSCOPE_", "CELERY_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)} | extra


def traffic(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One ``traffic`` command, as a person types it in a second terminal."""
    return subprocess.run(
        [sys.executable, "-m", "stack.cli", *args], cwd=cwd, env=_clean_env(), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


@dataclass
class Running:
    """A ``traffic run`` in ``home`` (run directory ``home/var``) and its console."""

    home: Path
    process: subprocess.Popen[bytes]
    console: Path

    @property
    def var(self) -> Path:
        return self.home / "var"

    def said(self) -> str:
        return self.console.read_text(errors="replace")


@contextlib.contextmanager
def traffic_run(home: Path) -> Iterator[Running]:
    """``traffic run`` in ``home`` on a free port, until the run file is written; stopped (Ctrl-C) after."""
    console = home / "console.txt"
    env = _clean_env(TRAFFIC_SERVER_PORT=str(free_port()), PYTHONPATH=str(Path.cwd()))
    with console.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "stack.cli", "run"], cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    stack = Running(home, process, console)
    try:
        wait_until(lambda: (stack.var / RUN_FILE).exists() or process.poll() is not None, START_S, "the run file")
        assert process.poll() is None, stack.said()
        yield stack
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with traffic_run(tmp_path_factory.mktemp("home")) as stack:
        yield stack


def test_without_a_stack_the_commands_say_how_to_start_one(tmp_path: Path) -> None:
    for command in (["cameras", "list"], ["keys", "status"], ["dlq", "list"]):
        result = traffic(tmp_path, *command)
        assert result.returncode == 2, result
        assert "no local stack is running" in result.stderr and "make run" in result.stderr
        assert "Traceback" not in result.stderr


def test_the_commands_act_on_the_running_stack(running: Running) -> None:
    password = (running.var / SECRET_FILE).read_text()
    listed = traffic(running.home, "cameras", "list")
    assert listed.returncode == 0, listed.stderr
    assert '"cameraId": "demo"' in listed.stdout
    keys = traffic(running.home, "keys", "status")
    assert keys.returncode == 0, keys.stderr
    assert "no API keys configured" in keys.stdout
    letters = traffic(running.home, "dlq", "list")
    assert letters.returncode == 0 and "0 dead letter(s)" in letters.stderr
    for result in (listed, keys, letters):
        assert password not in result.stdout + result.stderr
    assert password not in (running.var / RUN_FILE).read_text()
    web = requests.get(f"{_web_url(running)}/api/health/health_check", timeout=5)
    assert web.ok


def test_a_file_in_the_media_directory_is_added_from_the_command_line(running: Running) -> None:
    clips = running.var / "clips"
    clips.mkdir(exist_ok=True)
    demo = next(p for p in (running.var / "demo").iterdir() if p.suffix in (".avi", ".mp4"))
    shutil.copy(demo, clips / "street.avi")
    added = traffic(running.home, "cameras", "add", "street", "var/clips/street.avi", "--detect-fps", "1")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "added street"
    listed = traffic(running.home, "cameras", "list")
    assert str((clips / "street.avi").resolve()) in listed.stdout  # stored absolute: capture runs elsewhere
    assert traffic(running.home, "cameras", "remove", "street").stdout.strip() == "removed street"
    outside = running.home / "outside.avi"
    shutil.copy(demo, outside)
    refused = traffic(running.home, "cameras", "add", "out", "outside.avi")
    assert refused.returncode == 1
    assert "inside the media directory" in refused.stderr and "copy the file there" in refused.stderr
    assert str(running.var.resolve()) in refused.stderr


def test_a_second_stack_from_the_same_directory_is_refused(running: Running) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "stack.cli", "run"], cwd=running.home, env=_clean_env(), capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert second.returncode == 1 and "a stack is already running from var/" in second.stdout


def test_after_the_stack_stops_its_run_file_is_gone(tmp_path: Path) -> None:
    with traffic_run(tmp_path) as stack:
        assert traffic(tmp_path, "cameras", "list").returncode == 0
        os.killpg(stack.process.pid, signal.SIGINT)
        assert stack.process.wait(timeout=60) == 0, stack.said()
    assert "stopped." in stack.said()
    assert not (stack.var / RUN_FILE).exists() and not (stack.var / SECRET_FILE).exists()
    result = traffic(tmp_path, "cameras", "list")
    assert result.returncode == 2 and "no local stack is running" in result.stderr


def _web_url(running: Running) -> str:
    return str(json.loads((running.var / RUN_FILE).read_text())["webUrl"])
