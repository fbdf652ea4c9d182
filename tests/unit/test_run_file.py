"""The run file ``traffic run`` leaves for the other ``traffic`` commands: what it holds, who may read it,
and the clear errors when no stack is running."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from stack.run_file import (
    RUN_FILE,
    SECRET_FILE,
    NoLocalStack,
    pid_alive,
    read_run_file,
    remove_run_file,
    running_stack,
    write_run_file,
)

URL = "redis://:s3cret%2Fpass@127.0.0.1:46269/0"


def _write(var: Path, url: str = URL, pid: int | None = None) -> Path:
    return write_run_file(
        var, redis_url=url, web_url="http://127.0.0.1:5077", media_dir=str(var), allow_file_sources=True, pid=pid
    )


def _exited_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_run_file_round_trips_with_the_password_kept_apart(tmp_path: Path) -> None:
    path = _write(tmp_path)
    stack = read_run_file(tmp_path)
    assert stack.redis_url == URL and stack.web_url == "http://127.0.0.1:5077"
    assert stack.pid == os.getpid() and stack.media_dir == str(tmp_path) and stack.allow_file_sources
    data = json.loads(path.read_text())
    assert data["redisUrl"] == "redis://:***@127.0.0.1:46269/0" and data["redisPasswordFile"] == SECRET_FILE
    assert "s3cret" not in path.read_text()
    assert (tmp_path / SECRET_FILE).read_text() == "s3cret/pass"
    for name in (RUN_FILE, SECRET_FILE):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


def test_a_redis_without_a_password_needs_no_secret_file(tmp_path: Path) -> None:
    (tmp_path / SECRET_FILE).write_text("old")
    _write(tmp_path, "redis://127.0.0.1:6379/2")
    assert read_run_file(tmp_path).redis_url == "redis://127.0.0.1:6379/2"
    assert not (tmp_path / SECRET_FILE).exists()


def test_no_run_file_says_how_to_start_a_stack(tmp_path: Path) -> None:
    with pytest.raises(NoLocalStack, match=r"no local stack is running \(no .*run.json\); start one with `make run`"):
        read_run_file(tmp_path)
    assert running_stack(tmp_path) is None


def test_a_stale_run_file_names_the_exited_process(tmp_path: Path) -> None:
    dead = _exited_pid()
    _write(tmp_path, pid=dead)
    assert not pid_alive(dead)
    with pytest.raises(NoLocalStack, match=rf"names process {dead}, which has exited.*set REDIS_URL"):
        read_run_file(tmp_path)


@pytest.mark.parametrize("text", ["{", "[]", '{"pid": "x"}', '{"version": 1}'])
def test_an_unreadable_run_file_is_a_clear_error(tmp_path: Path, text: str) -> None:
    (tmp_path / RUN_FILE).write_text(text)
    with pytest.raises(NoLocalStack, match="run.json"):
        read_run_file(tmp_path)


def test_only_the_owner_removes_the_run_file(tmp_path: Path) -> None:
    _write(tmp_path, pid=os.getpid() + 1)
    remove_run_file(tmp_path)  # another process's file: kept
    assert (tmp_path / RUN_FILE).exists()
    _write(tmp_path)
    remove_run_file(tmp_path)
    assert not (tmp_path / RUN_FILE).exists() and not (tmp_path / SECRET_FILE).exists()
    remove_run_file(tmp_path)  # nothing there: no error


def test_pid_alive() -> None:
    assert pid_alive(os.getpid()) and not pid_alive(0) and not pid_alive(-5)
