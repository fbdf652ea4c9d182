"""The cluster-wide API key pool: grants under per-key and per-account limits, decided in Redis.

Every decision is one Lua script (``infra.key_pool_lua``) on Redis ``TIME`` — no worker clock —
following the rules of ``traffic.key_pool_rules``. A grant is a lease with a TTL, so a crashed worker never
leaks a slot. Redis holds key ids, times and counters only; the secrets stay in this process, which
maps a granted key id back to its ``KeySpec``.

Send stamps: the holder of a lease calls ``sent`` once its request is written (``VisionClient``
does it from inside the HTTP connection); the windows count the call from then (see
``traffic.key_pool_rules``). A holder that never calls it is still safe: its release stamps it.

Waiting: a caller that finds no key free waits *without holding anything*, bounded by its deadline,
behind a process-local gate so that only one task per process polls Redis (at the moment the script
said a key frees up) while the others queue locally.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from infra.key_pool_lua import ACQUIRE, RELEASE, SENT, VERIFIED
from traffic import redis_keys
from traffic.key_pool_rules import (
    MAX_STRIKES,
    MINUTE_US,
    NEVER,
    SECOND_US,
    TOKEN_PEAK_DECAY,
    AccountState,
    Grant,
    KeyState,
    Outcome,
    PoolRules,
    PoolState,
    rules_from_settings,
)
from traffic.key_pool_view import status_view
from traffic.settings import KeyPoolSettings, KeySpec, Settings

log = logging.getLogger(__name__)

MIN_SLEEP_S = 0.0005
"""Shortest wait between two tries (a hint of 0 µs would spin)."""


@dataclass(frozen=True)
class Lease:
    """A granted key: use ``key.api_key`` for one call, then ``KeyPool.release`` the lease."""

    key: KeySpec
    grant: Grant

    @property
    def key_id(self) -> str:
        """The granted key's id."""
        return self.key.key_id

    @property
    def lease_id(self) -> str:
        """The lease's id (in Redis: a member of the key's lease set)."""
        return self.grant.lease_id


@dataclass(frozen=True)
class NoKey:
    """No key was granted: one may be in ``retry_in_s`` (a hint); None when every key is disabled."""

    retry_in_s: float | None
    at_us: int = 0
    """Redis time of the decision (0 when Redis was not asked)."""


@dataclass(frozen=True)
class Released:
    """What ``KeyPool.release`` did: the Redis time and the cooldown it started (0 if none)."""

    at_us: int
    cooldown_s: float


@dataclass(frozen=True)
class Stamped:
    """What ``KeyPool.sent`` did: the Redis time, and whether the lease was stamped by it."""

    at_us: int
    stamped: bool


