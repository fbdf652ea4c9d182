"""The worker's consumer: Celery's, reconnecting sooner and surviving a broker loss with tasks unacknowledged."""

from __future__ import annotations

import functools
import logging
from typing import Any

from celery.worker.consumer import Consumer

log = logging.getLogger(__name__)

RECONNECT_INTERVALS = {"interval_start": 1.0, "interval_step": 1.0, "interval_max": 2.0}
"""A worker retries a lost broker after 1 s, then every 2 s (kombu's 2 s, 4 s, 6 s … grow to 30 s)."""


class ReconnectingConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer, reconnecting sooner and surviving a broker loss with unacknowledged messages.

    Measured (tests/integration/test_drills.py, celery/kombu 5.7.0, Redis SIGKILLed while an ``llm``
    task runs): after a connection loss Celery first ``collect()``s the connection, which detaches its
    kombu transport, then ``close()``s it; closing the channel tries to restore the unacked message,
    builds a Redis client from the detached transport and raises ``AttributeError`` (``'NoneType'
    object has no attribute 'hostname'``). That is no connection error, so the worker logged
    "Unrecoverable error" and stopped consuming for good. Redis is down at that moment anyway, so the
    message could not be restored then: it stays in Redis's unacked set and comes back after
    ``visibility_timeout``, as after a worker crash. Here the failed close is logged and the consumer
    goes on to reconnect.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The same detached transport also fails an acknowledgement that was still due when the connection
        # was lost (a task ending as Redis went down): kombu raises AttributeError from the ack, which
        # reached the event loop and stopped the worker ("Unrecoverable error", seen once in a Redis restart
        # drill). As a connection error it is logged ("Couldn't ack"), the message stays unacknowledged in
        # Redis and comes back after ``visibility_timeout``; one raised in the consumer's loop reconnects.
        self.connection_errors = (*self.connection_errors, AttributeError)  # type: ignore[has-type]

    def ensure_connected(self, conn: Any) -> Any:
        """Celery's connection retry loop, with ``RECONNECT_INTERVALS`` between the attempts.

        kombu's default tries 2, 4, 6 … s apart, growing to 30 s: a worker whose Redis came back after
        31 s stayed idle 11 s more, after longer outages up to 30 s. Every process must work again
        within 10 s of Redis returning (tests/integration/test_drills.py).
        """
        conn.ensure_connection = functools.partial(conn.ensure_connection, **RECONNECT_INTERVALS)
        return super().ensure_connected(conn)

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        """Tear the lost connection down as Celery does; a failed close must not end the worker."""
        try:
            super().on_connection_error_after_connected(exc)
        except AttributeError as close_error:
            self.connection = None
            log.warning("closing the lost broker connection failed (%r); reconnecting anyway", close_error)
