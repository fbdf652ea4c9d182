"""The key pool's decision rules with a fake clock: windows, smoothing, accounts, caps, strategies, cooldowns."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from traffic.key_pool_rules import (
    CONCURRENCY_POLL_US,
    MINUTE_US,
    NEVER,
    SECOND_US,
    Denial,
    Grant,
    Outcome,
    PoolRules,
    PoolState,
    Rate,
    acquire,
    cooldown_us,
    disable,
    enable,
    per_minute,
    per_second,
    release,
    rules_from_settings,
    sent,
    verified,
)
from traffic.key_pool_view import status_view
from traffic.settings import AccountSpec, KeyPoolSettings, KeySpec

T0 = 1_700_000_000 * SECOND_US
MARGIN = 20_000
SECOND_REACH = SECOND_US + MARGIN + SECOND_US // 200
"""How long a grant counts in a one-second window: the span, the margin and 1/200 of the span."""
MINUTE_REACH = MINUTE_US + MARGIN + MINUTE_US // 200


def ms(value: float) -> int:
    """Milliseconds as µs."""
    return round(value * 1000)


def s(value: float) -> int:
    """Seconds as µs."""
    return round(value * SECOND_US)


class FakePool:
    """The model with a fake clock (µs since T0) and numbered leases."""

    def __init__(self, *keys: KeySpec, accounts: tuple[AccountSpec, ...] = (), **options: object) -> None:
        settings = KeyPoolSettings(keys=keys, accounts=accounts, **options)  # type: ignore[arg-type]
        self.rules: PoolRules = rules_from_settings(settings, margin_us=MARGIN)
        self.state = PoolState()
        self.now = T0
        self._ids = itertools.count(1)

    def at(self, offset_us: int) -> FakePool:
        """Move the clock to ``offset_us`` after T0."""
        self.now = T0 + offset_us
        return self

    def take(self, *, send: bool = True, **options: object) -> Grant | Denial:
        """One acquire at the current time; a grant's request is sent at once unless ``send`` is False."""
        got = acquire(self.rules, self.state, self.now, f"lease-{next(self._ids)}", **options)  # type: ignore[arg-type]
        if send and isinstance(got, Grant):
            assert sent(self.rules, self.state, self.now, got)
        return got

    def send(self, grant: Grant) -> bool:
        """Stamp ``grant``'s request as sent at the current time."""
        return sent(self.rules, self.state, self.now, grant)

    def key_id(self, **options: object) -> str | None:
        """The key granted now, or None."""
        got = self.take(**options)
        return got.key_id if isinstance(got, Grant) else None

    def end(self, grant: Grant, outcome: Outcome = Outcome.OK, **options: object) -> int:
        """Release a grant at the current time."""
        return release(self.rules, self.state, self.now, grant, outcome, **options)  # type: ignore[arg-type]

    def drive(self, seconds: float, step_us: int) -> list[Grant]:
        """Try every ``step_us`` for ``seconds``, releasing each grant at once; the grants."""
        grants = []
        for offset in range(0, s(seconds), step_us):
            got = self.at(offset).take()
            if isinstance(got, Grant):
                grants.append(got)
                self.end(got)
        return grants


def key(key_id: str, **fields: object) -> KeySpec:
    """A key spec with a dummy secret."""
    return KeySpec(key_id, f"sk-test-secret-{key_id}-0000", **fields)  # type: ignore[arg-type]


def max_in_window(times: list[int], span_us: int) -> int:
    """Most grants in any half-open window of ``span_us``."""
    times = sorted(times)
    return max((sum(1 for t in times if start - span_us < t <= start) for start in times), default=0)


# --------------------------------------------------------------------------- limits


def test_qps_and_rpm_limits_become_rates_as_the_provider_counts_them() -> None:
    assert per_second(5) == Rate(5, SECOND_US)
    assert per_second(2.5) == Rate(2, SECOND_US), "floor(qps) per second, like the provider"
    assert per_second(0.5) == Rate(1, 2 * SECOND_US), "below 1 qps: one per 1/qps seconds"
    assert per_second(None) is None and per_minute(None) is None
    assert per_minute(300) == Rate(300, MINUTE_US)
    assert Rate(5, SECOND_US).interval_us == ms(200) and Rate(5, SECOND_US).tolerance_us == ms(100)


