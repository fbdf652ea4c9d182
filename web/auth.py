"""Optional shared-token authentication and the CORS allowlist, for REST and Socket.IO alike."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from flask import Flask, Request, current_app, jsonify, request

from traffic.settings import Settings

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
        if token_matches(request_token(request), expected):
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
