"""A token bucket per API key that holds across replicas: the bucket lives in Redis and one Lua script refills
and takes from it atomically, on Redis's clock. Without Redis (or while it is unreachable) each replica keeps
its own buckets, which is exact for one replica."""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("orchestrator.api")

# KEYS[1] the bucket; ARGV rate (tokens/s), burst. Returns {allowed (0/1), seconds until a token, tokens left}.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait), tostring(tokens)}
"""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: float  # seconds until a request would be allowed (0 when allowed)
    remaining: int
    scope: str  # "global" (Redis) or "replica"


class LocalBuckets:
    """Token buckets in this process."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> Verdict:
        now = time.monotonic()
        with self._lock:
            tokens, ts = self._buckets.get(key, (float(self.burst), now))
            tokens = min(self.burst, tokens + (now - ts) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return Verdict(True, 0.0, int(tokens - 1), "replica")
            self._buckets[key] = (tokens, now)
            return Verdict(False, (1 - tokens) / self.rate, 0, "replica")


class RateLimiter:
    """`take(key)`: one request of `key`. Redis when configured and reachable, else this replica's buckets; after
    a Redis failure the replica counts alone for `retry_redis_s` seconds before it tries Redis again."""

    def __init__(self, rate: float, burst: int, redis_url: str | None = None, prefix: str = "orchestrator:rl:",
                 retry_redis_s: float = 5.0):
        self.local = LocalBuckets(rate, burst)
        self.rate, self.burst, self.prefix = rate, burst, prefix
        self.retry_redis_s = retry_redis_s
        self._redis = None
        self._script = None
        self._redis_down_until = 0.0
        if redis_url:
            import redis.asyncio as aioredis

            self._redis = aioredis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
            self._script = self._redis.register_script(_TAKE)

    @property
    def shared(self) -> bool:
        return self._redis is not None and time.monotonic() >= self._redis_down_until

    async def take(self, key: str) -> Verdict:
        if self._redis is not None and time.monotonic() >= self._redis_down_until:
            try:
                allowed, wait, tokens = await self._script(keys=[self.prefix + key], args=[self.rate, self.burst])
            except Exception as exc:  # noqa: BLE001 - Redis down or slow: count in this replica for a while
                log.warning("rate limit: Redis unreachable (%s); counting per replica for %g s", exc,
                            self.retry_redis_s)
                self._redis_down_until = time.monotonic() + self.retry_redis_s
            else:
                return Verdict(bool(int(allowed)), float(wait), int(math.floor(float(tokens))), "global")
        return self.local.take(key)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