def test_a_key_never_exceeds_its_per_second_limit_in_any_window_and_is_spread_out() -> None:
    pool = FakePool(key("a", qps_limit=5))
    grants = pool.drive(10, ms(1))
    times = [g.now for g in grants]
    assert max_in_window(times, SECOND_REACH) <= 5
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= ms(100), "never a burst: at most two grants per 200 ms interval"
    rate = len(grants) / 10
    assert 5 / 1.025 - 0.15 <= rate <= 5.0


def test_the_wait_hint_is_exact_for_the_window() -> None:
    pool = FakePool(key("a", qps_limit=1))
    assert isinstance(pool.at(0).take(), Grant)
    denied = pool.at(ms(300)).take()
    assert isinstance(denied, Denial) and denied.wait_us == SECOND_REACH - ms(300)
    assert isinstance(pool.at(SECOND_REACH - 1).take(), Denial)
    assert isinstance(pool.at(SECOND_REACH).take(), Grant)


def test_a_per_minute_limit_is_a_sliding_window_with_smoothing() -> None:
    pool = FakePool(key("a", rpm_limit=3))
    granted = [t for t in range(0, s(130), ms(100)) if isinstance(pool.at(t).take(), Grant)]
    assert granted[:3] == [0, s(10), s(30)], "interval 20 s, 10 s early at most"
    assert granted[3] >= MINUTE_REACH
    assert max_in_window(granted, MINUTE_REACH) <= 3


def test_keys_of_one_account_share_its_budget() -> None:
    keys = [key(k, qps_limit=5, account="acct") for k in "abc"]
    pool = FakePool(*keys, accounts=(AccountSpec("acct", rpm_limit=120),))
    grants = pool.drive(30, ms(5))
    assert {g.key_id for g in grants} == {"a", "b", "c"}
    assert max_in_window([g.now for g in grants], MINUTE_REACH) <= 120
    assert 2 * 30 - 2 <= len(grants) <= 2 * 30 + 1, "2/s for the account, not 15/s for three keys"


def test_an_account_without_limits_does_not_bind() -> None:
    pool = FakePool(key("a", qps_limit=5, account="x"), accounts=(AccountSpec("x"),))
    assert len(pool.drive(4, ms(1))) >= 19


def test_tokens_per_minute_are_reserved_then_corrected_to_the_reported_usage() -> None:
    pool = FakePool(key("a", account="x"), accounts=(AccountSpec("x", tpm_limit=1000),))
    first, second = pool.at(0).take(tokens=400), pool.at(0).take(tokens=400)
    assert isinstance(first, Grant) and isinstance(second, Grant) and first.tokens == 400
    assert isinstance(pool.at(0).take(tokens=400), Denial), "1200 would exceed 1000"
    pool.end(first, tokens=100)
    assert isinstance(pool.at(1).take(tokens=400), Grant), "100 + 400 + 400 fits"
    denied = pool.at(2).take(tokens=400)
    assert isinstance(denied, Denial) and denied.wait_us == MINUTE_REACH - 2
    assert isinstance(pool.at(MINUTE_REACH).take(tokens=400), Grant)


def test_without_an_estimate_the_accounts_recent_peak_is_reserved() -> None:
    pool = FakePool(key("a", account="x"), accounts=(AccountSpec("x", tpm_limit=10_000),))
    first = pool.at(0).take()
    assert isinstance(first, Grant) and first.tokens == 0
    pool.end(first, tokens=900)
    second = pool.at(1).take()
    assert isinstance(second, Grant) and second.tokens == 900
    pool.end(second, tokens=100)
    assert pool.state.account("x").token_peak == 900 - 900 // 64, "the peak decays by 1/64 per call"


def test_the_concurrency_cap_counts_leases_and_an_expired_lease_frees_its_slot() -> None:
    pool = FakePool(key("a", max_concurrency=1), lease_ttl_s=5)
    held = pool.at(0).take()
    assert isinstance(held, Grant) and held.expires == s(5) + T0
    denied = pool.at(ms(10)).take()
    assert isinstance(denied, Denial) and denied.wait_us == CONCURRENCY_POLL_US
    assert isinstance(pool.at(s(5)).take(), Grant), "the holder died: its lease expired"


def test_a_released_lease_frees_its_slot_at_once_and_ttl_is_capped() -> None:
    pool = FakePool(key("a", max_concurrency=1), lease_ttl_s=5)
    held = pool.at(0).take(ttl_us=s(60))
    assert isinstance(held, Grant) and held.expires == T0 + s(5), "never longer than the configured TTL"
    pool.end(held)
    assert isinstance(pool.at(1).take(), Grant)


