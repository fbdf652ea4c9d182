"""A worker node's own ``/metrics`` exporter: multiprocess files in a folder it empties at start."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from stack.harness import bus_jpeg, running_stack
from stack.processes import celery_worker
from stack.redis_server import free_port
from workers.metrics import node_dir

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def detections(url: str, camera: str) -> float:
    """``detection_total`` of ``camera`` as the exporter reports it."""
    text = requests.get(url, timeout=5).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "detection_total" and s.labels.get("camera_id") == camera
    )


def test_a_prefork_detector_node_exports_its_childrens_samples(tmp_path: Path) -> None:
    port = free_port()
    folder = node_dir(tmp_path / "metrics", f"gpu@{socket.gethostname()}")
    folder.mkdir(parents=True)
    stale = folder / "counter_999999.db"
    stale.write_bytes(b"left over from a previous run")
    env = {"TRAFFIC_METRICS_PORT": str(port), "TRAFFIC_METRICS_HOST": "127.0.0.1"}
    with running_stack(tmp_path, None, **env) as stack:
        # Prefork: the children record, the node's main process serves the merged files.
        stack.group.start(celery_worker("gpu", "gpu", "prefork", 2))
        stack.wait_for_workers(["gpu"], 90)
        assert not stale.exists(), "the node empties its folder at start"
        url = f"http://127.0.0.1:{port}/metrics"
        assert detections(url, "export-cam") == 0
        for _ in range(2):
            stack.inject_frame("export-cam", bus_jpeg())
        deadline = time.monotonic() + 60
        while detections(url, "export-cam") < 2 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert detections(url, "export-cam") == 2
        assert list(folder.glob("*.db")), "samples are written as multiprocess files"
