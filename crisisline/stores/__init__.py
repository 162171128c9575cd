"""Adapters to Redis and SQL."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

# Many calls share one process; a burst must wait for a connection, never fail for want of
# one (redis-py's default pool raises "Too many connections" past 100, which would send
# every caller of the burst to the fallback group).
MAX_CONNECTIONS = 200
POOL_TIMEOUT_S = 10


def async_redis(url: str) -> Redis:
    pool = BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS,
                                           timeout=POOL_TIMEOUT_S, socket_timeout=5,
                                           socket_connect_timeout=3, health_check_interval=30)
    return Redis(connection_pool=pool)
