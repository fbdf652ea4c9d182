"""Decision rules of the cluster-wide API key pool, pure (no Redis, no clock): the reference model.

``infra/key_pool_lua.py`` runs the same rules atomically in Redis; a test feeds one scenario to both
and compares every decision. Times are integer microseconds of Redis ``TIME``: exact both as Python
ints and as Lua doubles, so both sides compute identical decisions.

Admission: key *k* of account *a* is granted at ``now`` only when
- *k* is not disabled (by an operator, or after 401/403/InvalidApiKey/Arrearage) and not cooling;
- fewer than ``max_concurrency`` unexpired leases are out on *k*;
- each rate limit of *k* (per second, per minute) and of *a* (requests per minute) has room in its
  sliding window, widened by a margin for the network (a request reaches the provider 1-20 ms
  after it leaves, not always equally late), and the limit's smoothing schedule allows it;
- *a*'s tokens granted in the last minute (+ margin) plus this call's estimate fit ``tpm_limit``.
  A grant reserves the caller's estimate, else the account's recent peak tokens per call (decaying
  by 1/64 per call); the release replaces it with the usage the provider reported.

Send stamps: a window counts a call from the moment its request was *sent*, not from its grant.
The holder of a lease reports ``sent`` once the request is written to the socket; until then the
lease counts in every window as if sent *now* (it may go out any moment), so no delay between grant
and send — a slow TLS handshake, a descheduled thread — can put two calls closer than a window.
A release also stamps an unsent lease (the call, if any, went out before it), and a lease that
expires unsent counts as sent at its expiry.

Smoothing (low burst): a limit of C per S also spaces grants on a GCRA schedule of interval S/C with
tolerance S/2C, so at most two grants come in the time of one interval, never a burst of C.

The strategy orders the keys and the first admissible one is granted: ``round_robin`` (the key after
the last granted one), ``least_loaded`` (fewest leases out, then least recently granted),
``priority`` (1 = highest, then least loaded).

Cooldown after a 429: the provider's Retry-After (else ``default_cooldown``), doubled for each
earlier 429 not yet forgiven, capped at ``max_cooldown`` but never shorter than Retry-After; each
success forgives one 429.
"""

from __future__ import annotations

import bisect
import enum
import math
from dataclasses import dataclass, field
from typing import Any

from traffic.settings import KeyPoolSettings, KeySpec

SECOND_US = 1_000_000
MINUTE_US = 60 * SECOND_US
NEVER = -1
"""Wait of a pool whose every key is disabled: no key will come free by itself."""
WINDOW_MARGIN_US = 20_000
"""Every sliding window is this much longer than the provider's (grant-to-arrival jitter) …"""
SPAN_MARGIN_DIVISOR = 200
"""… plus 1/200 of its span: 25 ms for a second, 320 ms for a minute (cheap there, and robust)."""
CONCURRENCY_POLL_US = 50_000
"""Wait hint for a key at its concurrency cap (a lease may be released any moment)."""
MAX_STRIKES = 16
"""Unforgiven 429s counted at most (the cooldown is capped long before)."""
TOKEN_PEAK_DECAY = 64
"""The per-call token estimate (the recent peak) loses 1/64 per call, so it follows usage down."""
STRATEGIES = ("round_robin", "least_loaded", "priority")


class Outcome(enum.StrEnum):
    """How a leased call ended."""

    OK = "ok"
    RATE_LIMITED = "rate_limited"
    REJECTED = "rejected"
    UNAVAILABLE = "unavailable"
    """5xx, timeout, connection failure."""
    FAILED = "failed"
    """Another provider error or an unusable reply (the key itself is fine)."""
    CANCELLED = "cancelled"
    """The lease was given back without a call."""


