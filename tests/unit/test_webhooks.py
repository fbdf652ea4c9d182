"""The pure part of incident webhooks: matching, the signed body and headers, the retry schedule, target hosts;
and the per-try metric."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from traffic.settings import WebhookSettings, WebhookSubscription
from traffic.url_policy import Resolver
from traffic.webhooks import (
    Outcome,
    TargetDenied,
    TargetUnresolvable,
    backoff,
    check_literal_target,
    check_target,
    classify,
    display_url,
    event_body,
    matches,
    parse_retry_after,
    request_headers,
    retry_delay,
    schedule,
    signature,
    subscribers,
)
from workers.metrics import WorkerMetrics

SECRET = "whsec-test-0123456789abcdef"
INCIDENT = {"incidentId": 7, "cameraId": "cam-1", "kind": "model", "level": "medium", "status": "open"}


def sub(name: str = "s", **fields: Any) -> WebhookSubscription:
    return WebhookSubscription(name, "https://hooks.example.com/in", SECRET, **fields)


# --------------------------------------------------------------------------- signature


def test_the_signature_matches_a_known_vector() -> None:
    # printf '1700000000.{"id":"d-1","event":"incident"}' | openssl dgst -sha256 -hmac "$SECRET"
    expected = "sha256=acd244e5c4b8b8445a7a3a266dedf768fc71d027f800cf853666eec5ed436a42"
    assert signature(SECRET, 1700000000, b'{"id":"d-1","event":"incident"}') == expected


def test_the_signature_covers_the_timestamp_and_every_byte_of_the_body() -> None:
    body = b'{"id":"d-1"}'
    base = signature(SECRET, 1700000000, body)
    assert signature(SECRET, 1700000001, body) != base
    assert signature(SECRET, 1700000000, body + b" ") != base
    assert signature(SECRET + "x", 1700000000, body) != base


def test_headers_of_a_try_carry_event_delivery_attempt_timestamp_and_signature() -> None:
    body = event_body("d-1", "incident", INCIDENT, 1700000000.25)
    headers = request_headers(SECRET, event="incident", delivery_id="d-1", attempt=2, timestamp=1700000009, body=body)
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"].startswith("traffic-webhooks/")
    assert headers["X-Traffic-Event"] == "incident"
    assert headers["X-Traffic-Delivery"] == "d-1"
    assert headers["X-Traffic-Attempt"] == "2"
    assert headers["X-Traffic-Timestamp"] == "1700000009"
    # The recipe of docs/WEBHOOKS.md, written out independently of traffic.webhooks.
    signed = b"1700000009." + body
    digest = hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Traffic-Signature"], f"sha256={digest}")
    assert SECRET not in json.dumps(headers)


def test_the_body_is_compact_json_with_the_delivery_id_inside() -> None:
    body = event_body("d-1", "incident_updated", INCIDENT, 1700000000.25)
    assert b" " not in body.replace(b'"open"', b"")
    assert json.loads(body) == {
        "id": "d-1",
        "event": "incident_updated",
        "version": 1,
        "createdAt": "2023-11-14T22:13:20.250Z",
        "incident": INCIDENT,
    }


# --------------------------------------------------------------------------- matching


@pytest.mark.parametrize(
    ("fields", "event", "incident", "expected"),
    [
        ({}, "incident", INCIDENT, True),
        ({}, "incident_updated", INCIDENT, True),
        ({"events": ("incident",)}, "incident_updated", INCIDENT, False),
        ({"min_level": "medium"}, "incident", INCIDENT, True),
        ({"min_level": "high"}, "incident", INCIDENT, False),
        ({"min_level": "high"}, "incident", {**INCIDENT, "level": "high"}, True),
        ({}, "incident", {**INCIDENT, "level": "none"}, False),
        ({}, "incident", {**INCIDENT, "level": "bogus"}, False),
        ({"cameras": ("cam-1", "cam-2")}, "incident", INCIDENT, True),
        ({"cameras": ("cam-2",)}, "incident", INCIDENT, False),
        ({"cameras": ("7",)}, "incident", {**INCIDENT, "cameraId": "7"}, True),
        ({"kinds": ("near_miss", "model")}, "incident", INCIDENT, True),
        ({"kinds": ("wrong_way",)}, "incident", INCIDENT, False),
    ],
)
def test_a_subscription_gets_the_events_its_filters_let_through(
    fields: dict[str, Any], event: str, incident: dict[str, object], expected: bool
) -> None:
    assert matches(sub(**fields), event, incident) is expected


def test_subscribers_keeps_the_configured_order() -> None:
    subs = [sub("a"), sub("b", min_level="high"), sub("c", cameras=("cam-1",))]
    assert [s.name for s in subscribers(subs, "incident", INCIDENT)] == ["a", "c"]


# --------------------------------------------------------------------------- retries


def test_the_backoff_doubles_from_backoff_s_and_stops_at_the_cap() -> None:
    settings = WebhookSettings(max_attempts=7, backoff_s=2.0, backoff_max_s=20.0)
    assert schedule(settings) == (2.0, 4.0, 8.0, 16.0, 20.0, 20.0)
    assert backoff(1000, settings) == 20.0


def test_the_default_schedule_spans_about_72_minutes() -> None:
    waits = schedule(WebhookSettings())
    assert len(waits) == WebhookSettings().max_attempts - 1
    assert waits[:3] == (10.0, 20.0, 40.0) and waits[-1] == 1800.0
    assert 70 * 60 < sum(waits) < 75 * 60


def test_there_is_no_retry_after_the_last_try() -> None:
    settings = WebhookSettings(max_attempts=3, backoff_s=1.0, backoff_max_s=10.0)
    assert [retry_delay(n, settings) for n in (1, 2, 3)] == [1.0, 2.0, None]
    assert retry_delay(1, WebhookSettings(max_attempts=1)) is None


def test_retry_after_is_honoured_but_never_beyond_the_cap_nor_below_the_schedule() -> None:
    settings = WebhookSettings(max_attempts=5, backoff_s=4.0, backoff_max_s=60.0)
    assert retry_delay(1, settings, retry_after=30.0) == 30.0
    assert retry_delay(1, settings, retry_after=3600.0) == 60.0
    assert retry_delay(2, settings, retry_after=1.0) == 8.0


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 0 ", now) == 0.0
    later = format_datetime(datetime.fromtimestamp(now + 90, UTC), usegmt=True)
    assert parse_retry_after(later, now) == pytest.approx(90.0)
    earlier = format_datetime(datetime.fromtimestamp(now - 90, UTC), usegmt=True)
    assert parse_retry_after(earlier, now) == 0.0
    for useless in (None, "", "soon", "-5", "1.5e9"):
        assert parse_retry_after(useless, now) is None


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.DELIVERED),
        (202, Outcome.DELIVERED),
        (204, Outcome.DELIVERED),
        (301, Outcome.REFUSED),
        (302, Outcome.REFUSED),
        (400, Outcome.REFUSED),
        (401, Outcome.REFUSED),
        (404, Outcome.REFUSED),
        (410, Outcome.REFUSED),
        (408, Outcome.RETRY),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (503, Outcome.RETRY),
    ],
)
def test_statuses_mean_delivered_retry_or_refused(status: int, outcome: Outcome) -> None:
    assert classify(status) is outcome


# --------------------------------------------------------------------------- target hosts


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("https://10.1.2.3/hook", "private"),
        ("https://192.168.0.10:8443/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[fe80::1]/hook", "link-local"),
        ("http://127.0.0.1:9000/hook", "loopback"),
        ("http://0x7f.1/hook", "loopback"),
        ("http://2130706433/hook", "loopback"),
        ("http://[::ffff:10.0.0.1]/hook", "private"),
    ],
)
def test_a_literal_target_in_a_denied_range_is_refused_at_load(url: str, rule: str) -> None:
    with pytest.raises(TargetDenied) as caught:
        check_literal_target(url, ())
    assert caught.value.rule == rule
    assert "TRAFFIC_WEBHOOK_ALLOWED_HOSTS" in str(caught.value)


def test_an_allowed_network_lets_a_literal_target_through() -> None:
    check_literal_target("http://127.0.0.1:9000/hook", ("127.0.0.1",))
    check_literal_target("https://10.1.2.3/hook", ("10.0.0.0/8",))


def test_a_named_or_public_target_is_not_judged_at_load() -> None:
    check_literal_target("https://hooks.example.com/hook", ())
    check_literal_target("http://localhost:9000/hook", ())  # resolved and checked at each connection
    check_literal_target("https://93.184.215.14/hook", ())


def resolver(table: dict[str, Sequence[str]]) -> Resolver:
    def resolve(host: str) -> Sequence[str]:
        if host not in table:
            raise OSError("no such host")
        return table[host]

    return resolve


def test_a_name_that_resolves_to_a_private_address_is_refused() -> None:
    resolve = resolver({"hooks.example.com": ["93.184.215.14", "10.0.0.7"]})
    with pytest.raises(TargetDenied) as caught:
        check_target("hooks.example.com", (), resolve)
    assert caught.value.rule == "private"


def test_a_name_that_resolves_to_the_metadata_address_is_refused() -> None:
    resolve = resolver({"metadata.internal": ["169.254.169.254"]})
    with pytest.raises(TargetDenied) as caught:
        check_target("metadata.internal", (), resolve)
    assert caught.value.rule == "link-local"


def test_public_addresses_and_allowed_hosts_give_the_addresses_to_connect_to() -> None:
    resolve = resolver({"hooks.example.com": ["93.184.215.14"], "receiver.lan": ["192.168.1.20"]})
    assert check_target("hooks.example.com", (), resolve) == ["93.184.215.14"]
    assert check_target("receiver.lan", ("receiver.lan",), resolve) == ["192.168.1.20"]
    assert check_target("receiver.lan", ("192.168.1.0/24",), resolve) == ["192.168.1.20"]
    assert check_target("receiver.lan.", ("RECEIVER.lan",), resolve) == ["192.168.1.20"]


def test_a_name_that_does_not_resolve_is_unresolvable_not_denied() -> None:
    with pytest.raises(TargetUnresolvable):
        check_target("nowhere.example", (), resolver({}))


def test_display_url_never_shows_credentials_path_or_query() -> None:
    assert display_url("https://user:pw@hooks.example.com:8443/services/T0/B0/XXXX?token=abc") == (
        "https://hooks.example.com:8443/***"
    )
    assert display_url("http://[::1]:9000/") == "http://[::1]:9000"
    assert display_url("https://hooks.example.com") == "https://hooks.example.com"


def test_each_try_is_counted_by_subscription_and_outcome() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    for outcome in ("retried", "retried", "delivered"):
        metrics.webhook("ops-pager", outcome)
    count = registry.get_sample_value
    assert count("traffic_webhook_deliveries_total", {"subscription": "ops-pager", "outcome": "retried"}) == 2
    assert count("traffic_webhook_deliveries_total", {"subscription": "ops-pager", "outcome": "delivered"}) == 1
