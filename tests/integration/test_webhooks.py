"""Incident webhooks against a local HTTP receiver on 127.0.0.1 and a real Redis.

First the delivery code called directly (a try at a time, the clock passed in), then the whole path on a
real stack: ``infra.outbox.push`` as the incident writer calls it, the beat's ``dispatch_webhooks`` and a
``default`` worker's ``deliver_webhook`` tasks. Receivers check signatures with the recipe of
docs/WEBHOOKS.md, written out here; no test connects anywhere but loopback.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from infra import outbox
from stack.harness import Stack, running_stack, wait_until
from stack.traffic_run import clean_env
from traffic.config import load_settings
from traffic.settings import WebhookSettings
from traffic.webhooks import backoff
from workers import webhooks
from workers.context import WorkerContext

pytestmark = pytest.mark.integration

SECRET = "whsec-integration-0123456789"
TOKEN = "tok-5e1f0c9a"


# --------------------------------------------------------------------------- the receiver


@dataclass(frozen=True)
class Received:
    """One request the receiver got."""

    at: float
    """``time.monotonic()`` when it arrived."""
    path: str
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes

    def json(self) -> dict[str, Any]:
        data = json.loads(self.body)
        assert isinstance(data, dict)
        return data


class Receiver:
    """An HTTP server on 127.0.0.1 that records every request and answers each path from a script."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._scripts: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, headers = receiver._record(self.path, dict(self.headers.items()), body)
                self.send_response(status)
                for name, value in {**headers, "Content-Length": "0"}.items():
                    self.send_header(name, value)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def answer(self, path: str, *statuses: int, headers: dict[str, str] | None = None) -> None:
        """Answer the next requests to ``path`` with ``statuses`` in turn (then 200, or the last one repeated
        if it ends with a negative status: ``-500`` answers 500 forever)."""
        with self._lock:
            self._scripts[path] = [(s, headers or {}) for s in statuses]

    def _record(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        with self._lock:
            self.received.append(Received(time.monotonic(), path, {k.lower(): v for k, v in headers.items()}, body))
            script = self._scripts.get(path.split("?")[0], [])
            if not script:
                return 200, {}
            status, extra = script[0] if script[0][0] < 0 else script.pop(0)
            return abs(status), extra

    def to(self, path: str) -> list[Received]:
        """The requests to ``path`` (query ignored), in arrival order."""
        with self._lock:
            return [r for r in self.received if r.path.split("?")[0] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verify(secret: str, request: Received, tolerance_s: float = 300.0) -> bool:
    """The receiver's check, as docs/WEBHOOKS.md writes it."""
    timestamp = request.headers["x-traffic-timestamp"]
    signed = timestamp.encode() + b"." + request.body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, request.headers["x-traffic-signature"]):
        return False
    return abs(time.time() - int(timestamp)) <= tolerance_s


def incident(camera: str, level: str = "medium", incident_id: int = 1, kind: str = "model") -> dict[str, Any]:
    """An incident as ``incident_to_json`` writes it (the fields the webhooks read, and a few more)."""
    return {
        "incidentId": incident_id,
        "alertId": f"a-{incident_id}",
        "cameraId": camera,
        "kind": kind,
        "level": level,
        "riskTypes": ["jaywalking"],
        "status": "open",
        "updatedAt": "2025-01-01T00:00:00.000Z",
    }


def webhooks_file(tmp: Path, receiver: Receiver, subscriptions: list[dict[str, Any]]) -> Path:
    """A webhooks file; an entry's ``path`` becomes its URL on ``receiver``; the secret is a ``${VAR}``."""
    entries = [
        {
            "secret": "${HOOK_SECRET}",
            "url": receiver.url(s.get("path", "")),
            **{k: v for k, v in s.items() if k != "path"},
        }
        for s in subscriptions
    ]
    path = tmp / "webhooks.yaml"
    path.write_text(json.dumps({"subscriptions": entries}), encoding="utf-8")  # JSON is YAML
    return path


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


# --------------------------------------------------------------------------- direct calls


@dataclass
class Harness:
    """A worker context on the test Redis and the ``deliver_webhook`` messages a dispatch sent."""

    ctx: WorkerContext
    sent: list[str]

    @property
    def redis(self) -> redis.Redis:
        return self.ctx.redis

    def send(self, delivery_id: str, expires_s: float) -> None:
        assert expires_s < webhooks.CLAIM_S
        self.sent.append(delivery_id)

    def push(self, event: str, data: dict[str, Any]) -> None:
        outbox.push(self.redis, outbox.enabled_outputs(self.ctx.settings), event, data)

    def dispatch(self, now: float | None = None) -> list[str]:
        """One dispatch; the delivery ids it handed out."""
        before = len(self.sent)
        webhooks.dispatch(self.ctx, self.send, now)
        return self.sent[before:]


def harness_for(redis_url: str, tmp: Path, receiver: Receiver, subs: list[dict[str, Any]], **env: str) -> Harness:
    settings = load_settings(
        {
            "REDIS_URL": redis_url,
            "HOOK_SECRET": SECRET,
            "TRAFFIC_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
            "TRAFFIC_WEBHOOK_BACKOFF_S": "10",
            "TRAFFIC_WEBHOOK_BACKOFF_MAX_S": "100",
            "TRAFFIC_WEBHOOK_MAX_ATTEMPTS": "3",
            **env,
        },
        webhooks=webhooks_file(tmp, receiver, subs),
    )
    return Harness(WorkerContext(settings), [])


@pytest.fixture
def one(redis_url: str, tmp_path: Path, receiver: Receiver) -> Iterator[Harness]:
    """One subscription, ``hook``, at ``/hook?token=…`` on the receiver."""
    harness = harness_for(redis_url, tmp_path, receiver, [{"name": "hook", "path": f"/hook?token={TOKEN}"}])
    yield harness
    harness.redis.close()


def test_a_dispatch_makes_one_delivery_per_matching_subscription_and_empties_the_outbox(
    redis_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    subs = [
        {"name": "all", "path": "/all"},
        {"name": "high", "path": "/high", "min_level": "high"},
        {"name": "cam-2", "path": "/cam-2", "cameras": ["cam-2"]},
    ]
    h = harness_for(redis_url, tmp_path, receiver, subs)
    h.push("incident", incident("cam-1", "high", 1))
    h.push("incident_updated", incident("cam-1", "medium", 1))
    h.push("incident", incident("cam-2", "low", 2))
    ids = h.dispatch()
    assert outbox.backlog(h.redis, outbox.WEBHOOKS) == 0
    made = [webhooks.load_delivery(h.redis, i) for i in ids]
    assert all(made)
    pairs = sorted((d.subscription, json.loads(d.body)["incident"]["cameraId"], d.event) for d in made if d)
    assert pairs == [
        ("all", "cam-1", "incident"),
        ("all", "cam-1", "incident_updated"),
        ("all", "cam-2", "incident"),
        ("cam-2", "cam-2", "incident"),
        ("high", "cam-1", "incident"),
    ]
    assert all(d and json.loads(d.body)["id"] == d.delivery_id for d in made)
    longest = webhooks.record_ttl_s(h.ctx.settings.webhooks, webhooks.CLAIM_S)
    assert 0 < h.redis.ttl(webhooks.delivery_key(ids[0])) <= longest + 1
    assert h.dispatch() == [], "each delivery is handed out once; nothing new waits"


def test_a_dispatch_that_does_not_hold_the_lock_fans_nothing_out(one: Harness) -> None:
    one.redis.set(webhooks.DISPATCH_LOCK, "another-dispatch", px=30_000)
    one.push("incident", incident("cam-1"))
    assert webhooks.fan_out(one.redis, one.ctx.settings.webhooks, time.time()) == 0
    assert outbox.backlog(one.redis, outbox.WEBHOOKS) == 1
    one.redis.delete(webhooks.DISPATCH_LOCK)
    assert webhooks.fan_out(one.redis, one.ctx.settings.webhooks, time.time()) == 1
    assert outbox.backlog(one.redis, outbox.WEBHOOKS) == 0


def test_a_delivery_handed_out_and_never_heard_of_is_handed_out_again_after_the_claim(one: Harness) -> None:
    one.push("incident", incident("cam-1"))
    now = time.time()
    (delivery_id,) = one.dispatch(now)
    assert one.dispatch(now + webhooks.CLAIM_S - 1) == []
    assert one.dispatch(now + webhooks.CLAIM_S + 1) == [delivery_id]


def test_a_delivery_is_posted_signed_and_then_forgotten(one: Harness, receiver: Receiver) -> None:
    data = incident("cam-1", "high", 42)
    one.push("incident", data)
    (delivery_id,) = one.dispatch()
    assert webhooks.deliver(one.ctx, delivery_id) == "delivered"
    (request,) = receiver.to("/hook")
    assert request.path == f"/hook?token={TOKEN}"
    assert verify(SECRET, request)
    assert request.headers["x-traffic-delivery"] == delivery_id
    assert request.headers["x-traffic-event"] == "incident"
    assert request.headers["x-traffic-attempt"] == "1"
    assert request.headers["content-type"] == "application/json"
    body = request.json()
    assert body["id"] == delivery_id and body["event"] == "incident" and body["incident"] == data
    assert not one.redis.exists(webhooks.delivery_key(delivery_id))
    assert one.redis.zcard(webhooks.DUE) == 0
    assert webhooks.deliver(one.ctx, delivery_id) == "missing"
    assert len(receiver.to("/hook")) == 1


def test_a_failed_try_is_due_again_after_its_backoff_and_retry_after_is_honoured(
    one: Harness, receiver: Receiver
) -> None:
    receiver.answer("/hook", 503, 429, headers={"Retry-After": "45"})
    one.push("incident", incident("cam-1"))
    (delivery_id,) = one.dispatch()
    before = time.time()
    assert webhooks.deliver(one.ctx, delivery_id) == "retry"
    due = one.redis.zscore(webhooks.DUE, delivery_id)
    assert due is not None and before + 45 <= due <= time.time() + 45  # Retry-After 45 s > the 10 s back-off
    assert one.dispatch(due - 1) == []
    assert one.dispatch(due) == [delivery_id]
    before = time.time()
    assert webhooks.deliver(one.ctx, delivery_id) == "retry"
    due = one.redis.zscore(webhooks.DUE, delivery_id)
    assert due is not None and before + 45 <= due <= time.time() + 45
    stored = webhooks.load_delivery(one.redis, delivery_id)
    assert stored is not None and (stored.attempts, stored.last_status) == (2, 429)
    assert webhooks.deliver(one.ctx, delivery_id) == "delivered"
    tries = receiver.to("/hook")
    assert [r.headers["x-traffic-attempt"] for r in tries] == ["1", "2", "3"]
    assert {r.headers["x-traffic-delivery"] for r in tries} == {delivery_id}
    assert len({r.body for r in tries}) == 1, "every try sends the same bytes"
    assert all(verify(SECRET, r) for r in tries)


def test_the_last_failed_try_dead_letters_the_delivery_without_url_or_secret(one: Harness, receiver: Receiver) -> None:
    receiver.answer("/hook", -500)
    data = incident("cam-1")
    one.push("incident", data)
    (delivery_id,) = one.dispatch()
    assert [webhooks.deliver(one.ctx, delivery_id) for _ in range(3)] == ["retry", "retry", "dead_letter"]
    (letter,) = webhooks.dead_letters(one.redis)
    assert letter["id"] == delivery_id and letter["subscription"] == "hook" and letter["event"] == "incident"
    assert (letter["attempts"], letter["lastStatus"], letter["lastError"]) == (3, 500, None)
    assert letter["payload"]["incident"] == data
    raw = json.dumps(letter)
    assert TOKEN not in raw and SECRET not in raw and "127.0.0.1" not in raw
    assert not one.redis.exists(webhooks.delivery_key(delivery_id))
    assert one.redis.zcard(webhooks.DUE) == 0


@pytest.mark.parametrize("status", [400, 404, 410, 301])
def test_a_refusal_or_a_redirect_is_dead_lettered_at_once(one: Harness, receiver: Receiver, status: int) -> None:
    receiver.answer("/hook", status, headers={"Location": "http://127.0.0.1:1/elsewhere"})
    one.push("incident", incident("cam-1"))
    (delivery_id,) = one.dispatch()
    assert webhooks.deliver(one.ctx, delivery_id) == "dead_letter"
    (letter,) = webhooks.dead_letters(one.redis)
    assert (letter["attempts"], letter["lastStatus"]) == (1, status)
    assert len(receiver.received) == 1, "a redirect is not followed"


def test_a_name_resolving_to_loopback_is_refused_at_connect_time_without_connecting(
    redis_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    # The receiver under a name (the load-time check passes: names are judged at each connection) that
    # resolves to loopback, which the allowlist does not cover.
    url = f"http://hooks.rebound.test:{receiver.server.server_port}/hook"
    allowed = "hooks.other.test,10.0.0.0/8"
    h = harness_for(
        redis_url, tmp_path, receiver, [{"name": "rebound", "url": url}], TRAFFIC_WEBHOOK_ALLOWED_HOSTS=allowed
    )
    h.push("incident", incident("cam-1"))
    (delivery_id,) = h.dispatch()
    outcome = webhooks.deliver(h.ctx, delivery_id, resolve=lambda host: ["127.0.0.1"])
    assert outcome == "dead_letter"
    (letter,) = webhooks.dead_letters(h.redis)
    assert (letter["attempts"], letter["lastStatus"], letter["lastError"]) == (1, None, "url_denied:loopback")
    assert receiver.received == []


def test_an_allowed_name_connects_to_the_address_it_was_checked_at(
    redis_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    port = receiver.server.server_port
    subs = [{"name": "named", "url": f"http://hooks.named.test:{port}/hook"}]
    h = harness_for(redis_url, tmp_path, receiver, subs, TRAFFIC_WEBHOOK_ALLOWED_HOSTS="hooks.named.test")
    h.push("incident", incident("cam-1"))
    (delivery_id,) = h.dispatch()
    assert webhooks.deliver(h.ctx, delivery_id, resolve=lambda host: ["127.0.0.1"]) == "delivered"
    (request,) = receiver.received
    assert request.headers["host"] == f"hooks.named.test:{port}"


def test_an_unresolvable_target_is_retried(redis_url: str, tmp_path: Path, receiver: Receiver) -> None:
    h = harness_for(redis_url, tmp_path, receiver, [{"name": "nowhere", "url": "http://hooks.nowhere.test/hook"}])
    h.push("incident", incident("cam-1"))
    (delivery_id,) = h.dispatch()

    def nowhere(host: str) -> list[str]:
        raise OSError("no such host")

    assert webhooks.deliver(h.ctx, delivery_id, resolve=nowhere) == "retry"
    stored = webhooks.load_delivery(h.redis, delivery_id)
    assert stored is not None and (stored.attempts, stored.last_error) == (1, "unresolvable_host")


def test_a_delivery_whose_subscription_was_removed_is_dead_lettered(
    redis_url: str, tmp_path: Path, receiver: Receiver, one: Harness
) -> None:
    one.push("incident", incident("cam-1"))
    (delivery_id,) = one.dispatch()
    renamed = harness_for(redis_url, tmp_path, receiver, [{"name": "renamed", "path": "/hook"}])
    assert webhooks.deliver(renamed.ctx, delivery_id) == "dead_letter"
    (letter,) = webhooks.dead_letters(one.redis)
    assert (letter["subscription"], letter["lastError"]) == ("hook", "unknown_subscription")
    assert receiver.received == []


def test_a_dead_letter_listed_and_replayed_by_the_cli_is_delivered_under_its_id(
    one: Harness, receiver: Receiver, redis_url: str, tmp_path: Path
) -> None:
    receiver.answer("/hook", 404)
    one.push("incident", incident("cam-1", "high", 9))
    (delivery_id,) = one.dispatch()
    assert webhooks.deliver(one.ctx, delivery_id) == "dead_letter"
    env = clean_env(
        REDIS_URL=redis_url,
        HOOK_SECRET=SECRET,
        TRAFFIC_WEBHOOKS_FILE=str(tmp_path / "webhooks.yaml"),
        TRAFFIC_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "stack.cli", "dlq", *args, "--webhooks"]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=True)

    (line,) = cli("list").stdout.splitlines()
    assert json.loads(line)["id"] == delivery_id
    assert cli("replay", delivery_id).stdout.strip() == f"replaying webhook delivery {delivery_id}"
    assert webhooks.dead_letters(one.redis) == []
    assert one.dispatch() == [delivery_id]
    assert webhooks.deliver(one.ctx, delivery_id) == "delivered"
    first, again = receiver.to("/hook")
    assert again.headers["x-traffic-delivery"] == delivery_id and again.headers["x-traffic-attempt"] == "1"
    assert again.body == first.body and verify(SECRET, again)


# --------------------------------------------------------------------------- the whole stack

STACK_WEBHOOKS = WebhookSettings(max_attempts=3, backoff_s=1.0, backoff_max_s=4.0)
STACK_ATTEMPTS = STACK_WEBHOOKS.max_attempts
STACK_SUBSCRIPTIONS: list[dict[str, Any]] = [
    {"name": "ok", "path": f"/ok?token={TOKEN}", "cameras": ["cam-ok"]},
    {"name": "flaky", "path": "/flaky", "cameras": ["cam-flaky"]},
    {"name": "down", "path": "/down", "cameras": ["cam-down"]},
    {"name": "gone", "path": "/gone", "cameras": ["cam-gone"]},
    {"name": "filter-watch", "path": "/filter-watch", "cameras": ["cam-filter"]},
    {"name": "filter-high", "path": "/filter-high", "cameras": ["cam-filter"], "min_level": "high"},
]


@dataclass
class LiveStack:
    stack: Stack
    receiver: Receiver

    def push(self, event: str, data: dict[str, Any]) -> None:
        outbox.push(self.stack.redis, [outbox.WEBHOOKS], event, data)

    def settled(self) -> bool:
        """No event waits and no delivery is in flight or due."""
        client = self.stack.redis
        return outbox.backlog(client, outbox.WEBHOOKS) == 0 and client.zcard(webhooks.DUE) == 0

    def wait_settled(self) -> None:
        wait_until(self.settled, 60, "every delivery settled")

    def dead_letter(self, subscription: str) -> dict[str, Any] | None:
        return next((d for d in webhooks.dead_letters(self.stack.redis) if d["subscription"] == subscription), None)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    """Redis, one default worker and beat, with six subscriptions on one receiver (each test its own)."""
    tmp = tmp_path_factory.mktemp("webhooks-stack")
    receiver = Receiver()
    receiver.answer("/flaky", 500, 500, 200)
    receiver.answer("/down", -500)
    receiver.answer("/gone", 404)
    env = {
        "TRAFFIC_WEBHOOKS_FILE": str(webhooks_file(tmp, receiver, STACK_SUBSCRIPTIONS)),
        "HOOK_SECRET": SECRET,
        "TRAFFIC_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "TRAFFIC_WEBHOOK_BACKOFF_S": str(STACK_WEBHOOKS.backoff_s),
        "TRAFFIC_WEBHOOK_BACKOFF_MAX_S": str(STACK_WEBHOOKS.backoff_max_s),
        "TRAFFIC_WEBHOOK_MAX_ATTEMPTS": str(STACK_WEBHOOKS.max_attempts),
    }
    try:
        with running_stack(tmp, None, "default", "beat", **env) as stack:
            yield LiveStack(stack, receiver)
    finally:
        receiver.close()


@pytest.mark.slow
def test_an_incident_event_is_delivered_once_signed(live: LiveStack) -> None:
    data = incident("cam-ok", "medium", 101)
    live.push("incident", data)
    (request,) = wait_until(lambda: live.receiver.to("/ok"), 60, "the delivery to ok")
    live.wait_settled()
    assert len(live.receiver.to("/ok")) == 1
    assert verify(SECRET, request)
    assert request.path == f"/ok?token={TOKEN}"
    body = request.json()
    assert body["id"] == request.headers["x-traffic-delivery"]
    assert (body["event"], body["incident"]) == ("incident", data)
    assert live.dead_letter("ok") is None


@pytest.mark.slow
def test_a_receiver_failing_twice_gets_three_tries_with_growing_waits(live: LiveStack) -> None:
    live.push("incident", incident("cam-flaky", "high", 102))
    wait_until(lambda: len(live.receiver.to("/flaky")) >= 3, 60, "three tries at flaky")
    live.wait_settled()
    tries = live.receiver.to("/flaky")
    assert len(tries) == 3
    assert [r.headers["x-traffic-attempt"] for r in tries] == ["1", "2", "3"]
    assert len({r.headers["x-traffic-delivery"] for r in tries}) == 1
    assert all(verify(SECRET, r) for r in tries)
    # Each wait is at least its back-off (1 s, then 2 s); the beat may add up to its 1 s tick.
    gaps = [later.at - earlier.at for earlier, later in zip(tries, tries[1:], strict=False)]
    assert gaps[0] >= backoff(1, STACK_WEBHOOKS) == 1.0
    assert gaps[1] >= backoff(2, STACK_WEBHOOKS) == 2.0
    assert live.dead_letter("flaky") is None


@pytest.mark.slow
def test_a_receiver_that_always_fails_ends_in_the_dead_letter_list(live: LiveStack) -> None:
    live.push("incident", incident("cam-down", "high", 103))
    letter = wait_until(lambda: live.dead_letter("down"), 60, "the dead letter of down")
    live.wait_settled()
    assert (letter["attempts"], letter["lastStatus"]) == (STACK_ATTEMPTS, 500)
    assert len(live.receiver.to("/down")) == STACK_ATTEMPTS
    assert letter["payload"]["incident"]["incidentId"] == 103


@pytest.mark.slow
def test_a_404_is_dead_lettered_at_once(live: LiveStack) -> None:
    live.push("incident_updated", incident("cam-gone", "low", 104))
    letter = wait_until(lambda: live.dead_letter("gone"), 60, "the dead letter of gone")
    assert (letter["attempts"], letter["lastStatus"], letter["event"]) == (1, 404, "incident_updated")
    live.wait_settled()
    assert len(live.receiver.to("/gone")) == 1


@pytest.mark.slow
def test_a_subscription_filtered_by_level_and_camera_does_not_get_a_low_event(live: LiveStack) -> None:
    live.push("incident", incident("cam-filter", "low", 105))
    live.push("incident", incident("cam-other", "high", 106))
    live.push("incident", incident("cam-filter", "high", 107))
    wait_until(lambda: len(live.receiver.to("/filter-watch")) >= 2, 60, "both cam-filter events at filter-watch")
    wait_until(lambda: live.receiver.to("/filter-high"), 60, "the high event at filter-high")
    live.wait_settled()
    watched = sorted(r.json()["incident"]["incidentId"] for r in live.receiver.to("/filter-watch"))
    assert watched == [105, 107]
    assert [r.json()["incident"]["incidentId"] for r in live.receiver.to("/filter-high")] == [107]
