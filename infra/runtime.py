"""Process start-up shared by every entry point: settings, logging with secret redaction, library env."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from urllib.parse import unquote, urlsplit

from traffic.config import load_settings
from traffic.settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s"


URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:@/\s]*:)(?P<password>[^@/\s]+)@")
"""A password in a URL's user info (``redis://:pw@host``, ``http://user:pw@cam``)."""


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every configured secret and every password in a URL replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return URL_PASSWORD.sub(r"\g<head>***@", text)


class RedactingFormatter(logging.Formatter):
    """Formats a record (message, traceback and stack alike), then masks secrets in the finished text.

    Masking after formatting is what catches an API key in an exception's message: a filter runs
    before the traceback is rendered and never sees it.
    """

    def __init__(self, fmt: str, secrets: Iterable[str]) -> None:
        super().__init__(fmt)
        self._secrets = tuple(sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True))

    def format(self, record: logging.LogRecord) -> str:
        """The record as text, secrets masked."""
        return redact(super().format(record), self._secrets)


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value held in ``settings``."""
    found = [key.api_key for key in settings.keys.keys]
    if settings.server.auth_token:
        found.append(settings.server.auth_token)
    if settings.server.flower_auth:
        for pair in settings.server.flower_auth.split(","):
            _, _, flower_password = pair.partition(":")
            found.extend(secret for secret in (pair.strip(), flower_password.strip()) if secret)
    for url in (settings.redis_url, settings.incidents.database_url, settings.mqtt.url):
        password = urlsplit(url).password if url else None
        if password:
            found.append(unquote(password))
    for hook in settings.webhooks.subscriptions:
        found.append(hook.secret)
        # A receiver's path or query often carries a token (urllib3 logs both at DEBUG).
        parts = urlsplit(hook.url)
        found.extend(part for part in (parts.path, parts.query) if len(part) >= 8)
    return found


def configure_logging(settings: Settings, *, stream: object = None) -> None:
    """Root logging at the configured level, through the secret-masking formatter."""
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(RedactingFormatter(LOG_FORMAT, secrets_of(settings)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())


def configure_libraries(settings: Settings) -> None:
    """Keep Ultralytics offline and quiet unless downloads are allowed; call before importing it."""
    if not settings.detector.allow_download:
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_VERBOSE", "false")


def bootstrap(environ: Mapping[str, str] | None = None, *, configure_log: bool = True) -> Settings:
    """Load settings from the environment and set up this process; the one call an entry point makes."""
    settings = load_settings(os.environ if environ is None else environ)
    configure_libraries(settings)
    if configure_log:
        configure_logging(settings)
    return settings
