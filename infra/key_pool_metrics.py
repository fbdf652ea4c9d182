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

from infra.key_pool import pool_status
from traffic.key_pool_view import KeyStateName
from traffic.settings import Settings

log = logging.getLogger(__name__)


_USABLE = (KeyStateName.READY.value, KeyStateName.BUSY.value)
_KEY_CALLS = (("ok", "ok"), ("rate_limited", "rateLimited"), ("rejected", "rejected"), ("error", "errors"))
_ACCOUNT_CALLS = (("ok", "ok"), ("rate_limited", "rateLimited"), ("error", "errors"))


def families(view: dict[str, Any]) -> list[GaugeMetricFamily | CounterMetricFamily]:
    """Metric families of one status view (the ``api_key_*`` names are the old system's)."""
    keys_view = view["keys"]
    size = GaugeMetricFamily("api_key_pool_size", "Keys configured in the pool")
    size.add_metric([], len(keys_view))
    usable = GaugeMetricFamily("traffic_key_pool_usable_keys", "Keys neither disabled nor cooling nor off")
    usable.add_metric([], view["usableKeys"])
    status = GaugeMetricFamily("api_key_status", "1 while the key is usable (ready or busy)", labels=["key_id"])
    state = GaugeMetricFamily(
        "traffic_key_state", "1 for the key's current state", labels=["key_id", "account", "state"]
    )
    cooldown = GaugeMetricFamily("api_key_cooldown_seconds", "Cooldown left after a 429", labels=["key_id"])
    success = GaugeMetricFamily("api_key_success_rate", "Successful share of the key's calls", labels=["key_id"])
    calls = CounterMetricFamily("api_key_total_calls", "Calls by outcome", labels=["key_id", "outcome"])
    in_flight = GaugeMetricFamily("traffic_key_in_flight", "Leases out on the key", labels=["key_id"])
    minute = GaugeMetricFamily("traffic_key_requests_last_minute", "Grants in the last minute", labels=["key_id"])
    latency = GaugeMetricFamily(
        "traffic_key_latency_avg_seconds", "Mean latency of successful calls", labels=["key_id"]
    )
    for key in keys_view:
        kid, account = key["keyId"], key["account"] or ""
        status.add_metric([kid], 1.0 if key["state"] in _USABLE else 0.0)
        for name in KeyStateName:
            state.add_metric([kid, account, name.value], 1.0 if key["state"] == name.value else 0.0)
        cooldown.add_metric([kid], key["cooldownLeftS"])
        in_flight.add_metric([kid], key["inFlight"])
        minute.add_metric([kid], key["lastMinute"])
        total = 0.0
        for outcome, field in _KEY_CALLS:
            calls.add_metric([kid, outcome], key[field])
            total += key[field]
        if total:
            success.add_metric([kid], key["ok"] / total)
        if key["avgLatencyMs"] is not None:
            latency.add_metric([kid], key["avgLatencyMs"] / 1000.0)
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
        for outcome, field in _ACCOUNT_CALLS:
            acct_calls.add_metric([aid, outcome], acct[field])
    accounts: list[GaugeMetricFamily | CounterMetricFamily] = [acct_minute, acct_tokens, acct_calls]
    return [size, usable, status, state, cooldown, success, calls, in_flight, minute, latency, *accounts]


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
