"""The queue in a real Redis: ordering, atomic taking, nothing left behind."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from crisisline.call import Call, Source, State
from crisisline.stores.calls import CLAIMED, EVENTS, QUEUE, CallStore


def make(call_id: str, source: Source, priority: int, created: float) -> Call:
    return Call(id=call_id, source=source, language="en", priority=priority, created_at=created)


async def events(redis: Redis) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in body.items()}
            for _, body in await redis.xrange(EVENTS)]


@pytest.fixture
async def store(redis_url):
    redis = Redis.from_url(redis_url)
    yield CallStore(redis)
    await redis.aclose()


async def test_queue_orders_by_priority_then_arrival(store):
    for call in (make("a1", Source.DIRECT, 2, 100.0), make("b2", Source.NINE_EIGHT_EIGHT, 1, 300.0),
                 make("c3", Source.NINE_ONE_ONE, 0, 400.0), make("d4", Source.DIRECT, 2, 50.0)):
        await store.create(call)
        await store.enqueue(call)
    assert await store.waiting() == ["c3", "b2", "d4", "a1"]
    taken = [await store.claim_next("d1", 30) for _ in range(5)]
    assert taken == ["c3", "b2", "d4", "a1", None]


async def test_two_dispatchers_never_take_the_same_call(store, redis_url):
    for n in range(200):
        call = make(f"{n:04x}aa", Source.DIRECT, 2, 1000.0 + n)
        await store.create(call)
        await store.enqueue(call)
    other = CallStore(Redis.from_url(redis_url))

    async def drain(s: CallStore, owner: str) -> list[str]:
        got = []
        while (call_id := await s.claim_next(owner, 30)) is not None:
            got.append(call_id)
        return got

    first, second = await asyncio.gather(drain(store, "one"), drain(other, "two"))
    await other.redis.aclose()
    assert not set(first) & set(second)
    assert len(first) + len(second) == 200
    assert await store.field(first[0], "owner") == "one"


async def test_hang_up_leaves_no_waiting_entry_and_says_where(store):
    call = make("e5e5e5", Source.DIRECT, 2, 10.0)
    await store.create(call)
    await store.enqueue(call)
    await store.claim_next("d1", 30)
    assert await store.abandon("e5e5e5", "waiting_room") is True
    assert await store.redis.zcard(QUEUE) == 0 and await store.redis.zcard(CLAIMED) == 0
    stored = await store.get("e5e5e5")
    assert stored.state is State.ABANDONED and stored.end_step == "waiting_room"
    last = (await events(store.redis))[-1]
    assert (last["type"], last["step"], last["previous_state"]) == (
        "caller_hung_up", "waiting_room", "dispatching")
    # A second report of the same hang-up changes nothing.
    assert await store.abandon("e5e5e5", "ivr") is False
    assert (await store.get("e5e5e5")).end_step == "waiting_room"


async def test_a_lease_that_runs_out_puts_the_call_back_in_its_place(store):
    for call in (make("f1", Source.DIRECT, 2, 10.0), make("f2", Source.DIRECT, 2, 20.0)):
        await store.create(call)
        await store.enqueue(call)
    assert await store.claim_next("dead-dispatcher", -1) == "f1"  # lease already over
    assert await store.requeue_expired() == ["f1"]
    assert await store.waiting() == ["f1", "f2"]
    assert (await store.get("f1")).state is State.WAITING


async def test_fallback_takes_the_call_out_of_everyone_s_hands(store):
    call = make("a0a0a0", Source.NINE_ONE_ONE, 0, 5.0)
    await store.create(call)
    await store.enqueue(call)
    assert await store.to_fallback("a0a0a0", "AgiProtocolError")
    assert await store.waiting() == []
    assert await store.claim_next("d1", 30) is None
    assert (await store.get("a0a0a0")).state is State.FALLBACK
