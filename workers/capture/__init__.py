"""The capture service: camera leases (``leases``), one reader per camera (``reader``), the service (``service``).

Run it with ``python -m workers.capture``.
"""

from __future__ import annotations

from workers.capture.service import CaptureService, SendTask
from workers.capture.timings import CaptureTimings

__all__ = ["CaptureService", "CaptureTimings", "SendTask"]
