"""The run file ``traffic run`` leaves in its run directory, so that the other ``traffic`` commands find the
stack it started: where its Redis and web server listen, which process owns them, where camera files may lie.

``<var>/run.json`` holds the Redis URL with its password masked; the password is in ``<var>/run.secret``.
Both are readable by their owner only (mode 0600), as the embedded Redis listens on a loopback port any
local user can reach.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from traffic.cameras import mask_url
from traffic.errors import ConfigError

RUN_FILE = "run.json"
SECRET_FILE = "run.secret"
VERSION = 1
START_HINT = "start one with `make run` (or `traffic run`), or set REDIS_URL to the stack's Redis"


class NoLocalStack(ConfigError):
    """No ``traffic run`` stack is running from the run directory."""


@dataclass(frozen=True)
class LocalStack:
    """A running ``traffic run`` stack, as its run file describes it."""

    redis_url: str
    """With the password, for connecting; never print it (``mask_url``)."""
    web_url: str
    pid: int
    started_at: float
    media_dir: str | None
    allow_file_sources: bool
    path: Path


def write_run_file(
    var_dir: Path,
    *,
    redis_url: str,
    web_url: str,
    media_dir: str | None,
    allow_file_sources: bool,
    pid: int | None = None,
) -> Path:
    """Write ``<var_dir>/run.json`` (and the Redis password beside it); returns the run file's path."""
    var_dir.mkdir(parents=True, exist_ok=True)
    parts = urlsplit(redis_url)
    secret = var_dir / SECRET_FILE
    if parts.password is not None:
        _write_private(secret, unquote(parts.password))
    else:
        secret.unlink(missing_ok=True)
    data = {
        "version": VERSION,
        "pid": os.getpid() if pid is None else pid,
        "startedAt": time.time(),
        "redisUrl": mask_url(redis_url),
        "redisPasswordFile": SECRET_FILE if parts.password is not None else None,
        "webUrl": web_url,
        "mediaDir": media_dir,
        "allowFileSources": allow_file_sources,
    }
    path = var_dir / RUN_FILE
    _write_private(path, json.dumps(data, indent=2) + "\n")
    return path


def remove_run_file(var_dir: Path, pid: int | None = None) -> None:
    """Remove the run file and its secret if they are this process's (or ``pid``'s)."""
    owner = os.getpid() if pid is None else pid
    path = var_dir / RUN_FILE
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") != owner:
            return
    except (OSError, ValueError, AttributeError):
        return
    path.unlink(missing_ok=True)
    (var_dir / SECRET_FILE).unlink(missing_ok=True)


def read_run_file(var_dir: Path) -> LocalStack:
    """The stack running from ``var_dir``; ``NoLocalStack`` (with what to do) when there is none."""
    path = var_dir / RUN_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NoLocalStack(f"no local stack is running (no {path}); {START_HINT}") from None
    except (OSError, ValueError) as exc:
        raise NoLocalStack(f"cannot read {path} ({exc}); {START_HINT}") from None
    try:
        pid = int(data["pid"])
        masked = str(data["redisUrl"])
        password_file = data.get("redisPasswordFile")
        stack = LocalStack(
            redis_url=_with_password(masked, var_dir / password_file if password_file else None),
            web_url=str(data["webUrl"]),
            pid=pid,
            started_at=float(data["startedAt"]),
            media_dir=data.get("mediaDir"),
            allow_file_sources=bool(data.get("allowFileSources", False)),
            path=path,
        )
    except (KeyError, TypeError, ValueError, AttributeError, OSError) as exc:
        raise NoLocalStack(f"{path} is not a run file this version understands ({exc}); {START_HINT}") from None
    if not pid_alive(pid):
        raise NoLocalStack(f"no local stack is running ({path} names process {pid}, which has exited); {START_HINT}")
    return stack


def running_stack(var_dir: Path) -> LocalStack | None:
    """The stack running from ``var_dir``, or None (no run file, a stale or an unreadable one)."""
    try:
        return read_run_file(var_dir)
    except NoLocalStack:
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (signal 0 sends nothing)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True


def _with_password(masked_url: str, password_file: Path | None) -> str:
    """The masked URL with the password from ``password_file`` put back."""
    parts = urlsplit(masked_url)
    if password_file is None:
        return masked_url
    password = password_file.read_text(encoding="utf-8")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    user = quote(unquote(parts.username or ""), safe="")
    netloc = f"{user}:{quote(password, safe='')}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only, replacing it in one step."""
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(partial, path)
