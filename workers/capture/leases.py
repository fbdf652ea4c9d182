"""Camera leases shared by capture processes, their heartbeat, and each process's fair share of cameras."""

from __future__ import annotations

import math
import os
import socket
import uuid

import redis

from traffic import redis_keys

_RENEW_LUA = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE_LUA = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
# Heartbeat on the Redis clock (no skew between hosts); drops owners silent for a lease; returns live owners.
_HEARTBEAT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(ARGV[2]) * 3000))
return redis.call('ZCARD', KEYS[1])
"""


def default_owner_id() -> str:
    """A lease owner id unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Leases:
    """Expiring camera leases: ``SET NX PX`` to claim, compare-and-pexpire to renew, compare-and-delete to release.

    Each owner also heartbeats into ``redis_keys.CAPTURE_OWNERS`` so that owners can split the cameras fairly.
    """

    def __init__(self, redis_client: redis.Redis, owner_id: str, lease_s: float) -> None:
        self._redis = redis_client
        self.owner_id = owner_id
        self._lease_s = lease_s
        self._lease_ms = int(lease_s * 1000)
        self._renew = redis_client.register_script(_RENEW_LUA)
        self._release = redis_client.register_script(_RELEASE_LUA)
        self._heartbeat = redis_client.register_script(_HEARTBEAT_LUA)

    def heartbeat(self) -> int:
        """Mark this owner alive; the number of live owners (this one included)."""
        return int(self._heartbeat(keys=[redis_keys.CAPTURE_OWNERS], args=[self.owner_id, self._lease_s]))

    def leave(self) -> None:
        """Remove this owner from the live set (on a clean stop)."""
        self._redis.zrem(redis_keys.CAPTURE_OWNERS, self.owner_id)

    def acquire(self, camera_id: str) -> bool:
        """Claim the camera if nobody holds it (or we already do)."""
        key = redis_keys.camera_lease(camera_id)
        if self._redis.set(key, self.owner_id, nx=True, px=self._lease_ms):
            return True
        return self.renew(camera_id)

    def renew(self, camera_id: str) -> bool:
        """Extend our lease; False if we no longer hold it."""
        return bool(self._renew(keys=[redis_keys.camera_lease(camera_id)], args=[self.owner_id, self._lease_ms]))

    def release(self, camera_id: str) -> bool:
        """Give the camera up if we hold it."""
        return bool(self._release(keys=[redis_keys.camera_lease(camera_id)], args=[self.owner_id]))


def fair_share(cameras: int, live_owners: int) -> int:
    """How many of ``cameras`` one of ``live_owners`` capture processes should hold."""
    return math.ceil(cameras / max(1, live_owners))


def is_claimed(redis_client: redis.Redis, camera_id: str) -> bool:
    """Whether some capture process holds the camera's lease now."""
    return bool(redis_client.exists(redis_keys.camera_lease(camera_id)))
