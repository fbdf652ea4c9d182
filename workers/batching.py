"""Batching on the ``gpu`` queue: celery-batches' buffer sized from the settings, and Flower's task events.

A detector worker buffers up to ``detector.batch`` x ``detector.pipeline`` ``detect_frame`` messages and
hands them to the task at once: as soon as nothing more waits in the queue, else whatever came within
``detector.batch_wait_ms`` of the first (so an idle system stays at batch size 1, without waiting); the
task runs them as ``pipeline`` predicts of up to ``batch`` frames (``workers.detection``). Celery only
delivers that many unacknowledged messages to a worker whose prefetch count allows it, so a node that
consumes the ``gpu`` queue gets a prefetch multiplier to match (``BatchSizing``, a worker bootstep). The
frames themselves are taken when the model is free for them, so a prefetched message never holds an
old frame (docs/DESIGN.md, "Why celery-batches" and "Why the detector worker can pipeline its predicts").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from celery import bootsteps
from celery_batches import Batches

from infra import celery_names

log = logging.getLogger(__name__)

MIN_WAIT_S = 0.001
"""celery-batches flushes on a repeating timer: never a zero period."""


def consumes_gpu(queues: Iterable[str] | None) -> bool:
    """Whether a worker consuming ``queues`` serves the ``gpu`` queue (none named: every queue)."""
    names = {str(q).strip() for q in queues or ()}
    return not names or celery_names.GPU_QUEUE in names


def prefetch_multiplier(batch: int, concurrency: int, current: int) -> int:
    """The prefetch multiplier that lets a node buffer ``batch`` messages (never lower than ``current``)."""
    return max(current, -(-batch // max(1, concurrency)))


class DetectorBatches(Batches):  # type: ignore[misc]
    """celery-batches' buffer that also flushes as soon as nothing more waits in the ``gpu`` queue.

    celery-batches flushes when ``flush_every`` messages are buffered or on its repeating timer; a lone
    frame on an idle system would wait the timer's whole period. Here each received message is followed
    by one ``LLEN`` of the queue (on a connection of its own, not the consumer's): when it is empty, the
    worker has every message it is going to get soon, so the batch starts at once. The timer stays as the
    bound on the wait when Redis cannot say (another worker took the rest, a failed read).
    """

    abstract = True

    def Strategy(self, task: Any, app: Any, consumer: Any) -> Callable[..., None]:  # noqa: N802 - Celery's name
        """celery-batches' message handler, then the early flush."""
        handler = super().Strategy(task, app, consumer)
        queue = celery_names.GPU_QUEUE

        def on_message(*args: Any, **kwargs: Any) -> None:
            handler(*args, **kwargs)
            if self._buffer.qsize() and _queue_empty(queue):
                self._do_flush()

        return on_message


def _queue_empty(queue: str) -> bool:
    """Whether nothing waits in ``queue`` (False when Redis cannot say: the timer flushes then)."""
    from workers.context import worker_context

    try:
        return int(worker_context().redis.llen(queue)) == 0
    except Exception as exc:  # noqa: BLE001 - the timer still flushes the batch
        log.debug("could not read the length of %s: %s", queue, exc)
        return False


class BatchSizing(bootsteps.Step):  # type: ignore[misc]
    """Sizes ``detect_frame``'s buffer from ``detector.batch``/``pipeline``/``batch_wait_ms``, and the node's prefetch.

    A worker bootstep: it runs as the worker starts, after the command line was read and before the
    consumer (which reads the prefetch multiplier) is built. A node that does not serve the ``gpu``
    queue keeps batch size 1 and its prefetch.
    """

    name = "traffic.batch-sizing"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        consume_from = getattr(worker.app.amqp.queues, "consume_from", None) or {}
        if not consumes_gpu(consume_from):
            return
        from workers.context import worker_context

        ctx = worker_context()
        settings = ctx.settings.detector
        batch = ctx.predict_batch  # resolved once per process: the task cuts its predicts by the same size
        buffered = batch * max(1, settings.pipeline)
        task = worker.app.tasks[celery_names.DETECT_FRAME]
        task.flush_every = buffered
        task.flush_interval = max(MIN_WAIT_S, settings.batch_wait_ms / 1000.0)
        concurrency = int(worker.concurrency or 1)
        current = int(worker.prefetch_multiplier or 1)
        worker.prefetch_multiplier = prefetch_multiplier(buffered, concurrency, current)
        log.info(
            "detector batches: up to %d frame(s) a predict, %d predict(s) lined up, waiting at most %g ms for "
            "more; prefetch %d",
            batch,
            max(1, settings.pipeline),
            settings.batch_wait_ms,
            worker.prefetch_multiplier * concurrency,
        )


class TaskEvents:
    """Flower's events for the messages of one batch, sent once it has ended, in one message: a ``task-started``
    per message (stamped when the batch began), then its ``task-succeeded`` (or ``task-failed``).

    Not while the batch's predict runs: on a 2-core CPU the publish beside it made the predict 2-3 ms slower
    (docs/DESIGN.md, "Why Flower's events of a batch go out once it has ended")."""

    def __init__(self, app: Any, requests: Sequence[Any]) -> None:
        self._app = app
        self._requests = list(requests)
        self._enabled = bool(app.conf.worker_send_task_events) and bool(requests)
        self._hostname = getattr(requests[0], "hostname", None) if requests else None
        self._began = time.time()
        self._results: list[Any] = []

    def report(self, outcomes: Sequence[Any]) -> None:
        """The batch's outcomes, one per message in order (the ``result`` of each ``task-succeeded``)."""
        self._results.extend(outcomes)

    def ended(self, exc: BaseException | None) -> None:
        """Send every message's ``task-started`` and closing event in one message."""
        events = [("task-started", {"uuid": r.id, "timestamp": self._began}) for r in self._requests]
        if exc is not None:
            failed = {"exception": repr(exc), "traceback": ""}
            events += [("task-failed", {"uuid": r.id, **failed}) for r in self._requests]
        else:
            runtime = time.time() - self._began
            results = [repr(r) for r in self._results]
            results += [""] * (len(self._requests) - len(results))
            events += [
                ("task-succeeded", {"uuid": r.id, "result": result, "runtime": runtime})
                for r, result in zip(self._requests, results, strict=False)
            ]
        _send(self._app, self._enabled, self._hostname, events)


@contextmanager
def task_events(app: Any, requests: Sequence[Any]) -> Iterator[TaskEvents]:
    """Send Flower's ``task-started`` and ``task-succeeded``/``task-failed`` events for each request of a batch.

    celery-batches runs one task for the whole batch and sends no per-message events; without these a
    ``detect_frame`` sent to the queue would never show as started or done in Flower.
    """
    events = TaskEvents(app, requests)
    try:
        yield events
    except Exception as exc:
        events.ended(exc)
        raise
    events.ended(None)


def _send(app: Any, enabled: bool, hostname: str | None, events: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Publish a batch's task events as one message (a list, as Celery's own consumer buffers them: Flower's
    receiver reads each); an events failure never fails the frames."""
    if not enabled or not events:
        return
    try:
        with app.amqp.producer_pool.acquire(block=True) as producer:
            dispatcher = app.events.Dispatcher(
                producer.connection,
                hostname,
                True,
                producer.channel,
                buffer_group=("task",),
                buffer_limit=len(events) + 1,
            )
            try:
                for event_type, fields in events:
                    dispatcher.send(event_type, **fields)
                dispatcher.flush(errors=False)
            finally:
                dispatcher.close()
    except Exception as exc:  # noqa: BLE001 - Flower's view must not take the detector down
        log.warning("task events not sent: %s", exc)