class KeyPool:
    """The pool of the configured keys, shared through Redis by every worker of the cluster."""

    def __init__(self, client: redis.Redis, settings: KeyPoolSettings, *, margin_us: int | None = None) -> None:
        self.rules: PoolRules = rules_from_settings(settings, margin_us=margin_us)
        self._settings = settings
        self._specs = {k.key_id: k for k in settings.keys if k.enabled}
        self._client = client
        self._acquire = client.register_script(ACQUIRE)
        self._release = client.register_script(RELEASE)
        self._sent = client.register_script(SENT)
        self._verified = client.register_script(VERIFIED)
        self._rules_json = json.dumps(self.rules.to_json())
        self._acquire_keys = [redis_keys.KEY_POOL_LAST]
        for rule in self.rules.keys:
            self._acquire_keys += [
                redis_keys.key_pool_key(rule.key_id),
                redis_keys.key_pool_window(rule.key_id, "second"),
                redis_keys.key_pool_window(rule.key_id, "minute"),
                redis_keys.key_pool_leases(rule.key_id),
                redis_keys.key_pool_unsent(rule.key_id),
            ]
        for acct in self.rules.accounts:
            self._acquire_keys += [
                redis_keys.key_pool_account(acct.account_id),
                redis_keys.key_pool_account_window(acct.account_id),
                redis_keys.key_pool_account_tokens(acct.account_id),
                redis_keys.key_pool_account_unsent(acct.account_id),
            ]
        self._gate = threading.Lock()

    @property
    def configured(self) -> bool:
        """True when the pool has any enabled key."""
        return bool(self.rules.keys)

    def try_acquire(
        self, *, tokens: int | None = None, ttl_s: float | None = None, only: str | None = None
    ) -> Lease | NoKey:
        """One atomic try: a lease on the strategy's first admissible key (or on ``only``), or how long to wait."""
        if not self.configured or (only is not None and only not in self._specs):
            return NoKey(None)
        ttl = -1 if ttl_s is None else max(1, round(ttl_s * SECOND_US))
        lease_id = uuid.uuid4().hex
        reply = self._acquire(
            keys=self._acquire_keys,
            args=[self._rules_json, lease_id, -1 if tokens is None else tokens, ttl, only or ""],
        )
        granted, key_id, now, value, reserved = reply
        if granted:
            key_id = key_id.decode() if isinstance(key_id, bytes) else str(key_id)
            grant = Grant(key_id, lease_id, int(now), int(value), int(reserved))
            return Lease(self._specs[key_id], grant)
        wait = int(value)
        return NoKey(None if wait == NEVER else wait / SECOND_US, int(now))

    def acquire(
        self, *, until: float, tokens: int | None = None, ttl_s: float | None = None, only: str | None = None
    ) -> Lease | NoKey:
        """A lease, waiting (holding nothing) until epoch ``until`` at most; NoKey when none came in time."""
        left = until - time.time()
        if left <= 0 or not self._gate.acquire(timeout=left):
            return NoKey(0.0)
        try:
            while True:
                got = self.try_acquire(tokens=tokens, ttl_s=ttl_s, only=only)
                if isinstance(got, Lease) or got.retry_in_s is None:
                    return got
                if time.time() + got.retry_in_s >= until:
                    return got  # nothing frees up in time: say so at once instead of sleeping
                time.sleep(max(got.retry_in_s, MIN_SLEEP_S))
        finally:
            self._gate.release()

    def sent(self, lease: Lease) -> Stamped:
        """Stamp ``lease``'s request as sent now (nothing to stamp when already stamped, released or expired)."""
        rule = self.rules.key(lease.key_id)
        second = bool(rule and rule.second)
        span = rule.second.span_us if rule and rule.second else 0
        reply = self._sent(
            keys=self._stamp_keys(lease.key_id),
            args=[lease.lease_id, "1" if second else "0", self._keep_ms(span), self._keep_ms(MINUTE_US)],
        )
        return Stamped(int(reply[0]), bool(int(reply[1])))

    def _stamp_keys(self, key_id: str) -> list[str]:
        """The unsent set and windows of a key (and of its account) that a send stamp touches."""
        names = [
            redis_keys.key_pool_unsent(key_id),
            redis_keys.key_pool_window(key_id, "second"),
            redis_keys.key_pool_window(key_id, "minute"),
        ]
        rule = self.rules.key(key_id)
        acct = self.rules.account(rule.account) if rule else None
        if acct is not None:
            names += [
                redis_keys.key_pool_account_unsent(acct.account_id),
                redis_keys.key_pool_account_window(acct.account_id),
            ]
        return names

    def _keep_ms(self, span_us: int) -> int:
        """How long (ms) Redis keeps a window of ``span_us`` after its last stamp."""
        return -(-self.rules.reach(span_us) // 1000) + 1000

    def release(
        self,
        lease: Lease,
        outcome: Outcome,
        *,
        latency_s: float = 0.0,
        tokens: int | None = None,
        retry_after_s: float | None = None,
        error: str = "",
    ) -> Released:
        """End ``lease`` with the call's outcome (``error``: a short code, never a provider message)."""
        rule = self.rules.key(lease.key_id)
        acct = self.rules.account(rule.account) if rule else None
        stamp = self._stamp_keys(lease.key_id)
        names = [redis_keys.key_pool_key(lease.key_id), redis_keys.key_pool_leases(lease.key_id), *stamp[:3]]
        if acct is not None:
            names += [
                redis_keys.key_pool_account(acct.account_id),
                redis_keys.key_pool_account_tokens(acct.account_id),
                *stamp[3:],
            ]
        second = rule.second if rule else None
        args = {
            "lease": lease.lease_id,
            "outcome": outcome.value,
            "latency": max(0, round(latency_s * SECOND_US)),
            "tokens": -1 if tokens is None else tokens,
            "est": lease.grant.tokens,
            "retry": -1 if retry_after_s is None else round(retry_after_s * SECOND_US),
            "error": error[:120],
            "tpm": acct.tpm if acct else 0,
            "default": self.rules.default_cooldown_us,
            "max": self.rules.max_cooldown_us,
            "max_strikes": MAX_STRIKES,
            "decay": TOKEN_PEAK_DECAY,
            "second": second is not None,
            "keep_second": self._keep_ms(second.span_us if second else 0),
            "keep_minute": self._keep_ms(MINUTE_US),
        }
        now, cool = self._release(keys=names, args=[json.dumps(args)])
        seconds = int(cool) / SECOND_US
        if outcome is Outcome.RATE_LIMITED:
            log.warning("key %s rate limited by the provider; cooling %.1f s", lease.key_id, seconds)
        elif outcome is Outcome.REJECTED:
            log.error("key %s rejected by the provider (%s); disabled until verified or enabled", lease.key_id, error)
        return Released(int(now), seconds)

    def disable(self, key_id: str, reason: str = "operator") -> None:
        """Take a key out of the pool on every worker at once, until ``enable``."""
        self._client.hset(redis_keys.key_pool_key(key_id), mapping={"disabled": reason, "disabled_at": self.now_us()})
        log.warning("key %s disabled (%s)", key_id, reason)

    def enable(self, key_id: str) -> None:
        """Put a key back into the pool: not disabled, not cooling, its 429s forgiven."""
        self._client.hset(redis_keys.key_pool_key(key_id), mapping={"disabled": "", "cool_until": 0, "strikes": 0})
        log.info("key %s enabled", key_id)

    def verified(self, key_id: str, ok: bool) -> bool:
        """Record a verification: a key rejected by the provider that now passes is enabled again."""
        if not ok:
            return False
        return bool(self._verified(keys=[redis_keys.key_pool_key(key_id)], args=[]))

    def now_us(self) -> int:
        """Redis server time in microseconds."""
        seconds, micros = self._client.time()
        return int(seconds) * SECOND_US + int(micros)

    def state(self) -> PoolState:
        """The pool's state as stored in Redis (every configured key and account)."""
        return read_state(self._client, self.rules)

    def status(self) -> dict[str, Any]:
        """The status view: state, cooldown, calls, success rate, last error per key and account."""
        now = self.now_us()
        limits = {a.account_id: (a.rpm_limit, a.tpm_limit) for a in self._settings.accounts}
        return status_view(self.rules, self.state(), now, configured=self._settings.keys, accounts=limits)


def pool_status(client: redis.Redis, settings: Settings) -> dict[str, Any]:
    """The key pool's status view for the REST API: JSON-safe, key ids and masked suffixes only."""
    return KeyPool(client, settings.keys).status()


# --------------------------------------------------------------------------- reading state


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _int(fields: dict[str, str], name: str) -> int:
    raw = fields.get(name)
    if not raw:
        return 0
    try:
        return int(raw)
    except ValueError:
        return int(float(raw))


def _times(pairs: list[tuple[Any, float]]) -> list[int]:
    return [int(score) for _, score in pairs]


def read_state(client: redis.Redis, rules: PoolRules) -> PoolState:
    """Every configured key's and account's state, read in one round trip."""
    pipe = client.pipeline(transaction=False)
    for rule in rules.keys:
        pipe.hgetall(redis_keys.key_pool_key(rule.key_id))
        for name in (
            redis_keys.key_pool_window(rule.key_id, "second"),
            redis_keys.key_pool_window(rule.key_id, "minute"),
        ):
            pipe.zrange(name, 0, -1, withscores=True)
        pipe.zrange(redis_keys.key_pool_leases(rule.key_id), 0, -1, withscores=True)
        pipe.zrange(redis_keys.key_pool_unsent(rule.key_id), 0, -1, withscores=True)
    for acct in rules.accounts:
        pipe.hgetall(redis_keys.key_pool_account(acct.account_id))
        pipe.zrange(redis_keys.key_pool_account_window(acct.account_id), 0, -1, withscores=True)
        pipe.zrange(redis_keys.key_pool_account_tokens(acct.account_id), 0, -1, withscores=True)
        pipe.zrange(redis_keys.key_pool_account_unsent(acct.account_id), 0, -1, withscores=True)
    pipe.get(redis_keys.KEY_POOL_LAST)
    replies: Iterator[Any] = iter(pipe.execute())
    state = PoolState()
    for rule in rules.keys:
        state.keys[rule.key_id] = _key_state(*(next(replies) for _ in range(5)))
    for acct in rules.accounts:
        state.accounts[acct.account_id] = _account_state(*(next(replies) for _ in range(4)))
    last = next(replies)
    state.last_granted = _text(last) if last is not None else ""
    return state


def _key_state(raw: dict[Any, Any], second: Any, minute: Any, leases: Any, unsent: Any) -> KeyState:
    """A key's state from its hash, windows and lease set."""
    f = {_text(k): _text(v) for k, v in raw.items()}
    return KeyState(
        second=_times(second),
        minute=_times(minute),
        leases={_text(m): int(score) for m, score in leases},
        unsent={_text(m): int(score) for m, score in unsent},
        tat_second=_int(f, "tat_s"),
        tat_minute=_int(f, "tat_m"),
        last_grant=_int(f, "last"),
        cool_until=_int(f, "cool_until"),
        strikes=_int(f, "strikes"),
        disabled=f.get("disabled", ""),
        grants=_int(f, "grants"),
        ok=_int(f, "ok"),
        rate_limited=_int(f, "rate_limited"),
        rejected=_int(f, "rejected"),
        errors=_int(f, "errors"),
        latency_us=_int(f, "latency_us"),
        tokens=_int(f, "tokens"),
        last_error=f.get("last_error", ""),
        last_error_at=_int(f, "last_error_at"),
        last_ok_at=_int(f, "last_ok_at"),
    )


def _account_state(raw: dict[Any, Any], minute: Any, tokens: Any, unsent: Any) -> AccountState:
    """An account's state from its hash and windows."""
    f = {_text(k): _text(v) for k, v in raw.items()}
    entries = []
    for member, score in tokens:
        lease, _, count = _text(member).rpartition("|")
        entries.append((int(score), lease, int(count)))
    return AccountState(
        minute=_times(minute),
        unsent={_text(m): int(score) for m, score in unsent},
        tokens=entries,
        token_total=_int(f, "tok_total"),
        token_peak=_int(f, "tok_peak"),
        tat_minute=_int(f, "tat_m"),
        grants=_int(f, "grants"),
        ok=_int(f, "ok"),
        rate_limited=_int(f, "rate_limited"),
        errors=_int(f, "errors"),
        tokens_used=_int(f, "tokens_used"),
        last_error=f.get("last_error", ""),
        last_error_at=_int(f, "last_error_at"),
    )


__all__ = ["KeyPool", "Lease", "NoKey", "Outcome", "Released", "Stamped", "pool_status", "read_state"]
