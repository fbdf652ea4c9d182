"""The message-queue packet reader against the python-socketio version the project pins."""

from __future__ import annotations

import json
import re
import time
from importlib.metadata import version
from pathlib import Path

import pytest
import redis

from infra.emitter import Emitter
from infra.socketio_packets import EmitPacket, read_emit
from traffic import redis_keys

REQUIREMENTS = Path(__file__).resolve().parents[2] / "requirements.txt"


def _pinned(package: str) -> str:
    """The version ``requirements.txt`` pins for ``package``."""
    match = re.search(rf"^{re.escape(package)}==(\S+)$", REQUIREMENTS.read_text(), re.MULTILINE | re.IGNORECASE)
    assert match, f"{package} is not pinned in requirements.txt"
    return match.group(1)


def test_the_installed_python_socketio_is_the_pinned_one() -> None:
    # read_emit knows python-socketio's internal packet shape; a version change must re-run this file.
    assert version("python-socketio") == _pinned("python-socketio")
    assert version("flask-socketio") == _pinned("flask-socketio")


@pytest.mark.integration
def test_a_real_emit_is_read_back_with_event_payload_and_room(redis_client: redis.Redis, redis_url: str) -> None:
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(redis_keys.SOCKETIO_CHANNEL)
    emitter = Emitter(redis_url)
    payload = {"cameraId": 7, "frameId": "f-1", "groups": [{"index": 0}]}
    emitter.to_camera("7", "detection_result", payload)
    emitter.emit("key_alert", {"keyId": "k1"}, room=redis_keys.ALERTS_ROOM)
    received: list[EmitPacket] = []
    for _ in range(50):
        message = pubsub.get_message(timeout=0.1)
        packet = read_emit(message["data"]) if message else None
        if packet is not None:
            received.append(packet)
        if len(received) == 2:
            break
    pubsub.close()
    assert received == [
        EmitPacket("detection_result", payload, redis_keys.camera_room("7"), "/"),
        EmitPacket("key_alert", {"keyId": "k1"}, redis_keys.ALERTS_ROOM, "/"),
    ]


@pytest.mark.integration
def test_a_queued_broadcast_is_the_packet_the_library_publishes(redis_client: redis.Redis, redis_url: str) -> None:
    # Broadcast writes python-socketio's packet itself (to publish it on a pipeline beside the writes it
    # announces): it must be the very packet the library's own emit sends, so every web server reads it.
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(redis_keys.SOCKETIO_CHANNEL)
    heard: list[tuple[str, float]] = []
    emitter = Emitter(redis_url, on_broadcast=lambda stage, age: heard.append((stage, age)))
    payload = {"cameraId": 7, "frameId": "f-1", "assessment": "pending", "groups": [{"index": 0}]}
    emitter.to_camera("7", "detection_result", payload)
    broadcast = emitter.detection_result_broadcast("7", payload, captured_at=time.time() - 2.0)
    assert heard == [], "nothing is recorded before the pipeline ran"
    pipe = redis_client.pipeline(transaction=True)
    pipe.set("beside-the-broadcast", "1")
    broadcast.queue(pipe)
    pipe.execute()
    broadcast.sent()
    raw: list[bytes] = []
    for _ in range(50):
        message = pubsub.get_message(timeout=0.1)
        if message:
            raw.append(message["data"])
        if len(raw) == 2:
            break
    pubsub.close()
    library, queued = (json.loads(r) for r in raw)
    assert queued == library
    assert read_emit(raw[1]) == EmitPacket("detection_result", payload, redis_keys.camera_room("7"), "/")
    assert [stage for stage, _ in heard] == ["fast"] and 2.0 <= heard[0][1] < 10.0


@pytest.mark.parametrize(
    "raw",
    [None, b"", b"not json", b"[1, 2]", b'"emit"', b'{"method": "enter_room"}', b'{"method": "emit", "event": 5}'],
)
def test_anything_but_an_emit_reads_as_none(raw: bytes | None) -> None:
    assert read_emit(raw) is None


def test_an_emit_without_arguments_has_no_data() -> None:
    assert read_emit(b'{"method": "emit", "event": "ping", "room": null}') == EmitPacket("ping", None, None, "/")
