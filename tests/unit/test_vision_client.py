"""VisionClient against the real provider simulator over loopback HTTP."""

from __future__ import annotations

import base64
import json
import logging
import socket
import time
import traceback
from collections.abc import Iterator
from email.utils import formatdate

import pytest

from stack.provider_sim import ProviderSimulator, SimConfig, SimKey
from traffic.errors import (
    BadModelReply,
    ConfigError,
    KeyRejected,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from traffic.vision_client import Completion, VisionClient, parse_retry_after, scrub

KEY = "sk-test-good-0123456789abcdef"
SLOW_KEY = "sk-test-slow-0123456789abcdef"
REJECTED = "sk-test-dead-0123456789abcdef"
ARREARS = "sk-test-owes-0123456789abcdef"
UNKNOWN = "sk-test-none-0123456789abcdef"
IMAGE = b"\xff\xd8\xff\xc0\x00\x11\x08\x00\xa8\x01\x18\x03" + bytes(range(64))
"""A JPEG start with an SOF0 header saying 280x168, then filler: enough for the simulator."""


def _config(**changes: object) -> SimConfig:
    base = SimConfig(
        keys={KEY: SimKey(key_id="good"), SLOW_KEY: SimKey(key_id="slow", rpm_limit=1)},
        rejected_keys=frozenset({REJECTED}),
        arrears_keys=frozenset({ARREARS}),
        hang_s=2.0,
    )
    return base.updated(changes)


@pytest.fixture
def sim() -> Iterator[ProviderSimulator]:
    with ProviderSimulator(_config()) as running:
        yield running


@pytest.fixture
def client(sim: ProviderSimulator) -> Iterator[VisionClient]:
    with VisionClient(sim.base_url, "qwen-vl-plus", timeout_s=2.0) as vision:
        yield vision


def _ask(client: VisionClient, key: str = KEY) -> Completion:
    return client.complete(key, system="You are a traffic safety analyst.", user="Assess group 1.", image_jpeg=IMAGE)


def test_success_returns_text_usage_and_sends_data_uri(sim: ProviderSimulator, client: VisionClient) -> None:
    completion = _ask(client)

    verdict = json.loads(completion.text)
    assert verdict["riskLevel"] in ("none", "low", "medium", "high")
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens == 60
    assert completion.model == "qwen-vl-plus"
    assert completion.request_id is not None and completion.request_id.startswith("sim-")
    assert completion.finish_reason == "stop"
    assert completion.latency_s > 0
    body = sim.last_request()
    assert body is not None
    assert body["model"] == "qwen-vl-plus"
    assert body["max_tokens"] == 400
    assert "response_format" not in body
    system, user = body["messages"]
    assert system == {"role": "system", "content": "You are a traffic safety analyst."}
    assert user["role"] == "user"
    image_part, text_part = user["content"]
    assert image_part == {
        "type": "image_url",
        "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(IMAGE).decode()},
    }
    assert text_part == {"type": "text", "text": "Assess group 1."}
    assert sim.recorded()[-1]["path"] == "/v1/chat/completions"


def test_content_as_list_of_parts_is_joined(sim: ProviderSimulator, client: VisionClient) -> None:
    sim.update(content_parts=True)
    completion = _ask(client)
    assert json.loads(completion.text)["riskLevel"] in ("none", "low", "medium", "high")


def test_rate_limited_carries_retry_after_seconds(client: VisionClient) -> None:
    _ask(client, SLOW_KEY)
    with pytest.raises(RateLimited) as info:
        _ask(client, SLOW_KEY)
    assert info.value.status == 429
    assert info.value.retry_after == 60.0
    assert "Throttling.RateQuota" in str(info.value)


def test_rate_limited_retry_after_http_date_and_missing(sim: ProviderSimulator, client: VisionClient) -> None:
    sim.update(retry_after_style="http-date")
    _ask(client, SLOW_KEY)
    with pytest.raises(RateLimited) as info:
        _ask(client, SLOW_KEY)
    assert info.value.retry_after is not None and 55.0 <= info.value.retry_after <= 61.0
    sim.update(retry_after_style="none")
    with pytest.raises(RateLimited) as info:
        _ask(client, SLOW_KEY)
    assert info.value.retry_after is None


@pytest.mark.parametrize(("key", "status"), [(UNKNOWN, 401), (REJECTED, 401), (ARREARS, 400)])
def test_unusable_keys_are_rejected(client: VisionClient, key: str, status: int) -> None:
    with pytest.raises(KeyRejected) as info:
        _ask(client, key)
    assert info.value.status == status


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_unavailable(sim: ProviderSimulator, client: VisionClient, status: int) -> None:
    sim.script(status)
    with pytest.raises(ProviderUnavailable) as info:
        _ask(client)
    assert info.value.status == status


def test_other_4xx_is_a_plain_provider_error(sim: ProviderSimulator, client: VisionClient) -> None:
    sim.script(400)
    with pytest.raises(ProviderError) as info:
        _ask(client)
    assert type(info.value) is ProviderError
    assert info.value.status == 400
    assert "InvalidParameter" in str(info.value)


def test_timeout_is_unavailable(sim: ProviderSimulator) -> None:
    sim.script("timeout")
    with VisionClient(sim.base_url, "qwen-vl-plus", timeout_s=0.3) as fast:
        started = time.monotonic()
        with pytest.raises(ProviderUnavailable) as info:
            _ask(fast)
    assert time.monotonic() - started < 1.5
    assert "timed out" in str(info.value)


def test_per_call_timeout_overrides_the_client_default(sim: ProviderSimulator, client: VisionClient) -> None:
    sim.script("timeout")
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable):
        client.complete(KEY, system="s", user="u", image_jpeg=IMAGE, timeout_s=0.2)
    assert time.monotonic() - started < 1.0


