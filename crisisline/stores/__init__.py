"""Adapters to Redis and SQL."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Many calls share one process; a burst must wait for a connection, never fail for want of
# one (redis-py's default pool raises "Too many connections" past 100, which would send
# every caller of the burst to the fallback group).
MAX_CONNECTIONS = 200
POOL_TIMEOUT_S = 10


def async_redis(url: str) -> Redis:
    """A pooled client that survives Redis restarting: a pooled connection the restart left
    stale is retried on a fresh one at once, instead of failing the caller's next step
    (which would send them to the fallback group while Redis is already back)."""
    pool = BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=POOL_TIMEOUT_S, socket_timeout=5,
        socket_connect_timeout=3, health_check_interval=5,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError])
    return Redis(connection_pool=pool)
