"""Ultralytics YOLO backend of the detector interface: the only module that imports ultralytics, torch,
onnxruntime and openvino.

The model runs on the inference backend of ``traffic.detector_backends``: PyTorch itself, or an
export (ONNX Runtime, OpenVINO, TensorRT) made by Ultralytics' exporter, cached by
``traffic.model_export`` and loaded back through Ultralytics. The runtime's CPU threads are set from
``DetectorSettings.threads`` before the first frame.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from traffic.detector_backends import EXPORT_FORMAT, choose_backend
from traffic.errors import ConfigError, DetectorError, WeightsUnavailable
from traffic.imaging import Image
from traffic.model_export import CachedModel, ExportSpec, cached_export
from traffic.models import Detection
from traffic.settings import DetectorSettings

log = logging.getLogger(__name__)

WARM_UP_SHAPE = (720, 1280, 3)
"""A blank frame predicted once at load: the runtime is built (and its threads set) before real frames."""


class UltralyticsDetector:
    """A YOLO checkpoint (``.pt``) or architecture (``.yaml``, random weights) run by Ultralytics."""

    def __init__(self, settings: DetectorSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._model: Any = None
        self._device = "cpu"
        self._backend = ""
        self._artefact: CachedModel | None = None
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
    def backend(self) -> str:
        """The inference backend in use (valid after ``load``): ``torch``, ``onnx``, ``openvino``, ``tensorrt``."""
        return self._backend

    @property
    def artefact(self) -> CachedModel | None:
        """The exported model loaded (None for ``torch``), and whether this process exported it."""
        return self._artefact

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
        """Resolve weights, pick device and backend, export if needed, load, map class names, warm up."""
        source = self._resolve_weights()
        _restrict_ultralytics(allow_install=self._settings.allow_download)
        from ultralytics import YOLO

        model = _open(YOLO, source, self._settings.weights)
        self._device = _pick_device(self._settings.device)
        requested = self._settings.backend
        if requested == "auto" and Path(source).suffix in {".yaml", ".yml"}:
            requested = "torch"  # an architecture file has fresh random weights: nothing worth exporting
        self._backend = choose_backend(requested, cuda=self._device.startswith("cuda"), installed=_installed)
        raw_names = _with_coco_names({int(k): str(v) for k, v in dict(model.names).items()})
        renames = dict(self._settings.class_map)
        self._names = {i: renames.get(name, name) for i, name in raw_names.items()}
        self._class_ids = self._allowed_ids()  # before any export: a wrong class setting fails at once
        if self._backend != "torch":
            weights = Path(str(getattr(model, "ckpt_path", None) or source))
            self._artefact = self._export(weights)
            with _quiet_ultralytics():
                model = _open(YOLO, str(self._artefact.path), self._settings.weights)
        with _quiet_ultralytics():
            self._warm_up(model)
        log.info(
            "loaded YOLO %s on %s with %s, %s threads (%d classes kept of %d)",
            self.model_type,
            self._device,
            self._backend,
            self._settings.threads or "default",
            len(self._class_ids) if self._class_ids is not None else len(self._names),
            len(self._names),
        )
        return model

    def _export(self, weights: Path) -> CachedModel:
        """The weights exported for the chosen backend (from the cache, or exported now)."""
        s = self._settings
        if not s.cache_dir:
            raise ConfigError("detector.cache_dir (TRAFFIC_MODEL_CACHE) must be set to export the model")
        if not weights.is_file():
            raise WeightsUnavailable(f"cannot export {s.weights!r}: it is not a local file")
        import ultralytics

        cuda = self._device.startswith("cuda")
        spec = ExportSpec(
            backend=self._backend,
            imgsz=s.imgsz,
            half=s.half and cuda,
            dynamic=True,
            # A dynamic TensorRT engine accepts batches up to the one it was built for; the others any.
            batch=resolve_batch(s) if self._backend == "tensorrt" else 1,
            exporter=f"ultralytics{ultralytics.__version__}",
        )
        device = self._device.split(":", 1)[1] if cuda and ":" in self._device else ("0" if cuda else "cpu")
        exporter = functools.partial(_export, device=device)
        artefact = cached_export(weights, spec, Path(s.cache_dir).expanduser(), exporter)
        log.info("%s model %s: %s", self._backend, "exported" if artefact.exported else "from the cache", artefact.path)
        return artefact

    def _warm_up(self, model: Any) -> None:
        """Predict one blank frame, so the runtime exists, then give it (and torch) the configured CPU threads."""
        s = self._settings
        blank = np.zeros(WARM_UP_SHAPE, dtype=np.uint8)
        try:
            model.predict(blank, imgsz=s.imgsz, device=self._device, verbose=False)
        except Exception as exc:  # noqa: BLE001 - a runtime that cannot run is a load failure
            raise DetectorError(f"the {self._backend} runtime failed its first prediction: {exc}") from exc
        # After the first prediction: Ultralytics' device set-up resets torch to min(8, CPUs - 1) threads.
        _set_torch_threads(s.threads)
        if s.threads > 0 and not self._device.startswith("cuda") and self._artefact is not None:
            runtime = model.predictor.model.backend
            if self._backend == "onnx":
                _onnx_threads(runtime, self._artefact.path, s.threads)
            elif self._backend == "openvino":
                _openvino_threads(runtime, self._artefact.path, s.threads)

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


def _open(yolo: Any, source: str, configured: str) -> Any:
    """``YOLO(source)``, a load failure as ``WeightsUnavailable``."""
    try:
        return yolo(source, task="detect")
    except Exception as exc:  # noqa: BLE001 - missing/corrupt weights and offline downloads alike
        raise WeightsUnavailable(
            f"cannot load YOLO weights {configured!r}: {exc}. "
            "Set TRAFFIC_MODEL_NAME (model.name in model_config.yaml) to a local checkpoint."
        ) from exc


def _export(weights: Path, spec: ExportSpec, *, device: str) -> Path:
    """Ultralytics' exporter run on ``weights``; the artefact it wrote beside them."""
    from ultralytics import YOLO

    options: dict[str, Any] = {"format": EXPORT_FORMAT[spec.backend], "imgsz": spec.imgsz, "dynamic": spec.dynamic}
    options |= {"batch": spec.batch, "device": device, "verbose": False}
    if spec.half:
        options["quantize"] = 16
    if spec.backend in ("onnx", "tensorrt"):
        options["simplify"] = True
    with _quiet_ultralytics():
        return Path(YOLO(str(weights), task="detect").export(**options))


