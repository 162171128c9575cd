"""Requests made in one turn of the event loop go to Redis as one pipeline, and each caller
gets what it would have got alone: its reply, its own error, a transaction still a
transaction, a blocking read still blocking (crisisline/stores/autopipe.py). Real Redis."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError, WatchError

from crisisline.stores import async_redis
from crisisline.stores.autopipe import AutoPipeline


@pytest.fixture
async def redis(settings):
    client = async_redis(settings.effective_redis_url)
    assert isinstance(client, AutoPipeline)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


async def test_requests_of_one_turn_go_as_one_pipeline_each_with_its_answer(redis):
    await redis.set("a", "1")
    before = redis.batches
    got = await asyncio.gather(redis.get("a"), redis.incr("n"), redis.hset("h", "f", "v"),
                               redis.hgetall("h"), redis.exists("a", "nope"))
    assert got == [b"1", 1, 1, {b"f": b"v"}, 1]  # response callbacks applied per command
    assert redis.batches == before + 1


async def test_a_pipeline_joins_the_batch_and_keeps_its_order(redis):
    async def piped():
        async with redis.pipeline(transaction=False) as pipe:
            pipe.set("k", "x")
            pipe.append("k", "y")
            pipe.get("k")
            return await pipe.execute()

    before = redis.batches
    got, alone = await asyncio.gather(piped(), redis.ping())
    assert got == [True, 2, b"xy"] and alone is True
    assert redis.batches == before + 1


async def test_one_request_failing_fails_only_that_request(redis):
    await redis.set("s", "text")
    got = await asyncio.gather(redis.incr("s"), redis.get("s"), return_exceptions=True)
    assert isinstance(got[0], ResponseError) and got[1] == b"text"
    with pytest.raises(ResponseError):
        await redis.lpush("s", "x")
    async with redis.pipeline(transaction=False) as pipe:
        pipe.incr("s")
        pipe.get("s")
        with pytest.raises(ResponseError):
            await pipe.execute()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.incr("s")
        pipe.get("s")
        failed, value = await pipe.execute(raise_on_error=False)
    assert isinstance(failed, ResponseError) and value == b"text"


async def test_a_transaction_is_still_a_transaction(redis):
    await redis.set("t", "1")
    async with redis.pipeline(transaction=True) as pipe:
        await pipe.watch("t")
        await redis.set("t", "2")  # changed by someone else meanwhile
        pipe.multi()
        pipe.set("t", "3")
        with pytest.raises(WatchError):
            await pipe.execute()
    assert await redis.get("t") == b"2"


async def test_a_blocking_read_holds_its_own_connection_not_the_batch(redis):
    reader = asyncio.ensure_future(redis.xread({"stream": "$"}, block=2000))
    await asyncio.sleep(0.05)
    # Batched requests answer while the read still blocks, and one of them ends it.
    assert await redis.xadd("stream", {"k": "v"})
    got = await asyncio.wait_for(reader, 2)
    assert got[0][1][0][1] == {b"k": b"v"}


async def test_scripts_run_and_reload_after_a_flush(redis):
    script = redis.register_script("return redis.call('incr', KEYS[1])")
    assert await script(keys=["c"]) == 1
    await redis.script_flush()  # (as after a Redis restart) the script is loaded again
    assert await script(keys=["c"]) == 2


async def test_a_request_cancelled_before_its_batch_is_left_out(redis):
    doomed = asyncio.ensure_future(redis.incr("x"))
    kept = asyncio.ensure_future(redis.incr("y"))
    await asyncio.sleep(0)
    doomed.cancel()
    assert await kept == 1
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert await redis.get("x") is None


async def test_redis_gone_fails_every_request_of_the_batch_clearly():
    client = async_redis("redis://127.0.0.1:1/0")
    try:
        got = await asyncio.gather(client.get("a"), client.incr("b"), return_exceptions=True)
        assert all(isinstance(g, RedisConnectionError) for g in got), got
    finally:
        await client.aclose()


async def test_blocking_reads_at_once_each_wait_on_their_own_connection(redis):
    first = asyncio.ensure_future(redis.xread({"s1": "$"}, block=3000))
    second = asyncio.ensure_future(redis.xread({"s2": "$"}, block=3000))
    await asyncio.sleep(0.05)
    await redis.xadd("s2", {"n": "2"})
    assert (await asyncio.wait_for(second, 2))[0][0] == b"s2"  # not behind the first
    await redis.xadd("s1", {"n": "1"})
    assert (await asyncio.wait_for(first, 2))[0][0] == b"s1"
    # Nothing came: a blocking read answers None after its BLOCK, as redis-py's does.
    assert await redis.xread({"s3": "$"}, block=50) == []


async def test_a_connection_killed_by_redis_is_replaced_and_nothing_is_lost(redis, settings):
    await redis.set("k", "1")
    other = async_redis(settings.effective_redis_url)
    try:
        # Every connection but the killer's own (CLIENT goes by redis-py's pool).
        assert await other.execute_command("CLIENT KILL", "TYPE", "normal", "SKIPME", "yes")
    finally:
        await other.aclose()
    got = await asyncio.gather(*(redis.incr("k") for _ in range(5)))
    assert sorted(got) == [2, 3, 4, 5, 6]


async def test_a_redis_that_never_answers_is_left_and_the_caller_told():
    seen = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer)
        await reader.read()  # reads the request, never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = BlockingConnectionPool(host="127.0.0.1", port=port, socket_timeout=0.3,
                                  retry=Retry(NoBackoff(), 1))
    client = AutoPipeline(connection_pool=pool)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(RedisConnectionError):
            await client.get("x")
        # Sent twice (once more after the first connection went silent), then given up on:
        # seconds, not forever.
        assert len(seen) == 2 and loop.time() - started < 3
    finally:
        await client.aclose()
        server.close()


async def test_closing_the_client_answers_every_request_still_out():
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = AutoPipeline(connection_pool=BlockingConnectionPool(host="127.0.0.1", port=port))
    try:
        asked = asyncio.ensure_future(client.get("x"))
        await asyncio.sleep(0.1)  # written, unanswered
        await client.aclose()
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(asked, 2)  # not left waiting for good
    finally:
        server.close()
