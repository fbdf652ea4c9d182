"""The token stays out of URLs (a session cookie for the dashboard), and an exposed server needs a token."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import websocket
from flask import Flask

from stack.redis_server import free_port
from tests import offline_dns
from tests.conftest import ServeApp
from traffic.config import load_settings
from web import create_app, socketio
from web.auth import SESSION_COOKIE, exposure_error, is_loopback_host, session_value

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "wall-token-0123456789"


@pytest.fixture
def app(redis_url: str) -> Iterator[Flask]:
    app = create_app(
        load_settings({"REDIS_URL": redis_url, "TRAFFIC_AUTH_TOKEN": TOKEN}),
        message_queue=False,
        resolver=offline_dns.resolve,
    )
    app.config["TESTING"] = True
    yield app
    app.extensions["traffic_redis"].close()


def test_the_dashboard_trades_the_token_for_an_http_only_cookie(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/api/session").get_json()["data"] == {"authRequired": True, "authenticated": False}
    assert client.get("/api/cameras").status_code == 401
    assert client.post("/api/session", json={"token": "wrong"}).status_code == 401
    assert client.post("/api/session", json={}).status_code == 400, "a malformed body is a bad request"
    login = client.post("/api/session", json={"token": TOKEN})
    assert login.status_code == 200
    cookie = login.headers["Set-Cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert TOKEN not in cookie, "the cookie is derived from the token, not the token"
    assert client.get("/api/cameras").status_code == 200, "the cookie authenticates REST"
    assert client.get("/api/session").get_json()["data"] == {"authRequired": True, "authenticated": True}
    io = socketio.test_client(app, flask_test_client=client)
    assert io.is_connected(), "the cookie authenticates Socket.IO"
    io.disconnect()
    assert client.delete("/api/session").status_code == 200
    assert client.get("/api/cameras").status_code == 401
    assert not socketio.test_client(app, flask_test_client=client).is_connected()


def test_without_a_token_configured_the_session_says_so(redis_url: str) -> None:
    app = create_app(load_settings({"REDIS_URL": redis_url}), message_queue=False, resolver=offline_dns.resolve)
    client = app.test_client()
    assert client.get("/api/session").get_json()["data"] == {"authRequired": False, "authenticated": True}
    assert "Set-Cookie" not in client.post("/api/session", json={"token": ""}).headers


@pytest.mark.integration
def test_ws_accepts_the_session_cookie(app: Flask, serve_app: ServeApp) -> None:
    url = f"ws://{serve_app(app)}/ws"
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(url, timeout=5)
    ws = websocket.create_connection(url, timeout=5, cookie=f"{SESSION_COOKIE}={session_value(TOKEN)}")
    assert '"connection_ack"' in ws.recv()
    ws.close()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.1.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("example.org", False)],
)  # fmt: skip
def test_loopback_binds(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_the_exposure_rule() -> None:
    open_ = load_settings({})
    assert exposure_error(["127.0.0.1"], open_) is None
    refusal = exposure_error(["127.0.0.1", "0.0.0.0"], open_)
    assert refusal and "0.0.0.0" in refusal and "TRAFFIC_AUTH_TOKEN" in refusal and "TRAFFIC_TRUSTED_NETWORK" in refusal
    assert exposure_error(["0.0.0.0"], load_settings({"TRAFFIC_AUTH_TOKEN": TOKEN})) is None
    assert exposure_error(["0.0.0.0"], load_settings({"TRAFFIC_TRUSTED_NETWORK": "true"})) is None


@pytest.mark.integration
@pytest.mark.parametrize("server", ["python", "gunicorn"])
def test_an_exposed_server_without_a_token_refuses_to_start(redis_url: str, server: str) -> None:
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "TRAFFIC_SERVER_HOST": "0.0.0.0", "TRAFFIC_SERVER_PORT": str(port)}
    env.pop("TRAFFIC_AUTH_TOKEN", None)
    command = (
        [sys.executable, "-m", "web"]
        if server == "python"
        else [str(Path(sys.executable).parent / "gunicorn"), "-w", "1", "-b", f"0.0.0.0:{port}", "web.wsgi:app"]
    )
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "refusing to serve on 0.0.0.0 without a token" in done.stderr