@dataclass(frozen=True)
class Rate:
    """At most ``count`` grants in any window of ``span_us``."""

    count: int
    span_us: int

    @property
    def interval_us(self) -> int:
        """Smoothing interval: span / count, rounded up."""
        return -(-self.span_us // self.count)

    @property
    def tolerance_us(self) -> int:
        """How early a grant may come on the smoothing schedule."""
        return self.interval_us // 2


def per_second(qps: float | None) -> Rate | None:
    """A qps limit as the provider counts it: floor(qps) per second, or one per 1/qps s below 1."""
    if qps is None or qps <= 0:
        return None
    count = math.floor(qps + 1e-9)
    return Rate(count, SECOND_US) if count >= 1 else Rate(1, math.ceil(SECOND_US / qps))


def per_minute(rpm: int | None) -> Rate | None:
    """A requests-per-minute limit."""
    return Rate(rpm, MINUTE_US) if rpm else None


@dataclass(frozen=True)
class KeyRule:
    """What the pool enforces for one key (no secret)."""

    key_id: str
    account: str | None = None
    second: Rate | None = None
    minute: Rate | None = None
    max_concurrency: int = 0
    """0: no cap."""
    priority: int = 1


@dataclass(frozen=True)
class AccountRule:
    """What the pool enforces for one account, across its keys."""

    account_id: str
    minute: Rate | None = None
    tpm: int = 0
    """Tokens per minute; 0: no limit."""


@dataclass(frozen=True)
class PoolRules:
    """The whole rule set, built once from settings."""

    strategy: str
    keys: tuple[KeyRule, ...]
    accounts: tuple[AccountRule, ...] = ()
    margin_us: int = WINDOW_MARGIN_US
    default_cooldown_us: int = 10 * SECOND_US
    max_cooldown_us: int = 120 * SECOND_US
    lease_ttl_us: int = 60 * SECOND_US

    def reach(self, span_us: int) -> int:
        """How long a grant counts in a window of ``span_us``: the span plus the margin."""
        return span_us + self.margin_us + span_us // SPAN_MARGIN_DIVISOR

    def account(self, account_id: str | None) -> AccountRule | None:
        """The rule of an account, if it has one."""
        return next((a for a in self.accounts if a.account_id == account_id), None)

    def key(self, key_id: str) -> KeyRule | None:
        """The rule of a key, if it is in the pool."""
        return next((k for k in self.keys if k.key_id == key_id), None)

    def to_json(self) -> dict[str, Any]:
        """The rules as the Lua script reads them (0 for "no limit")."""

        def rate(r: Rate | None) -> list[int]:
            return [r.count, r.span_us, r.interval_us, r.tolerance_us] if r else [0, 0, 0, 0]

        index = {a.account_id: i + 1 for i, a in enumerate(self.accounts)}
        return {
            "strategy": self.strategy,
            "margin": self.margin_us,
            "divisor": SPAN_MARGIN_DIVISOR,
            "ttl": self.lease_ttl_us,
            "poll": CONCURRENCY_POLL_US,
            "keys": [
                {
                    "id": k.key_id,
                    "acct": index.get(k.account or "", 0),
                    "s": rate(k.second),
                    "m": rate(k.minute),
                    "conc": k.max_concurrency,
                    "prio": k.priority,
                }
                for k in self.keys
            ],
            "accounts": [{"id": a.account_id, "m": rate(a.minute), "tpm": a.tpm} for a in self.accounts],
        }


def rules_from_settings(settings: KeyPoolSettings, *, margin_us: int | None = None) -> PoolRules:
    """The rules of the enabled keys of ``settings`` (``margin_us`` overrides ``settings.window_margin_ms``)."""
    if settings.strategy not in STRATEGIES:
        raise ValueError(f"unknown key strategy {settings.strategy!r}")
    keys = tuple(key_rule(k) for k in settings.keys if k.enabled)
    used = {k.account for k in keys}
    accounts = tuple(
        AccountRule(a.account_id, per_minute(a.rpm_limit), a.tpm_limit or 0)
        for a in settings.accounts
        if a.account_id in used
    )
    return PoolRules(
        strategy=settings.strategy,
        keys=keys,
        accounts=accounts,
        margin_us=round(settings.window_margin_ms * 1000) if margin_us is None else margin_us,
        default_cooldown_us=round(settings.default_cooldown_s * SECOND_US),
        max_cooldown_us=round(settings.max_cooldown_s * SECOND_US),
        lease_ttl_us=round(settings.lease_ttl_s * SECOND_US),
    )


def key_rule(spec: KeySpec) -> KeyRule:
    """The rule of one configured key."""
    return KeyRule(
        key_id=spec.key_id,
        account=spec.account,
        second=per_second(spec.qps_limit),
        minute=per_minute(spec.rpm_limit),
        max_concurrency=spec.max_concurrency or 0,
        priority=spec.priority,
    )


# --------------------------------------------------------------------------- state


@dataclass
class KeyState:
    """Everything the pool remembers about one key (Redis: a hash, two windows, a lease set)."""

    second: list[int] = field(default_factory=list)
    """Send times in the per-second window, oldest first."""
    minute: list[int] = field(default_factory=list)
    """Send times in the last minute (+ margin), kept with or without a per-minute limit."""
    leases: dict[str, int] = field(default_factory=dict)
    """Lease id → expiry."""
    unsent: dict[str, int] = field(default_factory=dict)
    """Lease id → expiry of the leases whose request is not sent yet (they count as sent now)."""
    tat_second: int = 0
    tat_minute: int = 0
    last_grant: int = 0
    cool_until: int = 0
    strikes: int = 0
    disabled: str = ""
    """"", "operator" or "rejected"."""
    grants: int = 0
    ok: int = 0
    rate_limited: int = 0
    rejected: int = 0
    errors: int = 0
    latency_us: int = 0
    """Sum over successful calls."""
    tokens: int = 0
    last_error: str = ""
    last_error_at: int = 0
    last_ok_at: int = 0


@dataclass
class AccountState:
    """Everything the pool remembers about one account."""

    minute: list[int] = field(default_factory=list)
    """Send times of the account's calls in the last minute (+ margin), oldest first."""
    unsent: dict[str, int] = field(default_factory=dict)
    """Lease id → expiry of the account's leases whose request is not sent yet."""
    tokens: list[tuple[int, str, int]] = field(default_factory=list)
    """(grant time, lease id, tokens) in the token window, oldest first."""
    token_total: int = 0
    token_peak: int = 0
    tat_minute: int = 0
    grants: int = 0
    ok: int = 0
    rate_limited: int = 0
    errors: int = 0
    tokens_used: int = 0
    last_error: str = ""
    last_error_at: int = 0


@dataclass
class PoolState:
    """The state of every key and account, plus the round-robin position."""

    keys: dict[str, KeyState] = field(default_factory=dict)
    accounts: dict[str, AccountState] = field(default_factory=dict)
    last_granted: str = ""

    def key(self, key_id: str) -> KeyState:
        """A key's state (fresh if never seen)."""
        return self.keys.setdefault(key_id, KeyState())

    def account(self, account_id: str) -> AccountState:
        """An account's state (fresh if never seen)."""
        return self.accounts.setdefault(account_id, AccountState())


@dataclass(frozen=True)
class Grant:
    """A key granted: the lease ``lease_id`` on ``key_id`` until ``expires``."""

    key_id: str
    lease_id: str
    now: int
    expires: int
    tokens: int
    """Tokens reserved in the account's window (replaced by the actual count at release)."""


@dataclass(frozen=True)
class Denial:
    """No key now: one may be granted in ``wait_us`` (a hint), or ``NEVER`` when all are disabled."""

    wait_us: int
    now: int


# --------------------------------------------------------------------------- admission


def prune(rules: PoolRules, state: PoolState, now: int) -> None:
    """Forget expired leases and calls that left every window (a lease that expired unsent: sent at expiry)."""
    for rule in rules.keys:
        ks = state.key(rule.key_id)
        ks.leases = {lease: exp for lease, exp in ks.leases.items() if exp > now}
        for lease, expiry in sorted(ks.unsent.items(), key=lambda item: item[1]):
            if expiry <= now:
                del ks.unsent[lease]
                _stamp_key(ks, rule, expiry)
        if rule.second:
            ks.second = [t for t in ks.second if t > now - rules.reach(rule.second.span_us)]
        ks.minute = [t for t in ks.minute if t > now - rules.reach(MINUTE_US)]
    for acct in rules.accounts:
        st = state.account(acct.account_id)
        for lease, expiry in sorted(st.unsent.items(), key=lambda item: item[1]):
            if expiry <= now:
                del st.unsent[lease]
                bisect.insort(st.minute, expiry)
        cutoff = now - rules.reach(MINUTE_US)
        st.minute = [t for t in st.minute if t > cutoff]
        if acct.tpm:
            st.token_total -= sum(n for t, _, n in st.tokens if t <= cutoff)
            st.tokens = [e for e in st.tokens if e[0] > cutoff]
            if not st.tokens:
                st.token_total = 0


def _window_wait(times: list[int], unsent: int, rate: Rate, now: int, reach: int) -> int:
    """Microseconds until the window (already pruned) has room for one more grant; 0 if it has.

    The ``unsent`` calls count as sent now, after every stamped one: when one of them is the call
    that must leave the window, it leaves no sooner than ``reach`` from now.
    """
    count = len(times) + unsent
    if count < rate.count:
        return 0
    oldest = count - rate.count
    return times[oldest] + reach - now if oldest < len(times) else reach


def _schedule_wait(tat: int, rate: Rate, now: int) -> int:
    """Microseconds until the smoothing schedule allows a grant; 0 if it does."""
    return max(0, tat - rate.tolerance_us - now)


def _rate_waits(rules: PoolRules, times: list[int], unsent: int, tat: int, rate: Rate, now: int) -> list[int]:
    """The waits of one rate limit: its sliding window and its smoothing schedule."""
    return [_window_wait(times, unsent, rate, now, rules.reach(rate.span_us)), _schedule_wait(tat, rate, now)]


def _token_wait(st: AccountState, tpm: int, need: int, now: int, reach: int) -> int:
    """Microseconds until ``need`` more tokens fit in the account's window (need is capped at tpm)."""
    excess = st.token_total + min(need, tpm) - tpm
    if excess <= 0:
        return 0
    freed = 0
    for at, _, n in st.tokens:
        freed += n
        if freed >= excess:
            return at + reach - now
    return reach


def key_wait(rules: PoolRules, state: PoolState, rule: KeyRule, now: int, tokens: int) -> int:
    """0 when ``rule``'s key may be granted now, NEVER when disabled, else a wait hint (µs)."""
    ks = state.key(rule.key_id)
    if ks.disabled:
        return NEVER
    waits = [max(0, ks.cool_until - now)]
    if rule.max_concurrency and len(ks.leases) >= rule.max_concurrency:
        waits.append(min(min(ks.leases.values()) - now, CONCURRENCY_POLL_US))
    if rule.second:
        waits += _rate_waits(rules, ks.second, len(ks.unsent), ks.tat_second, rule.second, now)
    if rule.minute:
        waits += _rate_waits(rules, ks.minute, len(ks.unsent), ks.tat_minute, rule.minute, now)
    acct = rules.account(rule.account)
    if acct is not None:
        st = state.account(acct.account_id)
        if acct.minute:
            waits += _rate_waits(rules, st.minute, len(st.unsent), st.tat_minute, acct.minute, now)
        if acct.tpm:
            waits.append(_token_wait(st, acct.tpm, tokens, now, rules.reach(MINUTE_US)))
    return max(waits)


def order(rules: PoolRules, state: PoolState) -> list[KeyRule]:
    """The keys in the order the strategy tries them."""
    keys = list(rules.keys)
    if rules.strategy == "round_robin":
        ids = [k.key_id for k in keys]
        start = ids.index(state.last_granted) + 1 if state.last_granted in ids else 0
        return keys[start:] + keys[:start]

    def load(i: int) -> tuple[int, int, int]:
        ks = state.key(keys[i].key_id)
        return (len(ks.leases), ks.last_grant, i)

    if rules.strategy == "priority":
        return [keys[i] for i in sorted(range(len(keys)), key=lambda i: (keys[i].priority, *load(i)))]
    return [keys[i] for i in sorted(range(len(keys)), key=load)]


def token_estimate(rules: PoolRules, state: PoolState, rule: KeyRule, tokens: int | None) -> int:
    """Tokens to reserve for a call on ``rule``'s key: the caller's estimate, else the account's recent peak."""
    acct = rules.account(rule.account)
    if acct is None or not acct.tpm:
        return 0
    return tokens if tokens is not None else state.account(acct.account_id).token_peak


def acquire(
    rules: PoolRules,
    state: PoolState,
    now: int,
    lease_id: str,
    *,
    tokens: int | None = None,
    ttl_us: int | None = None,
    only: str | None = None,
) -> Grant | Denial:
    """Grant the first admissible key in strategy order (or key ``only``), or say how long to wait."""
    prune(rules, state, now)
    best = NEVER
    for rule in order(rules, state):
        if only is not None and rule.key_id != only:
            continue
        need = token_estimate(rules, state, rule, tokens)
        wait = key_wait(rules, state, rule, now, need)
        if wait == 0:
            ttl = min(ttl_us if ttl_us is not None else rules.lease_ttl_us, rules.lease_ttl_us)
            return _grant(rules, state, rule, now, lease_id, need, ttl)
        if wait != NEVER:
            best = wait if best == NEVER else min(best, wait)
    return Denial(best, now)


def _grant(rules: PoolRules, state: PoolState, rule: KeyRule, now: int, lease_id: str, need: int, ttl: int) -> Grant:
    """Record a grant in the key's and the account's state (its windows count it once sent)."""
    ks = state.key(rule.key_id)
    if rule.second:
        ks.tat_second = max(ks.tat_second, now) + rule.second.interval_us
    ks.unsent[lease_id] = now + ttl
    if rule.minute:
        ks.tat_minute = max(ks.tat_minute, now) + rule.minute.interval_us
    ks.leases[lease_id] = now + ttl
    ks.last_grant = now
    ks.grants += 1
    acct = rules.account(rule.account)
    reserved = 0
    if acct is not None:
        st = state.account(acct.account_id)
        st.grants += 1
        st.unsent[lease_id] = now + ttl
        if acct.minute:
            st.tat_minute = max(st.tat_minute, now) + acct.minute.interval_us
        if acct.tpm:
            reserved = need
            st.tokens.append((now, lease_id, need))
            st.token_total += need
    state.last_granted = rule.key_id
    return Grant(rule.key_id, lease_id, now, now + ttl, reserved)


# --------------------------------------------------------------------------- send stamps


def sent(rules: PoolRules, state: PoolState, now: int, grant: Grant) -> bool:
    """The request of ``grant`` went out by ``now``: its windows count it from ``now``.

    Returns False when there was nothing to stamp (already stamped, released or expired).
    """
    ks = state.key(grant.key_id)
    if ks.unsent.pop(grant.lease_id, None) is None:
        return False
    rule = rules.key(grant.key_id)
    if rule is not None:
        _stamp_key(ks, rule, now)
        acct = rules.account(rule.account)
        if acct is not None and state.account(acct.account_id).unsent.pop(grant.lease_id, None) is not None:
            bisect.insort(state.account(acct.account_id).minute, now)
    return True


def _stamp_key(ks: KeyState, rule: KeyRule, at: int) -> None:
    """Count one call sent at ``at`` in the key's windows."""
    if rule.second:
        bisect.insort(ks.second, at)
    bisect.insort(ks.minute, at)


# --------------------------------------------------------------------------- outcomes


def cooldown_us(strikes: int, retry_after_us: int | None, default_us: int, max_us: int) -> int:
    """Cooldown after the ``strikes``-th unforgiven 429 (see the module docstring)."""
    base = retry_after_us if retry_after_us is not None else default_us
    grown: int = min(max_us, base * 2 ** (strikes - 1))
    return max(grown, retry_after_us or 0)


def release(
    rules: PoolRules,
    state: PoolState,
    now: int,
    grant: Grant,
    outcome: Outcome,
    *,
    latency_us: int = 0,
    tokens: int | None = None,
    retry_after_us: int | None = None,
    error: str = "",
) -> int:
    """End a lease with ``outcome``; returns the cooldown started (µs), 0 if none.

    A lease still unsent is stamped as sent now: whatever call it made went out before its release.
    """
    sent(rules, state, now, grant)
    ks = state.key(grant.key_id)
    ks.leases.pop(grant.lease_id, None)
    rule = rules.key(grant.key_id)
    acct = rules.account(rule.account) if rule else None
    st = state.account(acct.account_id) if acct else None
    if st is not None and acct is not None and acct.tpm and tokens is not None:
        _correct_tokens(st, grant, tokens)
    cool = 0
    if outcome is Outcome.OK:
        ks.ok += 1
        ks.latency_us += latency_us
        ks.tokens += tokens or 0
        ks.strikes = max(0, ks.strikes - 1)
        ks.last_ok_at = now
    elif outcome is Outcome.RATE_LIMITED:
        ks.rate_limited += 1
        ks.strikes = min(MAX_STRIKES, ks.strikes + 1)
        cool = cooldown_us(ks.strikes, retry_after_us, rules.default_cooldown_us, rules.max_cooldown_us)
        ks.cool_until = max(ks.cool_until, now + cool)
    elif outcome is Outcome.REJECTED:
        ks.rejected += 1
        ks.disabled = "rejected"
    elif outcome in (Outcome.UNAVAILABLE, Outcome.FAILED):
        ks.errors += 1
    if outcome not in (Outcome.OK, Outcome.CANCELLED):
        ks.last_error, ks.last_error_at = error or outcome.value, now
    if st is not None:
        _account_outcome(st, outcome, now, tokens, error)
    return cool


def _correct_tokens(st: AccountState, grant: Grant, actual: int) -> None:
    """Replace a call's estimate with its actual tokens, in the window and in the recent peak."""
    for i, (at, lease, n) in enumerate(st.tokens):
        if lease == grant.lease_id:
            st.tokens[i] = (at, lease, actual)
            st.token_total += actual - n
            break
    st.token_peak = max(actual, st.token_peak - st.token_peak // TOKEN_PEAK_DECAY)


def _account_outcome(st: AccountState, outcome: Outcome, now: int, tokens: int | None, error: str) -> None:
    """Count an outcome against the key's account."""
    if outcome is Outcome.OK:
        st.ok += 1
        st.tokens_used += tokens or 0
    elif outcome is Outcome.RATE_LIMITED:
        st.rate_limited += 1
    elif outcome in (Outcome.UNAVAILABLE, Outcome.FAILED, Outcome.REJECTED):
        st.errors += 1
    if outcome not in (Outcome.OK, Outcome.CANCELLED):
        st.last_error, st.last_error_at = error or outcome.value, now


def disable(state: PoolState, key_id: str, reason: str = "operator") -> None:
    """Take a key out of the pool until it is enabled (or, if ``rejected``, re-verified)."""
    state.key(key_id).disabled = reason


def enable(state: PoolState, key_id: str) -> None:
    """Put a key back: not disabled, not cooling, 429s forgiven."""
    ks = state.key(key_id)
    ks.disabled, ks.cool_until, ks.strikes = "", 0, 0


def verified(state: PoolState, key_id: str, ok: bool) -> bool:
    """A verification call's result: a key rejected by the provider that now passes is enabled again.

    Returns whether the key was re-enabled; an operator's disable is never lifted by a verification.
    """
    if ok and state.key(key_id).disabled == "rejected":
        enable(state, key_id)
        return True
    return False