# --------------------------------------------------------------------------- send stamps


def test_a_lease_not_sent_yet_counts_as_sent_now_until_it_is_stamped() -> None:
    pool = FakePool(key("a", qps_limit=1))
    late = pool.at(0).take(send=False)
    assert isinstance(late, Grant)
    denied = pool.at(s(3)).take()
    assert isinstance(denied, Denial) and denied.wait_us == SECOND_REACH, "it may go out any moment"
    assert pool.at(s(3)).send(late) and not pool.send(late), "stamped once"
    assert isinstance(pool.at(s(3) + SECOND_REACH - 1).take(), Denial)
    assert isinstance(pool.at(s(3) + SECOND_REACH).take(), Grant), "a window after the send, not the grant"


def test_a_release_stamps_an_unsent_lease_and_an_expired_one_counts_as_sent_at_its_expiry() -> None:
    pool = FakePool(key("a", qps_limit=1, account="x"), accounts=(AccountSpec("x", rpm_limit=120),), lease_ttl_s=2)
    first = pool.at(0).take(send=False)
    assert isinstance(first, Grant)
    pool.at(ms(500)).end(first)
    assert pool.state.key("a").second == [T0 + ms(500)] and pool.state.account("x").minute == [T0 + ms(500)]
    assert isinstance(pool.at(ms(500) + SECOND_REACH - 1).take(), Denial)
    dead = pool.at(ms(500) + SECOND_REACH).take(send=False)
    assert isinstance(dead, Grant), "the holder dies before sending"
    expiry = dead.expires - T0
    assert isinstance(pool.at(expiry - 1).take(), Denial)
    assert pool.at(expiry).take() is not None and pool.state.key("a").second[-1] == T0 + expiry
    assert not pool.send(dead), "nothing left to stamp"


def test_no_delay_between_grant_and_send_puts_two_calls_within_one_window() -> None:
    rng = random.Random(11)
    pool = FakePool(
        key("a", qps_limit=5, account="x"),
        key("b", qps_limit=5, account="x"),
        accounts=(AccountSpec("x", rpm_limit=300),),
        strategy="least_loaded",
    )
    waiting: list[tuple[int, Grant]] = []
    sends: dict[str, list[int]] = {"a": [], "b": []}
    for now in range(0, s(90), ms(2)):
        pool.at(now)
        for due, grant in [w for w in waiting if w[0] <= now]:
            waiting.remove((due, grant))
            assert pool.send(grant)
            sends[grant.key_id].append(now)
            pool.end(grant)
        got = pool.take(send=False)
        if isinstance(got, Grant):  # sent 0-800 ms later: a slow handshake, a descheduled thread
            waiting.append((now + rng.choice((0, ms(1), ms(5), ms(40), ms(300), ms(800))), got))
    for key_id, times in sends.items():
        assert max_in_window(times, SECOND_REACH) <= 5, key_id
    assert max_in_window(sends["a"] + sends["b"], MINUTE_REACH) <= 300
    assert len(sends["a"]) + len(sends["b"]) >= 0.9 * 90 * 300 / 60, "the account's budget is still used"


# --------------------------------------------------------------------------- strategies


def test_round_robin_takes_the_key_after_the_last_granted_one() -> None:
    pool = FakePool(key("a"), key("b"), key("c"), strategy="round_robin")
    assert [pool.at(i).key_id() for i in range(7)] == ["a", "b", "c", "a", "b", "c", "a"]


def test_round_robin_skips_keys_that_are_not_admissible() -> None:
    pool = FakePool(key("a"), key("b", qps_limit=1), key("c"), strategy="round_robin")
    assert [pool.at(i).key_id() for i in range(6)] == ["a", "b", "c", "a", "c", "a"]


def test_least_loaded_prefers_fewer_leases_then_the_least_recently_used() -> None:
    pool = FakePool(key("a"), key("b"), key("c"), strategy="least_loaded")
    held = [pool.at(i).take() for i in range(3)]
    assert [g.key_id for g in held if isinstance(g, Grant)] == ["a", "b", "c"]
    assert isinstance(held[1], Grant)
    pool.at(10).end(held[1])
    assert pool.at(11).key_id() == "b", "b has no lease out"
    assert pool.at(12).key_id() == "a", "a, b, c have one lease each: a was granted longest ago"


