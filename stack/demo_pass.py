"""One pass of detection, grouping and assessment over the demo images, printed as a report."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import redis

from infra.detector_loading import load_detector
from stack.demo import sample_images
from traffic.analysis import FrameAnalysis, analyse_frame
from traffic.detector import Detector
from traffic.errors import ProviderError
from traffic.imaging import Image, crop_jpeg, read_image
from traffic.llm_assessor import LLMAssessor
from traffic.models import FrameVerdict, GroupVerdict
from traffic.risk import aggregate_frame, error_verdict
from traffic.rules_assessor import RulesAssessor
from traffic.settings import Settings
from traffic.vision_client import VisionClient
from traffic.wire import detection_result

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoFrame:
    """One demo image's analysis and verdict."""

    name: str
    analysis: FrameAnalysis
    verdict: FrameVerdict
    detect_s: float


class GroupAssessors:
    """The vision model with the first usable key, the rules assessor when there is none or it fails."""

    def __init__(self, settings: Settings) -> None:
        self._rules = RulesAssessor(settings.risk, language=settings.llm.language)
        keys = [k for k in settings.keys.keys if k.enabled] if settings.llm.enabled else []
        self._keys = keys
        self._llm = (
            LLMAssessor(
                VisionClient(settings.llm.base_url, settings.llm.model, timeout_s=settings.llm.timeout_s),
                settings.llm,
                settings.risk,
            )
            if keys
            else None
        )

    @property
    def description(self) -> str:
        """Which assessor answers, for the report."""
        if self._llm is None:
            return "rules (no API key configured)"
        return f"{self._llm.model} with key {self._keys[0].masked}, rules as fallback"

    def assess(self, analysis: FrameAnalysis, image: Image, jpeg_quality: int) -> list[GroupVerdict]:
        """One verdict per group."""
        verdicts = []
        for group in analysis.groups:
            context = analysis.context(group)
            if self._llm is not None:
                key = self._keys[0]
                try:
                    crop = crop_jpeg(image, group.bbox, jpeg_quality)
                    verdicts.append(self._llm.assess(context, crop, api_key=key.api_key, key_id=key.key_id))
                    continue
                except ProviderError as exc:
                    log.warning("group %d: %s: %s; the rules assessor answers", group.index, type(exc).__name__, exc)
            try:
                verdicts.append(self._rules.assess(context))
            except Exception as exc:  # noqa: BLE001 - a verdict is always produced
                verdicts.append(error_verdict(group.index, f"rules_failed:{type(exc).__name__}"))
        return verdicts


def run_demo_pass(settings: Settings, redis_url: str, out: TextIO) -> list[DemoFrame]:
    """Analyse each sample image, store each final result in Redis, and print a report to ``out``."""
    detector = load_detector(settings.detector)
    assessors = GroupAssessors(settings)
    client = redis.Redis.from_url(redis_url)
    out.write(f"detector: {detector.model_type} ({', '.join(detector.supported_classes)})\n")
    out.write(f"assessor: {assessors.description}\n\n")
    frames = []
    for number, path in enumerate(sample_images(), start=1):
        frames.append(_one_frame(number, path, detector, assessors, settings, client, out))
    client.close()
    return frames


def _one_frame(
    number: int,
    path: Path,
    detector: Detector,
    assessors: GroupAssessors,
    settings: Settings,
    client: redis.Redis,
    out: TextIO,
) -> DemoFrame:
    """Analyse, assess, store and print one image."""
    image = read_image(str(path))
    started = time.perf_counter()
    analysis = analyse_frame(image, detector, settings.grouping)
    detect_s = time.perf_counter() - started
    frame_id = f"demo-{number}"
    verdicts = assessors.assess(analysis, image, settings.grouping.crop_jpeg_quality)
    verdict = aggregate_frame("demo", frame_id, [g.index for g in analysis.groups], verdicts)
    payload = detection_result(
        camera_id="demo",
        frame_id=frame_id,
        captured_at=time.time(),
        analysis=analysis,
        model_type=detector.model_type,
        supported_classes=detector.supported_classes,
        process_time_s=detect_s,
        assessment=verdict.assessment,
        verdict=verdict,
    )
    client.set(f"camera:demo:frame:{frame_id}", json.dumps(payload), ex=3600)
    _print_frame(out, path.name, analysis, verdict, detect_s)
    return DemoFrame(path.name, analysis, verdict, detect_s)


def _print_frame(out: TextIO, name: str, analysis: FrameAnalysis, verdict: FrameVerdict, detect_s: float) -> None:
    """A few human-readable lines about one frame."""
    width, height = analysis.image_size
    classes = Counter(d.cls for d in analysis.detections)
    found = ", ".join(f"{n} {c}" for c, n in classes.most_common()) or "nothing"
    out.write(f"{name} ({width}x{height}): {found} in {detect_s * 1000:.0f} ms; {len(analysis.groups)} group(s)\n")
    by_index = {v.group_index: v for v in verdict.verdicts}
    for group in analysis.groups:
        v = by_index[group.index]
        types = ", ".join(v.risk_types) or "-"
        out.write(
            f"  group {group.index}: {group.object_count} objects {list(group.classes)} bbox "
            f"{[int(x) for x in group.bbox]} -> {v.risk_level.value} ({v.confidence:.2f}, {types}, {v.model}) "
            f"{v.description}\n"
        )
    out.write(
        f"  frame: maxRiskLevel={verdict.max_risk_level.value} hasDangerousDriving="
        f"{str(verdict.has_dangerous_driving).lower()} assessment={verdict.assessment.value}\n\n"
    )
