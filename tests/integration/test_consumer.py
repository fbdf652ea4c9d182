"""The worker's consumer (``workers.consumer``) against a real Redis and kombu's own Redis channel."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection, Consumer, Producer, Queue

from stack.redis_server import LocalRedis
from workers.consumer import ReconnectingConsumer

pytestmark = pytest.mark.integration


def test_an_ack_due_when_the_connection_was_lost_is_logged_and_the_message_comes_back_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with LocalRedis(tmp_path / "redis") as server:
        app = Celery("consumer-test", broker=server.url)
        worker = ReconnectingConsumer(
            lambda *args: None, app=app, hostname="test@host", controller=SimpleNamespace(use_eventloop=False)
        )
        connection = Connection(server.url)
        channel: Any = connection.channel()
        queue = Queue("jobs", channel=channel)
        queue.declare()
        Producer(channel).publish({"n": 1}, routing_key="jobs")
        received: list[Any] = []
        Consumer(channel, [queue], callbacks=[lambda body, message: received.append(message)]).consume()
        connection.drain_events(timeout=5)
        (message,) = received
        # What Celery's teardown of a lost connection leaves the channel with: no transport to connect through.
        channel._pool = None
        channel.connection.client = None
        with pytest.raises(AttributeError):
            message.ack()  # kombu's own error here: no connection error, so it used to stop the worker

        with caplog.at_level(logging.CRITICAL, logger="test"):
            message.ack_log_error(logging.getLogger("test"), worker.connection_errors)

        assert "Couldn't ack" in caplog.text
        assert not message.acknowledged
        # Still unacknowledged in Redis: restored after the visibility timeout, as after a worker crash.
        assert redis.Redis.from_url(server.url).hlen("unacked") == 1
        channel.connection.client = connection
        connection.release()
