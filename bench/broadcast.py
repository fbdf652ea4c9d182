"""Socket.IO broadcast: emit → receive latency through the real path, and bytes per camera per tick.

Self-contained: starts its own redis-server and web server (``python -m web``); a worker-side
``Emitter`` publishes through the Redis message queue exactly as the pipeline does, and a
python-socketio client (WebSocket transport) in the camera's room receives.

Bytes per camera per tick compare what a dashboard receives now (measured: the pending and the final
``detection_result`` as JSON, plus the frame's preview JPEG it fetches once) with a *model* of what
the old system pushed on every tick (two full frames as base64 JPEG at quality 90, every group crop
as base64 JPEG, and the payload, computed from its documented payload on the same demo frames and
their real detections; the old system itself is not run).

    python -m bench.broadcast [--quick]

Last line: ``p50_ms=… p90_ms=… bytes_ratio=…``
"""

from __future__ import annotations

import argparse
import base64
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import socketio

from bench.common import capture_preview, finish, frame_set, percentile, summary
from infra.detector_loading import packaged_detector_settings
from infra.emitter import Emitter
from stack.processes import ProcessGroup, python_module
from stack.redis_server import LocalRedis, free_port
from stack.supervisor import wait_for_web
from traffic.analysis import FrameAnalysis, analyse_detections, analyse_frame
from traffic.imaging import Image, crop_jpeg, encode_jpeg
from traffic.models import Assessment, Detection, FrameVerdict, GroupVerdict, RiskLevel, VerdictStatus
from traffic.settings import DetectorSettings, GroupingSettings
from traffic.wire import detection_result
from traffic.yolo_detector import UltralyticsDetector


class Receiver:
    """A Socket.IO client that notes the arrival time of each numbered message."""

    def __init__(self, url: str, camera_id: str) -> None:
        self.arrived: dict[int, float] = {}
        self._cond = threading.Condition()
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("detection_result", self._on_result)
        self.sio.connect(url, transports=["websocket"], wait_timeout=10)
        self.sio.call("subscribe", {"cameraIds": [camera_id]}, timeout=10)

    def _on_result(self, data: Any) -> None:
        now = time.perf_counter()
        with self._cond:
            self.arrived[int(data["seq"])] = now
            self._cond.notify_all()

    def wait(self, seq: int, timeout: float = 5.0) -> float | None:
        """Arrival time of message ``seq``."""
        with self._cond:
            self._cond.wait_for(lambda: seq in self.arrived, timeout)
            return self.arrived.get(seq)

    def close(self) -> None:
        """Disconnect."""
        self.sio.disconnect()


def latencies(emitter: Emitter, receiver: Receiver, payload: dict[str, Any], count: int) -> list[float]:
    """Milliseconds from ``emit`` to arrival, one message at a time."""
    samples = []
    for seq in range(count):
        message = {**payload, "seq": seq}
        started = time.perf_counter()
        emitter.to_camera("bench", "detection_result", message)
        arrived = receiver.wait(seq)
        if arrived is not None:
            samples.append((arrived - started) * 1000)
        receiver.arrived.pop(seq, None)
    return samples


Sample = tuple[FrameAnalysis, Image, dict[str, Any], dict[str, Any]]
DESCRIPTION = "两车车距过近，存在追尾风险。"