def test_priority_one_is_the_highest_and_lower_priorities_take_the_overflow() -> None:
    pool = FakePool(key("low", priority=2), key("high", priority=1, qps_limit=2), strategy="priority")
    assert [pool.at(i * ms(1)).key_id() for i in range(3)] == ["high", "low", "low"]
    assert pool.at(ms(600)).key_id() == "high", "high is admissible again: it comes first"


def test_priority_ties_go_to_the_least_loaded() -> None:
    pool = FakePool(key("a", priority=1), key("b", priority=1), key("c", priority=2), strategy="priority")
    assert [pool.at(i).key_id() for i in range(4)] == ["a", "b", "a", "b"]


# --------------------------------------------------------------------------- outcomes


def test_cooldown_honours_retry_after_and_doubles_on_repeats_up_to_the_maximum() -> None:
    assert cooldown_us(1, None, s(10), s(120)) == s(10)
    assert cooldown_us(2, None, s(10), s(120)) == s(20)
    assert cooldown_us(5, None, s(10), s(120)) == s(120)
    assert cooldown_us(1, s(3), s(10), s(120)) == s(3), "Retry-After as the provider said"
    assert cooldown_us(3, s(3), s(10), s(120)) == s(12)
    assert cooldown_us(9, s(300), s(10), s(120)) == s(300), "never shorter than Retry-After"


def test_a_429_cools_the_key_and_the_next_call_goes_to_another_key() -> None:
    pool = FakePool(key("a"), key("b"), strategy="priority", default_cooldown_s=10, max_cooldown_s=120)
    first = pool.at(0).take()
    assert isinstance(first, Grant) and first.key_id == "a"
    assert pool.at(1).end(first, Outcome.RATE_LIMITED, retry_after_us=s(2)) == s(2)
    assert pool.at(2).key_id() == "b"
    assert pool.at(s(2)).key_id() == "b", "a still cooling at 2 s - 1 µs"
    assert pool.at(s(2) + 1).key_id() == "a"


def test_repeated_429s_grow_the_cooldown_and_successes_forgive_them_one_by_one() -> None:
    pool = FakePool(key("a"), default_cooldown_s=1, max_cooldown_s=4)
    cools = []
    for i in range(4):
        pool.at(s(10 * i))
        got = pool.take()
        assert isinstance(got, Grant)
        cools.append(pool.end(got, Outcome.RATE_LIMITED))
    assert cools == [s(1), s(2), s(4), s(4)]
    for i in range(3):
        got = pool.at(s(100 + i)).take()
        assert isinstance(got, Grant)
        pool.end(got)
    assert pool.state.key("a").strikes == 1
    got = pool.at(s(200)).take()
    assert isinstance(got, Grant) and pool.end(got, Outcome.RATE_LIMITED) == s(2)


def test_all_keys_cooling_gives_the_shortest_wait_and_all_disabled_gives_never() -> None:
    pool = FakePool(key("a"), key("b"), default_cooldown_s=5, max_cooldown_s=60)
    for retry in (s(3), s(1)):
        got = pool.at(0).take()
        assert isinstance(got, Grant)
        pool.end(got, Outcome.RATE_LIMITED, retry_after_us=retry)
    denied = pool.at(0).take()
    assert isinstance(denied, Denial) and denied.wait_us == s(1)
    disable(pool.state, "a")
    disable(pool.state, "b", "rejected")
    assert pool.at(0).take() == Denial(NEVER, T0)


def test_a_rejected_key_is_disabled_until_verified_and_an_operators_disable_until_enabled() -> None:
    pool = FakePool(key("a"), key("b"), strategy="priority")
    got = pool.at(0).take()
    assert isinstance(got, Grant) and got.key_id == "a"
    pool.end(got, Outcome.REJECTED, error="KeyRejected:401")
    assert pool.state.key("a").disabled == "rejected" and pool.state.key("a").last_error == "KeyRejected:401"
    assert {pool.at(i).key_id() for i in range(1, 5)} == {"b"}
    assert verified(pool.state, "a", ok=False) is False
    assert verified(pool.state, "a", ok=True) is True and pool.at(10).key_id() == "a"
    disable(pool.state, "a")
    assert verified(pool.state, "a", ok=True) is False, "a verification never lifts an operator's disable"
    assert pool.at(11).key_id() == "b"
    enable(pool.state, "a")
    assert pool.at(12).key_id() == "a"


