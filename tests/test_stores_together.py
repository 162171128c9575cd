"""The stores' requests made in one turn of the event loop (a burst of AMI events' handlers)
reach Redis in one write (crisisline/stores/autopipe.py), each with its own answer, the same
as one at a time would have. Real Redis."""

from __future__ import annotations

import asyncio

from crisisline.stores import async_redis
from crisisline.stores.calls import CallStore
from crisisline.stores.offers import OfferStore, legs_key, offers_key


async def test_legs_and_reads_together_answer_as_one_at_a_time(settings):
    redis = async_redis(settings.effective_redis_url)
    try:
        offers, calls = OfferStore(redis), CallStore(redis)
        await redis.hset(offers_key("c1"), mapping={"r1": "ringing:1", "r2": "passed:busy"})
        await redis.hset("pr:call:c1", mapping={"id": "c1", "state": "waiting"})
        writes = redis.batches
        up = await asyncio.gather(offers.leg_up("c1", "r1", "PJSIP/r1-1"),
                                  offers.leg_up("c1", "r2", "PJSIP/r2-1"),
                                  offers.leg_up("c9", "r3", "PJSIP/r3-1"))
        assert redis.batches == writes + 1  # three handlers' pipelines: one write
        assert up == ["ringing:1", "passed:busy", ""]
        assert await redis.hgetall(legs_key("c1")) == {b"r1": b"PJSIP/r1-1",
                                                       b"r2": b"PJSIP/r2-1"}
        writes = redis.batches
        read = await asyncio.gather(calls.read("c1"), calls.read("c1", offers_key("c1")),
                                    calls.read("nope"))
        assert redis.batches == writes + 1
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
