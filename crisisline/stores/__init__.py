"""Adapters to Redis and SQL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from redis import Redis as SyncRedis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as SyncRetry
from redis.sentinel import Sentinel as SyncSentinel

from crisisline.stores.autopipe import AutoPipeline

# Many calls share one process; a burst must wait for a connection, never fail for want of
# one (redis-py's default pool raises "Too many connections" past 100, which would send
# every caller of the burst to the fallback group).
MAX_CONNECTIONS = 200
POOL_TIMEOUT_S = 10


SENTINEL_SCHEME = "redis+sentinel://"


@dataclass(frozen=True)
class SentinelTarget:
    """``redis+sentinel://[user:password@]HOST:PORT,HOST:PORT/SERVICE/DB``
    (crisisline.config.Settings.effective_redis_url writes it)."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> SentinelTarget | None:
        if not url.startswith(SENTINEL_SCHEME):
            return None
        netloc, _, path = url[len(SENTINEL_SCHEME):].partition("/")
        auth, _, hosts = netloc.rpartition("@")
        service, _, db = path.partition("/")
        sentinels = []
        for item in hosts.split(","):
            host, _, port = item.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"sentinel {item!r} is not HOST:PORT")
            sentinels.append((host, int(port)))
        if not service:
            raise ValueError("no service name after the sentinels")
        user, _, password = auth.partition(":") if auth else ("", "", "")
        return cls(tuple(sentinels), service, int(db) if db.isdigit() else 0,
                   unquote(user) or None, unquote(password) or None)

    def client_kwargs(self) -> dict[str, Any]:
        return {"db": self.db, "username": self.username, "password": self.password}


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool, waiting for a free connection as the plain path's does: redis-py's
    own raises MaxConnectionsError at once past max_connections, which at 500 callers made
    a burst of steps fail (and send callers to the fallback group) behind Sentinel only."""


def async_redis(url: str) -> Redis:
    """A pooled client that survives Redis restarting: a pooled connection the restart left
    stale is retried on a fresh one at once, instead of failing the caller's next step
    (which would send them to the fallback group while Redis is already back). Behind
    Sentinel, every new connection asks the sentinels where the primary is now, so after a
    failover the retry lands on the promoted replica. The requests of one turn of the event
    loop go together (autopipe.py)."""
    target = SentinelTarget.parse(url)
    if target is not None:
        sentinel = AsyncSentinel(list(target.sentinels), socket_timeout=2,
                                 socket_connect_timeout=2)
        return sentinel.master_for(
            target.service, redis_class=AutoPipeline, connection_pool_class=BlockingSentinelPool,
            max_connections=MAX_CONNECTIONS, timeout=POOL_TIMEOUT_S, socket_timeout=5,
            socket_connect_timeout=3, health_check_interval=5,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 6),
            retry_on_error=[RedisConnectionError, RedisTimeoutError, ReadOnlyError],
            **target.client_kwargs())
    pool = BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=POOL_TIMEOUT_S, socket_timeout=5,
        socket_connect_timeout=3, health_check_interval=5,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError])
    return AutoPipeline(connection_pool=pool)


def sync_redis(url: str, **kwargs: Any) -> SyncRedis:
    """``redis.Redis.from_url(url, **kwargs)``, or the primary through Sentinel."""
    target = SentinelTarget.parse(url)
    if target is None:
        return SyncRedis.from_url(url, **kwargs)
    sentinel = SyncSentinel(list(target.sentinels), socket_timeout=2, socket_connect_timeout=2)
    # During a failover the sentinels briefly know no primary (MasterNotFoundError is a
    # ConnectionError): retry for a few seconds, as the async clients do.
    options = {"retry": SyncRetry(ExponentialBackoff(cap=0.5, base=0.05), 8),
               "retry_on_error": [RedisConnectionError, RedisTimeoutError, ReadOnlyError],
               **kwargs, **target.client_kwargs()}
    return sentinel.master_for(target.service, **options)


def async_client(url: str, **kwargs: Any) -> Redis:
    """``redis.asyncio.Redis.from_url(url, **kwargs)`` (a short-lived client, without the
    pool's retries), or the primary through Sentinel."""
    target = SentinelTarget.parse(url)
    if target is None:
        return Redis.from_url(url, **kwargs)
    sentinel = AsyncSentinel(list(target.sentinels), socket_timeout=2, socket_connect_timeout=2)
    return sentinel.master_for(target.service, **{**kwargs, **target.client_kwargs()})
