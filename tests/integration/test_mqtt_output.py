"""Incident events and traffic stats to a real Mosquitto (Debian's, started here on a free loopback port, with a
password) from a real Redis: published in order to each camera's topic and received by a paho subscriber;
kept waiting in the outbox while the broker is down and delivered when it is back; stats retained; the status
topic ``online`` and, through the broker's last will, ``offline`` when the publishing process dies."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from infra import outbox
from infra.mqtt_client import MqttPublisher, Outgoing, parse_url
from stack.harness import running_stack, wait_until
from stack.mosquitto_server import LocalMosquitto, TlsFiles
from traffic import redis_keys
from traffic.analysis import FrameAnalysis
from traffic.analytics import MotionEvent, MotionUpdate
from traffic.config import load_settings
from traffic.models import Detection
from workers.context import WorkerContext
from workers.motion import publish_motion, send_owed_stats
from workers.mqtt_output import publish_stats, publish_waiting

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
USER = "traffic"
PASSWORD = "mqtt-pa55 w/rd%"
"""URL-special characters on purpose (percent-encoded in the URL); no ':' (``mosquitto_passwd -U``)."""


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """A paho client subscribed to ``topic`` (QoS 1), re-subscribing after each reconnection."""

    def __init__(self, broker: LocalMosquitto, topic: str, *, ca_file: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._messages: list[Received] = []
        self._subscribed = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}")
        self._client.username_pw_set(broker.username, broker.password)
        if ca_file is not None:
            self._client.tls_set(ca_certs=str(ca_file))
        self._client.reconnect_delay_set(1, 2)
        self._client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_disconnect = lambda *_: self._subscribed.clear()
        self._client.on_message = self._on_message
        self._client.connect_async("127.0.0.1", broker.port)
        self._client.loop_start()

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self._messages.append(Received(message.topic, bytes(message.payload), message.qos, bool(message.retain)))

    def wait_subscribed(self, timeout: float = 30.0) -> Subscriber:
        wait_until(self._subscribed.is_set, timeout, "the subscription")
        return self

    def messages(self, suffix: str = "") -> list[Received]:
        with self._lock:
            return [m for m in self._messages if m.topic.endswith(suffix)]

    def wait_for(self, count: int, suffix: str = "", timeout: float = 30.0) -> list[Received]:
        """The messages (on topics ending with ``suffix``) once there are at least ``count``."""
        wait_until(lambda: len(self.messages(suffix)) >= count, timeout, f"{count} message(s) on *{suffix}")
        return self.messages(suffix)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def broker() -> Iterator[LocalMosquitto]:
    with LocalMosquitto(username=USER, password=PASSWORD) as server:
        yield server


@pytest.fixture
def subscribers() -> Iterator[list[Subscriber]]:
    made: list[Subscriber] = []
    yield made
    for subscriber in made:
        subscriber.close()


def _subscribe(made: list[Subscriber], broker: LocalMosquitto, topic: str, **kwargs: Any) -> Subscriber:
    subscriber = Subscriber(broker, topic, **kwargs)
    made.append(subscriber)
    return subscriber.wait_subscribed()


def _context(redis_url: str, broker: LocalMosquitto, **env: str) -> WorkerContext:
    return WorkerContext(load_settings({"REDIS_URL": redis_url, "TRAFFIC_MQTT_URL": broker.url, **env}))


@pytest.fixture
def ctx(redis_url: str, broker: LocalMosquitto) -> Iterator[WorkerContext]:
    context = _context(redis_url, broker)
    yield context
    if context.mqtt is not None:
        context.mqtt.close()
    context.redis.close()


def _incident(number: int, camera_id: str) -> dict[str, Any]:
    return {"incidentId": number, "cameraId": camera_id, "kind": "near_miss", "level": "high", "description": "近"}


def _drain(ctx: WorkerContext) -> None:
    """Run the beat's job until the outbox is empty."""

    def drained() -> bool:
        publish_waiting(ctx)
        return outbox.backlog(ctx.redis, outbox.MQTT) == 0

    wait_until(drained, 30, "the drain")


def test_waiting_events_are_published_in_order_to_their_cameras_topics(
    ctx: WorkerContext, broker: LocalMosquitto, subscribers: list[Subscriber]
) -> None:
    subscriber = _subscribe(subscribers, broker, "traffic/cameras/+/incidents")
    cameras = ["cam-1", "gate/2+#", "cam-1", "gate/2+#", "cam-1"]
    for number, camera_id in enumerate(cameras):
        event = "incident" if number < 2 else "incident_updated"
        outbox.push(ctx.redis, [outbox.MQTT], event, _incident(number, camera_id))
        if number == 2:  # an entry that is not an event, and one whose incident names no camera: dropped
            ctx.redis.rpush(redis_keys.outbox(outbox.MQTT), b"not json")
            outbox.push(ctx.redis, [outbox.MQTT], "incident", {"incidentId": 99})

    assert publish_waiting(ctx) == 5
    assert outbox.backlog(ctx.redis, outbox.MQTT) == 0
    received = subscriber.wait_for(5)
    assert [m.json()["incident"]["incidentId"] for m in received] == [0, 1, 2, 3, 4]
    assert [m.topic for m in received] == [
        "traffic/cameras/cam-1/incidents" if c == "cam-1" else "traffic/cameras/gate%2F2%2B%23/incidents"
        for c in cameras
    ]
    first = received[0].json()
    assert set(first) == {"event", "incident", "at"} and first["event"] == "incident"
    assert first["incident"] == _incident(0, "cam-1")  # UTF-8 text as-is
    assert received[2].json()["event"] == "incident_updated"
    assert {(m.qos, m.retain) for m in received} == {(1, False)}
    assert publish_waiting(ctx) == 0


