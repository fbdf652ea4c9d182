"""Timings of the capture service: leases, registry re-reads, reconnect backoff, staleness."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CaptureTimings:
    """Lease, reconcile and reconnect timings (the defaults suit production; tests shorten them)."""

    lease_s: float = 10.0
    renew_s: float = 3.0
    reconcile_s: float = 2.0
    """Fallback re-read of the registry, in case a pub/sub message was missed."""
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 30.0
    stale_after_s: float | None = None
    """An online camera with no new frame for this long is reported offline (default max(10 s, 3 intervals))."""
