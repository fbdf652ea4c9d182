"""``traffic run``: the whole stack on one machine, on embedded defaults, until Ctrl-C."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
import time
from pathlib import Path
from typing import TextIO

import requests

from infra import celery_names
from stack.demo import make_demo_clip
from stack.processes import ProcessGroup, ProcessSpec, celery_beat, celery_worker, python_module
from stack.redis_server import LocalRedis, resolve_redis
from traffic.cameras import mask_url
from traffic.settings import Settings
from workers.metrics import clear_metric_files

log = logging.getLogger(__name__)

DEMO_CAMERA_ID = "demo"


def stack_specs(
    var_dir: Path, *, llm_concurrency: int = 16, with_web: bool = True, with_beat: bool = True
) -> list[ProcessSpec]:
    """Every process of a local stack: web, capture, the three worker kinds and beat."""
    specs = [
        python_module("capture", "workers.capture"),
        # The detector: one process, one frame at a time, model loaded once.
        celery_worker("gpu", celery_names.GPU_QUEUE, "solo", 1),
        # LLM calls are I/O bound: many in flight per process (see docs/DESIGN.md for the pool choice).
        celery_worker("llm", celery_names.LLM_QUEUE, "threads", llm_concurrency),
        celery_worker("default", celery_names.DEFAULT_QUEUE, "threads", 4),
    ]
    if with_beat:
        specs.append(celery_beat("beat", "var/celerybeat-schedule"))
    if with_web:
        specs.insert(0, python_module("web", "web"))
    return specs


def add_demo_camera(redis_url: str, var_dir: Path) -> str:
    """Register the demo camera (a clip made from the sample images, looped) and return its URL."""
    import redis

    from infra.camera_registry import CameraRegistry
    from traffic.cameras import Camera

    clip = make_demo_clip(var_dir / "demo" / "demo.avi")
    client = redis.Redis.from_url(redis_url)
    CameraRegistry(client).add(
        Camera(camera_id=DEMO_CAMERA_ID, url=str(clip.resolve()), name="Demo", wire_id=DEMO_CAMERA_ID)
    )
    client.close()
    return str(clip)


def wait_for_web(url: str, timeout: float = 60.0) -> bool:
    """True once the health check answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/api/health/health_check", timeout=1).ok:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.3)
    return False


def run_stack(settings: Settings, var_dir: Path, out: TextIO, *, stop: threading.Event | None = None) -> int:
    """Start everything, print where to look, supervise until Ctrl-C/SIGTERM, then stop everything."""
    stop = stop or threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    # The embedded Redis gets a fresh password each run: a loopback port is open to every local user.
    url, local = resolve_redis(settings.redis_url, var_dir / "redis", password=secrets.token_urlsafe(24))
    group = ProcessGroup(var_dir / "logs", _child_env(settings, url, var_dir))
    try:
        clip = add_demo_camera(url, var_dir)
        for spec in stack_specs(var_dir):
            group.start(spec)
        web_url = f"http://{settings.server.host}:{settings.server.port}"
        ready = wait_for_web(web_url)
        _banner(out, web_url, url, local, clip, var_dir, ready)
        return _supervise(group, stop, out)
    finally:
        out.write("stopping…\n")
        out.flush()
        group.stop_all()
        if local is not None:
            local.stop()
        out.write("stopped.\n")


def _child_env(settings: Settings, redis_url: str, var_dir: Path) -> dict[str, str]:
    """Children's environment: Redis, file sources below the run directory (the demo is a file there), an
    emptied metrics directory. Clients of the web server still may not name files (``client_file_sources``)."""
    metrics_dir = Path(settings.metrics.dir or var_dir / "metrics")
    metrics_dir.mkdir(parents=True, exist_ok=True)
    clear_metric_files(metrics_dir)
    env = {"REDIS_URL": redis_url, "TRAFFIC_REDIS_URL": redis_url, "TRAFFIC_METRICS_DIR": str(metrics_dir.resolve())}
    if "TRAFFIC_ALLOW_FILE_SOURCES" not in os.environ and "ALGO_ALLOW_FILE_SOURCES" not in os.environ:
        env["TRAFFIC_ALLOW_FILE_SOURCES"] = "true"
    if not settings.capture.media_dir:
        env["TRAFFIC_MEDIA_DIR"] = str(var_dir.resolve())
    return env


def _banner(
    out: TextIO, web_url: str, redis_url: str, local: LocalRedis | None, clip: str, var: Path, ready: bool
) -> None:
    """Tell the person what runs and where to look."""
    lines = [
        "",
        "traffic is running." if ready else "traffic started, but the web server did not answer yet (see its log).",
        f"  dashboard:   {web_url}/",
        f"  health:      {web_url}/api/health/health_check",
        f"  redis:       {mask_url(redis_url)}{' (embedded)' if local else ''}",
        f"  demo camera: '{DEMO_CAMERA_ID}' looping {clip}",
        f"  logs:        {var / 'logs'}/",
        "Press Ctrl-C to stop everything.",
        "",
    ]
    out.write("\n".join(lines) + "\n")
    out.flush()


def _supervise(group: ProcessGroup, stop: threading.Event, out: TextIO) -> int:
    """Wait for a stop request; report a child that dies on its own."""
    while not stop.wait(1.0):
        dead = group.dead()
        if dead:
            for name in dead:
                out.write(f"process {name} exited unexpectedly; last lines of its log:\n{group.tail(name, 20)}\n")
            return 1
    return 0
