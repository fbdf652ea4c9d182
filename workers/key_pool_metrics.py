"""Prometheus view of the key pool: a collector that reads the status view on each scrape (ids only).

Register once where ``/metrics`` is served::

    REGISTRY.register(KeyPoolCollector(redis_client, settings))
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from traffic.key_pool_view import KeyStateName
from traffic.settings import Settings
from workers.key_pool import pool_status

log = logging.getLogger(__name__)


def families(view: dict[str, Any]) -> list[GaugeMetricFamily | CounterMetricFamily]:
    """Metric families of one status view."""
    state = GaugeMetricFamily(
        "traffic_key_state", "1 for the key's current state", labels=["key_id", "account", "state"]
    )
    cooldown = GaugeMetricFamily("traffic_key_cooldown_seconds", "Cooldown left after a 429", labels=["key_id"])
    in_flight = GaugeMetricFamily("traffic_key_in_flight", "Leases out on the key", labels=["key_id"])
    minute = GaugeMetricFamily("traffic_key_requests_last_minute", "Grants in the last minute", labels=["key_id"])
    calls = CounterMetricFamily("traffic_key_calls", "Calls by outcome", labels=["key_id", "outcome"])
    latency = GaugeMetricFamily(
        "traffic_key_latency_avg_seconds", "Mean latency of successful calls", labels=["key_id"]
    )
    for key in view["keys"]:
        kid, account = key["keyId"], key["account"] or ""
        for name in KeyStateName:
            state.add_metric([kid, account, name.value], 1.0 if key["state"] == name.value else 0.0)
        cooldown.add_metric([kid], key["cooldownLeftS"])
        in_flight.add_metric([kid], key["inFlight"])
        minute.add_metric([kid], key["lastMinute"])
        for outcome, field in (
            ("ok", "ok"),
            ("rate_limited", "rateLimited"),
            ("rejected", "rejected"),
            ("error", "errors"),
        ):
            calls.add_metric([kid, outcome], key[field])
        if key["avgLatencyMs"] is not None:
            latency.add_metric([kid], key["avgLatencyMs"] / 1000.0)
    usable = GaugeMetricFamily("traffic_key_pool_usable_keys", "Keys neither disabled nor cooling nor off")
    usable.add_metric([], view["usableKeys"])
    acct_minute = GaugeMetricFamily(
        "traffic_account_requests_last_minute", "Grants in the last minute", labels=["account"]
    )
    acct_tokens = GaugeMetricFamily(
        "traffic_account_tokens_last_minute", "Tokens in the last minute", labels=["account"]
    )
    acct_calls = CounterMetricFamily("traffic_account_calls", "Calls by outcome", labels=["account", "outcome"])
    for acct in view["accounts"]:
        aid = acct["accountId"]
        acct_minute.add_metric([aid], acct["lastMinute"])
        if acct["tokensLastMinute"] is not None:
            acct_tokens.add_metric([aid], acct["tokensLastMinute"])
        for outcome, field in (("ok", "ok"), ("rate_limited", "rateLimited"), ("error", "errors")):
            acct_calls.add_metric([aid, outcome], acct[field])
    return [state, cooldown, in_flight, minute, calls, latency, usable, acct_minute, acct_tokens, acct_calls]


class KeyPoolCollector(Collector):
    """Collects the pool's status from Redis at scrape time; a Redis failure yields no pool metrics."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._client = client
        self._settings = settings

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """The families of the current status view."""
        try:
            view = pool_status(self._client, self._settings)
        except redis.RedisError as exc:
            log.warning("key pool metrics unavailable: %s", exc)
            return
        yield from families(view)
