"""Process start-up shared by every entry point: settings, logging with secret redaction, library env."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping

from traffic.config import load_settings
from traffic.settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s"


class RedactSecrets(logging.Filter):
    """Replaces any configured secret that slips into a log record with ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if len(s) >= 6)

    def filter(self, record: logging.LogRecord) -> bool:
        """Render the record's message once, masking secrets; always keeps the record."""
        if not self._secrets:
            return True
        message = record.getMessage()
        masked = message
        for secret in self._secrets:
            masked = masked.replace(secret, "***")
        if masked != message or record.args:
            record.msg, record.args = masked, None
        if record.exc_text:
            for secret in self._secrets:
                record.exc_text = record.exc_text.replace(secret, "***")
        return True


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value held in ``settings``."""
    found = [key.api_key for key in settings.keys.keys]
    if settings.server.auth_token:
        found.append(settings.server.auth_token)
    return found


def configure_logging(settings: Settings, *, stream: object = None) -> None:
    """Root logging at the configured level, with the secret filter on every handler."""
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    install_secret_filter(settings, [handler])
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())


def install_secret_filter(settings: Settings, handlers: Iterable[logging.Handler] | None = None) -> None:
    """Attach the redacting filter to ``handlers`` (default: the root logger's)."""
    redact = RedactSecrets(secrets_of(settings))
    for handler in handlers if handlers is not None else logging.getLogger().handlers:
        handler.addFilter(redact)


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
