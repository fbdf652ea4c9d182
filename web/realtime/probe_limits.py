"""How many ``check_camera`` probes may run at once: each holds a web thread for up to its timeout."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager


class ProbesBusy(Exception):
    """No probe slot is free (``scope`` is ``"server"`` or ``"client"``)."""

    def __init__(self, scope: str, limit: int) -> None:
        super().__init__(scope, limit)
        self.scope = scope
        self.limit = limit


class ProbeLimiter:
    """At most ``total`` probes at once in this process, and ``per_client`` for one client address."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self._lock = threading.Lock()
        self._running: Counter[str] = Counter()

    @contextmanager
    def slot(self, client: str) -> Iterator[None]:
        """Hold one slot while the probe runs; raises ``ProbesBusy`` at once when none is free (no queueing)."""
        with self._lock:
            if self._running[client] >= self.per_client:
                raise ProbesBusy("client", self.per_client)
            if sum(self._running.values()) >= self.total:
                raise ProbesBusy("server", self.total)
            self._running[client] += 1
        try:
            yield
        finally:
            with self._lock:
                self._running[client] -= 1
                if self._running[client] <= 0:
                    del self._running[client]
