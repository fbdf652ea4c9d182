"""The worker's consumer (``workers.consumer``) against a real Redis and kombu's own Redis channel."""

from __future__ import annotations

import logging
import signal
import threading
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


def test_the_fanout_read_after_a_redis_restart_ends_in_an_error_not_a_wait(tmp_path: Path) -> None:
    # kombu reads its pub/sub connection (control broadcasts: ping, shutdown) with redis-py's blocking
    # ``PubSub.parse_response()`` when the event loop reports it readable. After a Redis restart that read
    # fails. With a retry allowed (``retry_on_timeout``), redis-py reconnected and subscribed again inside
    # the read, then read on: the subscription's confirmation here, or, with none due, it waited for the
    # next broadcast with no timeout; and the new socket is one the worker's event loop does not watch (a
    # Redis restart drill in CI: an llm worker's loop stood in that read and answered no ping for 40 s).
    # With the broker options traffic uses, the read fails at once, so Celery's consumer reconnects as for
    # any lost broker.
    from celeryconfig import celery_options
    from traffic.settings import Settings

    with LocalRedis(tmp_path / "redis", persist=True) as server:
        options = celery_options(Settings(redis_url=server.url))
        connection = Connection(server.url, transport_options=options["broker_transport_options"])
        channel: Any = connection.channel()
        pubsub = channel.subclient
        pubsub.subscribe("broadcasts")
        assert pubsub.parse_response()[0] == b"subscribe"
        server.kill(signal.SIGTERM)
        server.start()
        outcome: list[BaseException | object] = []
        reader = threading.Thread(target=lambda: outcome.append(_read(pubsub)), daemon=True)
        reader.start()
        reader.join(5.0)
        assert not reader.is_alive(), "the read waited for a broadcast instead of failing"
        (result,) = outcome
        assert isinstance(result, redis.ConnectionError)
        connection.release()


def _read(pubsub: Any) -> BaseException | object:
    """What kombu's ``_receive_one`` does with the pub/sub connection: its reply, or the error it raised."""
    try:
        return pubsub.parse_response()
    except redis.ConnectionError as exc:
        return exc
