"""The key pool's status view, pure: per key and per account state, cooldown, calls, success, last error.

JSON-safe, for the REST API, the CLI and Prometheus; key ids and masked suffixes only, never a secret.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

from traffic.key_pool_rules import SECOND_US, KeyRule, PoolRules, PoolState, key_wait, prune, token_estimate
from traffic.settings import KeySpec


class KeyStateName(enum.StrEnum):
    """A key's state in the status view."""

    READY = "ready"
    BUSY = "busy"
    """At its concurrency cap or rate limit right now."""
    COOLING = "cooling"
    DISABLED = "disabled"
    """Disabled by an operator."""
    REJECTED = "rejected"
    """Rejected by the provider; usable again once re-verified or enabled."""
    OFF = "off"
    """``enabled: false`` in the configuration."""


def key_state_name(rules: PoolRules, state: PoolState, rule: KeyRule | None, now: int) -> KeyStateName:
    """The state word of a key (``rule`` None: disabled in the configuration)."""
    if rule is None:
        return KeyStateName.OFF
    ks = state.key(rule.key_id)
    if ks.disabled:
        return KeyStateName.REJECTED if ks.disabled == "rejected" else KeyStateName.DISABLED
    if ks.cool_until > now:
        return KeyStateName.COOLING
    need = token_estimate(rules, state, rule, None)
    return KeyStateName.READY if key_wait(rules, state, rule, now, need) == 0 else KeyStateName.BUSY


def _seconds(us: int) -> float:
    return round(us / SECOND_US, 3)


def _rate_of(ok: int, failed: int) -> float | None:
    return round(ok / (ok + failed), 4) if ok + failed else None


def status_view(
    rules: PoolRules,
    state: PoolState,
    now: int,
    *,
    configured: Iterable[KeySpec] = (),
    accounts: Mapping[str, tuple[int | None, int | None]] | None = None,
) -> dict[str, Any]:
    """The pool as JSON-safe data: key ids and masked suffixes only, never a secret.

    ``configured`` lists every key of the configuration (disabled ones shown as ``off``); ``accounts``
    maps account ids to their configured (rpm, tpm) limits.
    """
    prune(rules, state, now)
    specs = list(configured) or [KeySpec(r.key_id, "", account=r.account, priority=r.priority) for r in rules.keys]
    keys_out = [_key_view(rules, state, spec, now) for spec in specs]
    limits = dict(accounts or {})
    for acct in rules.accounts:
        limits.setdefault(acct.account_id, (acct.minute.count if acct.minute else None, acct.tpm or None))
    accounts_out = [_account_view(rules, state, aid, lim, keys_out, now) for aid, lim in limits.items()]
    return {
        "strategy": rules.strategy,
        "serverTime": _seconds(now),
        "usableKeys": sum(1 for k in keys_out if k["state"] in (KeyStateName.READY, KeyStateName.BUSY)),
        "keys": keys_out,
        "accounts": accounts_out,
    }


def masked_suffix(spec: KeySpec) -> str:
    """``…abcd``: the secret's last four characters, only for secrets of eight or more."""
    return f"…{spec.api_key[-4:]}" if len(spec.api_key) >= 8 else "…"


def _key_view(rules: PoolRules, state: PoolState, spec: KeySpec, now: int) -> dict[str, Any]:
    """One key's row."""
    rule = rules.key(spec.key_id)
    ks = state.key(spec.key_id)
    failed = ks.rate_limited + ks.rejected + ks.errors
    return {
        "keyId": spec.key_id,
        "masked": masked_suffix(spec),
        "account": spec.account,
        "priority": spec.priority,
        "state": key_state_name(rules, state, rule, now).value,
        "disabledReason": ks.disabled or None,
        "cooldownLeftS": _seconds(max(0, ks.cool_until - now)),
        "strikes": ks.strikes,
        "inFlight": len(ks.leases),
        "lastSecond": len(ks.second) + len(ks.unsent),
        "lastMinute": len(ks.minute) + len(ks.unsent),
        "limits": {"qps": spec.qps_limit, "rpm": spec.rpm_limit, "maxConcurrency": spec.max_concurrency},
        "calls": ks.grants,
        "ok": ks.ok,
        "rateLimited": ks.rate_limited,
        "rejected": ks.rejected,
        "errors": ks.errors,
        "successRate": _rate_of(ks.ok, failed),
        "avgLatencyMs": round(ks.latency_us / ks.ok / 1000, 1) if ks.ok else None,
        "tokens": ks.tokens,
        "lastError": ks.last_error or None,
        "lastErrorAt": _seconds(ks.last_error_at) if ks.last_error_at else None,
        "lastUsedAt": _seconds(ks.last_grant) if ks.last_grant else None,
    }


def _account_view(
    rules: PoolRules,
    state: PoolState,
    account_id: str,
    limits: tuple[int | None, int | None],
    keys_out: list[dict[str, Any]],
    now: int,
) -> dict[str, Any]:
    """One account's row."""
    st = state.account(account_id)
    mine = [k for k in keys_out if k["account"] == account_id]
    usable = [k for k in mine if k["state"] in (KeyStateName.READY, KeyStateName.BUSY)]
    return {
        "accountId": account_id,
        "state": "ready" if usable else "unusable",
        "keys": [k["keyId"] for k in mine],
        "usableKeys": len(usable),
        "limits": {"rpm": limits[0], "tpm": limits[1]},
        "lastMinute": len(st.minute) + len(st.unsent),
        "tokensLastMinute": st.token_total if limits[1] else None,
        "calls": st.grants,
        "ok": st.ok,
        "rateLimited": st.rate_limited,
        "errors": st.errors,
        "successRate": _rate_of(st.ok, st.rate_limited + st.errors),
        "tokens": st.tokens_used,
        "lastError": st.last_error or None,
        "lastErrorAt": _seconds(st.last_error_at) if st.last_error_at else None,
    }
