"""Requests made in one turn of the event loop reach Redis together, each with its own
answer (crisisline/stores/coalesce.py), and the stores built on it answer as one at a time
would. Real Redis."""

from __future__ import annotations

import asyncio

import pytest

from crisisline.stores import async_redis
from crisisline.stores.calls import CallStore
from crisisline.stores.coalesce import Coalesce
from crisisline.stores.offers import OfferStore, legs_key, offers_key


async def test_requests_made_together_go_together_each_with_its_answer():
    sent: list[list[int]] = []

    async def run(items):
        sent.append(list(items))
        return [i * 10 for i in items]

    co: Coalesce[int, int] = Coalesce(run)
    assert await asyncio.gather(*(co(i) for i in range(5))) == [0, 10, 20, 30, 40]
    assert await co(7) == 70  # alone: a batch of one
    assert sent == [[0, 1, 2, 3, 4], [7]]


async def test_a_failed_batch_fails_each_of_its_requests_and_the_next_one_works():
    calls = 0

    async def run(items):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("Redis went away")
        return list(items)

    co: Coalesce[str, str] = Coalesce(run)
    got = await asyncio.gather(co("a"), co("b"), return_exceptions=True)
    assert all(isinstance(g, ConnectionError) for g in got)
    assert await co("c") == "c"


async def test_a_request_cancelled_before_its_batch_is_left_out():
    sent = []

    async def run(items):
        sent.extend(items)
        return list(items)

    co: Coalesce[str, str] = Coalesce(run)
    doomed = asyncio.ensure_future(co("gone"))
    kept = asyncio.ensure_future(co("kept"))
    await asyncio.sleep(0)  # both asked
    doomed.cancel()
    assert await kept == "kept"
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert sent == ["kept"]


async def test_legs_and_reads_together_answer_as_one_at_a_time(settings):
    redis = async_redis(settings.effective_redis_url)
    try:
        offers, calls = OfferStore(redis), CallStore(redis)
        await redis.hset(offers_key("c1"), mapping={"r1": "ringing:1", "r2": "passed:busy"})
        await redis.hset("pr:call:c1", mapping={"id": "c1", "state": "waiting"})
        up = await asyncio.gather(offers.leg_up("c1", "r1", "PJSIP/r1-1"),
                                  offers.leg_up("c1", "r2", "PJSIP/r2-1"),
                                  offers.leg_up("c9", "r3", "PJSIP/r3-1"))
        assert up == ["ringing:1", "passed:busy", ""]
        assert await redis.hgetall(legs_key("c1")) == {b"r1": b"PJSIP/r1-1",
                                                       b"r2": b"PJSIP/r2-1"}
        assert offers._legs_up.batches == 1
        read = await asyncio.gather(calls.read("c1"), calls.read("c1", offers_key("c1")),
                                    calls.read("nope"))
        assert read[0] == ({"id": "c1", "state": "waiting"}, {})
        assert read[1][1] == {"r1": "ringing:1", "r2": "passed:busy"}
        assert read[2] == ({}, {})
        gone = await asyncio.gather(offers.leg_gone("c1", "r1", "PJSIP/r1-1", "hung_up"),
                                    offers.leg_gone("c1", "r2", "PJSIP/r2-1", "hung_up"))
        # r1 was still ringing: their offer ends now; r2's had ended before.
        assert gone[0][0] and gone[0][1].startswith("passed")
        assert gone[1] == (False, "passed:busy")
        assert await redis.hgetall(legs_key("c1")) == {}
    finally:
        await redis.aclose()
