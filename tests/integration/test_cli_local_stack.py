"""The ``traffic`` operator commands find the stack ``traffic run`` started (through its run file), with
no REDIS_URL set; and say clearly when no stack runs. A real ``traffic run`` on a free port."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from stack.run_file import RUN_FILE, SECRET_FILE
from stack.traffic_run import RunningTraffic, clean_env, traffic, traffic_run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTraffic]:
    with traffic_run(tmp_path_factory.mktemp("home")) as stack:
        yield stack


def test_without_a_stack_the_commands_say_how_to_start_one(tmp_path: Path) -> None:
    for command in (["cameras", "list"], ["keys", "status"], ["dlq", "list"]):
        result = traffic(tmp_path, *command)
        assert result.returncode == 2, result
        assert "no local stack is running" in result.stderr and "make run" in result.stderr
        assert "Traceback" not in result.stderr


def test_the_commands_act_on_the_running_stack(running: RunningTraffic) -> None:
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
    web = requests.get(f"{running.stack.web_url}/api/health/health_check", timeout=5)
    assert web.ok


def test_a_file_in_the_media_directory_is_added_from_the_command_line(running: RunningTraffic) -> None:
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


def test_a_second_stack_from_the_same_directory_is_refused(running: RunningTraffic) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "stack.cli", "run"], cwd=running.home, env=clean_env(), capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert second.returncode == 1 and "a stack is already running from var/" in second.stdout


def test_after_the_stack_stops_its_run_file_is_gone(tmp_path: Path) -> None:
    with traffic_run(tmp_path) as stack:
        assert traffic(tmp_path, "cameras", "list").returncode == 0
        assert stack.stop() == 0, stack.said()
    assert "stopped." in stack.said()
    assert not (stack.var / RUN_FILE).exists() and not (stack.var / SECRET_FILE).exists()
    result = traffic(tmp_path, "cameras", "list")
    assert result.returncode == 2 and "no local stack is running" in result.stderr


def test_the_key_commands_act_on_the_keys_of_a_stack_with_the_simulated_model(tmp_path: Path) -> None:
    with traffic_run(tmp_path, "--simulated-model") as running:
        status = traffic(tmp_path, "keys", "status")
        assert status.returncode == 0, status.stderr
        assert "3 usable key(s)" in status.stdout and "sim-account-a" in status.stdout
        secrets = (running.var / "simulator" / "simulated_api_keys.yaml").read_text()
        assert "sk-sim-" in secrets and "sk-sim-" not in status.stdout
        disabled = traffic(tmp_path, "keys", "disable", "sim-a1")
        assert disabled.returncode == 0 and "key sim-a1 disabled on every worker" in disabled.stdout
        assert "2 usable key(s)" in traffic(tmp_path, "keys", "status").stdout
        assert traffic(tmp_path, "keys", "enable", "sim-a1").returncode == 0
        assert "3 usable key(s)" in traffic(tmp_path, "keys", "status").stdout
        unknown = traffic(tmp_path, "keys", "disable", "nope")
        assert unknown.returncode == 1 and "unknown key id 'nope'" in unknown.stdout
        verify = traffic(tmp_path, "keys", "verify")
        assert verify.returncode == 2 and "configure the same keys here" in verify.stderr