def payloads(
    analysis: FrameAnalysis, model_type: str, classes: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pending and the final ``detection_result`` of an analysis (every group judged medium)."""
    common: dict[str, Any] = {
        "camera_id": "bench", "frame_id": "bench-0123456789ab", "captured_at": time.time(), "analysis": analysis,
        "model_type": model_type, "supported_classes": classes, "process_time_s": 0.15,
    }  # fmt: skip
    verdicts = tuple(
        GroupVerdict(
            g.index,
            VerdictStatus.OK,
            RiskLevel.MEDIUM,
            0.72,
            ("tailgating",),
            DESCRIPTION,
            2,
            g.member_indices[:2],
            "qwen-vl-plus",
            1.3,
        )  # fmt: skip
        for g in analysis.groups
    )
    verdict = FrameVerdict("bench", "f", Assessment.COMPLETE, RiskLevel.MEDIUM, True, verdicts, 1.3, "qwen-vl-plus")
    pending = detection_result(assessment=Assessment.PENDING, **common)
    return pending, detection_result(assessment=Assessment.COMPLETE, verdict=verdict, **common)


def demo_samples(frames: list[tuple[Image, bytes]]) -> list[Sample]:
    """Real detections of the demo frames, with their payloads."""
    detector = UltralyticsDetector(packaged_detector_settings(DetectorSettings()))
    out = []
    for image, _ in frames:
        analysis = analyse_frame(image, detector, GroupingSettings())
        out.append((analysis, image, *payloads(analysis, detector.model_type, detector.supported_classes)))
    return out


def busy_street() -> dict[str, Any]:
    """A busy junction's final payload: 40 vehicles and people, grouped by the real rules."""
    import random

    rng = random.Random(7)
    classes = ("car", "car", "car", "person", "truck", "bus", "motorcycle", "bicycle")
    found = []
    for _ in range(40):
        x, y, w, h = rng.uniform(0, 1180), rng.uniform(200, 620), rng.uniform(30, 160), rng.uniform(30, 100)
        found.append(Detection(rng.choice(classes), round(rng.uniform(0.4, 0.95), 4), (x, y, x + w, y + h)))
    analysis = analyse_detections(found, (1280, 720), GroupingSettings())
    return payloads(analysis, "yolo11n", DetectorSettings().classes)[1]


def bytes_per_tick(samples: list[Sample]) -> tuple[float, float]:
    """Mean bytes a dashboard receives per camera per tick: now, and in the old system."""
    ours, old = [], []
    for analysis, image, pending, final in samples:
        events = len(json.dumps(pending)) + len(json.dumps(final))
        ours.append(events + len(capture_preview(image)))
        frame64 = len(base64.b64encode(encode_jpeg(image, 90))) + len("data:image/jpeg;base64,")
        crops64 = sum(len(base64.b64encode(crop_jpeg(image, g.bbox, 90))) for g in analysis.groups)
        old.append(2 * frame64 + crops64 + len(json.dumps(final)))
    return sum(ours) / len(ours), sum(old) / len(old)


def run(count: int, frame_count: int) -> dict[str, object]:
    """Measure and print; returns the closing line's figures."""
    frames = frame_set(frame_count)
    samples = demo_samples(frames)
    typical = busy_street()
    kilobyte = {"cameraId": "bench", "pad": "x" * 1000}
    with tempfile.TemporaryDirectory(prefix="bench-broadcast-") as tmp, LocalRedis(Path(tmp) / "redis") as server:
        port = free_port()
        env = {"REDIS_URL": server.url, "TRAFFIC_SERVER_PORT": str(port), "TRAFFIC_LOG_LEVEL": "WARNING"}
        group = ProcessGroup(Path(tmp) / "logs", env)
        try:
            group.start(python_module("web", "web"))
            url = f"http://127.0.0.1:{port}"
            assert wait_for_web(url), group.tail("web")
            receiver = Receiver(url, "bench")
            emitter = Emitter(server.url)
            latencies(emitter, receiver, kilobyte, 50)  # warm-up
            small = latencies(emitter, receiver, kilobyte, count)
            large = latencies(emitter, receiver, typical, count)
            receiver.close()
        finally:
            group.stop_all()
    ours, old = bytes_per_tick(samples)
    print(f"messages: {count} of each size; typical detection_result (busy junction, 40 objects) = "
          f"{len(json.dumps(typical))} bytes")  # fmt: skip
    print(summary("1 KB emit -> receive", small))
    print(summary("typical detection_result emit -> receive", large))
    print(
        f"bytes per camera per tick: now {ours:,.0f} (measured: 2 events + preview JPEG), "
        f"old system {old:,.0f} (modelled from its payload format, not measured)"
    )
    return {
        "p50_ms": percentile(small, 50),
        "p90_ms": percentile(small, 90),
        "typical_p50_ms": percentile(large, 50),
        "typical_p90_ms": percentile(large, 90),
        "bytes_ratio": ours / old,
        "old_bytes": "modelled",
        "messages": len(small) + len(large),
    }


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 messages per size instead of 1000")
    args = parser.parse_args()
    finish(run(200 if args.quick else 1000, 4 if args.quick else 20))


if __name__ == "__main__":
    main()
