"""Ultralytics YOLO backend of the detector interface: the only module that imports ultralytics."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from traffic.errors import DetectorError, WeightsUnavailable
from traffic.imaging import Image
from traffic.models import Detection
from traffic.settings import DetectorSettings

log = logging.getLogger(__name__)


class UltralyticsDetector:
    """A YOLO checkpoint (``.pt``) or architecture (``.yaml``, random weights) run by Ultralytics."""

    def __init__(self, settings: DetectorSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._model: Any = None
        self._device = "cpu"
        self._class_ids: list[int] | None = None
        self._names: dict[int, str] = {}

    @property
    def model_type(self) -> str:
        """The weights' file stem, e.g. ``yolo11n``."""
        return Path(self._settings.weights).stem

    @property
    def device(self) -> str:
        """The torch device the model runs on (valid after ``load``)."""
        return self._device

    @property
    def supported_classes(self) -> tuple[str, ...]:
        """Renamed class names the model reports and the allowlist keeps."""
        self.load()
        kept = self._class_ids if self._class_ids is not None else sorted(self._names)
        return tuple(dict.fromkeys(self._names[i] for i in kept))

    def load(self) -> None:
        """Load the model once; later calls return at once."""
        if self._model is not None:
            return
        with self._lock:
            if self._model is None:
                self._model = self._load_model()

    def detect(self, image: Image) -> list[Detection]:
        """Objects in one image, highest confidence first."""
        return self.detect_many([image])[0]

    def detect_many(self, images: Sequence[Image]) -> list[list[Detection]]:
        """Objects in each image, predicted as one batch."""
        if not images:
            return []
        self.load()
        s = self._settings
        try:
            results = self._model.predict(
                list(images),
                imgsz=s.imgsz,
                conf=s.conf,
                iou=s.iou,
                max_det=s.max_det,
                device=self._device,
                quantize=16 if s.half and self._device.startswith("cuda") else None,
                classes=self._class_ids,
                verbose=False,
            )
        except Exception as exc:  # noqa: BLE001 - any backend failure becomes a typed error
            raise DetectorError(f"YOLO inference failed: {exc}") from exc
        return [self._to_detections(result) for result in results]

    def _to_detections(self, result: Any) -> list[Detection]:
        """Convert one Ultralytics result into detections, renamed and sorted by confidence."""
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return []
        xyxy = boxes.xyxy.cpu().numpy().tolist()
        confs = boxes.conf.cpu().numpy().tolist()
        classes = boxes.cls.cpu().numpy().astype(int).tolist()
        found = [
            Detection(cls=self._names[c], confidence=round(float(p), 4), bbox=_box(b))
            for b, p, c in zip(xyxy, confs, classes, strict=True)
            if self._class_ids is None or c in self._class_ids
        ]
        return sorted(found, key=lambda d: -d.confidence)

    def _load_model(self) -> Any:
        """Resolve weights, build the model, map class names and pick the device."""
        source = self._resolve_weights()
        _restrict_ultralytics(allow_install=self._settings.allow_download)
        from ultralytics import YOLO

        try:
            model = YOLO(source, task="detect")
        except Exception as exc:  # noqa: BLE001 - missing/corrupt weights and offline downloads alike
            raise WeightsUnavailable(
                f"cannot load YOLO weights {self._settings.weights!r}: {exc}. "
                "Set TRAFFIC_MODEL_NAME (model.name in model_config.yaml) to a local checkpoint."
            ) from exc
        self._device = _pick_device(self._settings.device)
        raw_names = _with_coco_names({int(k): str(v) for k, v in dict(model.names).items()})
        renames = dict(self._settings.class_map)
        self._names = {i: renames.get(name, name) for i, name in raw_names.items()}
        self._class_ids = self._allowed_ids()
        log.info(
            "loaded YOLO %s on %s (%d classes kept of %d)",
            self.model_type,
            self._device,
            len(self._class_ids) if self._class_ids is not None else len(self._names),
            len(self._names),
        )
        return model

    def _allowed_ids(self) -> list[int] | None:
        """Class ids whose (renamed) name is allowlisted; None when every class is kept."""
        allow = self._settings.classes
        if not allow:
            return None
        ids = [i for i, name in self._names.items() if name in allow]
        if not ids:
            raise DetectorError(
                f"the checkpoint's classes {sorted(set(self._names.values()))} include none of the allowed "
                f"classes {list(allow)}; set TRAFFIC_CLASS_MAP (model.class_map) or TRAFFIC_ALLOWED_CLASSES"
            )
        return sorted(ids)

    def _resolve_weights(self) -> str:
        """A loadable source for the configured weights, refusing downloads unless allowed."""
        weights = self._settings.weights
        path = Path(weights).expanduser()
        if path.suffix in {".yaml", ".yml"} or path.is_file():
            return str(path)
        if self._settings.allow_download:
            return weights
        raise WeightsUnavailable(
            f"YOLO weights {weights!r} not found and downloading is off. Set TRAFFIC_MODEL_NAME "
            "(model.name in model_config.yaml) to a local .pt file, or TRAFFIC_ALLOW_DOWNLOAD=true "
            "(model.allow_download) to let Ultralytics fetch it."
        )


def _box(values: Sequence[float]) -> tuple[float, float, float, float]:
    """A bbox tuple rounded to 0.1 px."""
    x1, y1, x2, y2 = (round(float(v), 1) for v in values)
    return (x1, y1, x2, y2)


def _with_coco_names(names: dict[int, str]) -> dict[int, str]:
    """Give an 80-class model built from an architecture file (names "0".."79") the COCO names."""
    if len(names) != 80 or any(name != str(i) for i, name in names.items()):
        return names
    import yaml
    from ultralytics.utils import ROOT

    with open(ROOT / "cfg" / "datasets" / "coco.yaml", encoding="utf-8") as fh:
        coco = yaml.safe_load(fh)["names"]
    return {i: str(coco[i]) for i in names}


def _pick_device(device: str) -> str:
    """Resolve ``auto`` to the first CUDA device if there is one, else CPU; check CUDA requests."""
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DetectorError(f"device {device!r} requested but CUDA is not available; set TRAFFIC_DEVICE=cpu")
    return "cuda:0" if device == "cuda" else device


def _restrict_ultralytics(*, allow_install: bool) -> None:
    """Stop Ultralytics from pip-installing packages at run time unless downloads are allowed."""
    if allow_install:
        return
    from ultralytics.utils import checks

    checks.AUTOINSTALL = False
