"""Live connections from other sites' pages are refused: same origin by default, configured ones extend it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests
import websocket

from tests.conftest import ServeApp
from traffic.config import load_settings
from web import create_app
from web.auth import origin_allowed

pytestmark = pytest.mark.integration

FOREIGN = "http://evil.example"
FRIEND = "https://wall.example.org"

Serve = Callable[..., str]


@pytest.fixture
def serve(redis_url: str, serve_app: ServeApp) -> Serve:
    def start(**env: str) -> str:
        return serve_app(create_app(load_settings({"REDIS_URL": redis_url, **env})))

    return start


def _handshake(host: str, origin: str | None) -> int:
    """Status of an Engine.IO polling handshake sent with ``origin``."""
    headers = {"Origin": origin} if origin else {}
    return requests.get(f"http://{host}/socket.io/?EIO=4&transport=polling", headers=headers, timeout=5).status_code


def _ws(host: str, origin: str | None) -> websocket.WebSocket:
    """A ``/ws`` connection sent with ``origin`` (None: no Origin header at all)."""
    if origin is None:
        return websocket.create_connection(f"ws://{host}/ws", timeout=5, suppress_origin=True)
    return websocket.create_connection(f"ws://{host}/ws", timeout=5, origin=origin)


def test_socketio_refuses_a_foreign_origin_and_serves_its_own(serve: Serve) -> None:
    host = serve()
    assert _handshake(host, FOREIGN) == 400
    assert _handshake(host, f"http://{host}") == 200
    assert _handshake(host, None) == 200, "clients that are not browser pages send no Origin"


def test_ws_refuses_a_foreign_origin_and_serves_its_own(serve: Serve) -> None:
    host = serve()
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        _ws(host, FOREIGN)
    assert refused.value.status_code == 403
    for origin in (f"http://{host}", None):
        ws = _ws(host, origin)
        assert '"connection_ack"' in ws.recv()
        ws.close()


def test_configured_origins_extend_the_default(serve: Serve) -> None:
    host = serve(TRAFFIC_CORS_ORIGINS=FRIEND)
    assert _handshake(host, FRIEND) == 200 and _handshake(host, f"http://{host}") == 200
    assert _handshake(host, FOREIGN) == 400
    ws = _ws(host, FRIEND)
    assert '"connection_ack"' in ws.recv()
    ws.close()
    with pytest.raises(websocket.WebSocketBadStatusException):
        _ws(host, FOREIGN)


def test_a_wildcard_allows_every_origin(serve: Serve) -> None:
    host = serve(TRAFFIC_CORS_ORIGINS="*")
    assert _handshake(host, FOREIGN) == 200
    _ws(host, FOREIGN).close()


@pytest.mark.parametrize(
    ("origin", "environ", "allowed"),
    [
        ("http://127.0.0.1:5000", {"HTTP_HOST": "127.0.0.1:5000", "wsgi.url_scheme": "http"}, True),
        ("HTTP://LOCALHOST:5000", {"HTTP_HOST": "localhost:5000", "wsgi.url_scheme": "http"}, True),
        ("https://127.0.0.1:5000", {"HTTP_HOST": "127.0.0.1:5000", "wsgi.url_scheme": "http"}, False),
        ("http://127.0.0.1:5001", {"HTTP_HOST": "127.0.0.1:5000", "wsgi.url_scheme": "http"}, False),
        ("http://localhost:5000", {"HTTP_HOST": "127.0.0.1:5000", "wsgi.url_scheme": "http"}, False),
        ("null", {"HTTP_HOST": "127.0.0.1:5000", "wsgi.url_scheme": "http"}, False),
        (
            "https://cams.example",
            {
                "HTTP_HOST": "10.1.1.1:5000",
                "wsgi.url_scheme": "http",
                "HTTP_X_FORWARDED_HOST": "cams.example",
                "HTTP_X_FORWARDED_PROTO": "https",
            },
            True,
        ),
        ("http://a.example", {"wsgi.url_scheme": "http"}, False),
        (None, {}, True),
    ],
)
def test_origin_rule(origin: str | None, environ: dict[str, str], allowed: bool) -> None:
    assert origin_allowed(origin, environ, ()) is allowed