@contextlib.contextmanager
def _quiet_ultralytics() -> Iterator[None]:
    """Ultralytics' own logger (it prints to stdout) held at WARNING: the export's chatter stays out of worker logs."""
    from ultralytics.utils import LOGGER

    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)
    try:
        yield
    finally:
        LOGGER.setLevel(level)


def _installed(package: str) -> bool:
    """Whether ``package`` can be imported here."""
    return importlib.util.find_spec(package) is not None


def _set_torch_threads(threads: int) -> None:
    """Torch's intra-op threads (pre-processing and the torch backend), when configured."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def _onnx_threads(runtime: Any, path: Path, threads: int) -> None:
    """Rebuild ONNX Runtime's CPU session with ``threads`` intra-op threads (Ultralytics takes its default)."""
    import onnxruntime

    if runtime.session.get_providers()[0] != "CPUExecutionProvider":
        return
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    runtime.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _openvino_threads(runtime: Any, path: Path, threads: int) -> None:
    """Compile the OpenVINO model again for the CPU with ``threads`` inference threads."""
    import openvino

    core = openvino.Core()
    xml = next(path.glob("*.xml")) if path.is_dir() else path
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    runtime.compile_model = functools.partial(core.compile_model, device_name="CPU", config=config)
    runtime.ov_compiled_model = runtime.compile_model(core.read_model(xml))
    precision = runtime.ov_compiled_model.get_property("INFERENCE_PRECISION_HINT")
    log.info("openvino on the CPU: %d threads, %s precision (OpenVINO's default for this CPU)", threads, precision)


def runtime_threads(detector: UltralyticsDetector) -> int | None:
    """The CPU threads the loaded runtime was given (None when it cannot say): for tests and benchmarks."""
    detector.load()
    runtime = detector._model.predictor.model.backend  # noqa: SLF001 - one adapter reading its own model
    if detector.backend == "onnx":
        return int(runtime.session.get_session_options().intra_op_num_threads)
    if detector.backend == "openvino":
        return int(runtime.ov_compiled_model.get_property("INFERENCE_NUM_THREADS"))
    if detector.backend == "torch":
        import torch

        return int(torch.get_num_threads())
    return None


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


AUTO_GPU_BATCH = 8
"""Frames per predict call on a CUDA device unless ``detector.batch`` says otherwise."""
AUTO_CPU_BATCH = {"openvino": 4}
"""Frames per predict call on a CPU, by backend, unless ``detector.batch`` says otherwise (else 1).

Measured on the 2-core CPU (``bench.detector``'s batching table, frames of 8 cameras): OpenVINO does
about a third more frames/s at batch 4 than at batch 1 (38 against 50-52); ONNX Runtime about 10 %
and PyTorch within the noise, where a batch only delays its first frame's result.
"""


def resolve_batch(settings: DetectorSettings, *, installed: Callable[[str], bool] | None = None) -> int:
    """The most frames one predict call takes: ``detector.batch``, else 8 on a CUDA device and on a CPU
    what its backend gains from (``AUTO_CPU_BATCH``; 1 when the backend cannot be resolved here)."""
    if settings.batch > 0:
        return settings.batch
    if settings.device == "auto":
        import torch

        cuda = torch.cuda.is_available()
    else:
        cuda = settings.device.startswith("cuda")
    if cuda:
        return AUTO_GPU_BATCH
    try:
        backend = choose_backend(settings.backend, cuda=False, installed=installed or _installed)
    except DetectorError:  # the detector's load reports it, with the package to install
        return 1
    return AUTO_CPU_BATCH.get(backend, 1)


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
