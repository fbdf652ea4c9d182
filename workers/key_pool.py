"""A per-process API key pool: round robin over usable keys, cooling rate-limited keys, dropping rejected ones."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from traffic.settings import KeyPoolSettings, KeySpec

log = logging.getLogger(__name__)


class LocalKeyPool:
    """Hands out keys one call at a time; state lives in this process only."""

    def __init__(self, settings: KeyPoolSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._keys = [k for k in settings.keys if k.enabled]
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._next = 0
        self._cool_until: dict[str, float] = {}
        self._strikes: dict[str, int] = {}
        self._rejected: set[str] = set()

    @property
    def configured(self) -> bool:
        """True when any key is configured at all."""
        return bool(self._keys)

    def acquire(self) -> KeySpec | None:
        """The next usable key (not rejected, not cooling), or None."""
        with self._lock:
            now = self._clock()
            for offset in range(len(self._keys)):
                key = self._keys[(self._next + offset) % len(self._keys)]
                if key.key_id in self._rejected or self._cool_until.get(key.key_id, 0.0) > now:
                    continue
                self._next = (self._next + offset + 1) % len(self._keys)
                return key
            return None

    def wait_hint(self) -> float | None:
        """Seconds until a cooling key frees up; None when no key can ever be used again."""
        with self._lock:
            now = self._clock()
            waits = [
                max(0.0, self._cool_until.get(k.key_id, 0.0) - now)
                for k in self._keys
                if k.key_id not in self._rejected
            ]
            return min(waits) if waits else None

    def rate_limited(self, key: KeySpec, retry_after: float | None) -> None:
        """Cool ``key``: the provider's Retry-After, else an adaptive cooldown growing on repeats."""
        with self._lock:
            strikes = self._strikes.get(key.key_id, 0) + 1
            self._strikes[key.key_id] = strikes
            adaptive = min(self._settings.default_cooldown_s * 2 ** (strikes - 1), self._settings.max_cooldown_s)
            wait = retry_after if retry_after is not None else adaptive
            self._cool_until[key.key_id] = self._clock() + wait
        log.warning("key %s rate limited; cooling %.1f s", key.key_id, wait)

    def rejected(self, key: KeySpec) -> None:
        """Stop using ``key`` (invalid, forbidden or in arrears)."""
        with self._lock:
            self._rejected.add(key.key_id)
        log.error("key %s rejected by the provider; disabled in this process", key.key_id)

    def succeeded(self, key: KeySpec) -> None:
        """Forget ``key``'s rate-limit strikes."""
        with self._lock:
            self._strikes.pop(key.key_id, None)
