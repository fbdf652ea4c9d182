"""The worker's consumer: Celery's, reconnecting sooner and surviving a broker loss with tasks unacknowledged."""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer

log = logging.getLogger(__name__)

RECONNECT_INTERVALS = {"interval_start": 1.0, "interval_step": 1.0, "interval_max": 2.0}
"""A worker retries a lost broker after 1 s, then every 2 s (kombu's 2 s, 4 s, 6 s … grow to 30 s)."""
STALL_S = 20.0
"""An event loop that has not turned for this long is stalled (it polls for at most 10 s when idle)."""


class LoopWatch:
    """Logs where a thread is when its event loop has stopped turning for ``stall_s`` (once per stall).

    A worker whose event loop is stuck neither consumes nor answers a ping, and no error says why: once
    (a Redis restart drill in CI) an ``llm`` worker noticed the lost broker only about 40 s late. The
    loop ``tick``s on every turn; a daemon thread looks every ``stall_s / 4`` and, when the ticks stop,
    logs the loop thread's stack, so the next such stall shows what it waited on.
    """

    def __init__(self, stall_s: float = STALL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = stall_s
        self._clock = clock
        self._last = clock()
        self._thread_id: int | None = None
        self._reported = False
        self._started = False

    def tick(self) -> None:
        """The loop turned (called by it, on its thread)."""
        self._last = self._clock()
        self._thread_id = threading.get_ident()
        if self._reported:
            self._reported = False
            log.warning("the worker's event loop turns again")

    def pause(self) -> None:
        """The loop stops on purpose (the consumer is connecting): no stall until it turns again."""
        self._thread_id = None

    def check(self) -> str | None:
        """The loop thread's stack when it has stalled and that was not reported yet, else None."""
        stalled = self._clock() - self._last
        if self._reported or stalled < self.stall_s or self._thread_id is None:
            return None
        frame = sys._current_frames().get(self._thread_id)
        if frame is None:
            return None
        self._reported = True
        stack = "".join(traceback.format_stack(frame))
        return f"the worker's event loop has not turned for {stalled:.0f} s; its thread is at:\n{stack}"

    def start(self) -> None:
        """Look from a daemon thread from now on (once per process)."""
        if self._started:
            return
        self._started = True
        threading.Thread(target=self._run, name="loop-watch", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(self.stall_s / 4)
            report = self.check()
            if report is not None:
                log.warning("%s", report)


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

    def register_with_event_loop(self, hub: Any) -> None:
        """Celery's registration, and the loop watch (``LoopWatch``) ticked by every turn of the loop."""
        super().register_with_event_loop(hub)
        watch = _loop_watch()
        hub.on_tick.add(watch.tick)
        watch.start()

    def ensure_connected(self, conn: Any) -> Any:
        """Celery's connection retry loop, with ``RECONNECT_INTERVALS`` between the attempts.

        kombu's default tries 2, 4, 6 … s apart, growing to 30 s: a worker whose Redis came back after
        31 s stayed idle 11 s more, after longer outages up to 30 s. Every process must work again
        within 10 s of Redis returning (tests/integration/test_drills.py).
        """
        conn.ensure_connection = functools.partial(conn.ensure_connection, **RECONNECT_INTERVALS)
        _loop_watch().pause()  # retrying a lost broker is no stall; the errors say why
        return super().ensure_connected(conn)

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        """Tear the lost connection down as Celery does; a failed close must not end the worker."""
        try:
            super().on_connection_error_after_connected(exc)
        except AttributeError as close_error:
            self.connection = None
            log.warning("closing the lost broker connection failed (%r); reconnecting anyway", close_error)


@functools.cache
def _loop_watch() -> LoopWatch:
    """The process's loop watch (the hub outlives a reconnection; its tick is added once: a set)."""
    return LoopWatch()
