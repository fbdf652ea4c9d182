"""Short Redis locks that lapse if their holder dies: one holder per name, released only by its holder."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
"""Delete the lock ``KEYS[1]`` only while it still holds this holder's token ``ARGV[1]``."""
POLL_S = 0.005


@contextmanager
def redis_lock(client: Any, name: str, *, ttl_s: float, wait_s: float) -> Iterator[bool]:
    """Hold ``name`` for the block (waiting up to ``wait_s``; it lapses after ``ttl_s`` if this process
    dies); yields whether it was had, so a caller that cannot wait longer decides what to do without it."""
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait_s
    had = bool(client.set(name, token, nx=True, px=int(ttl_s * 1000)))
    while not had and time.monotonic() < deadline:
        time.sleep(POLL_S)
        had = bool(client.set(name, token, nx=True, px=int(ttl_s * 1000)))
    try:
        yield had
    finally:
        if had:
            client.eval(RELEASE, 1, name, token)
