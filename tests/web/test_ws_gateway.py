"""The plain-WebSocket ``/ws`` gateway for old clients, on a real threaded server and a real Redis."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import websocket
from werkzeug.serving import make_server

from infra.emitter import Emitter
from tests import offline_dns
from traffic.config import load_settings
from web import create_app
from web.__main__ import NoDelayRequestHandler
from web.realtime.protocol import MAX_MESSAGE_BYTES, UNREAD_MESSAGE_BYTES

pytestmark = pytest.mark.integration


@pytest.fixture
def server_url(redis_url: str) -> Iterator[str]:
    app = create_app(load_settings({"REDIS_URL": redis_url}), resolver=offline_dns.resolve)
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=NoDelayRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"ws://127.0.0.1:{server.server_port}/ws"
    server.shutdown()


def receive(ws: websocket.WebSocket) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.recv())
    return message


def test_old_clients_get_the_same_protocol_as_type_data_messages(server_url: str, redis_url: str) -> None:
    ws = websocket.create_connection(server_url, timeout=5)
    assert receive(ws)["type"] == "connection_ack"
    ws.send(json.dumps({"type": "ping", "data": {}}))
    assert receive(ws)["type"] == "pong"

    ws.send(json.dumps({"type": "subscribe", "data": {"cameraIds": [1]}}))
    emitter = Emitter(redis_url)
    for _ in range(50):  # the relay subscribes on first join; emit until it is listening
        emitter.to_camera("1", "detection_result", {"cameraId": 1, "frameId": "f1"})
        ws.settimeout(0.2)
        try:
            message = receive(ws)
            break
        except websocket.WebSocketTimeoutException:
            continue
    else:
        raise AssertionError("no broadcast reached the gateway client")
    assert message == {"type": "detection_result", "data": {"cameraId": 1, "frameId": "f1"}}
    ws.close()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_message"),
        (json.dumps({"data": {}}), "invalid_message"),
        (json.dumps({"type": "fly", "data": {}}), "unknown_event"),
        (json.dumps({"type": "subscribe", "data": {"cameraIds": "x"}}), "invalid_payload"),
        (json.dumps({"type": "start_stream", "data": {"cameraId": 1, "rtspUrl": "gopher://x"}}), "scheme_not_allowed"),
    ],
)
def test_bad_messages_get_an_error_and_the_connection_survives(server_url: str, raw: str, code: str) -> None:
    ws = websocket.create_connection(server_url, timeout=5)
    receive(ws)
    ws.send(raw)
    reply = receive(ws)
    assert reply["type"] == "error" and reply["data"]["code"] == code and reply["data"]["message"]
    ws.send(json.dumps({"type": "ping"}))
    assert receive(ws)["type"] == "pong"
    ws.close()


def test_a_configured_token_is_required(redis_url: str) -> None:
    app = create_app(
        load_settings({"REDIS_URL": redis_url, "TRAFFIC_AUTH_TOKEN": "s3cret-token-xyz"}), resolver=offline_dns.resolve
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(websocket.WebSocketBadStatusException):
            websocket.create_connection(f"ws://127.0.0.1:{server.server_port}/ws", timeout=5)
        ws = websocket.create_connection(f"ws://127.0.0.1:{server.server_port}/ws?token=s3cret-token-xyz", timeout=5)
        assert receive(ws)["type"] == "connection_ack"
        ws.close()
    finally:
        server.shutdown()


def _ping_of(size: int, pad: str) -> str:
    """A ``ping`` message of exactly ``size`` bytes in UTF-8, padded with ``pad`` (then "x")."""
    empty = json.dumps({"type": "ping", "data": {"pad": ""}}, ensure_ascii=False)
    count, rest = divmod(size - len(empty), len(pad.encode()))
    return json.dumps({"type": "ping", "data": {"pad": pad * count + "x" * rest}}, ensure_ascii=False)


@pytest.mark.parametrize("size", [MAX_MESSAGE_BYTES + 1, 300 * 1024, UNREAD_MESSAGE_BYTES - 100])
def test_a_message_over_the_limit_gets_an_error_then_close_1009(server_url: str, size: int) -> None:
    ws = websocket.create_connection(server_url, timeout=5)
    receive(ws)
    ws.send(_ping_of(size, "x"))
    reply = receive(ws)
    assert reply == {
        "type": "error",
        "data": {
            "code": "message_too_large",
            "message": f"messages may be at most {MAX_MESSAGE_BYTES} bytes; closing the connection",
            "limit": MAX_MESSAGE_BYTES,
        },
    }
    opcode, frame = ws.recv_data_frame(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert int.from_bytes(frame.data[:2], "big") == 1009
    ws.close()


def test_a_message_at_the_limit_is_served(server_url: str) -> None:
    ws = websocket.create_connection(server_url, timeout=5)
    receive(ws)
    message = _ping_of(MAX_MESSAGE_BYTES, "é")  # two bytes each in UTF-8: the limit counts bytes
    assert len(message.encode()) == MAX_MESSAGE_BYTES
    ws.send(message)
    reply = receive(ws)
    assert reply["type"] == "pong", reply
    ws.close()


def test_a_message_too_large_to_read_closes_with_1009_at_once(server_url: str) -> None:
    ws = websocket.create_connection(server_url, timeout=5)
    receive(ws)
    try:
        ws.send("x" * (UNREAD_MESSAGE_BYTES + 1024))
    except (BrokenPipeError, ConnectionResetError, websocket.WebSocketConnectionClosedException):
        return  # closed while we were still sending: also right
    opcode, frame = ws.recv_data_frame(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE and int.from_bytes(frame.data[:2], "big") == 1009
