"""The camera URL policy as it applies to clients of the web server (Socket.IO, ``/ws``, REST)."""

from __future__ import annotations

from infra.host_resolver import resolve_host
from traffic.settings import Settings
from traffic.url_policy import Resolver, UrlPolicy, check_camera_url, policy_of


def client_policy(settings: Settings) -> UrlPolicy:
    """The capture policy, with local files only when clients are allowed them too."""
    capture = settings.capture
    return policy_of(capture).with_files(capture.allow_file_sources and settings.server.client_file_sources)


def check_client_url(settings: Settings, url: object, resolve: Resolver = resolve_host) -> str:
    """``url`` if a client may name it as a camera; raises ``CameraError`` (nothing is contacted)."""
    return check_camera_url(url, client_policy(settings), resolve)