def test_errors_and_cancellations_keep_the_key_usable() -> None:
    pool = FakePool(key("a"))
    for outcome in (Outcome.UNAVAILABLE, Outcome.FAILED, Outcome.CANCELLED):
        got = pool.at(0).take()
        assert isinstance(got, Grant)
        pool.end(got, outcome, error="x")
    ks = pool.state.key("a")
    assert (ks.errors, ks.ok, ks.disabled, ks.cool_until, len(ks.leases)) == (2, 0, "", 0, 0)


def test_randomised_runs_never_break_any_limit() -> None:
    rng = random.Random(7)
    keys = [
        key("a", qps_limit=3, account="x", max_concurrency=2),
        key("b", qps_limit=0.5),
        key("c", rpm_limit=40, account="x"),
    ]
    pool = FakePool(*keys, accounts=(AccountSpec("x", rpm_limit=90),), strategy="least_loaded", lease_ttl_s=1)
    held: list[Grant] = []
    granted: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    now = 0
    for _ in range(20_000):
        now += rng.choice((0, 1, ms(1), ms(7), ms(40)))
        got = pool.at(now).take()
        if isinstance(got, Grant):
            granted[got.key_id].append(got.now)
            held.append(got)
            assert sum(1 for g in held if g.key_id == "a" and g.expires > got.now) <= 2
        if held and rng.random() < 0.3:
            pool.end(held.pop(rng.randrange(len(held))))
    assert max_in_window(granted["a"], SECOND_REACH) <= 3
    assert max_in_window(granted["b"], 2 * SECOND_US + MARGIN + 2 * SECOND_US // 200) <= 1
    assert max_in_window(granted["c"], MINUTE_REACH) <= 40
    assert max_in_window(granted["a"] + granted["c"], MINUTE_REACH) <= 90
    assert all(granted.values())


# --------------------------------------------------------------------------- status view


def test_the_status_view_shows_state_cooldown_calls_and_errors_and_never_a_secret() -> None:
    keys = (key("a", account="x", qps_limit=5), key("b", account="x", priority=2), key("off", enabled=False))
    pool = FakePool(*keys, accounts=(AccountSpec("x", rpm_limit=100),), strategy="priority")
    got = pool.at(0).take()
    assert isinstance(got, Grant)
    pool.end(got, latency_us=ms(250), tokens=700)
    got = pool.at(ms(300)).take()
    assert isinstance(got, Grant)
    pool.end(got, Outcome.RATE_LIMITED, retry_after_us=s(5), error="RateLimited:429")
    view = status_view(pool.rules, pool.state, T0 + s(1), configured=keys)
    rows = {row["keyId"]: row for row in view["keys"]}
    assert rows["a"]["state"] == "cooling" and rows["a"]["cooldownLeftS"] == pytest.approx(4.3)
    assert rows["a"]["calls"] == 2 and rows["a"]["successRate"] == 0.5 and rows["a"]["avgLatencyMs"] == 250.0
    assert rows["a"]["lastError"] == "RateLimited:429" and rows["a"]["masked"] == "…0000"
    assert rows["b"]["state"] == "ready" and rows["off"]["state"] == "off"
    (account,) = view["accounts"]
    assert account["accountId"] == "x" and account["calls"] == 2 and account["usableKeys"] == 1
    text = json.dumps(view)
    assert not any(k.api_key in text for k in keys)


def test_prometheus_families_carry_ids_only() -> None:
    from infra.key_pool_metrics import families

    keys = (key("a", account="x"), key("b"))
    pool = FakePool(*keys, accounts=(AccountSpec("x", tpm_limit=1000),))
    got = pool.at(0).take()
    assert isinstance(got, Grant)
    pool.end(got, latency_us=ms(100), tokens=50)
    metrics = {m.name: m for m in families(status_view(pool.rules, pool.state, T0 + 1, configured=keys))}
    assert {"traffic_key_state", "api_key_total_calls", "traffic_account_tokens_last_minute"} <= metrics.keys()
    calls = {(s.labels["key_id"], s.labels["outcome"]): s.value for s in metrics["api_key_total_calls"].samples}
    assert calls[("a", "ok")] == 1 and calls[("b", "ok")] == 0
    assert metrics["api_key_pool_size"].samples[0].value == 2
    success = {s.labels["key_id"]: s.value for s in metrics["api_key_success_rate"].samples}
    assert success == {"a": 1.0}  # b made no call: no rate rather than a made-up one
    status = {s.labels["key_id"]: s.value for s in metrics["api_key_status"].samples}
    assert status == {"a": 1.0, "b": 1.0}
    assert not any(k.api_key in str(s) for m in metrics.values() for s in m.samples for k in keys)
