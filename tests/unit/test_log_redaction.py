"""Secrets never reach a log line: messages, arguments, tracebacks and URL passwords are masked."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from infra.runtime import configure_logging, redact, secrets_of
from traffic.settings import KeyPoolSettings, KeySpec, ServerSettings, Settings

API_KEY = "sk-live-0123456789abcdef"
TOKEN = "dashboard-token-42"


@pytest.fixture
def settings() -> Settings:
    return Settings(
        redis_url="redis://:r3dis-pa55word@cache.internal:6379/0",
        keys=KeyPoolSettings(keys=(KeySpec(key_id="k1", api_key=API_KEY),)),
        server=ServerSettings(auth_token=TOKEN),
    )


@pytest.fixture
def output(settings: Settings) -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging(settings, stream=stream)
    yield stream
    root.handlers[:], level = saved
    root.setLevel(level)


def test_an_exception_whose_message_holds_a_key_is_masked_in_the_traceback(output: io.StringIO) -> None:
    try:
        raise RuntimeError(f"provider said: invalid api key {API_KEY}")
    except RuntimeError:
        logging.getLogger("traffic.test").exception("call failed")
    text = output.getvalue()
    assert "Traceback" in text and "RuntimeError: provider said: invalid api key ***" in text
    assert API_KEY not in text


def test_messages_and_arguments_are_masked(output: io.StringIO) -> None:
    log = logging.getLogger("traffic.test")
    log.warning("key %s with token %s", API_KEY, TOKEN)
    log.error("connecting to redis://:r3dis-pa55word@cache.internal:6379/0 failed")
    log.error("camera http://viewer:hunter22@10.0.0.5/snap.jpg offline")
    text = output.getvalue()
    for secret in (API_KEY, TOKEN, "r3dis-pa55word", "hunter22"):
        assert secret not in text
    assert "redis://:***@cache.internal:6379/0" in text and "http://viewer:***@10.0.0.5/snap.jpg" in text


def test_the_redis_password_counts_as_a_secret(settings: Settings) -> None:
    assert "r3dis-pa55word" in secrets_of(settings)
    assert secrets_of(Settings(redis_url="redis://127.0.0.1:6379/0")) == []


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("redis://:pw@host/0", "redis://:***@host/0"),
        ("rediss://user:p%40ss@host:6380", "rediss://user:***@host:6380"),
        ("rtsp://admin:12345@cam.local:554/stream", "rtsp://admin:***@cam.local:554/stream"),
        ("http://host/path?x=1", "http://host/path?x=1"),
        ("user:pw@host without a scheme", "user:pw@host without a scheme"),
    ],
)
def test_url_passwords(text: str, masked: str) -> None:
    assert redact(text) == masked


def test_flower_passwords_count_as_secrets() -> None:
    settings = Settings(server=ServerSettings(flower_auth="ops:fl0wer-pass-1,audit:fl0wer-pass-2"))
    found = secrets_of(settings)
    assert "fl0wer-pass-1" in found and "fl0wer-pass-2" in found
    assert "fl0wer-pass-2" not in redact("login audit:fl0wer-pass-2 ok", found)


def test_webhook_secrets_url_tokens_and_other_url_passwords_count_as_secrets() -> None:
    from traffic.settings import IncidentSettings, MqttSettings, WebhookSettings, WebhookSubscription

    hook = WebhookSubscription("ops", "https://hooks.example.com/in?token=t0ken-in-query", "whsec-0123456789abcdef")
    settings = Settings(
        incidents=IncidentSettings(database_url="postgresql+psycopg://traffic:db-pa55word@db/traffic"),
        mqtt=MqttSettings(url="mqtt://pub:mqtt-pa55word@broker:1883"),
        webhooks=WebhookSettings(subscriptions=(hook,)),
    )
    found = secrets_of(settings)
    assert {"whsec-0123456789abcdef", "token=t0ken-in-query", "db-pa55word", "mqtt-pa55word"} <= set(found)
    assert "t0ken" not in redact('POST /in?token=t0ken-in-query HTTP/1.1" 500', found)