def test_events_wait_while_the_broker_is_down_and_follow_when_it_is_back(
    ctx: WorkerContext, broker: LocalMosquitto, subscribers: list[Subscriber], caplog: pytest.LogCaptureFixture
) -> None:
    outbox.push(ctx.redis, [outbox.MQTT], "incident", _incident(0, "cam-1"))
    assert publish_waiting(ctx) == 1
    publisher = ctx.mqtt
    assert publisher is not None and publisher.connected

    broker.stop(signal.SIGKILL)
    wait_until(lambda: not publisher.connected, 30, "the publisher to notice")
    caplog.set_level(logging.DEBUG, logger="infra.mqtt_client")
    for number in range(1, 6):
        outbox.push(ctx.redis, [outbox.MQTT], "incident", _incident(number, "cam-1"))
        assert publish_waiting(ctx) == 0
    assert outbox.backlog(ctx.redis, outbox.MQTT) == 5, "nothing is dropped while the broker is away"
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) <= 1, "one warning per outage"

    broker.start()
    subscriber = _subscribe(subscribers, broker, "traffic/cameras/+/incidents")
    wait_until(lambda: publisher.connected, 60, "the publisher to reconnect (back-off)")
    _drain(ctx)
    received = subscriber.wait_for(5)
    assert [m.json()["incident"]["incidentId"] for m in received] == [1, 2, 3, 4, 5]
    assert PASSWORD not in caplog.text and "pa55" not in caplog.text


def _analysis() -> FrameAnalysis:
    return FrameAnalysis(
        (1280, 720), (Detection("person", 0.8, (410.0, 520.0, 450.0, 615.0), 7),), (), tracking_epoch=4
    )


def _update(at: float) -> MotionUpdate:
    crossing = MotionEvent("line_crossing", at, (7,), ("person",), where="kerb", direction="in")
    return MotionUpdate(events=(crossing,), tracks=(), occupancy=(), active_near_misses=(), unit="px")


def test_stats_are_retained_for_a_subscriber_that_comes_later(
    ctx: WorkerContext, broker: LocalMosquitto, subscribers: list[Subscriber]
) -> None:
    early = _subscribe(subscribers, broker, "traffic/cameras/+/stats")
    assert ctx.mqtt is not None and ctx.mqtt.wait_connected(30)
    publish_motion(ctx, "cam-s", "cam-s", "f1", 100.0, _analysis(), _update(100.0))  # due: sent at once
    publish_motion(ctx, "cam-s", "cam-s", "f2", 100.2, _analysis(), _update(100.2))  # owed: the beat sends it
    wait_until(lambda: send_owed_stats(ctx) == 1, 30, "the owed stats")
    sent = early.wait_for(2, "/stats")
    assert [m.topic for m in sent] == ["traffic/cameras/cam-s/stats"] * 2
    assert sent[0].json() != sent[1].json(), "the second one is newer"
    latest = ctx.traffic_stats.live("cam-s")

    late = _subscribe(subscribers, broker, "traffic/cameras/+/stats")
    (retained,) = late.wait_for(1, "/stats")
    assert retained.retain and retained.qos == 0
    assert retained.json() == latest == sent[-1].json()


