"""``traffic keys …``: the key pool's status table, key verification, run-time disable and enable.

Everything printed carries key ids and masked suffixes only, never a secret.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Sequence
from typing import Any, TextIO

import redis
import requests

from infra.key_pool import KeyPool, Lease
from traffic.errors import ConfigError
from traffic.key_pool_rules import Outcome
from traffic.key_pool_view import masked_suffix
from traffic.settings import KeySpec, Settings
from traffic.vision_client import KeyCheck, VisionClient

VERIFY_WAIT_S = 5.0
"""How long verification waits for a slot of a busy key (its call counts against the key's limits)."""
VERIFY_TIMEOUT_S = 15.0
_OUTCOMES = {
    "RateLimited": Outcome.RATE_LIMITED,
    "KeyRejected": Outcome.REJECTED,
    "ProviderUnavailable": Outcome.UNAVAILABLE,
}


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table, columns padded to their widest cell."""
    cells = [[str(h) for h in headers], *[["-" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{value * 100:.1f}%"


def print_status(client: redis.Redis, settings: Settings, out: TextIO, *, as_json: bool = False) -> int:
    """Print the pool's status view: one row per key, then one per account."""
    return print_view(KeyPool(client, settings.keys).status(), out, as_json=as_json)


def stack_view(web_url: str, token: str | None, timeout_s: float = 5.0) -> dict[str, Any]:
    """The key pool's status view as a running stack's web server reports it (``GET /api/keys``): its own
    key configuration, which this terminal may not have. Raises ``ConfigError`` when it cannot be had."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = requests.get(f"{web_url}/api/keys", headers=headers, timeout=timeout_s)
    except requests.RequestException as exc:
        raise ConfigError(f"the stack's web server at {web_url} did not answer ({type(exc).__name__})") from None
    if response.status_code == 401:
        raise ConfigError(f"the stack's web server at {web_url} wants its token: set TRAFFIC_AUTH_TOKEN")
    if not response.ok:
        raise ConfigError(f"the stack's web server at {web_url} answered {response.status_code} for /api/keys")
    body = response.json()
    view = body.get("data") if isinstance(body, dict) else None
    if not isinstance(view, dict) or not isinstance(view.get("keys"), list):
        raise ConfigError(f"the stack's web server at {web_url} sent no key pool view")
    return view


def print_view(view: dict[str, Any], out: TextIO, *, as_json: bool = False) -> int:
    """Print a status view: one row per key, then one per account."""
    if as_json:
        print(json.dumps(view, indent=2, ensure_ascii=False), file=out)
        return 0
    keys = [
        (k["keyId"], k["masked"], k["account"], k["priority"], k["state"], k["cooldownLeftS"] or None, k["inFlight"],
         k["lastMinute"], k["calls"], _percent(k["successRate"]), k["avgLatencyMs"], k["lastError"])
        for k in view["keys"]
    ]  # fmt: skip
    if not view["keys"]:
        print("no API keys configured: the offline rules assessor judges every group", file=out)
        print("(give the stack DASHSCOPE_API_KEY, or keys in config/api_keys.yaml: see config/README.md)", file=out)
        return 0
    print(f"strategy {view['strategy']}, {view['usableKeys']} usable key(s)", file=out)
    headers = ("key", "secret", "account", "prio", "state", "cool_s", "in_flight", "last_min", "calls", "ok", "avg_ms")
    print(table((*headers, "last_error"), keys), file=out)
    if view["accounts"]:
        accounts = [
            (a["accountId"], a["state"], a["usableKeys"], a["limits"]["rpm"], a["limits"]["tpm"], a["lastMinute"],
             a["tokensLastMinute"], a["calls"], _percent(a["successRate"]), a["lastError"])
            for a in view["accounts"]
        ]  # fmt: skip
        account_headers = (
            "account",
            "state",
            "usable",
            "rpm",
            "tpm",
            "last_min",
            "tokens_min",
            "calls",
            "ok",
            "last_error",
        )
        print("", file=out)
        print(table(account_headers, accounts), file=out)
    return 0


def verify_keys(
    client: redis.Redis, settings: Settings, out: TextIO, *, only: Sequence[str] = (), as_json: bool = False
) -> int:
    """One cheap call per key (through the pool when the key is in it); 0 when every checked key is ok."""
    pool = KeyPool(client, settings.keys)
    llm = settings.llm
    rows = []
    with VisionClient(llm.base_url, llm.model, timeout_s=min(llm.timeout_s, VERIFY_TIMEOUT_S)) as vision:
        for spec in settings.keys.keys:
            if not only or spec.key_id in only:
                rows.append(_verify_one(pool, vision, spec))
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False), file=out)
    else:
        headers = ("key", "secret", "account", "ok", "status", "latency_ms", "error")
        print(
            table(
                headers,
                [
                    [row[h] for h in ("keyId", "masked", "account", "ok", "status", "latencyMs", "error")]
                    for row in rows
                ],
            ),
            file=out,
        )
    return 0 if rows and all(row["ok"] for row in rows) else 1


def _verify_one(pool: KeyPool, vision: VisionClient, spec: KeySpec) -> dict[str, Any]:
    """Check one key; a verdict of the provider updates the pool (re-enable, or disable when rejected)."""
    row: dict[str, Any] = {"keyId": spec.key_id, "masked": masked_suffix(spec), "account": spec.account}
    lease: Lease | None = None
    if spec.enabled:
        got = pool.acquire(until=time.time() + VERIFY_WAIT_S, only=spec.key_id)
        if isinstance(got, Lease):
            lease = got
        elif got.retry_in_s is not None:
            return row | {"ok": False, "status": None, "latencyMs": None, "error": "busy (no slot within 5 s)"}
    check: KeyCheck = vision.verify(spec.api_key)
    if lease is not None:
        outcome = Outcome.OK if check.ok else _OUTCOMES.get(check.error or "", Outcome.FAILED)
        pool.release(
            lease, outcome, latency_s=check.latency_s, error=f"{check.error}:{check.status}" if check.error else ""
        )
    reenabled = spec.enabled and pool.verified(spec.key_id, check.ok)
    if check.ok:
        note = "re-enabled" if reenabled else None
    else:
        note = f"{check.error}: {check.detail}" if check.detail else check.error
    return row | {"ok": check.ok, "status": check.status, "latencyMs": round(check.latency_s * 1000, 1), "error": note}


def _known_ids(settings: Settings, known: Collection[str] | None) -> Collection[str]:
    """The key ids an operator may name: the stack's (``known``) or this configuration's."""
    return known if known is not None else {k.key_id for k in settings.keys.keys}


def disable_key(
    client: redis.Redis, settings: Settings, key_id: str, out: TextIO, *, known: Collection[str] | None = None
) -> int:
    """Disable a key on every worker at once, until ``traffic keys enable``. ``known``: the stack's key ids
    (default: this configuration's)."""
    if key_id not in _known_ids(settings, known):
        print(f"unknown key id {key_id!r} (not in this configuration)", file=out)
        return 1
    KeyPool(client, settings.keys).disable(key_id)
    print(f"key {key_id} disabled on every worker", file=out)
    return 0


def enable_key(
    client: redis.Redis, settings: Settings, key_id: str, out: TextIO, *, known: Collection[str] | None = None
) -> int:
    """Enable a key again (also one the provider rejected), cooldown and 429 count cleared. ``known``: the
    stack's key ids (default: this configuration's)."""
    if key_id not in _known_ids(settings, known):
        print(f"unknown key id {key_id!r} (not in this configuration)", file=out)
        return 1
    KeyPool(client, settings.keys).enable(key_id)
    print(f"key {key_id} enabled", file=out)
    return 0
