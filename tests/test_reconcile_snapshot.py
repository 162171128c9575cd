"""The reconciler judges Redis against one listing of Asterisk's channels, and a pass over
hundreds of calls takes seconds: a responder who took a call just before or during the pass
has a leg the listing doesn't show. Freeing them would offer them another call while they
are with a caller, and lose the record of that caller reaching a person (found by
bench/bench_callbacks.py with 400 calls). Real Redis; Asterisk's listing is stubbed."""

from __future__ import annotations

import time

from crisisline import config
from crisisline.call import Call, Source, new_call_id
from crisisline.stores import async_redis
from crisisline.stores.callbacks import CallbackStore
from crisisline.stores.calls import CallStore, call_key
from crisisline.stores.offers import OfferStore, legs_key, responder_key
from workers.dispatcher.reconcile import Reconciler


class Listing:
    """AMI with nothing but CoreShowChannels: the channels given."""

    def __init__(self, uniqueids: list[str]) -> None:
        self.uniqueids = uniqueids
        self.listing_started: float | None = None

    async def listing(self, action: dict, event: str) -> list[dict[str, str]]:
        return [{"Uniqueid": u, "Channel": f"PJSIP/x-{u}", "Context": "pr-responder"}
                for u in self.uniqueids]


class Dispatcher:
    """What the reconciler uses of a dispatcher."""

    def __init__(self, settings: config.Settings, ami: Listing) -> None:
        self.settings = settings
        self.redis = async_redis(settings.effective_redis_url)
        self.calls, self.offers = CallStore(self.redis), OfferStore(self.redis)
        self.callbacks = CallbackStore(self.redis)
        self.ami = ami

    async def _hash(self, call_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(call_key(call_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def cancel_legs(self, call_id: str) -> None:
        pass


async def a_bridged_call(d: Dispatcher, rid: str, accepted_at: float) -> str:
    call = Call(new_call_id(), Source.DIRECT, "es", 2, neighborhood="Dorchester",
                caller_number="+16175550142", created_at=accepted_at - 30)
    await d.calls.create(call)
    await d.redis.hset(call_key(call.id), mapping={
        "state": "bridged", "accepted_by": rid, "accepted_at": f"{accepted_at:.3f}",
        "x_uniqueid": f"caller-{call.id}"})
    await d.redis.hset(responder_key(rid), mapping={"on_call_with": call.id, "ringing_for": ""})
    await d.redis.hset(legs_key(call.id), rid, f"PJSIP/{rid}-1")
    return call.id


async def test_a_responder_who_took_a_call_as_the_pass_began_stays_with_it(settings):
    d = Dispatcher(settings, Listing([]))
    try:
        just_now = await a_bridged_call(d, "ana", time.time() - 0.5)
        long_ago = await a_bridged_call(d, "ben", time.time() - 60)
        # Both callers are on the line; neither responder's leg is in the listing.
        d.ami.uniqueids = [f"caller-{just_now}", f"caller-{long_ago}"]
        reconciler = Reconciler(d)  # type: ignore[arg-type]
        counts = await reconciler.once()
        # Ana took her call half a second ago: too recent to judge; she stays on it and her
        # leg is still known (the bridge can still be counted). Ben's leg is gone for good.
        assert await d.redis.hget(responder_key("ana"), "on_call_with") == just_now.encode()
        assert await d.redis.hget(legs_key(just_now), "ana") is not None
        assert await d.redis.hget(responder_key("ben"), "on_call_with") == b""
        assert counts["freed"] == 1
        # And the reconciler looks again soon, not in half a minute.
        assert reconciler.revisit_in is not None and reconciler.revisit_in < 5
    finally:
        await d.redis.aclose()


async def test_a_caller_who_just_hung_up_is_left_to_their_own_hang_up_report(settings):
    d = Dispatcher(settings, Listing([]))
    try:
        call_id = await a_bridged_call(d, "ana", time.time() - 60)
        d.ami.uniqueids = [f"pr-{call_id}-1-ana"]  # the responder's leg; the caller's is gone
        reconciler = Reconciler(d)  # type: ignore[arg-type]
        assert (await reconciler.once())["ended"] == 0
        assert (await d._hash(call_id))["state"] == "bridged"
        assert reconciler.revisit_in is not None and reconciler.revisit_in < 5
        # Still gone a few seconds later, and nobody reported it: ended from here.
        reconciler._missing[call_id] -= 10
        assert (await reconciler.once())["ended"] == 1
        assert (await d._hash(call_id))["state"] == "ended"
    finally:
        await d.redis.aclose()