def test_stats_are_skipped_quietly_while_the_broker_is_away(
    ctx: WorkerContext, broker: LocalMosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    assert ctx.mqtt is not None and ctx.mqtt.wait_connected(30)
    assert publish_stats(ctx, "cam-q", {"cameraId": "cam-q"})
    broker.stop()
    wait_until(lambda: ctx.mqtt is not None and not ctx.mqtt.connected, 30, "the publisher to notice")
    caplog.clear()  # the lost connection was logged, once
    caplog.set_level(logging.INFO)
    assert not any(publish_stats(ctx, "cam-q", {"cameraId": "cam-q", "n": n}) for n in range(50))
    assert [r for r in caplog.records if r.name.startswith(("infra", "workers"))] == [], "no log line per frame"


def test_stats_can_be_turned_off(redis_url: str, broker: LocalMosquitto) -> None:
    context = _context(redis_url, broker, TRAFFIC_MQTT_STATS="false")
    assert not publish_stats(context, "cam-q", {"cameraId": "cam-q"})
    assert context.mqtt is not None and not context.mqtt.connected, "nothing connected for nothing to send"


def test_a_refused_login_is_logged_once_without_the_password(
    redis_url: str, broker: LocalMosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="infra.mqtt_client")
    wrong = broker.url.replace("pa55", "pa66")
    context = WorkerContext(load_settings({"REDIS_URL": redis_url, "TRAFFIC_MQTT_URL": wrong}))
    outbox.push(context.redis, [outbox.MQTT], "incident", _incident(0, "cam-1"))
    try:
        assert publish_waiting(context) == 0
        assert outbox.backlog(context.redis, outbox.MQTT) == 1
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "refused the connection" in warnings[0] and f":{broker.port}" in warnings[0]
        assert "pa66" not in caplog.text and "pa55" not in caplog.text and USER not in caplog.text
    finally:
        assert context.mqtt is not None
        context.mqtt.close()
        context.redis.close()


_OTHER_PROCESS = """
import os, sys, time
from infra.mqtt_client import MqttPublisher, parse_url
publisher = MqttPublisher(parse_url(os.environ["MQTT_URL"]), client_id="other", status_topic="traffic/status")
assert publisher.wait_connected(30)
print("connected", flush=True)
time.sleep(600)
"""


def test_the_status_stays_online_while_another_publisher_lives(
    broker: LocalMosquitto, subscribers: list[Subscriber]
) -> None:
    status = _subscribe(subscribers, broker, "traffic/status")
    here = MqttPublisher(parse_url(broker.url), client_id="here", status_topic="traffic/status")
    env = {**os.environ, "MQTT_URL": broker.url, "PYTHONPATH": str(ROOT)}
    other = subprocess.Popen([sys.executable, "-c", _OTHER_PROCESS], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert here.wait_connected(30)
        assert other.stdout is not None and other.stdout.readline().strip() == "connected"
        wait_until(lambda: [m.payload for m in status.messages()][-1:] == [b"online"], 30, "online")
        seen = len(status.messages())
        other.send_signal(signal.SIGKILL)
        other.wait(30)
        # The broker sends the dead one's will; the live one answers it.
        wait_until(lambda: [m.payload for m in status.messages()[seen:]][-2:] == [b"offline", b"online"], 30, "heal")
        here.close()  # the last publisher leaves: offline
        wait_until(lambda: status.messages()[-1].payload == b"offline", 30, "offline")
    finally:
        other.kill()
        other.wait(30)
        here.close()


def test_through_the_worker_and_beat_processes(
    tmp_path: Path, broker: LocalMosquitto, subscribers: list[Subscriber]
) -> None:
    """The beat's job on a real default worker drains the outbox; the status is online while it runs, and the
    broker publishes its last will when the worker is killed."""
    incidents = _subscribe(subscribers, broker, "traffic/cameras/+/incidents")
    status = _subscribe(subscribers, broker, "traffic/status")
    with running_stack(tmp_path, None, "default", "beat", TRAFFIC_MQTT_URL=broker.url) as stack:
        for number in range(5):
            outbox.push(stack.redis, [outbox.MQTT], "incident", _incident(number, f"cam-{number % 2}"))
        received = incidents.wait_for(5, timeout=120)
        assert [m.json()["incident"]["incidentId"] for m in received] == [0, 1, 2, 3, 4]
        assert [m.topic.split("/")[2] for m in received] == ["cam-0", "cam-1", "cam-0", "cam-1", "cam-0"]
        wait_until(lambda: outbox.backlog(stack.redis, outbox.MQTT) == 0, 30, "the outbox to empty")
        wait_until(lambda: [m.payload for m in status.messages()][-1:] == [b"online"], 30, "online")
        assert PASSWORD not in stack.group.tail("default", 400)

        stack.group.kill("default")
        wait_until(lambda: status.messages()[-1].payload == b"offline", 60, "the last will")


def _certificates(directory: Path) -> tuple[Path, TlsFiles]:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it (openssl)."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed for the TLS test (apt-get install openssl)"

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True, timeout=60)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=traffic test CA")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "1", "-extfile", "san.ext")  # fmt: skip
    return directory / "ca.pem", TlsFiles(directory / "server.pem", directory / "server.key")


def test_mqtts_verifies_the_brokers_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, subscribers: list[Subscriber]
) -> None:
    ca, files = _certificates(tmp_path)
    with LocalMosquitto(username=USER, password=PASSWORD, tls=files) as broker:
        assert broker.url.startswith("mqtts://")
        untrusted = MqttPublisher(parse_url(broker.url), client_id="untrusted", status_topic="traffic/status")
        try:
            assert not untrusted.wait_connected(30), "a certificate of an unknown CA is refused"
        finally:
            untrusted.close()

        monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # what the system's CA store would hold
        subscriber = _subscribe(subscribers, broker, "traffic/#", ca_file=ca)
        publisher = MqttPublisher(parse_url(broker.url), client_id="trusted", status_topic="traffic/status")
        try:
            assert publisher.wait_connected(30)
            message = Outgoing("traffic/cameras/cam-t/incidents", b"{}", qos=1)
            assert publisher.publish_in_order([message], 30) == 1
            assert [m.topic for m in subscriber.wait_for(1, "/incidents")] == [message.topic]
        finally:
            publisher.close()
