"""The web server's end of the Socket.IO message queue: python-socketio's Redis manager, quicker to come back.

python-socketio's listener doubles its wait after each failed reconnect, up to 60 s, so after a long
Redis outage the web server could stay deaf to workers' broadcasts for up to a minute after Redis
returned. This manager retries at most every ``MAX_RETRY_S``, so broadcasts resume within a few
seconds of Redis coming back. It overrides one internal method of python-socketio (pinned in
requirements.txt; ``tests/web/test_message_queue.py`` measures the recovery against the real thing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import socketio

log = logging.getLogger(__name__)

FIRST_RETRY_S = 0.5
MAX_RETRY_S = 3.0


class ReconnectingRedisManager(socketio.RedisManager):  # type: ignore[misc]
    """``socketio.RedisManager`` whose listener backs off from ``FIRST_RETRY_S`` to at most ``MAX_RETRY_S``."""

    def _redis_listen_with_retries(self) -> Iterator[Any]:
        """Messages from the channel, forever; reconnects after any failure with a capped back-off."""
        retry_s = FIRST_RETRY_S
        while True:
            try:
                self._redis_connect()
                self.pubsub.subscribe(self.channel)
                retry_s = FIRST_RETRY_S
                yield from self.pubsub.listen()
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect, as python-socketio does
                log.warning("Socket.IO message queue lost Redis (%s); retrying in %.1f s", exc, retry_s)
                time.sleep(retry_s)
                retry_s = min(retry_s * 2, MAX_RETRY_S)
