"""Taking a call (crisisline/stores/offers.py), in a real Redis: never a responder in two
calls at once, never an offer that already ended (found by bench/soak.py: phones that
answer a second leg while their person is talking, and offers ended by a wave's timeout
a moment before the key press)."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from crisisline.stores.offers import OfferStore, offers_key, responder_key


@pytest.fixture
async def offers(redis_url):
    redis = Redis.from_url(redis_url)
    yield OfferStore(redis)
    await redis.aclose()


async def waiting(offers: OfferStore, *call_ids: str) -> None:
    for call_id in call_ids:
        await offers.redis.hset(f"pr:call:{call_id}", mapping={"id": call_id,
                                                                "state": "dispatching"})


async def test_a_responder_on_a_call_cannot_take_another(offers):
    await waiting(offers, "c1", "c2")
    assert await offers.ring("c1", "ana", 1, 0)
    assert await offers.accept("c1", "ana")
    # Her phone rings for c2 too (an offer made from a stale view, say) and she presses 1.
    await offers.redis.hset(offers_key("c2"), "ana", "ringing:1")
    assert not await offers.accept("c2", "ana")
    assert (await offers.redis.hget("pr:call:c2", "state")) == b"dispatching"
    assert (await offers.redis.hget(responder_key("ana"), "on_call_with")) == b"c1"


async def test_an_offer_that_ended_cannot_be_taken(offers):
    await waiting(offers, "c1")
    assert await offers.ring("c1", "ana", 1, 0)
    assert await offers.passed("c1", "ana", "no_answer")  # the wave ran out
    assert not await offers.accept("c1", "ana")
    assert (await offers.redis.hget("pr:call:c1", "accepted_by")) is None


async def test_an_offer_in_its_whisper_and_a_supervisor_take_are_taken(offers):
    await waiting(offers, "c1", "c2")
    assert await offers.ring("c1", "ana", 1, 0)
    assert await offers.listening("c1", "ana")
    assert await offers.accept("c1", "ana")
    assert await offers.accept("c2", "supervisor:sam")  # no offer: a supervisor's own take


async def test_no_phone_rings_for_a_call_that_ended_or_was_taken(offers):
    await waiting(offers, "c1", "c2")
    await offers.redis.hset("pr:call:c1", "state", "abandoned")
    assert await offers.accept("c2", "ben")
    assert not await offers.ring("c1", "ana", 1, 0)
    assert not await offers.ring("c2", "ana", 1, 0)
    assert not await offers.ring("gone", "ana", 1, 0)  # no such call at all
    assert (await offers.redis.hget(responder_key("ana"), "ringing_for")) is None


async def test_scripts_run_again_after_redis_forgot_them(offers):
    """Redis restarted empty of scripts (SCRIPT FLUSH stands for it): the batched script
    calls load them and run once more, and answer as before (crisisline/stores/scripts.py)."""
    from crisisline.stores.calls import CLAIMED, CallStore

    await waiting(offers, "c1")
    assert await offers.ring("c1", "ana", 1, 0)
    await offers.redis.hset("pr:legs:c1", "ana", "PJSIP/ana-1")
    await offers.redis.hset("pr:call:c1", "owner", "d1")
    await offers.redis.zadd(CLAIMED, {"c1": 1})
    await offers.redis.script_flush()
    assert await offers.leg_gone("c1", "ana", "PJSIP/ana-1", "hung_up") == (True,
                                                                            "passed:hung_up")
    assert await offers.redis.hget("pr:legs:c1", "ana") is None
    await offers.redis.script_flush()
    mine, data, other = await CallStore(offers.redis).renew_and_read("c1", "d1", 30,
                                                                     offers_key("c1"))
    assert mine and data["state"] == "dispatching" and other == {"ana": "passed:hung_up"}
