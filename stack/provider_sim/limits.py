"""Sliding-window rate limits (per-key qps/rpm, per-account rpm/tpm) and the counters of keys and accounts."""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from stack.provider_sim.config import SimConfig, SimKey


class Window:
    """Weighted events of a sliding window, oldest first."""

    def __init__(self) -> None:
        self.events: deque[tuple[float, int]] = deque()
        self.total = 0

    def prune(self, now: float, span: float) -> None:
        """Drop events that left the window ending at ``now``."""
        while self.events and self.events[0][0] <= now - span:
            self.total -= self.events.popleft()[1]

    def over(self, now: float, span: float, capacity: float, weight: int) -> float | None:
        """Seconds until ``weight`` more would fit under ``capacity``; None when it fits now."""
        self.prune(now, span)
        if self.total + weight <= capacity:
            return None
        if weight > capacity:
            return span
        excess = self.total + weight - capacity
        freed = 0
        for at, w in self.events:
            freed += w
            if freed >= excess:
                return max(0.0, at + span - now)
        return span

    def add(self, now: float, weight: int) -> None:
        """Record an accepted event."""
        self.events.append((now, weight))
        self.total += weight


@dataclass
class Counts:
    """Mutable counters of one key or account."""

    requests: int = 0
    accepted: int = 0
    over_limit: int = 0
    tokens: int = 0
    by_status: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return {
            "requests": self.requests,
            "accepted": self.accepted,
            "over_limit": self.over_limit,
            "tokens": self.tokens,
            "by_status": dict(self.by_status),
        }


def qps_capacity(qps: float, window_s: float) -> tuple[float, float]:
    """(requests, seconds) of a qps limit: floor(qps × window) per window, or 1 per 1/qps below 1."""
    if qps <= 0:
        return 0.0, window_s
    per_window = math.floor(qps * window_s + 1e-9)
    if per_window >= 1:
        return float(per_window), window_s
    return 1.0, 1.0 / qps


def check_limits(
    cfg: SimConfig,
    key_windows: dict[str, tuple[Window, Window]],
    account_windows: dict[str, tuple[Window, Window]],
    api_key: str,
    spec: SimKey | None,
    account: str,
    now: float,
    tokens: int,
) -> tuple[str, float] | None:
    """(reason, seconds to wait) for the first limit this request exceeds; records it if none."""
    grace = cfg.window_grace_ms / 1000.0
    qps_win, rpm_win = key_windows.setdefault(api_key, (Window(), Window()))
    arpm_win, tpm_win = account_windows.setdefault(account, (Window(), Window()))
    acct = cfg.accounts.get(account)
    checks: list[tuple[str, Window, float, float, int]] = []
    if spec is not None and spec.qps_limit is not None:
        capacity, span = qps_capacity(spec.qps_limit, cfg.qps_window_s)
        checks.append(("key_qps", qps_win, span, capacity, 1))
    if spec is not None and spec.rpm_limit is not None:
        checks.append(("key_rpm", rpm_win, cfg.rpm_window_s, spec.rpm_limit, 1))
    if acct is not None and acct.rpm_limit is not None:
        checks.append(("account_rpm", arpm_win, cfg.rpm_window_s, acct.rpm_limit, 1))
    if acct is not None and acct.tpm_limit is not None:
        checks.append(("account_tpm", tpm_win, cfg.rpm_window_s, acct.tpm_limit, tokens))
    for reason, window, span, capacity, weight in checks:
        wait = window.over(now, max(1e-3, span - grace), capacity, weight)
        if wait is not None:
            return reason, wait
    qps_win.add(now, 1)
    rpm_win.add(now, 1)
    arpm_win.add(now, 1)
    tpm_win.add(now, tokens)
    return None
