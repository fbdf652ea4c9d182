"""Short Redis locks on a real Redis: one holder at a time, a waiter gets it when it is released, a
holder that died lets it lapse, and only the holder releases it."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from infra.redis_lock import redis_lock

pytestmark = pytest.mark.integration


def test_one_holder_at_a_time_and_the_next_gets_it_on_release(redis_client: Any) -> None:
    inside = threading.Event()
    leave = threading.Event()
    order: list[str] = []

    def first() -> None:
        with redis_lock(redis_client, "lock:a", ttl_s=30, wait_s=0) as had:
            assert had
            order.append("first in")
            inside.set()
            leave.wait(10)
            order.append("first out")

    holder = threading.Thread(target=first)
    holder.start()
    assert inside.wait(10)
    with redis_lock(redis_client, "lock:a", ttl_s=30, wait_s=0) as had:
        assert not had  # held elsewhere, and this caller would not wait
    leave.set()
    with redis_lock(redis_client, "lock:a", ttl_s=30, wait_s=10) as had:
        assert had
        order.append("second in")
    holder.join(10)
    assert order == ["first in", "first out", "second in"]
    assert not redis_client.exists("lock:a")


def test_a_dead_holders_lock_lapses_and_is_not_released_by_another(redis_client: Any) -> None:
    redis_client.set("lock:b", "someone-else", px=200)  # a holder that died without releasing
    with redis_lock(redis_client, "lock:b", ttl_s=30, wait_s=10) as had:
        assert had
    redis_client.set("lock:c", "kept", px=60_000)
    with redis_lock(redis_client, "lock:c", ttl_s=30, wait_s=0) as had:
        assert not had
    assert redis_client.get("lock:c") == b"kept"  # not this caller's to release
