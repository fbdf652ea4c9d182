"""ByteTrack from Roboflow's ``trackers`` package behind ``traffic.tracking.Tracker``: the only module that
imports ``trackers`` or ``supervision``.

Why this one (measured with ``python -m bench.tracking``, docs/DESIGN.md): on generated scenes with
ground truth it kept identities best at the detection rates a camera gets (5 detected frames/s: IDF1
0.93 and no identity switch, against 0.83 and 17 switches for Ultralytics' ByteTrack), it is the
fastest of those measured, and it takes each frame's capture time, so a camera whose frames arrive
unevenly (sampling jitter, frames shed under load) is predicted over the real gap.
"""

from __future__ import annotations

import functools
import io
import pickle
from collections.abc import Sequence
from dataclasses import asdict
from importlib import metadata
from typing import Any

import numpy as np

from traffic.errors import DetectorError, TrackerStateError
from traffic.models import Detection
from traffic.settings import TrackingSettings
from traffic.tracking import TrackedDetection

_BUFFER_RATE = 30.0
"""``trackers`` counts its lost-track buffer in frames of a 30 fps video."""
STATE_FORMAT = 1
"""Version of ``ByteTracker.state``'s layout; a state of another format, library version or settings is not restored."""
_ALLOWED_GLOBALS = {
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.numeric", "_frombuffer"),
    ("traffic.bytetrack", "_kalman_filter"),
    ("traffic.bytetrack", "_tracklet"),
}
_ALLOWED_PACKAGE = "trackers."


def _kalman_filter(dim_x: int, dim_z: int, saved: dict[str, Any]) -> Any:
    """A Kalman filter rebuilt from its ``get_state()`` (the library's own save format)."""
    from trackers.utils.kalman_filter import KalmanFilter

    kf = KalmanFilter(dim_x, dim_z)
    kf.set_state(saved)
    return kf


def _tracklet(estimator: type, state: np.ndarray, covariance: np.ndarray, fields: dict[str, Any]) -> Any:
    """A ByteTrack tracklet rebuilt as the library builds one, then given its filter's state and its counters."""
    from trackers.core.bytetrack.tracklet import ByteTrackTracklet

    tracklet = ByteTrackTracklet(np.zeros(4), estimator)
    tracklet.state_estimator.kf.state = state
    tracklet.state_estimator.kf.state_covariance = covariance
    vars(tracklet).update(fields)
    return tracklet


class _TrackerPickler(pickle.Pickler):
    """Pickles each ByteTrack tracklet as what it learnt: its Kalman state and covariance and its counters.

    The rest of a tracklet (the noise model, the per-step matrices, caches) is what the library builds for
    every new tracklet, or recomputes at the next prediction; leaving it out makes the state about a
    sixth of the bytes. Any other Kalman filter is kept whole through its ``get_state()``.
    """

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is np.ndarray:  # the most frequent object by far, and pickled as usual
            return NotImplemented
        tracklet_type, filter_type = _library_types()
        if kind is tracklet_type:
            kf = obj.state_estimator.kf
            fields = {k: v for k, v in vars(obj).items() if k != "state_estimator"}
            return _tracklet, (type(obj.state_estimator), kf.state, kf.state_covariance, fields)
        if kind is filter_type:
            return _kalman_filter, (obj.dim_x, obj.dim_z, obj.get_state())
        return NotImplemented


@functools.cache
def _library_types() -> tuple[type, type]:
    """The library's tracklet and Kalman filter classes (imported once, on first use)."""
    from trackers.core.bytetrack.tracklet import ByteTrackTracklet
    from trackers.utils.kalman_filter import KalmanFilter

    return ByteTrackTracklet, KalmanFilter


@functools.cache
def _library_version() -> str:
    """The installed ``trackers`` version (read once: importlib.metadata is slow)."""
    return metadata.version("trackers")


class _TrackerUnpickler(pickle.Unpickler):
    """Unpickles only the tracker's own classes and NumPy arrays ("Restricting Globals", Python's pickle docs)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS or (module.startswith(_ALLOWED_PACKAGE) and not name.startswith("_")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a tracker state")


class ByteTracker:
    """One camera's ByteTrack (``trackers.ByteTrackTracker``), fed timestamps so gaps are predicted over."""

    def __init__(self, settings: TrackingSettings) -> None:
        self._settings = settings
        self._fingerprint = (STATE_FORMAT, _library_version(), tuple(sorted(asdict(settings).items())))
        """What a restored state must have been made with: layout, library version, settings."""
        self._tracker: Any = None
        self._classes: dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        """Forget every track; ids start again from the beginning."""
        try:
            import trackers
        except ImportError as exc:
            raise DetectorError("tracking needs the 'trackers' package (pip install trackers)") from exc
        s = self._settings
        self._tracker = trackers.ByteTrackTracker(
            lost_track_buffer=max(1, round(s.lost_track_s * _BUFFER_RATE)),
            track_activation_threshold=s.activation_confidence,
            minimum_consecutive_frames=s.min_frames,
            minimum_iou_threshold=s.min_iou,
            high_conf_det_threshold=s.high_confidence,
        )

    def update(self, detections: Sequence[Detection], timestamp: float) -> list[TrackedDetection]:
        """Each detection with its track id (``None`` while its track is unconfirmed), in input order."""
        import supervision as sv

        if detections:
            found = sv.Detections(
                xyxy=np.array([d.bbox for d in detections], dtype=float),
                confidence=np.array([d.confidence for d in detections], dtype=float),
                class_id=np.array([self._class_id(d.cls) for d in detections], dtype=int),
                data={"index": np.arange(len(detections))},
            )
        else:
            found = sv.Detections.empty()
        tracked = self._tracker.update(found, timestamp=timestamp)
        ids: dict[int, int | None] = {}
        if len(tracked):
            for index, track_id in zip(tracked.data["index"], tracked.tracker_id, strict=True):
                ids[int(index)] = int(track_id) if track_id is not None and track_id >= 0 else None
        return [TrackedDetection(d, ids.get(i)) for i, d in enumerate(detections)]

    def state(self) -> bytes:
        """Everything the tracker knows, to carry it to the next frame on another worker (see ``restore``)."""
        buffer = io.BytesIO()
        _TrackerPickler(buffer, protocol=5).dump((self._fingerprint, self._classes, self._tracker))
        return buffer.getvalue()

    def restore(self, data: bytes) -> None:
        """Continue from ``state()``'s output; ``TrackerStateError`` if it is unreadable or not this tracker's kind.

        Only the tracker's own classes and NumPy arrays are unpickled, so bytes written by anyone who can
        write to Redis cannot name any other callable.
        """
        try:
            fingerprint, classes, tracker = _TrackerUnpickler(io.BytesIO(data)).load()
        except Exception as exc:  # noqa: BLE001 - any unreadable state is a reason to start again
            raise TrackerStateError(f"unreadable tracker state: {exc}") from exc
        if fingerprint != self._fingerprint:
            raise TrackerStateError("tracker state of another version or other settings")
        if not isinstance(tracker, type(self._tracker)) or not isinstance(classes, dict):
            raise TrackerStateError("tracker state of another kind")
        self._tracker, self._classes = tracker, classes

    def _class_id(self, name: str) -> int:
        """A stable small integer per class name (carried through; ByteTrack matches by position alone)."""
        return self._classes.setdefault(name, len(self._classes))
