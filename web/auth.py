"""Shared-token authentication, the dashboard's session cookie, origin checks and the exposure rule.

The token travels in an ``Authorization: Bearer`` header (REST, ``/metrics``), the Socket.IO ``auth``
payload, or ``?token=`` (old ``/ws`` clients). The dashboard never puts it in a URL: it trades it once
(``POST /api/session``) for an HttpOnly, SameSite=Strict cookie that every later request carries.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Mapping
from typing import Any

from flask import Flask, Request, current_app, jsonify, request

from traffic.settings import Settings

SESSION_PATH = "/api/session"
"""Where the dashboard trades the token for its cookie (reachable without one, of course)."""
PUBLIC_PATHS = ("/api/health/", "/static/", "/api/openapi.json", "/docs")
"""Paths served without a token: liveness, the dashboard's assets, the API description."""


def settings() -> Settings:
    """The app's settings."""
    value: Settings = current_app.config["TRAFFIC_SETTINGS"]
    return value


def token_matches(given: object, expected: str | None) -> bool:
    """True when no token is configured, or ``given`` equals it (constant-time)."""
    if not expected:
        return True
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


SESSION_COOKIE = "traffic_session"


def session_value(token: str) -> str:
    """The cookie value that stands for ``token`` (derived from it, so the cookie is not the token itself)."""
    return hmac.new(token.encode(), b"traffic dashboard session", hashlib.sha256).hexdigest()


def session_valid(req: Request, expected: str | None) -> bool:
    """Whether the request carries the session cookie of the configured token."""
    cookie = req.cookies.get(SESSION_COOKIE)
    return bool(expected and cookie) and hmac.compare_digest(str(cookie), session_value(str(expected)))


def authorised(req: Request, expected: str | None, auth: Any = None) -> bool:
    """True when no token is configured, or the request proves it (token in any accepted place, or the cookie)."""
    if not expected:
        return True
    given = (socket_token(auth, req), request_token(req))
    return any(token and token_matches(token, expected) for token in given) or session_valid(req, expected)


def is_loopback_host(host: str) -> bool:
    """Whether a bind address accepts loopback connections only (``127.x``, ``::1``, ``localhost``)."""
    name = host.strip("[]").lower()
    if name in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def exposure_error(bind_hosts: list[str], config: Settings) -> str | None:
    """Why the server must not start on these addresses (non-loopback, no token, not trusted); None if it may."""
    server = config.server
    exposed = [host for host in bind_hosts if not is_loopback_host(host)]
    if not exposed or server.auth_token or server.trusted_network:
        return None
    return (
        f"refusing to serve on {', '.join(exposed)} without a token: anyone who can reach it could add cameras "
        "and watch every feed. Set TRAFFIC_AUTH_TOKEN, bind to 127.0.0.1 (TRAFFIC_SERVER_HOST), or set "
        "TRAFFIC_TRUSTED_NETWORK=true if every host that can reach it is trusted."
    )


def request_token(req: Request) -> str | None:
    """The token of a REST request: ``Authorization: Bearer …``, ``X-Auth-Token`` or ``?token=``."""
    header = req.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return req.headers.get("X-Auth-Token") or req.args.get("token")


def socket_token(auth: Any, req: Request) -> str | None:
    """The token of a Socket.IO connection: the ``auth`` payload's ``token`` or ``?token=``."""
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        return str(auth["token"])
    return req.args.get("token")


def own_origins(environ: Mapping[str, Any]) -> set[str]:
    """The origins this request's page would have if the server itself served it (``scheme://host``)."""
    host, scheme = environ.get("HTTP_HOST"), environ.get("wsgi.url_scheme", "http")
    if not host:
        return set()
    found = {f"{scheme}://{host}".lower()}
    forwarded_host = environ.get("HTTP_X_FORWARDED_HOST")
    forwarded_proto = environ.get("HTTP_X_FORWARDED_PROTO")
    if forwarded_host or forwarded_proto:  # behind a proxy, as python-engineio reads it
        proto = str(forwarded_proto or scheme).split(",")[0].strip()
        found.add(f"{proto}://{str(forwarded_host or host).split(',')[0].strip()}".lower())
    return found


def origin_allowed(origin: str | None, environ: Mapping[str, Any], configured: tuple[str, ...]) -> bool:
    """Whether a browser page at ``origin`` may open a live connection: same origin, or a configured one.

    No ``Origin`` header means no browser page is asking (command-line and server clients); ``*`` in
    ``configured`` allows every origin.
    """
    if not origin:
        return True
    if "*" in configured or origin in configured:
        return True
    return origin.lower() in own_origins(environ)


def install(app: Flask) -> None:
    """Require the token on every non-public HTTP path; answer CORS for allowlisted origins only."""

    @app.before_request
    def _require_token() -> Any:
        if request.method == "OPTIONS" or request.path == "/" or request.path.startswith(PUBLIC_PATHS):
            return None
        expected = settings().server.auth_token
        if request.path == SESSION_PATH or authorised(request, expected):
            return None
        response = jsonify({"code": 401, "msg": "missing or wrong token", "data": {"error": "unauthorized"}})
        response.status_code = 401
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.after_request
    def _cors(response: Any) -> Any:
        origin = request.headers.get("Origin")
        allowed = settings().server.cors_origins
        if origin and ("*" in allowed or origin in allowed):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, X-Auth-Token"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
        return response


def session_state(req: Request, expected: str | None) -> dict[str, bool]:
    """What the dashboard needs to know before it connects: is a token needed, is this request signed in."""
    return {"authRequired": bool(expected), "authenticated": authorised(req, expected)}


def set_session(response: Any, token: str, *, secure: bool) -> None:
    """Put the session cookie of ``token`` on ``response`` (HttpOnly, SameSite=Strict)."""
    response.set_cookie(SESSION_COOKIE, session_value(token), httponly=True, samesite="Strict", secure=secure, path="/")


def clear_session(response: Any) -> None:
    """Remove the session cookie."""
    response.delete_cookie(SESSION_COOKIE, path="/", samesite="Strict")
