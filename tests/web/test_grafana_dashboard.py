"""The Grafana dashboard only queries metrics that traffic really exports, with labels they really have."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from traffic import redis_keys
from traffic.config import load_settings
from web.metrics import build_registry
from workers.metrics import FrameOutcome, WorkerMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "traffic-dashboard.json"
PROMQL_WORDS = {
    "sum", "rate", "increase", "histogram_quantile", "by", "without", "avg", "max", "min", "count", "irate",
    "le", "on", "and", "or", "unless", "offset",
}  # fmt: skip
SUFFIXES = ("", "_total", "_bucket", "_count", "_sum")


def exported(redis_url: str, redis_client: Any, tmp_path: Path) -> dict[str, set[str]]:
    """Every metric name the web server and the workers export, with its label names."""
    keys_file = tmp_path / "api_keys.yaml"
    keys_file.write_text("keys:\n  - key_id: k1\n    api_key: sk-dashboard-test-000\n")
    redis_client.hset(redis_keys.CAMERAS, "cam-1", "{}")
    settings = load_settings({"REDIS_URL": redis_url, "TRAFFIC_API_KEYS_FILE": str(keys_file)})
    worker_registry = CollectorRegistry()
    record_one_of_each(WorkerMetrics(worker_registry))
    names: dict[str, set[str]] = {}
    for registry in (build_registry(redis_client, settings), worker_registry):
        for family in registry.collect():
            labels = {name for sample in family.samples for name in sample.labels}
            for suffix in SUFFIXES:
                names.setdefault(family.name + suffix, set()).update(labels)
    return names


def record_one_of_each(metrics: WorkerMetrics) -> None:
    """One sample of every worker metric (labelled metrics export nothing until used)."""
    motion = {("line_crossing", "kerb", "in", "person"): 1, ("near_miss", "ttc"): 1}
    metrics.frame(FrameOutcome("cam-1", "detected", 0.1, {"person": 2}, groups=1, assessed=1, motion=motion))
    metrics.frame(FrameOutcome("cam-1", "error", error="DetectorError"))
    usage = {"prompt": 10, "completion": 5}
    metrics.verdict({"error": "bad_model_reply", "riskTypes": ["collision_risk"], "usage": usage, "model": "m"})
    metrics.llm_call("m", "k1", "ok", 0.5)
    metrics.final("chord", "complete")
    metrics.alert("high", ["collision_risk"])
    metrics.broadcast("fast", 0.2)
    metrics.batch(4)


def queries() -> list[str]:
    """Every PromQL expression of the dashboard."""
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def test_the_dashboard_is_valid_grafana_json() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["title"] and board["panels"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert all(t["datasource"]["uid"] == "${datasource}" for p in board["panels"] for t in p.get("targets", []))
    assert len(queries()) >= 20


def test_every_query_names_an_exported_metric_and_its_labels(redis_url: str, redis_client: Any, tmp_path: Path) -> None:
    names = exported(redis_url, redis_client, tmp_path)
    for expr in queries():
        bare = re.sub(r"\[[^\]]*\]", "", expr)
        for metric, selector in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?", bare):
            if metric in PROMQL_WORDS or re.fullmatch(r"[0-9.]+", metric):
                continue
            if metric in {label for labels in names.values() for label in labels}:
                continue  # a label name in a `by (…)` clause
            assert metric in names, f"{metric!r} in {expr!r} is not exported"
            for label in re.findall(r"([a-zA-Z_]+)\s*=", selector or ""):
                assert label in names[metric], f"{metric} has no label {label!r} ({expr!r})"
        for grouping in re.findall(r"by \(([^)]*)\)", expr):
            for label in (g.strip() for g in grouping.split(",")):
                assert any(label in labels for labels in names.values()), f"no metric has label {label!r}"
