"""Incident webhooks, the pure part: which subscriptions an event goes to, the signed body and headers,
the retry schedule and the target-host rules. ``workers.webhooks`` stores, schedules and sends.

Errors::

    TrafficError
     └── WebhookError               a webhook delivery that cannot be made
          ├── TargetDenied          the target's host is in a denied range (``rule`` names it): never retried
          └── TargetUnresolvable    the target's host name does not resolve now: retried

The format is documented for receivers in ``docs/WEBHOOKS.md``; change it there too.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from traffic.errors import CameraError, TrafficError
from traffic.models import RiskLevel
from traffic.settings import WebhookSettings, WebhookSubscription
from traffic.url_policy import Resolver, addresses_of, denied_range, numeric_host, parse_allowed_hosts
from traffic.wire import iso_timestamp

EVENTS = ("incident", "incident_updated")
"""Event names a subscription may ask for (the outbox's names)."""
LEVELS = ("low", "medium", "high")
"""Values of ``min_level``."""
PAYLOAD_VERSION = 1
"""``version`` of the body; raised only when a field changes meaning or goes away (new fields may be added)."""
USER_AGENT = f"traffic-webhooks/{PAYLOAD_VERSION}"
SIGNATURE_HEADER = "X-Traffic-Signature"
TIMESTAMP_HEADER = "X-Traffic-Timestamp"
EVENT_HEADER = "X-Traffic-Event"
DELIVERY_HEADER = "X-Traffic-Delivery"
ATTEMPT_HEADER = "X-Traffic-Attempt"
SIGNATURE_SCHEME = "sha256"
MIN_SECRET_LENGTH = 16
"""Shortest signing secret accepted (``openssl rand -hex 32`` gives 64 characters)."""


class WebhookError(TrafficError):
    """A webhook delivery that cannot be made."""


class TargetDenied(WebhookError):
    """The target's host is in a denied range and not allowed; ``rule`` names the range."""

    def __init__(self, rule: str) -> None:
        super().__init__(
            f"the webhook target's host is a {rule} address, which webhooks may not use; "
            "allow it with TRAFFIC_WEBHOOK_ALLOWED_HOSTS"
        )
        self.rule = rule


class TargetUnresolvable(WebhookError):
    """The target's host name does not resolve (now)."""


class Outcome(enum.StrEnum):
    """What one try's answer means for the delivery."""

    DELIVERED = "delivered"
    """2xx: done."""
    RETRY = "retry"
    """408, 429, 5xx, a timeout or a connection failure: try again later."""
    REFUSED = "refused"
    """Any other status (3xx included: redirects are not followed): trying again would not help."""


# --------------------------------------------------------------------------- matching


def matches(subscription: WebhookSubscription, event: str, incident: Mapping[str, Any]) -> bool:
    """Whether ``subscription`` wants ``event`` about ``incident`` (its JSON, as the outbox holds it)."""
    level = RiskLevel.parse(incident.get("level"))
    minimum = RiskLevel.parse(subscription.min_level) or RiskLevel.LOW
    return (
        event in subscription.events
        and level is not None
        and level.rank >= minimum.rank
        and (not subscription.cameras or str(incident.get("cameraId")) in subscription.cameras)
        and (not subscription.kinds or str(incident.get("kind")) in subscription.kinds)
    )


def subscribers(
    subscriptions: Iterable[WebhookSubscription], event: str, incident: Mapping[str, Any]
) -> tuple[WebhookSubscription, ...]:
    """The subscriptions that get ``event``, in configured order."""
    return tuple(s for s in subscriptions if matches(s, event, incident))


# --------------------------------------------------------------------------- body and signature


def event_body(delivery_id: str, event: str, incident: Mapping[str, Any], at: float) -> bytes:
    """The JSON body of a delivery: the same bytes on every try (the delivery id is inside, so it is signed)."""
    payload = {
        "id": delivery_id,
        "event": event,
        "version": PAYLOAD_VERSION,
        "createdAt": iso_timestamp(at),
        "incident": dict(incident),
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256, keyed by ``secret`` (UTF-8), of ``b"<timestamp>." + body``."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return f"{SIGNATURE_SCHEME}={digest.hexdigest()}"


def request_headers(
    secret: str, *, event: str, delivery_id: str, attempt: int, timestamp: int, body: bytes
) -> dict[str, str]:
    """The headers of one try."""
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_HEADER: event,
        DELIVERY_HEADER: delivery_id,
        ATTEMPT_HEADER: str(attempt),
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


# --------------------------------------------------------------------------- retries


def classify(status: int) -> Outcome:
    """What an HTTP status means for the delivery."""
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status in (408, 429) or status >= 500:
        return Outcome.RETRY
    return Outcome.REFUSED


def backoff(attempt: int, settings: WebhookSettings) -> float:
    """Seconds to wait after failed try ``attempt`` (1 is the first): ``backoff_s * 2**(attempt-1)``, capped."""
    return float(min(settings.backoff_s * 2.0 ** min(attempt - 1, 64), settings.backoff_max_s))


def schedule(settings: WebhookSettings) -> tuple[float, ...]:
    """The waits between the tries of a delivery that always fails (``max_attempts - 1`` of them)."""
    return tuple(backoff(n, settings) for n in range(1, settings.max_attempts))


def retry_delay(attempt: int, settings: WebhookSettings, retry_after: float | None = None) -> float | None:
    """Seconds until the next try after failed try ``attempt``, or None when it was the last.

    A receiver's ``Retry-After`` is honoured: the wait is at least that long, but never beyond ``backoff_max_s``.
    """
    if attempt >= settings.max_attempts:
        return None
    delay = backoff(attempt, settings)
    if retry_after is not None:
        delay = min(max(delay, retry_after), settings.backoff_max_s)
    return delay


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta seconds or an HTTP date), or None if it says nothing usable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def record_ttl_s(settings: WebhookSettings, claim_s: float) -> float:
    """How long a stored delivery must live: every wait of its schedule, plus each try's hand-out time, plus an hour."""
    return sum(schedule(settings)) + settings.max_attempts * (claim_s + settings.timeout_s) + 3600.0


# --------------------------------------------------------------------------- target hosts


def check_literal_target(url: str, allowed_hosts: Sequence[str]) -> None:
    """At load time: a target whose host is a literal address must be outside the denied ranges, or allowed.

    Host names are checked at each connection instead (``check_target``): what they resolve to can change.
    Raises ``TargetDenied``.
    """
    host = target_host(url)
    address = numeric_host(host)
    if address is None:
        return
    names, networks = parse_allowed_hosts(allowed_hosts)
    if any(address in network for network in networks):
        return
    rule = denied_range(address)
    if rule is not None:
        raise TargetDenied(rule)


def check_target(host: str, allowed_hosts: Sequence[str], resolve: Resolver) -> list[str]:
    """The addresses a connection to ``host`` may use: every one it resolves to must be outside the denied
    ranges or allowed (the camera URL policy's rules). Raises ``TargetDenied`` or ``TargetUnresolvable``."""
    host = host.strip("[]").rstrip(".").lower()
    try:
        addresses = addresses_of(host, resolve)
    except CameraError:
        raise TargetUnresolvable("the webhook target's host name does not resolve") from None
    names, networks = parse_allowed_hosts(allowed_hosts)
    if host in names:
        return [str(a) for a in addresses]
    for address in addresses:
        rule = None if any(address in network for network in networks) else denied_range(address)
        if rule is not None:
            raise TargetDenied(rule)
    return [str(a) for a in addresses]


def target_host(url: str) -> str:
    """The host of a target URL, lower-cased, without brackets or a trailing dot."""
    return (urlsplit(url).hostname or "").rstrip(".")


def display_url(url: str) -> str:
    """``scheme://host[:port]`` of a target, with ``/***`` when it has a path or query: paths and queries
    often hold the receiver's token (``/services/T0/B0/XXXX``, ``?token=…``), so logs never show them."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    tail = "/***" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{tail}"
