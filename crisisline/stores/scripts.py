"""Several Lua scripts (and plain commands) in one round trip."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError


async def evalsha_many(redis: Redis, calls: list[tuple[AsyncScript, list[str], list[str]]],
                       also: Callable[[Any], object] | None = None) -> list[Any]:
    """Scripts in one pipeline, each still atomic, without the SCRIPT EXISTS round trip a
    redis-py pipeline adds for scripts; one the server no longer knows (it restarted) is
    loaded and run again on its own (never those that ran: a pipeline isn't all or nothing).
    ``also`` adds plain commands after them (their replies follow the scripts'); they read
    what the scripts left, so after such a retry they are read again."""
    async with redis.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        if also is not None:
            also(pipe)
        got = await pipe.execute(raise_on_error=False)
    unknown = [i for i, result in enumerate(got[:len(calls)]) if isinstance(result, NoScriptError)]
    if unknown:  # loaded once each, then those calls again, together
        for script in {id(calls[i][0]): calls[i][0] for i in unknown}.values():
            script.sha = await redis.script_load(script.script)
        async with redis.pipeline(transaction=False) as pipe:
            for i in unknown:
                script, keys, args = calls[i]
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            if also is not None:
                also(pipe)
            again = await pipe.execute(raise_on_error=False)
        for i, result in zip(unknown, again, strict=False):
            got[i] = result
        got[len(calls):] = again[len(unknown):]
    for result in got:
        if isinstance(result, Exception):
            raise result
    return got

