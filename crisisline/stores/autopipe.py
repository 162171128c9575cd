"""A Redis client that sends the requests made during one turn of the event loop together,
on one lean connection.

At 500 callers the dispatcher spent most of its CPU in redis-py: a request alone costs
~0.2 ms of its bookkeeping (a pooled connection taken and given back, a retry wrapper,
metrics hooks, a stream read), against ~0.04 ms for the same bytes written and parsed
directly (bench/bench_dispatch.py). Here every plain command, and every pipeline without a
transaction, made in one turn of the loop is written at once to one connection, in order,
and each reply, parsed by hiredis as redis-py itself does, goes to the request it answers
(Redis answers in order), through redis-py's own response callbacks and error classes: each
caller gets what redis-py would have given it, its own error included.

A blocking read (XREAD BLOCK: the dispatcher's event stream) gets a lean connection of its
own, one of a few (redislane.py). Left to redis-py's pool, unchanged: transactions
(MULTI/WATCH), other blocking commands, pipelines with Script objects, and clients that
decode replies or use TLS. Lost connections, Redis restarting and Sentinel failovers are
the lanes' business (redislane.py): each request is retried as the pool's retries allow.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.client import NEVER_DECODE
from redis.exceptions import ResponseError

from crisisline.stores.redislane import Lane, word

# Commands that hold their connection (blocking) or change its state: never batched.
OWN_CONNECTION = frozenset({
    "BLPOP", "BRPOP", "BLMOVE", "BRPOPLPUSH", "BZPOPMIN", "BZPOPMAX", "BLMPOP", "BZMPOP",
    "WAIT", "WAITAOF", "WATCH", "UNWATCH", "MULTI", "EXEC", "DISCARD", "SELECT", "AUTH",
    "HELLO", "CLIENT", "MONITOR", "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "QUIT", "RESET"})
READS = ("XREAD", "XREADGROUP")
BLOCKING_LANES = 4  # blocking reads at once on lean connections (more: redis-py's pool)


def _block_s(args: tuple[Any, ...]) -> float | None:
    """An XREAD's BLOCK in seconds; None when it doesn't block."""
    for n, arg in enumerate(args[1:-1], 1):
        if word(arg) == "BLOCK":
            try:
                return int(args[n + 1]) / 1000
            except (TypeError, ValueError):
                return None
    return None


class AutoPipeline(Redis):
    """``redis.asyncio.Redis``; its plain requests of one loop turn go as one write."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        kw = self.connection_pool.connection_kwargs
        cls = self.connection_pool.connection_class
        self._lean = not kw.get("decode_responses") and not issubclass(cls, SSLConnection) and (
            cls in (Connection, UnixDomainSocketConnection)
            or isinstance(self.connection_pool, SentinelConnectionPool))
        retry = kw.get("retry")
        self._retries = retry.get_retries() if retry is not None else 3
        self._timeout = kw.get("socket_timeout") or 5.0
        self._batch = Lane(self, self._retries, self._timeout)
        self._blocking: list[Lane] = []

    @property
    def batches(self) -> int:
        """Writes of batched requests so far (for tests and benchmarks)."""
        return self._batch.writes

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if not self._lean or options.get(NEVER_DECODE):
            return await super().execute_command(*args, **options)
        name = word(args[0])
        if name in READS:
            block = _block_s(args)
            if block is not None:
                lane = self._blocking_lane()
                if lane is None:
                    return await super().execute_command(*args, **options)
                return await lane.ask(args, options, grace=block)
        elif name in OWN_CONNECTION:
            return await super().execute_command(*args, **options)
        return await self._batch.ask(args, options)

    def _blocking_lane(self) -> Lane | None:
        for lane in self._blocking:
            if lane.idle:
                return lane
        if len(self._blocking) < BLOCKING_LANES:
            self._blocking.append(Lane(self, self._retries, self._timeout, serial=True))
            return self._blocking[-1]
        return None

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        if transaction or not self._lean:
            return super().pipeline(transaction, shard_hint)
        return _JoiningPipeline(self, self.connection_pool, self.response_callbacks,
                                transaction, shard_hint)

    async def _ask_many(self, commands: list[tuple[tuple[Any, ...], dict[str, Any]]]
                        ) -> list[Any]:
        """Each command's reply, or its ResponseError, in order (as a pipeline's
        ``execute(raise_on_error=False)``); any other failure is raised."""
        got = await asyncio.gather(*(self._batch.ask(args, options) for args, options in commands),
                                   return_exceptions=True)
        for result in got:
            if isinstance(result, BaseException) and not isinstance(result, ResponseError):
                raise result
        return list(got)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        for lane in (self._batch, *self._blocking):
            lane.close()
        await super().aclose(close_connection_pool)


class _JoiningPipeline(Pipeline):
    """A pipeline without a transaction whose commands join the client's next batch."""

    def __init__(self, owner: AutoPipeline, *args: Any) -> None:
        super().__init__(*args)
        self._owner = owner

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if self.watching or self.explicit_transaction or self.scripts:
            return await super().execute(raise_on_error)
        stack, self.command_stack = self.command_stack, []
        if not stack:
            return []
        results = await self._owner._ask_many(stack)
        if raise_on_error:
            self.raise_first_error(stack, results)
        return results