def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with VisionClient(f"http://127.0.0.1:{port}/v1", "qwen-vl-plus", timeout_s=0.5) as closed:
        with pytest.raises(ProviderUnavailable) as info:
            _ask(closed)
    assert "connection failed" in str(info.value)


@pytest.mark.parametrize("variant", ["not_json_body", "empty_content", "no_choices"])
def test_malformed_replies_are_bad_model_replies(sim: ProviderSimulator, client: VisionClient, variant: str) -> None:
    sim.script(variant)
    with pytest.raises(BadModelReply) as info:
        _ask(client)
    assert info.value.raw
    assert info.value.status == 200


def test_prose_content_is_returned_for_the_parser_to_judge(sim: ProviderSimulator, client: VisionClient) -> None:
    sim.script("prose_wrapped")
    assert "```json" in _ask(client).text


def test_api_key_never_leaks(sim: ProviderSimulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sim.update(echo_key_in_errors=True)
    errors: list[ProviderError] = []
    with VisionClient(sim.base_url, "qwen-vl-plus", timeout_s=0.3) as vision:
        for key, step in [
            (UNKNOWN, None),
            (REJECTED, None),
            (ARREARS, None),
            (KEY, 500),
            (KEY, "timeout"),
            (KEY, "not_json_body"),
        ]:
            if step is not None:
                sim.script(step)
            with pytest.raises(ProviderError) as info:
                _ask(vision, key)
            errors.append(info.value)
        check = vision.verify(REJECTED)
    with VisionClient("http://127.0.0.1:9/v1", "m", timeout_s=0.3) as closed:
        with pytest.raises(ProviderUnavailable) as info:
            _ask(closed)
        errors.append(info.value)
    assert [type(e) for e in errors[:3]] == [KeyRejected] * 3
    texts = [caplog.text, repr(check)]
    for error in errors:
        texts += [str(error), repr(error), "".join(traceback.format_exception(error))]
        texts.append(getattr(error, "raw", ""))
    for secret in (UNKNOWN, REJECTED, ARREARS, KEY):
        for text in texts:
            assert secret not in text
    assert "***" in str(errors[0])


def test_malformed_key_is_rejected_without_echo(client: VisionClient) -> None:
    bad = "sk-bad\nkey-0123456789"
    with pytest.raises(KeyRejected) as info:
        _ask(client, bad)
    assert "bad" not in str(info.value)


def test_verify_reports_ok_and_failures(sim: ProviderSimulator, client: VisionClient) -> None:
    ok = client.verify(KEY)
    assert ok.ok and ok.status == 200 and ok.error is None and ok.latency_s > 0
    body = sim.last_request()
    assert body is not None and body["max_tokens"] == 1
    assert body["messages"] == [{"role": "user", "content": "ping"}]
    rejected = client.verify(REJECTED)
    assert not rejected.ok and rejected.status == 401 and rejected.error == "KeyRejected"
    sim.script(503)
    unavailable = client.verify(KEY)
    assert unavailable.error == "ProviderUnavailable" and unavailable.status == 503


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30.0)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0
    for bad in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(bad) is None


def test_scrub_masks_secret_and_token_shapes() -> None:
    assert scrub("key abcdef123 here", "abcdef123") == "key *** here"
    assert "sk-live" not in scrub("Incorrect API key provided: sk-live-abcd****wxyz")
    assert scrub("Authorization: Bearer abc.def") == "Authorization: ***"


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        VisionClient("dashscope.aliyuncs.com", "m", timeout_s=1)
    with pytest.raises(ConfigError):
        VisionClient("http://x/v1", "m", timeout_s=0)
    assert "sk-" not in repr(VisionClient("http://x/v1/", "m", timeout_s=1))


def test_on_sent_runs_once_per_request_after_it_is_written_and_before_the_reply(
    sim: ProviderSimulator, client: VisionClient
) -> None:
    sim.update(latency_ms=400.0)
    stamps: list[float] = []
    started = time.perf_counter()
    client.complete(KEY, system="s", user="u", image_jpeg=IMAGE, on_sent=lambda: stamps.append(time.perf_counter()))
    finished = time.perf_counter()
    assert len(stamps) == 1
    assert started <= stamps[0] and finished - stamps[0] >= 0.4, "stamped when sent, not when answered"
    assert client.verify(KEY, on_sent=lambda: stamps.append(time.perf_counter())).ok and len(stamps) == 2
    _ask(client)
    assert len(stamps) == 2, "a call without the callback runs none"


def test_a_failing_on_sent_never_fails_the_call_and_nothing_written_runs_none(
    client: VisionClient, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise RuntimeError("stamp store down")

    with caplog.at_level(logging.WARNING, logger="traffic.vision_client"):
        assert _ask_with(client, broken).text
    assert "on_sent callback failed" in caplog.text
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    calls: list[int] = []
    with VisionClient(f"http://127.0.0.1:{port}/v1", "m", timeout_s=1.0) as closed, pytest.raises(ProviderUnavailable):
        _ask_with(closed, lambda: calls.append(1))
    assert calls == [], "connection refused: nothing was sent"


def _ask_with(client: VisionClient, on_sent: object) -> Completion:
    return client.complete(KEY, system="s", user="u", image_jpeg=IMAGE, on_sent=on_sent)  # type: ignore[arg-type]
